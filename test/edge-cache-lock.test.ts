// One node per cache directory. Two `edgeshard node` processes on one --cache-dir would evict, rewrite and delete
// files under each other's in-memory index; the second is refused at start, naming the pid that holds the directory.
// A lock left by a node killed with SIGKILL is taken over by the next start, with nobody removing files by hand,
// even when the dead node's pid already belongs to another live process (pid reuse).
import { describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import { tempDir } from './helpers/net.ts';

const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');

type Outcome = { started: true; child: ChildProcess } | { started: false; code: number | null; stderr: string };

/** Starts `edgeshard node` and resolves once it prints its start line, or once it exits (with its stderr). */
function startNode(cacheDir: string, keyFile: string): Promise<Outcome> {
  const child = spawn(process.execPath, [CLI, 'node', '--origin', 'http://127.0.0.1:9', '--open', '--port', '0', '--host', '127.0.0.1', '--cache-dir', cacheDir, '--key-file', keyFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve) => {
    let out = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (/edge node 0x[0-9a-f]{40} on http:\/\//.test(out)) resolve({ started: true, child });
    });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code) => resolve({ started: false, code, stderr }));
  });
}

/** The pid a cache directory's lock names (its first line). */
async function lockPid(cacheDir: string): Promise<number> {
  return Number((await readFile(join(cacheDir, '.lock'), 'utf8')).split('\n')[0]);
}

/** /proc/<pid>/stat field 22: when the process started, in clock ticks after boot. */
async function startTicks(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[22 - 3]!;
}

function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve(child.exitCode) : new Promise((r) => child.once('exit', (code) => r(code)));
}

describe('cache directory lock', () => {
  it('refuses a second node on a cache directory in use, naming the owner; takes over the lock of a killed one', async () => {
    const { dir, cleanup } = await tempDir();
    const cacheDir = join(dir, 'cache');
    const children: ChildProcess[] = [];
    try {
      const first = await startNode(cacheDir, join(dir, 'a-key.json'));
      if (!first.started) throw new Error(`the first node did not start: ${first.stderr}`);
      children.push(first.child);

      const second = await startNode(cacheDir, join(dir, 'b-key.json'));
      if (second.started) children.push(second.child);
      expect(second).toMatchObject({ started: false, code: 1 });
      expect((second as { stderr: string }).stderr).toContain(`cache directory ${cacheDir} is in use by process ${first.child.pid}`);

      // kill -9: no cleanup runs, the lock file stays behind naming a dead pid.
      first.child.kill('SIGKILL');
      await exited(first.child);
      expect(await lockPid(cacheDir)).toBe(first.child.pid);

      const third = await startNode(cacheDir, join(dir, 'b-key.json'));
      if (!third.started) throw new Error(`the node after a kill -9 did not start: ${third.stderr}`);
      children.push(third.child);
      expect(await lockPid(cacheDir)).toBe(third.child.pid);
      third.child.kill('SIGTERM');
      expect(await exited(third.child)).toBe(0);
      expect(existsSync(join(cacheDir, '.lock'))).toBe(false); // a clean stop lets go of the directory
    } finally {
      for (const c of children) c.kill('SIGKILL');
      await cleanup();
    }
  }, 120_000);

  it("starts over a dead node's lock whose pid now belongs to a live, unrelated process", async () => {
    const { dir, cleanup } = await tempDir();
    const cacheDir = join(dir, 'cache');
    const children: ChildProcess[] = [];
    try {
      const unrelated = spawn('sleep', ['600'], { stdio: 'ignore' });
      children.push(unrelated);
      await once(unrelated, 'spawn');
      // The lock a crashed node left, written by hand: its pid is the sleep's now; its start time (this test
      // process's, an earlier one) and boot are what the node recorded when it took the lock.
      const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
      await mkdir(cacheDir, { recursive: true });
      await writeFile(join(cacheDir, '.lock'), `${unrelated.pid}\nstart ${await startTicks(process.pid)}\nboot ${bootId}\n`);

      const node = await startNode(cacheDir, join(dir, 'a-key.json'));
      if (node.started) children.push(node.child);
      expect(node, node.started ? '' : node.stderr).toMatchObject({ started: true });
      const child = (node as { child: ChildProcess }).child;
      expect(await readFile(join(cacheDir, '.lock'), 'utf8')).toBe(`${child.pid}\nstart ${await startTicks(child.pid!)}\nboot ${bootId}\n`);
      expect(unrelated.exitCode).toBeNull(); // nobody touched the process the stale lock named

      // And the lock it wrote still keeps a second node out.
      const second = await startNode(cacheDir, join(dir, 'b-key.json'));
      if (second.started) children.push(second.child);
      expect(second).toMatchObject({ started: false, code: 1 });
      expect((second as { stderr: string }).stderr).toContain(`cache directory ${cacheDir} is in use by process ${child.pid}`);
    } finally {
      for (const c of children) c.kill('SIGKILL');
      await cleanup();
    }
  }, 120_000);
});
