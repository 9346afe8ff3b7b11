// One owner per state file: a lock file beside it holds the owner's pid. Two `edgeshard node` processes started in
// one directory would otherwise append to one receipt log under each other's feet. A lock whose owner is gone
// (kill -9, a crash) is taken over at once, so a crashed process restarts without anyone removing files by hand.
import { open, readFile, unlink } from 'node:fs/promises';

export class PidLockedError extends Error {}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, but another user's
  }
}

/**
 * Takes `<path>.lock` (or `lockPath`: a directory's lock lives inside it) for this process, or throws PidLockedError
 * naming the live owner. Returns the release function (idempotent). `what` names the state in the error ("receipt log").
 */
export async function acquirePidLock(path: string, what: string, lockPath = `${path}.lock`): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(lockPath, 'wx'); // O_CREAT | O_EXCL: exactly one creator wins
      try {
        await fh.writeFile(`${process.pid}\n`);
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
      const owner = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
      if (Number.isSafeInteger(owner) && owner > 0 && isAlive(owner)) {
        throw new PidLockedError(
          `${what} ${path} is in use by process ${owner}${owner === process.pid ? ' (this one)' : ''}: run each node with its own files, or stop that process (its lock is ${lockPath})`,
        );
      }
      await unlink(lockPath).catch(() => {}); // the owner is gone: take its place
    }
  }
  throw new PidLockedError(`could not lock ${what} ${path}: ${lockPath} kept reappearing`);
}
