// Shard paths are relative, slash-separated names inside a dataset. They travel in URLs and manifests and
// end up as keys on disk, so anything that could climb out of a directory is refused rather than repaired.

/** Why a path was refused, or null when it is a safe relative path. Works on an already percent-decoded path. */
export function unsafePathReason(path: string): string | null {
  if (path.length === 0) return 'empty path';
  if (path.length > 1024) return 'path longer than 1024 characters';
  if (path.includes('\0')) return 'NUL byte in path';
  if (path.includes('\\')) return 'backslash in path';
  if (path.startsWith('/')) return 'absolute path';
  for (const segment of path.split('/')) {
    if (segment === '') return 'empty path segment';
    if (segment === '.' || segment === '..') return `"${segment}" segment in path`;
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
    decoded = decodeURIComponent(rawPath);
  } catch {
    return { error: 'malformed percent-encoding in path' };
  }
  const reason = unsafePathReason(decoded);
  return reason ? { error: reason } : { path: decoded };
}
