// Turns a failed bind or a failed file operation into a sentence that names the option the user can change.
// Node's own text ("listen EADDRINUSE: address already in use 0.0.0.0:8080", "EACCES: permission denied, mkdir
// '/var/cache/edgeshard'") names neither.
import { resolve, sep } from 'node:path';
import { UsageError } from './options.ts';

/** For an error from listen(): which flag to change and how; undefined when it is not a bind error. */
export function describeListenError(err: unknown, flag: string, port: number, host?: string): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = `${host ?? ''}${host ? ':' : ''}${port}`;
  if (code === 'EADDRINUSE') return `${flag} ${port}: address ${where} is already in use (another edgeshard, or another program); choose another port with ${flag}, or 0 for any free one`;
  if (code === 'EACCES') return `${flag} ${port}: not allowed to listen on ${where} (ports below 1024 need root or CAP_NET_BIND_SERVICE); choose a port of 1024 or above with ${flag}`;
  if (code === 'EADDRNOTAVAIL') return `${flag}: address ${where} is not an address of this machine; check --host`;
  return undefined;
}

/** For an error from a file or directory an option names (EACCES, ENOTDIR, EROFS...): which flag, and what to do. */
export function describePathError(err: unknown, flag: string, path: string): string | undefined {
  const e = err as NodeJS.ErrnoException | undefined;
  const at = e?.path && e.path !== path ? ` (at ${e.path})` : '';
  switch (e?.code) {
    case 'EACCES':
    case 'EPERM':
      return `${flag} ${path}: permission denied${at}; give the user running edgeshard write access, or choose another path with ${flag}`;
    case 'ENOTDIR':
      return `${flag} ${path}: a part of this path is a file, not a directory${at}; choose a directory path with ${flag}`;
    case 'EISDIR':
      return `${flag} ${path}: is a directory; ${flag} names a file`;
    case 'EROFS':
      return `${flag} ${path}: the filesystem is read-only${at}; choose a writable path with ${flag}`;
    case 'ENOSPC':
      return `${flag} ${path}: no space left on the device${at}`;
    default:
      return undefined;
  }
}

/**
 * For an error thrown while a server starts: the sentence naming the option behind it (the port, or whichever
 * path option holds the failing path), or undefined when none is to blame.
 */
export function describeStartError(
  err: unknown,
  port: { flag: string; value: number; host?: string },
  paths: { flag: string; path: string | null | undefined }[],
): string | undefined {
  const e = err as NodeJS.ErrnoException | undefined;
  if (e?.syscall === 'listen' || e?.code === 'EADDRINUSE') return describeListenError(err, port.flag, port.value, port.host);
  if (typeof e?.path !== 'string') return undefined;
  const failing = resolve(e.path);
  for (const { flag, path } of paths) {
    if (!path) continue;
    const p = resolve(path);
    // The path itself, something under it (a cache subdirectory), or a parent it needed (mkdir -p).
    if (failing === p || failing.startsWith(p + sep) || p.startsWith(failing + sep)) return describePathError(err, flag, path);
  }
  return undefined;
}

/**
 * Starts a server: an error that describeStartError pins on an option (the port, a path option) becomes a usage
 * error naming it; any other error is thrown as it is. What `edgeshard node`, `gateway` and `settler` share.
 */
export async function startNamingOptions<T>(
  start: () => Promise<T>,
  port: { flag: string; value: number; host?: string },
  paths: { flag: string; path: string | null | undefined }[],
): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const explained = describeStartError(err, port, paths);
    if (explained) throw new UsageError(explained);
    throw err;
  }
}
