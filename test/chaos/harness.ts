// The machinery of the chaos story (story.test.ts): edgeshard processes as children that can be SIGKILLed and started
// again, slow-loris connections, and a node's committed cache index read straight from its directory.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { sha256File } from '../../protocol/hash.ts';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'edgeshard.js');

/** One `edgeshard` command as a child process, with everything it printed. */
export class Child {
  readonly proc: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly name: string,
    readonly args: string[],
  ) {
    this.proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (c) => (this.stdout += String(c)));
    this.proc.stderr!.on('data', (c) => (this.stderr += String(c)));
    this.exited = new Promise((resolve) => this.proc.on('close', (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** kill -9, and waits until it is gone. */
  async kill9(): Promise<void> {
    if (this.running) this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** The last lines it printed, for failure messages. */
  tail(lines = 8): string {
    return `${this.name} stdout: ${this.stdout.trim().split('\n').slice(-lines).join(' | ')}\n${this.name} stderr: ${this.stderr.trim().split('\n').slice(-lines).join(' | ')}`;
  }
}

/** An entry the node committed: its metadata file is in objects/ (the commit point, edge-node/disk-store.ts). */
export interface CommittedEntry {
  key: string;
  sha256: string;
  size: number;
  dataPath: string;
}

/** The committed cache index of a node's cache directory, by key, read from the metadata files on disk. */
export async function committedIndex(cacheDir: string): Promise<Map<string, CommittedEntry>> {
  const index = new Map<string, CommittedEntry>();
  const objects = join(cacheDir, 'objects');
  for (const prefix of await readdir(objects).catch(() => [] as string[])) {
    for (const name of await readdir(join(objects, prefix)).catch(() => [] as string[])) {
      if (!name.endsWith('.meta')) continue;
      const dataPath = join(objects, prefix, name.slice(0, -'.meta'.length));
      // An entry evicted between the listing and the read is simply not in the index.
      const text = await readFile(join(objects, prefix, name), 'utf8').catch(() => null);
      if (text === null) continue;
      const meta = JSON.parse(text) as { key: string; sha256: string; size: number };
      index.set(meta.key, { key: meta.key, sha256: meta.sha256, size: meta.size, dataPath });
    }
  }
  return index;
}

/** The committed entries whose bytes are missing or do not hash to their sha256, each with the reason. */
export async function unverifiedEntries(entries: Iterable<CommittedEntry>): Promise<string[]> {
  const bad: string[] = [];
  for (const e of entries) {
    const got = await sha256File(e.dataPath).catch((err: Error) => ({ sha256: `unreadable (${err.message})`, size: -1 }));
    if (got.sha256 !== e.sha256) bad.push(`${e.key}: bytes hash to ${got.sha256}, committed as ${e.sha256}`);
  }
  return bad;
}

/** Files of fills in progress in a node's cache directory (tmp/), with their sizes. */
export async function fillsOnDisk(cacheDir: string): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  for (const name of await readdir(join(cacheDir, 'tmp')).catch(() => [] as string[])) {
    const size = (await stat(join(cacheDir, 'tmp', name)).catch(() => null))?.size;
    if (size !== undefined) files.set(name, size);
  }
  return files;
}

export interface LorisTarget {
  name: string;
  port: number;
}

export interface LorisCounts {
  /** Connections open now. */
  open: number;
  /** Most open at once. */
  peakOpen: number;
  /** Answered 503 at once: the address already held its connection share. */
  refused: number;
  /** Answered 408: the head was not complete within the server's header timeout. */
  timedOut: number;
}

/**
 * Slow-loris: `perTarget` connections to each target from `fromAddress` (another loopback address than the trainer's),
 * each sending the start of a request head and never its end. A connection the server closes is opened again, so
 * the pressure lasts until `stop`; a target that is down (a node being restarted) is retried at a slow pace.
 */
export class SlowLoris {
  readonly counts = new Map<string, LorisCounts>();
  readonly #sockets = new Set<Socket>();
  #stopped = false;

  constructor(
    readonly targets: LorisTarget[],
    readonly perTarget: number,
    readonly fromAddress = '127.0.0.2',
  ) {
    for (const t of targets) {
      this.counts.set(t.name, { open: 0, peakOpen: 0, refused: 0, timedOut: 0 });
      for (let i = 0; i < perTarget; i++) this.#open(t);
    }
  }

  #open(target: LorisTarget): void {
    if (this.#stopped) return;
    const counts = this.counts.get(target.name)!;
    const socket = connect({ host: '127.0.0.1', port: target.port, localAddress: this.fromAddress });
    this.#sockets.add(socket);
    let connected = false;
    let answer = '';
    socket.setNoDelay(true);
    socket.on('connect', () => {
      connected = true;
      counts.open++;
      counts.peakOpen = Math.max(counts.peakOpen, counts.open);
      socket.write(`GET /healthz HTTP/1.1\r\nHost: ${target.name}\r\nX-Slow: `);
    });
    socket.on('data', (c: Buffer) => {
      answer += c.toString('latin1');
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#sockets.delete(socket);
      if (connected) counts.open--;
      if (/^HTTP\/1\.1 503/.test(answer)) counts.refused++;
      if (/^HTTP\/1\.1 408/.test(answer)) counts.timedOut++;
      // Straight back after a header timeout: the connection was held, and the attacker holds another. Refused, or
      // nothing listening (a process being restarted): back at an attacker's pace, not in a loop that burns the CPU.
      if (/^HTTP\/1\.1 408/.test(answer)) setImmediate(() => this.#open(target));
      else setTimeout(() => this.#open(target), 1000).unref();
    });
  }

  stop(): void {
    this.#stopped = true;
    for (const s of this.#sockets) s.destroy();
  }
}

/** Whether `text` (a Prometheus exposition) has `series` and its value. */
export function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/**
 * Stands in for a gateway that is down: takes connections on its port and resets them, counting the trainer's route
 * requests, so a test can wait until the trainer has met the outage rather than for some time.
 */
export async function startResettingServer(port: number): Promise<{ routeCalls: () => number; close: () => Promise<void> }> {
  let calls = 0;
  const server = createServer((socket) => {
    socket.once('data', (head: Buffer) => {
      if (/^GET \/(v1\/route|d\/)/.test(head.toString('latin1'))) calls++;
      socket.destroy();
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return { routeCalls: () => calls, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** Remote ports of the established IPv4 TCP connections process `pid` holds (Linux: its fds and /proc/net/tcp). */
export async function connectedPorts(pid: number): Promise<Set<number>> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) inodes.add(m[1]!);
  }
  const ports = new Set<number>();
  for (const line of (await readFile('/proc/net/tcp', 'latin1')).split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // f[2] remote address:port (hex), f[3] state (01 = ESTABLISHED), f[9] the socket's inode.
    if (f.length > 9 && f[3] === '01' && inodes.has(f[9]!)) ports.add(parseInt(f[2]!.split(':')[1]!, 16));
  }
  return ports;
}
