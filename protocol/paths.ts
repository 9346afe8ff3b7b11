// Shard paths are relative, slash-separated names inside a dataset. They travel in URLs and manifests and
// end up as keys on disk, so anything that could climb out of a directory is refused rather than repaired.

/** Why a path was refused, or null when it is a safe relative path. Works on an already percent-decoded path. */
export function unsafePathReason(path: string): string | null {
  if (path.length === 0) return 'empty path';
  if (path.length > 1024) return 'path longer than 1024 characters';
  if (path.includes('\0')) return 'NUL byte in path';
  if (path.includes('\\')) return 'backslash in path';
  if (path.startsWith('/')) return 'absolute path';
  // Walks the segments by index instead of split('/'): this runs on every request the edge node routes by path,
  // and split allocates an array and a string per segment.
  for (let start = 0; start <= path.length; ) {
    let end = path.indexOf('/', start);
    if (end < 0) end = path.length;
    const length = end - start;
    if (length === 0) return 'empty path segment';
    if (length <= 2 && path.charCodeAt(start) === 0x2e && (length === 1 || path.charCodeAt(start + 1) === 0x2e)) {
      return `"${length === 1 ? '.' : '..'}" segment in path`;
    }
    start = end + 1;
  }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(path)) return 'control character in path';
  return null;
}

/**
 * Decodes the path part of a request URL (without the leading slash) and checks it.
 * Percent-decoding happens exactly once, so "%2e%2e" is caught as "..", and "%252e" stays a literal "%2e".
 */
export function decodeRequestPath(rawPath: string): { path: string } | { error: string } {
  let decoded: string;
  try {
    // Most paths contain no escapes, and then decoding is the identity.
    decoded = rawPath.includes('%') ? decodeURIComponent(rawPath) : rawPath;
  } catch {
    return { error: 'malformed percent-encoding in path' };
  }
  const reason = unsafePathReason(decoded);
  return reason ? { error: reason } : { path: decoded };
}
