// A gateway that refuses a node's registry connection before the handshake (429 when the node's address is over the
// hello budget, gateway/hello-budget.ts) gives its reason in the body. The operator sees it in the node's log, at
// warn, and the node keeps retrying; before, it saw only a debug line "Unexpected server response: 429".
import { createServer } from 'node:http';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Wallet } from 'ethers';
import { afterAll, describe, expect, it } from 'vitest';
import { RegistryClient, type NodeControl } from '../edge-node/registry-client.ts';
import { refuseUpgrade } from '../gateway/upgrade-refusal.ts';
import { BloomFilter } from '../protocol/bloom.ts';
import { until } from './helpers/net.ts';

const REASON = 'too many registry connections from this address (2 a second, bursts of 64)';

/** What the client needs of a node; nothing here is reached before a welcome, which never comes. */
const node: NodeControl = {
  publicUrl: 'http://127.0.0.1:9',
  version: 'test',
  capacity: () => ({ uploadBytesPerSecond: 0, cacheBytes: 0 }),
  load: () => ({ activeConnections: 0, bytesPerSecond: 0, freeBytesPerSecond: 0 }),
  cacheSummary: () => new BloomFilter(64, 2).summary(),
  manifestIds: () => [],
  loadManifest: async () => '',
  prefetch: async () => ({ ok: true, detail: '' }),
  purge: async () => ({ ok: true, detail: '' }),
  trustTicketKeys: () => {},
};

describe("a node refused before the registry's handshake", () => {
  const closers: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
  });

  it("logs the gateway's status and reason at warn, and keeps retrying", async () => {
    let upgrades = 0;
    const gateway = createServer();
    gateway.on('upgrade', (_req, socket) => {
      upgrades++;
      refuseUpgrade(socket, '429 Too Many Requests', `${REASON}\n`, [['retry-after', '1']]);
    });
    await new Promise<void>((r) => gateway.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise<void>((r) => gateway.close(() => r())));
    const { port } = gateway.address() as { port: number };

    const log: { level: number; msg: string; status?: number; reason?: string; retryAfter?: string }[] = [];
    const logger = pino({ level: 'warn' }, new Writable({ write: (chunk, _e, done) => (log.push(JSON.parse(chunk.toString())), done()) }));
    const client = new RegistryClient({ gatewayUrl: `http://127.0.0.1:${port}`, wallet: new Wallet(Wallet.createRandom().privateKey), node, logger, minBackoffMs: 1, maxBackoffMs: 2 });
    closers.push(() => client.stop());
    client.start();

    // Two refusals told, and a third attempt: it goes on after each one.
    await until('two refusals logged and a third attempt', () => log.filter((l) => l.msg === 'gateway refused the connection; retrying').length >= 2 && upgrades >= 3);
    const told = log.find((l) => l.msg === 'gateway refused the connection; retrying')!;
    expect(told).toMatchObject({ level: 40, status: 429, retryAfter: '1', reason: REASON });
    expect(client.lastError).toBe(`gateway answered 429: ${REASON}`);
    expect(client.registered).toBe(false);
  });
});
