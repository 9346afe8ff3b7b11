// What reading an origin response costs the node's fill, by the way it reads: undici's `request()` (a Readable body,
// its 'data' events) against `requestOrigin()` (edge-node/origin-body.ts: undici's dispatch handler, each socket
// read handed over as it is parsed). The origin is a separate Node process answering 4 MiB from memory; this process
// only reads (8 connections) and counts its own CPU. The two ways alternate A B B A; medians.
//
//   flock /tmp/edgeshard-bench.lock node bin/run-ts.js bench/origin-read.ts [rounds=6] [MiB=512]
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import { requestOrigin } from '../edge-node/origin-body.ts';
import { fmt, freePort, median, MiB, startChild, stopChild, waitForHttp } from './lib.ts';

const OBJECT = 4 * MiB;

if (process.argv[2] === '--origin') {
  const body = Buffer.alloc(OBJECT, 7);
  createServer((_req, res) => {
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  }).listen(Number(process.argv[3]), '127.0.0.1');
} else {
  const rounds = Number(process.argv[2] ?? 6);
  const objects = Math.round((Number(process.argv[3] ?? 512) * MiB) / OBJECT);
  const port = await freePort();
  const origin = startChild(process.execPath, [fileURLToPath(new URL('../bin/run-ts.js', import.meta.url)), fileURLToPath(import.meta.url), '--origin', String(port)]);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, 30_000, origin);
  const agent = new Agent({ connections: 8 });

  const viaReadable = (d: Dispatcher): Promise<number> =>
    d.request({ origin: url, path: '/x', method: 'GET' }).then(
      ({ body }) =>
        new Promise<number>((resolve, reject) => {
          let got = 0;
          body.on('data', (b: Buffer) => (got += b.length));
          body.once('end', () => resolve(got));
          body.once('error', reject);
        }),
    );
  const viaDispatch = async (d: Dispatcher): Promise<number> => {
    const { body } = await requestOrigin(d, { origin: url, path: '/x', method: 'GET' });
    let got = 0;
    await body.consume((b) => (got += b.length));
    return got;
  };
  const ways = { 'request() + Readable': viaReadable, 'requestOrigin() (dispatch handler)': viaDispatch };
  type Way = keyof typeof ways;

  /** `count` objects over 8 connections; returns CPU s/GiB of this process and MB/s. */
  async function pass(way: Way, count: number): Promise<{ cpu: number; mbps: number }> {
    let next = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next++ < count) if ((await ways[way](agent)) !== OBJECT) throw new Error('short body');
      }),
    );
    const cpu = process.cpuUsage(cpu0);
    const seconds = (performance.now() - t0) / 1000;
    const bytes = count * OBJECT;
    return { cpu: (cpu.user + cpu.system) / 1e6 / (bytes / (1024 * MiB)), mbps: bytes / 1e6 / seconds };
  }

  const names = Object.keys(ways) as Way[];
  // Warm-up: both ways' code paths compiled before anything counts.
  for (const way of names) await pass(way, 64);
  const results = new Map<Way, { cpu: number; mbps: number }[]>(names.map((w) => [w, []]));
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? names : [...names].reverse();
    for (const way of order) {
      const res = await pass(way, objects);
      results.get(way)!.push(res);
      console.log(`  round ${r + 1} ${way}: ${fmt(res.mbps)} MB/s, ${fmt(res.cpu, 3)} CPU s/GiB`);
    }
  }
  const [a, b] = names.map((w) => results.get(w)!);
  for (const way of names) {
    const rs = results.get(way)!;
    console.log(`${way}: median ${fmt(median(rs.map((x) => x.mbps)))} MB/s, ${fmt(median(rs.map((x) => x.cpu)), 3)} CPU s/GiB`);
  }
  const ratios = a!.map((x, i) => b![i]!.cpu / x.cpu);
  console.log(`dispatch / Readable CPU per GiB, median of ${rounds} rounds: ${fmt(median(ratios), 2)}x (range ${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)})`);
  await agent.close();
  await stopChild(origin);
}
