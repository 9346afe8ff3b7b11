// `edgeshard fetch` as trainers run it: a child process, its exit status and its summary.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { sendBytes } from './helpers/byte-server.ts';
import { startStaticGateway, type StaticGateway } from './helpers/static-gateway.ts';
import { peerHasReadAll, startScriptedOrigin, tempDir, until } from './helpers/net.ts';
import type { Socket } from 'node:net';
import { CHUNK_LIST_ROUTE } from '../protocol/chunks.ts';

const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

function start(args: string[]): { child: ChildProcess; done: Promise<Exit> } {
  const child = spawn(process.execPath, [CLI, 'fetch', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c) => (stdout += String(c)));
  child.stderr!.on('data', (c) => (stderr += String(c)));
  const done = new Promise<Exit>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}
const runCli = (args: string[]): Promise<Exit> => start(args).done;

// Each child process starts tsx: seconds apiece on a loaded machine, so these tests get a larger budget.
describe('edgeshard fetch', { timeout: 120_000 }, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let edge: EdgeNode;
  let gateway: StaticGateway;

  beforeAll(async () => {
    tmp = await tempDir('edgeshard-fetch-cli-');
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 4, shardSize: 128 * 1024, chunkSize: 64 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    edge = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['sample/manifest.json'] }));
    gateway = await startStaticGateway({ datasets: { sample: { manifest } }, nodes: [{ id: 'edge', url: edge.url }] });
  });
  afterAll(async () => {
    await gateway.close();
    await edge.close();
    await origin.close();
    await tmp.cleanup();
  });

  it('exits 0 with a summary when every shard is verified', async () => {
    const out = join(tmp.dir, 'ok');
    const res = await runCli([gateway.url, 'sample', '--out', out, '--parallel', '2']);
    expect(res.stderr).toBe(''); // not a TTY: no progress bar
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^sample: all 4 shards verified in .*ok \(4 downloaded, 0 already complete\); fetched 512\.0 KiB in /);
    for (const s of manifest.shards) expect(sha256Hex(await readFile(join(out, s.path)))).toBe(s.sha256);
  });

  it('exits 1 and names each failed shard with its reason', async () => {
    const broken = manifest.shards[2]!;
    const failing = await startScriptedOrigin((_req, res) => void res.writeHead(500).end());
    const gw = await startStaticGateway({
      datasets: { sample: { manifest } },
      nodes: [{ id: 'edge', url: edge.url }],
      candidates: ({ shard }) => (shard === broken ? [{ node: '0xbroken', url: `${failing.url}/shard/${shard.sha256}` }] : undefined),
    });
    const out = join(tmp.dir, 'fail');
    const res = await runCli([gw.url, 'sample', '--out', out, '--retries', '0', '--source-patience', '0']);
    await gw.close();
    await failing.close();
    expect(res.code).toBe(1);
    const lines = res.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^sample: 1 of 4 shards FAILED, 3 verified \(3 downloaded, 0 already complete\)/);
    expect(lines.slice(1)).toEqual([`  failed ${broken.path}: every source failed (1 attempt): 0xbroken: HTTP 500 (gave up after 1 round over 0.0 s; the source patience is 0.0 s)`]);
    expect(existsSync(join(out, broken.path))).toBe(false);
  });

  it('exits 2 on bad usage', async () => {
    const noOut = await runCli([gateway.url, 'sample']);
    expect(noOut.code).toBe(2);
    expect(noOut.stderr).toContain('--out DIR is required');
  });

  it('stops on SIGINT with exit 130, keeps the .partial, and a second run resumes it', async () => {
    const s = manifest.shards[0]!;
    const bytes = await readFile(join(tmp.dir, 'origin', 'sample', s.path));
    const half = s.size / 2;
    const list = await readFile(join(tmp.dir, 'origin', 'sample', '.chunks', s.sha256));
    let resumeRange: string | undefined;
    let firstRun: Socket | undefined;
    let shardRequests = 0;
    const node = await startScriptedOrigin((req, res) => {
      if (req.url?.startsWith(CHUNK_LIST_ROUTE)) return void res.writeHead(200, { 'content-length': list.length }).end(list);
      shardRequests++;
      if (req.headers.range === undefined) {
        // First run: half the shard (its first 64 KiB chunk, verified and written), then the node hangs (as if the
        // trainer's network dropped).
        res.writeHead(200, { 'content-length': s.size });
        res.write(bytes.subarray(0, half));
        firstRun = res.socket!;
        return;
      }
      resumeRange = req.headers.range;
      sendBytes(req, res, bytes);
    });
    const one = { ...manifest, shards: [s], totalBytes: s.size };
    const gw = await startStaticGateway({ datasets: { sample: { manifest: one } }, nodes: [{ id: 'n', url: node.url }] });
    const out = join(tmp.dir, 'interrupt');
    const partial = join(out, s.path + '.partial');
    const { child, done } = start([gw.url, 'sample', '--out', out, '--stall-timeout', '60000']);
    // The CLI keeps received bytes in memory until a batch fills or it stops: interrupt it once it has read them.
    await until('the CLI read the first half', async () => firstRun !== undefined && (await peerHasReadAll(firstRun)), 20_000);
    child.kill('SIGINT');
    const interrupted = await done;
    expect(interrupted.code).toBe(130);
    expect(interrupted.stdout).toContain('interrupted with 0 of 1 shards verified');
    expect((await stat(partial)).size).toBe(half);
    expect(existsSync(join(out, s.path))).toBe(false);

    const resumed = await runCli([gw.url, 'sample', '--out', out, '--stall-timeout', '20000']);
    await gw.close();
    await node.close();
    expect(resumed.code).toBe(0);
    expect(resumeRange).toBe(`bytes=${half}-`);
    expect(shardRequests).toBe(2); // one per run: the second asked for the missing half straight away
    expect(resumed.stdout).toContain('fetched 64.0 KiB');
    expect(sha256Hex(await readFile(join(out, s.path)))).toBe(s.sha256);
  });
});
