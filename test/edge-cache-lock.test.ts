// One node per cache directory, across processes and containers sharing a volume. Two `edgeshard node` processes on
// one --cache-dir would evict, rewrite and delete files under each other's in-memory index (and append to one receipt
// log). The lock is a lease (protocol/state-lock.ts), so: a second node is refused while the first lives, naming it;
// a node restarted after a kill -9 starts by itself (waiting out the dead lease if it is still fresh: test/state-lock
// shows the wait); and a node whose lock is taken
// from it stops at once with a fatal log line instead of writing on. The nodes here refresh their lease every 1000 ms
// (proper-lockfile's shortest interval) and keep the default 10 s before it is stale: a live node under CI load must
// never pass for a dead one, so the refused start and the restart after kill -9 each wait out ~11 s.
import { describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { tempDir } from './helpers/net.ts';

const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');
const LEASE = { EDGESHARD_LOCK_STALE_MS: '10000', EDGESHARD_LOCK_UPDATE_MS: '1000' };

type Outcome = { started: true; child: ChildProcess; out: () => string } | { started: false; code: number | null; out: string };

/** Starts `edgeshard node` and resolves once it prints its start line, or once it exits (with what it printed). */
function startNode(cacheDir: string, keyFile: string): Promise<Outcome> {
  const child = spawn(process.execPath, [CLI, 'node', '--origin', 'http://127.0.0.1:9', '--open', '--port', '0', '--host', '127.0.0.1', '--cache-dir', cacheDir, '--key-file', keyFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...LEASE },
  });
  return new Promise((resolve) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (/edge node 0x[0-9a-f]{40} on http:\/\//.test(out)) resolve({ started: true, child, out: () => out });
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => resolve({ started: false, code, out }));
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve(child.exitCode) : new Promise((r) => child.once('exit', (code) => r(code)));
}

describe('cache directory lock', () => {
  it('refuses a second node on a cache directory in use, naming the owner; a restart after kill -9 starts by itself', async () => {
    const { dir, cleanup } = await tempDir();
    const cacheDir = join(dir, 'cache');
    const lock = join(cacheDir, '.lock');
    const children: ChildProcess[] = [];
    try {
      const first = await startNode(cacheDir, join(dir, 'a-key.json'));
      if (!first.started) throw new Error(`the first node did not start: ${first.out}`);
      children.push(first.child);

      const second = await startNode(cacheDir, join(dir, 'b-key.json'));
      if (second.started) children.push(second.child);
      expect(second).toMatchObject({ started: false, code: 1 });
      const refused = (second as { out: string }).out;
      expect(refused).toContain(`cache directory ${cacheDir} is locked by process ${first.child.pid} on host ${hostname()}`);
      expect(refused).toContain(`cache directory ${cacheDir} is in use by process ${first.child.pid} on host ${hostname()}`);

      // kill -9: no cleanup runs, the lock stays behind with a lease that is fresh for up to 10 s.
      first.child.kill('SIGKILL');
      await exited(first.child);
      expect(existsSync(lock)).toBe(true);

      const third = await startNode(cacheDir, join(dir, 'b-key.json'));
      if (!third.started) throw new Error(`the node after a kill -9 did not start: ${third.out}`);
      children.push(third.child);
      expect(await readFile(join(cacheDir, '.lock.owner'), 'utf8')).toContain(`process ${third.child.pid} on host ${hostname()}`);
      third.child.kill('SIGTERM');
      expect(await exited(third.child)).toBe(0);
      expect(existsSync(lock)).toBe(false); // a clean stop lets go of the directory
    } finally {
      for (const c of children) c.kill('SIGKILL');
      await cleanup();
    }
  }, 120_000);

  it('a node whose lock another node took stops at once with a fatal log line', async () => {
    const { dir, cleanup } = await tempDir();
    const cacheDir = join(dir, 'cache');
    const lock = join(cacheDir, '.lock');
    const children: ChildProcess[] = [];
    try {
      const node = await startNode(cacheDir, join(dir, 'a-key.json'));
      if (!node.started) throw new Error(`the node did not start: ${node.out}`);
      children.push(node.child);
      // Another container on the same volume takes the directory (as a node does that finds the lease stale).
      await rm(lock, { recursive: true });
      await mkdir(lock);
      await writeFile(join(cacheDir, '.lock.owner'), 'process 1 on host container-b (since 2026-12-02T18:00:00.000Z)\n');
      expect(await exited(node.child)).toBe(1);
      const fatal = node.out().split('\n').find((l) => l.includes('"level":60'));
      expect(fatal, node.out()).toContain(`lost the lock on cache directory ${cacheDir}`);
      expect(fatal).toContain(`another process removed or took over ${lock}`);
      expect(fatal).toContain('this node stops now and writes nothing more there');
      expect(existsSync(lock)).toBe(true); // it left the new owner's lock alone
    } finally {
      for (const c of children) c.kill('SIGKILL');
      await cleanup();
    }
  }, 120_000);
});
