// The pid lock on a node's state (protocol/pid-lock.ts) against pid reuse: after a crash the kernel gives the dead
// owner's pid to another process, and a lock that only checks "is that pid alive" then blocks every restart for as
// long as that process lives. A live process at the lock's pid that started at another time is not the owner.
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { acquirePidLock, formatLock, ownerHolds, parseLock, PidLockedError, startTicksOf } from '../protocol/pid-lock.ts';
import { tempDir } from './helpers/net.ts';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A live process unrelated to any lock: `sleep`, killed when the test ends. */
async function unrelatedProcess(): Promise<ChildProcess> {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  cleanups.push(() => child.kill('SIGKILL'));
  await once(child, 'spawn');
  return child;
}

const startTicks = async (pid: number): Promise<string> => startTicksOf(await readFile(`/proc/${pid}/stat`, 'utf8'))!;
const bootId = async (): Promise<string> => (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();

async function lockDir(): Promise<{ state: string; lock: string }> {
  const { dir, cleanup } = await tempDir('edgeshard-pid-lock-');
  cleanups.push(cleanup);
  return { state: join(dir, 'receipts.log'), lock: join(dir, 'receipts.log.lock') };
}

describe('pid lock', () => {
  it('reads the start time from /proc/<pid>/stat even when the command name holds spaces and parentheses', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    expect(startTicksOf(`4242 (a) b (c) ${fields.join(' ')}\n`)).toBe('22');
    expect(startTicksOf('garbage')).toBeNull();
  });

  it('judges a lock by pid, boot and start time', () => {
    const lock = { pid: 10, startTicks: '500', bootId: 'b1' };
    expect(parseLock(formatLock(lock))).toEqual(lock);
    expect(parseLock('10\n')).toEqual({ pid: 10, startTicks: null, bootId: null }); // an older lock: the pid only
    expect(parseLock('')).toBeNull();
    expect(ownerHolds(lock, { alive: true, startTicks: '500', bootId: 'b1' })).toBe(true);
    expect(ownerHolds(lock, { alive: false, startTicks: null, bootId: null })).toBe(false);
    expect(ownerHolds(lock, { alive: true, startTicks: '501', bootId: 'b1' })).toBe(false); // the pid was reused
    expect(ownerHolds(lock, { alive: true, startTicks: '500', bootId: 'b2' })).toBe(false); // another boot
    expect(ownerHolds(lock, { alive: true, startTicks: null, bootId: null })).toBe(true); // cannot tell: keep it
    expect(ownerHolds({ pid: 10, startTicks: null, bootId: null }, { alive: true, startTicks: '7', bootId: 'b1' })).toBe(true);
  });

  it('takes over a stale lock whose pid now belongs to a live, unrelated process', async () => {
    const { state, lock } = await lockDir();
    const other = await unrelatedProcess();
    // What a crashed owner left: its pid (now the sleep's) and its own start time (this test process's, an earlier one).
    await writeFile(lock, formatLock({ pid: other.pid!, startTicks: await startTicks(process.pid), bootId: await bootId() }));
    const release = await acquirePidLock(state, 'receipt log');
    expect(parseLock(await readFile(lock, 'utf8'))).toEqual({ pid: process.pid, startTicks: await startTicks(process.pid), bootId: await bootId() });
    await release();
  });

  it('is refused while the process the lock names really holds it (same pid, boot and start time)', async () => {
    const { state, lock } = await lockDir();
    const owner = await unrelatedProcess();
    await writeFile(lock, formatLock({ pid: owner.pid!, startTicks: await startTicks(owner.pid!), bootId: await bootId() }));
    await expect(acquirePidLock(state, 'receipt log')).rejects.toThrow(new PidLockedError(
      `receipt log ${state} is in use by process ${owner.pid}: run each node with its own files, or stop that process (its lock is ${lock})`,
    ));
    // A second lock in this very process is refused too.
    const { state: mine } = await lockDir();
    const release = await acquirePidLock(mine, 'receipt log');
    await expect(acquirePidLock(mine, 'receipt log')).rejects.toThrow(`is in use by process ${process.pid} (this one)`);
    await release();
  });
});
