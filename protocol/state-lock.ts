// One owner per piece of node state (a cache directory, a receipt log), across processes, containers and hosts that
// share a volume. Two owners would append to one receipt log and evict each other's cache files.
//
// The lock is proper-lockfile's lease, not a pid: an atomic mkdir of the lock directory, whose mtime the owner
// refreshes every `updateMs`; a lock not refreshed for `staleMs` belongs to a dead owner and is taken over. A pid
// names nothing outside its own pid namespace (every container's node is pid 1) and a boot id nothing across hosts,
// so an earlier pid lock handed a live node's directory to a second container; a lease needs no such reasoning.
// If someone else takes the lock anyway (our lease went stale while we were frozen, a hand removed it), proper-lockfile
// says so (`onLost`): the owner must stop using the state at once.
//
// `<lock>.owner` says which process on which host holds it, for error messages only; nothing decides by it.
// (It is beside the lock, not in it: the lock directory must stay empty for rmdir to remove it.)
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import * as nodeFs from 'node:fs';
import { lstat, readFile, rename, rm, writeFile } from 'node:fs/promises';
import lockfile from 'proper-lockfile';

export class StateLockedError extends Error {}

/** A lease not refreshed for this long is a dead owner's (proper-lockfile's floor is 2000). */
export const DEFAULT_STALE_MS = 10_000;
/** How often the owner refreshes its lease: several refreshes fit in `staleMs`, so a busy moment does not lose it. */
export const DEFAULT_UPDATE_MS = 2_000;
/** How often a start waiting for a fresh lease to go stale looks again. */
const RETRY_MS = 500;

export interface StateLockOptions {
  /** Where the lock directory goes; `<path>.lock` by default (a directory's lock lives inside it). */
  lockPath?: string;
  staleMs?: number;
  updateMs?: number;
  /** Called once if another process took the lock from us: stop reading and writing the state at once. */
  onLost(err: StateLockedError): void;
  /** Called once when a fresh lease (a live owner, or one that just crashed) makes this start wait. */
  onWait?(message: string): void;
  /** The file system calls the lease goes through (node:fs; tests: one that keeps mtimes in whole seconds). */
  fs?: typeof nodeFs;
}

/** The lease's timings from the environment (tests shorten them); the defaults otherwise. */
function envMs(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

/** `<lock>.owner`: who holds the lock, for messages. */
export function ownerPath(lockPath: string): string {
  return `${lockPath}.owner`;
}

/** What `<lock>.owner` says, as words: "process 1 on host a1b2 (since ...)", or that it says nothing. */
async function holderOf(lockPath: string): Promise<string> {
  const text = (await readFile(ownerPath(lockPath), 'utf8').catch(() => '')).trim();
  return text ? text : 'another process (it left no owner record)';
}

/**
 * Takes the lock on `path` (`what` names it in messages: "cache directory") or throws StateLockedError naming the
 * state and its holder. A fresh lease is waited for up to staleMs + updateMs, said once through `onWait`: a node
 * restarted right after a crash (systemd, docker) then starts by itself, and a live owner's lease never goes stale.
 * Returns the release function (idempotent; a no-op once the lock was lost).
 */
export async function acquireStateLock(path: string, what: string, opts: StateLockOptions): Promise<() => Promise<void>> {
  const lockPath = opts.lockPath ?? `${path}.lock`;
  // proper-lockfile's bounds (stale at least 2000 ms, a refresh at most every 1000 ms and at least twice per lease), so
  // the waits said in messages are the real ones.
  const stale = Math.max(opts.staleMs ?? envMs('EDGESHARD_LOCK_STALE_MS', DEFAULT_STALE_MS), 2000);
  const update = Math.max(Math.min(opts.updateMs ?? envMs('EDGESHARD_LOCK_UPDATE_MS', DEFAULT_UPDATE_MS), stale / 2), 1000);
  const old = await lstat(lockPath).catch(() => null);
  if (old?.isFile()) {
    // Before the lease, the lock was a file naming a pid, removed by a clean stop: one left behind is a node of that
    // version still running, or one that crashed. Nothing here can tell which, so the operator decides.
    const pid = (await readFile(lockPath, 'utf8').catch(() => '')).split('\n')[0]?.trim() || 'unknown';
    throw new StateLockedError(
      `${what} ${path} is locked by an older edgeshard node (the lock file ${lockPath} names process ${pid}): stop that node; if none is running, remove ${lockPath} and start again`,
    );
  }
  let lost = false;
  // While a takeover waits for its first refresh (below), a loss refuses the start instead of reaching onLost.
  let confirming: { refreshed(): void; lost(err: Error): void } | null = null;
  const fsBase = opts.fs ?? nodeFs;
  const lockFs = Object.create(fsBase) as typeof nodeFs & Record<string, unknown>;
  lockFs.utimes = ((file: string, atime: Date, mtime: Date, cb: (err: NodeJS.ErrnoException | null) => void) =>
    fsBase.utimes(file, atime, mtime, (err) => {
      cb(err);
      // proper-lockfile refreshes only after it found the lease's mtime still its own: a refresh done is one confirmed.
      if (!err) confirming?.refreshed();
    })) as typeof nodeFs.utimes;
  const mine = `process ${process.pid} on host ${hostname()} (since ${new Date().toISOString()})`;
  const base = {
    // proper-lockfile caches the mtime precision it probed (ms or whole seconds) on the fs object it is given, and by
    // default that is one graceful-fs shared by every lock in the process: a receipt log on a ms filesystem locked first
    // made the cache lock on a 1 s one (ext4 with 128-byte inodes, some NAS) refresh with ms mtimes, read back
    // truncated, and declare itself lost at its second refresh. Each lock gets its own object, so its own probe.
    fs: lockFs,
    lockfilePath: lockPath,
    stale,
    update,
    realpath: false,
    onCompromised: (err: Error) => {
      lost = true;
      if (confirming) return confirming.lost(err);
      void holderOf(lockPath).then((holder) =>
        opts.onLost(
          new StateLockedError(
            `lost the lock on ${what} ${path} (${err.message}): another process removed or took over ${lockPath}${holder === mine ? '' : ` (its owner record: ${holder})`}`,
          ),
        ),
      );
    },
  };
  let release: () => Promise<void>;
  // A lease we saw (stale, or waited out) is taken over by rmdir and mkdir without looking again, so two starts
  // taking over one crashed node's lease can both get it; the first to refresh keeps it, the other finds the mtime
  // not its own at its first refresh. A takeover returns only after that refresh, so the loser opens nothing.
  let tookOver = old?.isDirectory() === true;
  try {
    release = await lockfile.lock(path, { ...base, retries: 0 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') throw err;
    const waitMs = stale + update;
    tookOver = true;
    opts.onWait?.(`${what} ${path} is locked by ${await holderOf(lockPath)}; waiting up to ${waitMs} ms for its lease to go stale (a crashed node's lease lasts ${stale} ms, a live node keeps it fresh)`);
    try {
      release = await lockfile.lock(path, { ...base, retries: { retries: Math.ceil(waitMs / RETRY_MS), factor: 1, minTimeout: RETRY_MS, maxTimeout: RETRY_MS } });
    } catch (err2) {
      if ((err2 as NodeJS.ErrnoException).code !== 'ELOCKED') throw err2;
      throw new StateLockedError(
        `${what} ${path} is in use by ${await holderOf(lockPath)}, which keeps its lease in ${lockPath} fresh: run each node with its own files, or stop that node`,
      );
    }
  }
  if (tookOver) {
    // proper-lockfile's refresh timer is unref'd: a start with nothing else open yet would just exit while it waits.
    const keepAlive = setInterval(() => {}, 60_000);
    const loss = await new Promise<Error | null>((resolve) => {
      confirming = { refreshed: () => resolve(null), lost: resolve };
    });
    clearInterval(keepAlive);
    confirming = null;
    if (loss) {
      throw new StateLockedError(
        `${what} ${path}: another start took over the stale lease in ${lockPath} at the same moment and kept it (${loss.message}); it is in use by ${await holderOf(lockPath)}`,
      );
    }
  }
  const owner = ownerPath(lockPath);
  const tmp = `${owner}.${randomBytes(6).toString('hex')}`;
  try {
    await writeFile(tmp, `${mine}\n`);
    await rename(tmp, owner);
  } catch (err) {
    // No owner record (a full disk, say): let go of the lease too, or it stays held until this process exits.
    await rm(tmp, { force: true, recursive: true }).catch(() => {});
    await release().catch(() => {});
    throw err;
  }
  let released = false;
  return async () => {
    if (released || lost) return;
    released = true;
    await rm(owner, { force: true });
    await release().catch(() => {});
  };
}
