// Checks the model's window/RTT throughput ceiling (network.ts windowLimitBps, the middle term of tcpSteadyRateBps)
// on loopback, without netem (this kernel has no sch_netem): an application-level netem.
//
//   node bin/run-ts.js simulator/validation/tcp-ceiling.ts [--rtt 2,10,40,100] [--window 65536,1048576] [--seconds 3]
//
// Pieces, all on 127.0.0.1:
// - a delay proxy (in its own worker thread, so the sender's work cannot delay its timers): for each accepted
//   connection it opens one to the receiver and relays both directions, holding every chunk for the configured
//   one-way delay (RTT / 2) and releasing chunks in arrival order;
// - a receiver that reads and discards, and after every read sends back an 8-byte acknowledgement of the bytes
//   received so far, through the proxy (so acknowledgements are delayed too);
// - a sender that keeps at most `window` bytes unacknowledged.
//
// Why an application-level window: Node does not expose SO_RCVBUF/SO_SNDBUF on a net.Socket (there is no
// setRecvBufferSize for TCP, only for dgram), and with the OS default, autotuned buffers the kernel's window is not
// fixed. The proxy also terminates TCP on both sides, so the kernel's connections each see a loopback RTT of
// microseconds and never limit anything: what is limited, and what the delay applies to, is the sender's
// application window. So this checks the model's formula for a window-limited transfer (at most one window per
// round trip, throughput = W / RTT) against a real implementation with real timers and sockets; it does not test
// the kernel's congestion control, slow start, or loss (a proxy cannot drop a TCP segment: TCP would retransmit it
// below the application), and therefore not the Mathis term.
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { windowLimitBps } from '../network.ts';

/** The proxy, as plain JavaScript for an eval'd worker (no TypeScript loader needed in the thread). */
const PROXY_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const { performance } = require('node:perf_hooks');
const oneWayMs = workerData.oneWayMs;
const target = workerData.targetPort;

// A delay line: chunks leave in arrival order, each no earlier than oneWayMs after it arrived. The timer sleeps
// until about 1 ms before the head is due, then polls with setImmediate (setTimeout alone is late by up to ~1 ms,
// which is half of a 2 ms RTT).
function delayLine(out) {
  const q = [];
  let head = 0;
  let armed = false;
  const pump = () => {
    armed = false;
    const now = performance.now();
    while (head < q.length && q[head].at <= now) out.write(q[head++].buf);
    if (head > 1024 && head * 2 > q.length) { q.splice(0, head); head = 0; }
    if (head < q.length) arm(q[head].at - now);
  };
  const arm = (waitMs) => {
    if (armed) return;
    armed = true;
    if (waitMs > 1.5) setTimeout(pump, Math.floor(waitMs - 1)); else setImmediate(pump);
  };
  return (buf) => { q.push({ at: performance.now() + oneWayMs, buf }); arm(oneWayMs); };
}

const server = net.createServer((client) => {
  client.setNoDelay(true);
  const upstream = net.connect(target, '127.0.0.1');
  upstream.setNoDelay(true);
  client.on('data', delayLine(upstream));
  upstream.on('data', delayLine(client));
  const done = () => { client.destroy(); upstream.destroy(); };
  client.on('close', done); upstream.on('close', done);
  client.on('error', () => {}); upstream.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
parentPort.on('message', (m) => { if (m === 'close') server.close(() => process.exit(0)); });
`;

/** Starts a delay proxy in a worker thread in front of 127.0.0.1:targetPort; resolves to its port and a closer. */
export async function startDelayProxy(targetPort: number, rttMs: number): Promise<{ port: number; close: () => Promise<void> }> {
  const worker = new Worker(PROXY_SOURCE, { eval: true, workerData: { oneWayMs: rttMs / 2, targetPort } });
  const [port] = (await once(worker, 'message')) as [number];
  return {
    port,
    close: async () => {
      worker.postMessage('close');
      await once(worker, 'exit');
    },
  };
}

/** A receiver that discards data and acknowledges every read with the cumulative byte count (8 bytes). */
async function startReceiver(): Promise<{ server: Server; port: number; received: () => { bytes: number; at: number }[] }> {
  const samples: { bytes: number; at: number }[] = [];
  const server = createServer((s) => {
    s.setNoDelay(true);
    let total = 0;
    s.on('data', (buf: Buffer) => {
      total += buf.length;
      samples.push({ bytes: total, at: performance.now() });
      const ack = Buffer.allocUnsafe(8);
      ack.writeDoubleLE(total);
      s.write(ack);
    });
    s.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return { server, port, received: () => samples };
}

/** Round trip of a one-byte message through the proxy (median of `n`), to check the delay the proxy realizes. */
async function pingMs(port: number, n: number): Promise<number> {
  // The receiver acknowledges with 8 bytes; one byte out, 8 bytes back is one round trip.
  const s = connect(port, '127.0.0.1');
  s.setNoDelay(true);
  await once(s, 'connect');
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    s.write(Buffer.from([i & 255]));
    let got = 0;
    while (got < 8) {
      const [buf] = (await once(s, 'data')) as [Buffer];
      got += buf.length;
    }
    times.push(performance.now() - t);
  }
  s.destroy();
  times.sort((a, b) => a - b);
  return times[times.length >> 1]!;
}

export interface CeilingPoint {
  rttMs: number;
  windowBytes: number;
  /** Median round trip of a one-byte ping through the proxy. */
  measuredRttMs: number;
  /** Receiver's data rate in the measurement interval, bytes/s. */
  throughputBps: number;
  /** The model's bound, windowLimitBps(window, RTT), at the configured RTT. */
  modelBps: number;
  /** Measured over model. */
  ratio: number;
}

/**
 * Sends for `seconds` through a proxy adding `rttMs` of round trip, with at most `windowBytes` unacknowledged, and
 * measures the receiver's rate after a warm-up of max(0.2 s, 3 RTT).
 */
export async function measureCeiling(opts: { rttMs: number; windowBytes: number; seconds: number; chunkBytes?: number }): Promise<CeilingPoint> {
  const chunk = Math.min(opts.chunkBytes ?? 16 * 1024, opts.windowBytes);
  const rx = await startReceiver();
  const proxy = await startDelayProxy(rx.port, opts.rttMs);
  try {
    const measuredRttMs = await pingMs(proxy.port, 7);
    rx.received().length = 0;
    const s: Socket = connect(proxy.port, '127.0.0.1');
    s.setNoDelay(true);
    await once(s, 'connect');
    const payload = Buffer.alloc(chunk, 0x5a);
    let sent = 0;
    let acked = 0;
    let pendingAck: Buffer = Buffer.alloc(0);
    let stopped = false;
    const fill = () => {
      while (!stopped && sent - acked + chunk <= opts.windowBytes) {
        sent += chunk;
        if (!s.write(payload)) break; // the kernel buffer is full; 'drain' resumes
      }
    };
    s.on('drain', fill);
    s.on('data', (buf: Buffer) => {
      pendingAck = pendingAck.length ? Buffer.concat([pendingAck, buf]) : buf;
      const whole = pendingAck.length - (pendingAck.length % 8);
      if (whole >= 8) acked = pendingAck.readDoubleLE(whole - 8);
      pendingAck = pendingAck.subarray(whole);
      fill();
    });
    s.on('error', () => {});
    const t0 = performance.now();
    fill();
    await new Promise((r) => setTimeout(r, opts.seconds * 1000));
    stopped = true;
    s.destroy();
    const warm = t0 + Math.max(200, 3 * opts.rttMs);
    const samples = rx.received().filter((x) => x.at >= warm);
    const first = samples[0];
    const last = samples[samples.length - 1];
    const throughputBps = first && last && last.at > first.at ? (last.bytes - first.bytes) / ((last.at - first.at) / 1000) : 0;
    const modelBps = windowLimitBps(opts.windowBytes, opts.rttMs / 1000);
    return { rttMs: opts.rttMs, windowBytes: opts.windowBytes, measuredRttMs, throughputBps, modelBps, ratio: throughputBps / modelBps };
  } finally {
    await proxy.close();
    rx.server.close();
  }
}

/** Unbounded window: what the proxy passes when nothing but TCP (terminated at the proxy) limits the sender. */
export async function measureUnbounded(rttMs: number, seconds: number): Promise<number> {
  const p = await measureCeiling({ rttMs, windowBytes: 1 << 30, seconds, chunkBytes: 64 * 1024 });
  return p.throughputBps;
}

function list(flag: string, dflt: number[]): number[] {
  const i = process.argv.indexOf(flag);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]!.split(',').map(Number) : dflt;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rtts = list('--rtt', [2, 10, 40, 100]);
  const windows = list('--window', [64 * 1024, 1024 * 1024, 4 * 1024 * 1024]);
  const seconds = list('--seconds', [3])[0]!;
  const mb = (x: number) => (x / 1e6).toFixed(2);
  // The "link": what the proxy carries with no window (only TCP, terminated at the proxy, limits the sender).
  const link = new Map<number, number>();
  // Best of three, since the capacity is the most the proxy can do (other load on the machine only lowers it).
  for (const rtt of rtts) {
    let best = 0;
    for (let i = 0; i < 3; i++) best = Math.max(best, await measureUnbounded(rtt, Math.min(seconds, 1.5)));
    link.set(rtt, best);
  }
  console.log('| window | RTT set (ms) | RTT ping (ms) | proxy link (MB/s) | model min(link, W/RTT) (MB/s) | measured (MB/s) | measured / model | measured / (W / ping RTT) |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const w of windows) {
    for (const rtt of rtts) {
      const p = await measureCeiling({ rttMs: rtt, windowBytes: w, seconds });
      const l = link.get(rtt)!;
      const model = Math.min(l, p.modelBps);
      const atPing = Math.min(l, windowLimitBps(w, p.measuredRttMs / 1000));
      console.log(
        `| ${w >= 1 << 20 ? `${w / (1 << 20)} MiB` : `${w / 1024} KiB`} | ${rtt} | ${p.measuredRttMs.toFixed(2)} | ${mb(l)} | ${mb(model)}${model === l ? ' (link)' : ''} | ` +
          `${mb(p.throughputBps)} | ${(p.throughputBps / model).toFixed(3)} | ${(p.throughputBps / atPing).toFixed(3)} |`,
      );
    }
  }
}
