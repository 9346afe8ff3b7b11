// One address opening registry connections as fast as it can, each with a fresh key (free to make; without --rpc no
// stake is needed) and a hello naming a URL: without a budget every one costs the gateway a signature check and an
// outbound URL proof; with it (gateway/hello-budget.ts) a source gets a burst and then a rate of upgrades, and only so
// many not yet welcomed at once; past either the upgrade is answered 429 before any hello is read. An honest fleet
// behind one NAT address, all coming back at once, never reaches it.
// The budget's clock is the test's and stands still unless the test moves it: everything is driven by counts.
import { createServer, type ServerResponse } from 'node:http';
import { Wallet } from 'ethers';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_NODE_CHECKS } from '../gateway/registry.ts';
import { HELLO_BURST, HELLOS_PER_SECOND, PENDING_PER_SOURCE } from '../gateway/hello-budget.ts';
import type { Gateway } from '../gateway/server.ts';
import { registryWsUrl } from '../edge-node/registry-client.ts';
import { IDENTITY_PATH, signChallenge } from '../protocol/identity.ts';
import { closeNow, listen, localUrl } from '../protocol/listen.ts';
import { PARIS, startGatewayFixture, type GatewayFixture } from './helpers/gateway-fixture.ts';
import { startScriptedNode, type ScriptedNode } from './helpers/scripted-node.ts';
import { until } from './helpers/net.ts';

/** Every name under flood.test is this host (an attacker's wildcard DNS: a URL of its own for each hello). */
const lookup = async (): Promise<{ address: string; family: number }[]> => [{ address: '127.0.0.1', family: 4 }];
let names = 0;

/**
 * Where the hellos point: counts the gateway's URL proofs, and answers them 404 at once or holds them. Each hello
 * names its own URL (n<i>.flood.test), as two keys cannot hold one URL at once.
 */
async function proofTarget(hold: boolean) {
  const held: ServerResponse[] = [];
  const state = { proofs: 0, hold };
  const server = createServer((req, res) => {
    if (new URL(req.url ?? '/', 'http://x').pathname !== IDENTITY_PATH) return res.writeHead(404).end();
    state.proofs++;
    if (state.hold) held.push(res);
    else res.writeHead(404).end();
  });
  const port = new URL(localUrl(await listen(server, 0, '127.0.0.1'))).port;
  return {
    /** A URL at this server no hello has named yet. */
    get url() {
      return `http://n${names++}.flood.test:${port}`;
    },
    state,
    get held() {
      return held.length;
    },
    release() {
      state.hold = false;
      for (const res of held.splice(0)) res.writeHead(404).end();
    },
    close: () => closeNow(server),
  };
}

const fresh = (): Wallet => new Wallet(Wallet.createRandom().privateKey);

type Outcome = { refused: string } | { status: number; retryAfter: string | undefined; body: string };

/** A registry connection from `from` with a fresh key, whose hello names `url`: how it ended. */
function hello(gw: Gateway, url: string, from = '127.0.0.1', forwardedFor?: string): Promise<Outcome> {
  const wallet = fresh();
  const ws = new WebSocket(registryWsUrl(gw.url), { localAddress: from, ...(forwardedFor ? { headers: { 'x-forwarded-for': forwardedFor } } : {}) });
  return new Promise((resolve) => {
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], body });
        ws.terminate();
      });
    });
    ws.on('error', () => {});
    ws.on('message', (d: Buffer) => {
      const msg = JSON.parse(d.toString()) as { type: string; [k: string]: unknown };
      if (msg.type === 'error') resolve({ refused: msg.reason as string });
      if (msg.type !== 'challenge') return;
      void signChallenge(wallet, msg.gatewayId as string, msg.nonce as string, url).then((signature) =>
        ws.send(JSON.stringify({ type: 'hello', address: wallet.address.toLowerCase(), signature, url, location: PARIS, capacity: { uploadBytesPerSecond: 0, cacheBytes: 1e9 }, version: 'flood' })),
      );
    });
  });
}

const metric = async (gw: Gateway, line: RegExp): Promise<number> => Number(line.exec(await gw.metrics.registry.metrics())?.[1] ?? NaN);
const THROTTLED_RATE = /^edgeshard_gateway_node_connections_throttled_total\{reason="rate"\} (\d+)$/m;
const THROTTLED_PENDING = /^edgeshard_gateway_node_connections_throttled_total\{reason="pending"\} (\d+)$/m;
const REFUSED = /^edgeshard_gateway_registrations_refused_total (\d+)$/m;
const PROOF_FAILED = /^url proof failed at .*bad-status/;
const RATE_BODY = `too many registry connections from this address (${HELLOS_PER_SECOND} a second, bursts of ${HELLO_BURST})\n`;

describe('registry hello budget', () => {
  let fx: GatewayFixture;
  let t = 1_000_000;
  const helloClock = (): number => t;
  beforeAll(async () => {
    fx = await startGatewayFixture();
  });
  afterAll(async () => {
    await fx.close();
  });

  it('flood: fresh keys from one address each cost a URL proof unless the budget answers 429 at the upgrade; another address is still heard', async () => {
    const N = 100;
    const target = await proofTarget(false);
    try {
      // Without the budget: every hello's signature is checked and its URL contacted.
      const trusting = await fx.gateway({ nodeChecks: { ...ALL_NODE_CHECKS, helloBudget: false } }, { helloClock, lookup });
      for (let i = 0; i < N; i++) expect(await hello(trusting, target.url)).toEqual({ refused: expect.stringMatching(PROOF_FAILED) });
      expect(target.state.proofs).toBe(N);
      expect(await metric(trusting, REFUSED)).toBe(N);
      expect(await metric(trusting, THROTTLED_RATE)).toBe(0);

      // With it: the burst is heard; the rest get 429 before the handshake, with no signature check and no proof.
      target.state.proofs = 0;
      const checking = await fx.gateway({}, { helloClock, lookup });
      const outcomes: Outcome[] = [];
      for (let i = 0; i < N; i++) outcomes.push(await hello(checking, target.url));
      expect(outcomes.slice(0, HELLO_BURST)).toEqual(Array.from({ length: HELLO_BURST }, () => ({ refused: expect.stringMatching(PROOF_FAILED) })));
      expect(outcomes.slice(HELLO_BURST)).toEqual(Array.from({ length: N - HELLO_BURST }, () => ({ status: 429, retryAfter: '1', body: RATE_BODY })));
      expect(target.state.proofs).toBe(HELLO_BURST);
      expect(await metric(checking, REFUSED)).toBe(HELLO_BURST);
      expect(await metric(checking, THROTTLED_RATE)).toBe(N - HELLO_BURST);
      expect(await metric(checking, THROTTLED_PENDING)).toBe(0);

      // Another address has its own budget.
      expect(await hello(checking, target.url, '127.0.0.2')).toEqual({ refused: expect.stringMatching(PROOF_FAILED) });
      expect(target.state.proofs).toBe(HELLO_BURST + 1);
      // One token later (half a second at 2 a second) the flooding address is heard once more, then refused again.
      t += 1000 / HELLOS_PER_SECOND;
      expect(await hello(checking, target.url)).toEqual({ refused: expect.stringMatching(PROOF_FAILED) });
      expect(await hello(checking, target.url)).toMatchObject({ status: 429 });
      expect(target.state.proofs).toBe(HELLO_BURST + 2);
    } finally {
      await target.close();
    }
  });

  it('admissions held open by a slow URL: at most PENDING_PER_SOURCE from one address at once; the rest get 429 until they end', async () => {
    const extra = 8;
    // Without the budget every one of them holds an outbound request.
    const slowOff = await proofTarget(true);
    try {
      const trusting = await fx.gateway({ nodeChecks: { ...ALL_NODE_CHECKS, helloBudget: false } }, { helloClock, lookup });
      const all = Array.from({ length: PENDING_PER_SOURCE + extra }, () => hello(trusting, slowOff.url));
      await until('every proof held', () => slowOff.held === PENDING_PER_SOURCE + extra);
      slowOff.release();
      for (const o of await Promise.all(all)) expect(o).toEqual({ refused: expect.stringMatching(PROOF_FAILED) });
    } finally {
      await slowOff.close();
    }

    const slow = await proofTarget(true);
    try {
      const checking = await fx.gateway({}, { helloClock, lookup });
      const first = Array.from({ length: PENDING_PER_SOURCE }, () => hello(checking, slow.url));
      await until('the first proofs held', () => slow.held === PENDING_PER_SOURCE);
      expect(checking.registry.pendingFrom('127.0.0.1')).toBe(PENDING_PER_SOURCE);
      const more = await Promise.all(Array.from({ length: extra }, () => hello(checking, slow.url)));
      expect(more).toEqual(
        Array.from({ length: extra }, () => ({ status: 429, retryAfter: '1', body: `${PENDING_PER_SOURCE} registrations from this address are being checked; try again when they are done\n` })),
      );
      expect(slow.state.proofs).toBe(PENDING_PER_SOURCE);
      expect(await metric(checking, THROTTLED_PENDING)).toBe(extra);
      // Once they are answered (and refused), the address may try again.
      slow.release();
      for (const o of await Promise.all(first)) expect(o).toEqual({ refused: expect.stringMatching(PROOF_FAILED) });
      await until('every slot freed', () => checking.registry.pendingFrom('127.0.0.1') === 0);
      expect(await hello(checking, slow.url)).toEqual({ refused: expect.stringMatching(PROOF_FAILED) });
      expect(slow.state.proofs).toBe(PENDING_PER_SOURCE + 1);
    } finally {
      await slow.close();
    }
  });

  it('counts a source by its address: X-Forwarded-For only from --trusted-proxies, where each forwarded address has its own budget', async () => {
    const target = await proofTarget(false);
    try {
      // From an untrusted peer the header is ignored: made-up addresses bring no fresh budget.
      const direct = await fx.gateway({}, { helloClock, lookup });
      for (let i = 0; i < HELLO_BURST; i++) expect(await hello(direct, target.url, '127.0.0.1', `198.51.100.${i}`)).toMatchObject({ refused: expect.any(String) });
      expect(await hello(direct, target.url, '127.0.0.1', '198.51.100.200')).toMatchObject({ status: 429 });
      expect(target.state.proofs).toBe(HELLO_BURST);

      // Behind a trusted proxy, nodes are counted by the address it forwards for, not all as the proxy.
      const proxied = await fx.gateway({ trustedProxies: ['127.0.0.1'] }, { helloClock, lookup });
      for (let i = 0; i < HELLO_BURST; i++) expect(await hello(proxied, target.url, '127.0.0.1', '203.0.113.7')).toMatchObject({ refused: expect.any(String) });
      expect(await hello(proxied, target.url, '127.0.0.1', '203.0.113.7')).toMatchObject({ status: 429 });
      expect(await hello(proxied, target.url, '127.0.0.1', '203.0.113.8')).toMatchObject({ refused: expect.any(String) });
      expect(target.state.proofs).toBe(2 * HELLO_BURST + 1);
    } finally {
      await target.close();
    }
  });

  it('an honest fleet behind one address, all coming back at once twice over (a restart, then a blip), is never throttled', async () => {
    const gw = await fx.gateway({}, { helloClock, lookup });
    const fleet = PENDING_PER_SOURCE;
    const wallets = Array.from({ length: fleet }, fresh);
    const wave = async (): Promise<ScriptedNode[]> => {
      const nodes = await Promise.all(wallets.map((wallet) => startScriptedNode({ gatewayUrl: gw.url, wallet, location: PARIS, manualBeats: true })));
      await Promise.all(nodes.map((n) => n.next('welcome')));
      return nodes;
    };
    const first = await wave();
    expect(gw.registry.connectedIds().length).toBe(fleet);
    for (const n of first) await n.close();
    await until('the fleet gone', () => gw.registry.connectedIds().length === 0);
    const second = await wave();
    try {
      expect(gw.registry.connectedIds().length).toBe(fleet);
      expect(gw.registry.pendingFrom('127.0.0.1')).toBe(0);
      expect(await metric(gw, THROTTLED_RATE)).toBe(0);
      expect(await metric(gw, THROTTLED_PENDING)).toBe(0);
    } finally {
      for (const n of second) await n.close();
    }
  });
});
