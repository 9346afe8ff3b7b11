// An interrupted `edgeshard fetch`, end to end: a real gateway and two real nodes on 127.0.0.1, the CLI as a child
// process. Stopped by SIGINT (Ctrl-C) or SIGTERM (what a job scheduler or `kill` sends) once part of a shard is on
// disk, it says how many bytes it kept in .partial files (not "fetched 0 B"), and the rerun fetches only the rest.
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { startOrigin } from '../dataset/origin-server.ts';
import { startGateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { startEdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { formatBytes } from '../protocol/units.ts';
import { DEFAULT_BATCH_BYTES } from '../client/batched-writer.ts';
import { writeFastDataset } from './helpers/fast-dataset.ts';
import { Gate, startFaultyOrigin } from './helpers/faulty-origin.ts';
import { tempDir, until } from './helpers/net.ts';

const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');
const MiB = 1024 * 1024;
const SHARD = 12 * MiB;
/** The origin sends this much of each held shard, then holds the rest: more than one write batch of the client. */
const HELD_AFTER = 6 * MiB;

function runFetch(args: string[]): { child: ReturnType<typeof spawn>; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, [CLI, 'fetch', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c) => (stdout += String(c)));
  child.stderr!.on('data', (c) => (stderr += String(c)));
  return { child, done: new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr }))) };
}

/** Sizes of the .partial files under `dir`, by shard path. */
async function partials(dir: string): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  for (const name of await readdir(dir, { recursive: true }).catch(() => [] as string[])) {
    // A .partial renamed into place between the listing and the stat is a finished shard, not a partial one.
    const size = name.endsWith('.partial') ? (await stat(join(dir, name)).catch(() => null))?.size : undefined;
    if (size !== undefined) found.set(name.slice(0, -'.partial'.length), size);
  }
  return found;
}

describe('an interrupted edgeshard fetch', { timeout: 120_000 }, () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  }, 60_000);

  it.each(['SIGINT', 'SIGTERM'] as const)('on %s reports the bytes kept in .partial files, and the rerun resumes from them', async (signal) => {
    const tmp = await tempDir('edgeshard-interrupt-');
    cleanups.push(tmp.cleanup);
    const { manifest } = await writeFastDataset(join(tmp.dir, 'origin', 'sample'), { shards: 4, shardSize: SHARD, chunkSize: MiB, seed: `interrupt-${signal}` });
    const realOrigin = await startOrigin(join(tmp.dir, 'origin'));
    cleanups.push(() => realOrigin.close());
    // The last two shards stop half way at the origin: the fetch cannot finish before the signal, whatever the load.
    const origin = await startFaultyOrigin(realOrigin.url);
    cleanups.push(() => origin.close());
    const release = new Gate();
    const held = new Set(manifest.shards.slice(2).map((s) => `/sample/${s.path}`));
    origin.rule = (path) => (held.has(path) ? { kind: 'pause', afterBytes: HELD_AFTER, until: release.promise } : { kind: 'pass' });

    const gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], ticketKeyFile: join(tmp.dir, 'ticket.pem'), allowPrivateNodes: true }), { geoip: await GeoIp.open() });
    cleanups.push(() => gw.close());
    for (const location of [{ lat: 48.85, lon: 2.35 }, { lat: 52.52, lon: 13.4 }]) {
      const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location }));
      cleanups.push(() => node.close());
    }
    await until('both nodes registered', () => gw.registry.healthyCount === 2);

    const out = join(tmp.dir, 'out');
    const args = [gw.url, 'sample', '--out', out, '--parallel', '4', '--near', '48.85,2.35', '--stall-timeout', '60000'];
    const first = runFetch(args);
    cleanups.push(async () => void first.child.kill('SIGKILL'));
    // First on the way out: the nodes' held fills finish, so nothing waits on them when the nodes close.
    cleanups.push(async () => release.open());
    // Progress as the fetch itself records it: the two free shards verified, and a batch of each held one on disk.
    await until(
      'two shards verified and a write batch of each held shard in its .partial',
      async () => {
        const sizes = [...(await partials(out)).values()];
        const complete = await Promise.all(manifest.shards.slice(0, 2).map((s) => stat(join(out, s.path)).then(() => true, () => false)));
        return complete.every(Boolean) && sizes.length === 2 && sizes.every((n) => n >= DEFAULT_BATCH_BYTES);
      },
      60_000,
    );
    first.child.kill(signal);
    const stopped = await first.done;
    expect(stopped.code, stopped.stderr).toBe(130);

    const kept = await partials(out);
    const keptBytes = [...kept.values()].reduce((a, b) => a + b, 0);
    // What the origin let through, whole verified chunks: nothing received was dropped on the way out.
    expect(keptBytes).toBe(2 * HELD_AFTER);
    expect(stopped.stdout).toContain(`interrupted with 2 of 4 shards verified (2 downloaded, 0 already complete, 0 failed)`);
    expect(stopped.stdout).toContain(`${formatBytes(keptBytes)} kept in .partial files in ${out}. Run the same command again to resume.`);
    expect(stopped.stdout).not.toMatch(/fetched 0 B/);

    release.open();
    const second = await runFetch(args).done;
    expect(second.code, second.stderr).toBe(0);
    // Only what was missing: the two held shards less what their .partial files kept.
    const rest = 2 * SHARD - keptBytes;
    expect(second.stdout).toMatch(new RegExp(`^sample: all 4 shards verified in .* \\(2 downloaded, 2 already complete\\); fetched ${formatBytes(rest).replace('.', '\\.')} in `));
    for (const s of manifest.shards) expect(sha256Hex(await readFile(join(out, s.path))), s.path).toBe(s.sha256);
    expect(await partials(out)).toEqual(new Map());
  });
});
