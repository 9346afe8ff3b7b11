// The lease lock on a node's state (protocol/state-lock.ts): one owner across processes and containers sharing a
// volume. A pid names nothing outside its pid namespace (every container's node is pid 1), so nothing here may
// decide by pid: a lock is held while its lease (the lock directory's mtime) is fresh, and a stale one is a dead
// owner's. Owners are real processes; a lease is aged with utimes, never by waiting it out.
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { acquireStateLock, ownerPath, StateLockedError } from '../protocol/state-lock.ts';
import { tempDir } from './helpers/net.ts';

const HOLDER = join(import.meta.dirname, 'helpers', 'hold-state-lock.ts');
/**
 * The leases of the child processes. A live owner must keep its lease fresh however loaded the box is (a lease
 * missed for staleMs looks dead), so it gets the default 10 s, refreshed every 1000 ms (proper-lockfile's shortest
 * interval: a smaller update means 1000): a refused start still waits ~11 s for it, but no scheduler hiccup under CI load can pass for a dead owner. Only tests with no live owner
 * use shorter leases.
 */
const LIVE_LEASE = { EDGESHARD_LOCK_STALE_MS: '10000', EDGESHARD_LOCK_UPDATE_MS: '1000' };
const LIVE = { staleMs: 10_000, updateMs: 1000 };

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function stateFile(): Promise<{ state: string; lock: string }> {
  const { dir, cleanup } = await tempDir('edgeshard-state-lock-');
  cleanups.push(cleanup);
  return { state: join(dir, 'receipts.log'), lock: join(dir, 'receipts.log.lock') };
}

/** A process trying the lock on `state`; `first` is its first verdict line ("held" or "refused ..."). */
function holder(state: string): { child: ChildProcess; lines: string[]; verdict: Promise<string>; next(prefix: string): Promise<string> } {
  const child = spawn(process.execPath, ['--import', 'tsx', HOLDER, state], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...LIVE_LEASE } });
  cleanups.push(() => child.kill('SIGKILL'));
  const lines: string[] = [];
  const waiters: Array<{ prefix: string; resolve: (l: string) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    for (const w of waiters.splice(0)) if (line.startsWith(w.prefix)) w.resolve(line);
    else waiters.push(w);
  });
  const next = (prefix: string): Promise<string> => {
    const seen = lines.find((l) => l.startsWith(prefix));
    return seen ? Promise.resolve(seen) : new Promise((resolve) => waiters.push({ prefix, resolve }));
  };
  const verdict = Promise.race([next('held'), next('refused')]);
  return { child, lines, verdict, next };
}

describe('state lock', () => {
  it("takes over a dead owner's lock whose lease is old, without waiting", async () => {
    const { state, lock } = await stateFile();
    // What a node in another container left when it was killed: the lock directory, its owner record, an old lease.
    await mkdir(lock);
    await writeFile(ownerPath(lock), 'process 1 on host gone-container (since 2026-01-01T00:00:00.000Z)\n');
    const past = new Date(Date.now() - 60_000);
    await utimes(lock, past, past);
    const waits: string[] = [];
    const release = await acquireStateLock(state, 'receipt log', { onLost: () => {}, onWait: (m) => waits.push(m) });
    cleanups.push(release);
    expect(waits).toEqual([]);
    expect(await readFile(ownerPath(lock), 'utf8')).toMatch(new RegExp(`^process ${process.pid} on host ${hostname()} \\(since `));
  });

  it('refuses a live owner with the same pid in another pid namespace: a fresh lease keeps it, whatever pid it names', async () => {
    const { state, lock } = await stateFile();
    const owner = holder(state);
    expect(await owner.verdict).toBe('held');
    // The live owner as another container sees it: pid 1 (this process is not pid 1 here, but no pid is looked at).
    await writeFile(ownerPath(lock), 'process 1 on host container-a (since 2026-12-02T17:00:00.000Z)\n');
    const waits: string[] = [];
    const start = acquireStateLock(state, 'receipt log', { ...LIVE, onLost: () => {}, onWait: (m) => waits.push(m) });
    await expect(start).rejects.toThrow(
      new StateLockedError(`receipt log ${state} is in use by process 1 on host container-a (since 2026-12-02T17:00:00.000Z), which keeps its lease in ${lock} fresh: run each node with its own files, or stop that node`),
    );
    expect(waits).toEqual([
      `receipt log ${state} is locked by process 1 on host container-a (since 2026-12-02T17:00:00.000Z); waiting up to 11000 ms for its lease to go stale (a crashed node's lease lasts 10000 ms, a live node keeps it fresh)`,
    ]);
    expect(owner.lines).toEqual(['held']); // the owner kept it throughout
  }, 60_000);

  it('a start right after the owner was killed waits out its lease, says so once, and takes the lock', async () => {
    const { state, lock } = await stateFile();
    const owner = holder(state);
    expect(await owner.verdict).toBe('held');
    owner.child.kill('SIGKILL');
    await new Promise((resolve) => owner.child.once('exit', resolve));
    const now = new Date();
    await utimes(lock, now, now); // as if the owner had refreshed its lease just before it died
    const record = (await readFile(ownerPath(lock), 'utf8')).trim();
    expect(record).toContain(`process ${owner.child.pid} on host ${hostname()}`);
    const waits: string[] = [];
    const release = await acquireStateLock(state, 'receipt log', { staleMs: 3000, updateMs: 1000, onLost: () => {}, onWait: (m) => waits.push(m) });
    cleanups.push(release);
    expect(waits).toEqual([
      `receipt log ${state} is locked by ${record}; waiting up to 4000 ms for its lease to go stale (a crashed node's lease lasts 3000 ms, a live node keeps it fresh)`,
    ]);
    expect(await readFile(ownerPath(lock), 'utf8')).toContain(`process ${process.pid} on host ${hostname()}`);
  }, 60_000);

  it('two processes starting at once: exactly one holds the lock, the other is refused naming it', async () => {
    const { state } = await stateFile();
    const contenders = [holder(state), holder(state), holder(state)];
    const verdicts = await Promise.all(contenders.map((c) => c.verdict));
    expect(verdicts.filter((v) => v === 'held')).toHaveLength(1);
    const winner = contenders[verdicts.indexOf('held')]!;
    for (const v of verdicts.filter((v) => v !== 'held')) expect(v).toContain(`refused receipt log ${state} is in use by process ${winner.child.pid} on host ${hostname()}`);
    expect(winner.lines.filter((l) => l.startsWith('lost'))).toEqual([]);
  }, 60_000);

  it('tells the owner when another process takes its lock, and its release then leaves the new owner alone', async () => {
    const { state, lock } = await stateFile();
    let lost!: (err: StateLockedError) => void;
    const lostSeen = new Promise<StateLockedError>((resolve) => (lost = resolve));
    const release = await acquireStateLock(state, 'receipt log', { ...LIVE, onLost: (err) => lost(err) });
    // The thief: removes the lock and takes it for itself (what a second node does when it thinks the lease stale).
    await rm(lock, { recursive: true });
    await mkdir(lock);
    await writeFile(ownerPath(lock), 'process 1 on host container-b (since 2026-12-02T18:00:00.000Z)\n');
    const err = await lostSeen;
    expect(err.message.startsWith(`lost the lock on receipt log ${state} (`)).toBe(true);
    expect(err.message).toContain(`another process removed or took over ${lock}`);
    await release();
    expect(existsSync(lock)).toBe(true);
    expect(await readFile(ownerPath(lock), 'utf8')).toContain('process 1 on host container-b');
  }, 60_000);

  it('each lock probes its own mtime precision: a ms filesystem locked first does not make a lock on a 1 s one lose itself', async () => {
    const { dir: msDir, cleanup: c1 } = await tempDir('edgeshard-state-lock-ms-');
    const { dir: secDir, cleanup: c2 } = await tempDir('edgeshard-state-lock-s-');
    cleanups.push(c1, c2);
    // One fs object over two mounts, as graceful-fs is in a node: the receipt log's keeps ms mtimes, the cache
    // directory's whole seconds (ext4 with 128-byte inodes). Counts the lease's utimes on the 1 s mount.
    let secUtimes = 0;
    let onSecUtimes = (): void => {};
    const twoMounts = Object.create(fs) as typeof fs & Record<string, unknown>;
    twoMounts.stat = ((path: string, cb: (err: NodeJS.ErrnoException | null, st: fs.Stats) => void) =>
      fs.stat(path, (err, st) => {
        if (!err && path.startsWith(secDir)) st.mtime = new Date(Math.floor(st.mtime.getTime() / 1000) * 1000);
        cb(err, st);
      })) as typeof fs.stat;
    twoMounts.utimes = ((path: string, a: Date, m: Date, cb: (err: NodeJS.ErrnoException | null) => void) =>
      fs.utimes(path, a, m, (err) => {
        cb(err);
        if (!err && path.startsWith(secDir)) {
          secUtimes++;
          onSecUtimes();
        }
      })) as typeof fs.utimes;
    const releaseMs = await acquireStateLock(join(msDir, 'receipts.log'), 'receipt log', { fs: twoMounts, updateMs: 1000, onLost: () => {} });
    cleanups.push(releaseMs);
    let lost: StateLockedError | undefined;
    // Three utimes on the 1 s lease (at most one probe, then refreshes) mean its second refresh found the mtime its
    // first one wrote: the check that declared the lock lost when it wrote ms and read back seconds.
    const verdict = new Promise<void>((resolve) => {
      onSecUtimes = () => secUtimes >= 3 && resolve();
      const releaseS = acquireStateLock(join(secDir, 'cache'), 'cache directory', {
        fs: twoMounts,
        updateMs: 1000,
        onLost: (err) => {
          lost = err;
          resolve();
        },
      });
      cleanups.push(() => releaseS.then((r) => r()));
    });
    await verdict;
    expect(lost?.message).toBeUndefined();
    expect(secUtimes).toBeGreaterThanOrEqual(3);
  }, 30_000);

  it('a start that cannot write its owner record lets go of the lease it took', async () => {
    const { state, lock } = await stateFile();
    await mkdir(ownerPath(lock)); // the record's rename then fails (EISDIR), as its write does on a full disk
    await expect(acquireStateLock(state, 'receipt log', { onLost: () => {} })).rejects.toMatchObject({ code: 'EISDIR' });
    expect(existsSync(lock)).toBe(false);
  });

  it('of two starts taking over one stale lease at once, the one whose lease the other replaced is refused before it opens anything', async () => {
    const { state, lock } = await stateFile();
    await mkdir(lock);
    const past = new Date(Date.now() - 60_000);
    await utimes(lock, past, past); // a crashed node's lease
    // The rival start, interleaved as proper-lockfile allows: it saw the same stale lease, so right after this start's
    // mkdir and probe it removes that directory, makes its own and refreshes it.
    let probed = false;
    let rivalDone = false;
    const racing = Object.create(fs) as typeof fs & Record<string, unknown>;
    racing.utimes = ((path: string, a: Date, m: Date, cb: (err: NodeJS.ErrnoException | null) => void) =>
      fs.utimes(path, a, m, (err) => {
        if (!err && path === lock) probed = true;
        cb(err);
      })) as typeof fs.utimes;
    racing.stat = ((path: string, cb: (err: NodeJS.ErrnoException | null, st: fs.Stats) => void) =>
      fs.stat(path, (err, st) => {
        if (!err && path === lock && probed && !rivalDone) {
          // The stat that ends this start's probe: its lease's mtime is read, now the rival replaces the lease.
          rivalDone = true;
          fs.rmdirSync(lock);
          fs.mkdirSync(lock);
          const rival = new Date(Math.floor(Date.now() / 1000) * 1000 + 777); // never a probe's (second + 5 ms)
          fs.utimesSync(lock, rival, rival);
          fs.writeFileSync(ownerPath(lock), 'process 1 on host container-b (since 2026-12-02T18:00:00.000Z)\n');
        }
        cb(err, st);
      })) as typeof fs.stat;
    const losses: StateLockedError[] = [];
    const start = acquireStateLock(state, 'receipt log', { fs: racing, updateMs: 1000, onLost: (err) => losses.push(err) });
    start.then((release) => cleanups.push(release), () => {});
    await expect(start).rejects.toThrow(
      `receipt log ${state}: another start took over the stale lease in ${lock} at the same moment and kept it (Unable to update lock within the stale threshold); it is in use by process 1 on host container-b (since 2026-12-02T18:00:00.000Z)`,
    );
    expect(rivalDone).toBe(true);
    expect(losses).toEqual([]);
    expect(existsSync(lock)).toBe(true); // the rival's lease is left alone
  }, 30_000);

  it('refuses a lock file left by the previous version (a pid file), naming it and what to do', async () => {
    const { state, lock } = await stateFile();
    await writeFile(lock, '4242\nstart 1\nboot b\n');
    await expect(acquireStateLock(state, 'receipt log', { onLost: () => {} })).rejects.toThrow(
      `receipt log ${state} is locked by an older edgeshard node (the lock file ${lock} names process 4242): stop that node; if none is running, remove ${lock} and start again`,
    );
  });
});
