// One owner per state file: a lock file beside it names the owner process. Two `edgeshard node` processes started in
// one directory would otherwise append to one receipt log under each other's feet. A lock whose owner is gone
// (kill -9, a crash) is taken over at once, so a crashed process restarts without anyone removing files by hand.
// A pid alone does not name a process for long: after a crash the kernel hands it to the next process (after a
// reboot, or in a restarted container, often at once, and then perhaps to the restarted node itself). So the lock
// also records the owner's start time (/proc/<pid>/stat field 22, clock ticks after boot) and the boot id: a live
// process at that pid that started at another time, or in another boot, is not the owner, and the lock is stale.
// Where /proc cannot tell (not Linux, or a pid hidden from us), a live pid keeps the lock, as before.
import { open, readFile, unlink } from 'node:fs/promises';

export class PidLockedError extends Error {}

/** What a lock file says: the owner's pid and, when it was written on Linux, which process had that pid. */
export interface LockRecord {
  pid: number;
  /** /proc/<pid>/stat field 22 of the owner when it took the lock; null in a lock that does not say (older, not Linux). */
  startTicks: string | null;
  /** /proc/sys/kernel/random/boot_id when it took the lock; null when it does not say. */
  bootId: string | null;
}

/** What this machine says now about the pid a lock names; null where it cannot tell. */
export interface ProcessSeen {
  alive: boolean;
  startTicks: string | null;
  bootId: string | null;
}

/** The lock file's text: the pid first (what `cat` shows and what older versions read), then `start` and `boot`. */
export function formatLock(r: LockRecord): string {
  return `${r.pid}\n${r.startTicks !== null ? `start ${r.startTicks}\n` : ''}${r.bootId !== null ? `boot ${r.bootId}\n` : ''}`;
}

/** Reads a lock file's text; null when it names no pid (torn, empty, not ours). */
export function parseLock(text: string): LockRecord | null {
  const [first, ...rest] = text.split('\n');
  const pid = Number(first?.trim());
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  const field = (name: string): string | null => rest.find((l) => l.startsWith(`${name} `))?.slice(name.length + 1).trim() || null;
  return { pid, startTicks: field('start'), bootId: field('boot') };
}

/** Whether the process a lock names still holds it: alive, and (where both sides say) the same boot and start time. */
export function ownerHolds(lock: LockRecord, seen: ProcessSeen): boolean {
  if (!seen.alive) return false;
  if (lock.bootId !== null && seen.bootId !== null && lock.bootId !== seen.bootId) return false;
  if (lock.startTicks !== null && seen.startTicks !== null && lock.startTicks !== seen.startTicks) return false;
  return true;
}

/** Field 22 of /proc/<pid>/stat. The command name (field 2) is in parentheses and may hold spaces and ')'. */
export function startTicksOf(stat: string): string | null {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // field 3 onwards
  const ticks = fields[22 - 3];
  return ticks && /^\d+$/.test(ticks) ? ticks : null;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, but another user's
  }
}

async function bootId(): Promise<string | null> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '')).trim() || null;
}

async function processSeen(pid: number): Promise<ProcessSeen> {
  const alive = isAlive(pid);
  if (!alive) return { alive, startTicks: null, bootId: null };
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  return { alive, startTicks: stat === null ? null : startTicksOf(stat), bootId: await bootId() };
}

/**
 * Takes `<path>.lock` (or `lockPath`: a directory's lock lives inside it) for this process, or throws PidLockedError
 * naming the live owner. Returns the release function (idempotent). `what` names the state in the error ("receipt log").
 */
export async function acquirePidLock(path: string, what: string, lockPath = `${path}.lock`): Promise<() => Promise<void>> {
  const self = await processSeen(process.pid);
  const mine = formatLock({ pid: process.pid, startTicks: self.startTicks, bootId: self.bootId });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(lockPath, 'wx'); // O_CREAT | O_EXCL: exactly one creator wins
      try {
        await fh.writeFile(mine);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        await unlink(lockPath).catch(() => {});
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = parseLock(await readFile(lockPath, 'utf8').catch(() => ''));
      if (owner && ownerHolds(owner, await processSeen(owner.pid))) {
        throw new PidLockedError(
          `${what} ${path} is in use by process ${owner.pid}${owner.pid === process.pid ? ' (this one)' : ''}: run each node with its own files, or stop that process (its lock is ${lockPath})`,
        );
      }
      await unlink(lockPath).catch(() => {}); // the owner is gone (or its pid is another process's now): take its place
    }
  }
  throw new PidLockedError(`could not lock ${what} ${path}: ${lockPath} kept reappearing`);
}
