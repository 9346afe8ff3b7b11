// Proof of bandwidth, keyed clients (issue #9): one header writer for both ticket versions, nodes admitting
// version-2 tickets with the checks of version 1, and the gateway issuing version 2 to a client whose session
// authorisation is genuine (and version 1 to everyone else, as before).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { request } from 'undici';
import { Wallet } from 'ethers';
import { decodeTicket, generateTicketKey, signTicket } from '../protocol/tickets.ts';
import {
  SESSION_HEADER,
  authoriseSession,
  decodeClientTicket,
  encodeSessionHeader,
  epochOf,
  generateSessionKey,
  parseSessionHeader,
  signClientTicket,
} from '../protocol/client-tickets.ts';
import { TicketGate } from '../edge-node/ticket-gate.ts';
import { byteCapFor } from '../gateway/ticket-issuer.ts';
import { ClientSessions } from '../gateway/client-sessions.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { DEFAULT_RECEIPT_EVERY, openClientIdentity } from '../client/receipts.ts';
import { fetchOptionsFromSettings } from '../client/cli.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

const shard = sha256Hex('a shard');
const node = '0x' + 'ab'.repeat(20);
const client = new Wallet('0x' + '07'.repeat(32));
const session = generateSessionKey();
const v2Fields = { shard, node, expiresAt: 1_800_000_060, epoch: 20833, byteCap: 5n << 20n, client: client.address.toLowerCase(), sessionKey: session.publicHex };

describe('version-2 tickets at the node', () => {
  const key = generateTicketKey();
  const now = 1_800_000_000;

  it('writes the first 81 bytes of both versions with the same lines: only the version byte differs', () => {
    const id = '00112233445566778899aabbccddeeff';
    const v1 = Buffer.from(signTicket({ shard, node, expiresAt: now + 60, id }, key), 'base64url');
    const v2 = Buffer.from(signClientTicket({ ...v2Fields, expiresAt: now + 60, id }, key), 'base64url');
    expect([v1[0], v2[0]]).toEqual([1, 2]);
    expect(v2.subarray(1, 81).equals(v1.subarray(1, 81))).toBe(true);
    expect(decodeClientTicket(v2.toString('base64url'))).toMatchObject({ ...decodeTicket(v1.toString('base64url')), version: 2, epoch: 20833, byteCap: 5n << 20n });
    expect(() => signClientTicket({ ...v2Fields, id: 'not hex' }, key)).toThrow(/ticket id/);
  });

  it('admits a version-2 ticket with the same checks and reasons as version 1, and never on the fast path', () => {
    let t = now * 1000;
    const gate = new TicketGate({ nodeAddress: node, open: false, pinnedKeys: [key.publicKeyB64], now: () => t });
    const token = signClientTicket({ ...v2Fields, expiresAt: now + 60 }, key);
    const admitted = gate.admit(token, shard);
    expect(admitted).toMatchObject({ ok: true, client: { client: v2Fields.client, sessionKey: session.publicHex, byteCap: 5n << 20n } });
    expect(gate.admit(token, shard)).toEqual(admitted); // from the verified cache
    expect(gate.alreadyVerified(token, shard)).toBe(false); // metered against receipts: the ordinary path only
    expect(gate.check(token, sha256Hex('other'))).toBe('ticket is for another shard');
    expect(gate.check(signClientTicket({ ...v2Fields, node: '0x' + 'cd'.repeat(20), expiresAt: now + 60 }, key), shard)).toBe('ticket is for another node');
    expect(gate.check(signClientTicket({ ...v2Fields, expiresAt: now + 60 }, generateTicketKey()), shard)).toMatch(/does not trust/);
    const tampered = Buffer.from(signClientTicket({ ...v2Fields, expiresAt: now + 60 }, key), 'base64url');
    tampered[90] = tampered[90]! ^ 1; // the byte cap: a client raising its own cap
    expect(gate.check(tampered.toString('base64url'), shard)).toBe('bad ticket signature');
    t = (now + 60 + 31) * 1000;
    expect(gate.check(signClientTicket({ ...v2Fields, expiresAt: now + 60 }, key), shard)).toBe('ticket expired');
    // Version 1 still passes, and reports no client.
    expect(gate.admit(signTicket({ shard, node, expiresAt: now + 600 }, key), shard)).toEqual({ ok: true, client: null });
  });

  it('checks a receipt\'s ticket: trusted gateway and this node, expiry left to the settler', () => {
    const gate = new TicketGate({ nodeAddress: node, open: false, pinnedKeys: [key.publicKeyB64], now: () => (now + 10_000) * 1000 });
    const bytes = (fields: typeof v2Fields, k = key) => Buffer.from(signClientTicket(fields, k), 'base64url');
    expect(gate.receiptTicket(bytes(v2Fields))).toMatchObject({ node, client: v2Fields.client });
    expect(gate.receiptTicket(bytes({ ...v2Fields, node: '0x' + 'cd'.repeat(20) }))).toBe('ticket is for another node');
    expect(gate.receiptTicket(bytes(v2Fields, generateTicketKey()))).toMatch(/not trusted/);
  });
});

describe('edgeshard fetch --key-file', () => {
  it('makes a run keyed, with a receipt interval of 4 MiB unless told, and refuses an interval below 64 KiB', () => {
    const base = { out: '/tmp/x', parallel: '8', 'split-threshold': '64MiB', 'split-parts': '4', 'stall-timeout': '15000', retries: '3', 'gateway-patience': '30s' };
    const args = ['http://127.0.0.1:1', 'sample'];
    expect(fetchOptionsFromSettings(base, args).keyFile).toBeUndefined();
    expect(fetchOptionsFromSettings({ ...base, 'key-file': '/k.json' }, args)).toMatchObject({ keyFile: '/k.json', receiptEvery: DEFAULT_RECEIPT_EVERY });
    expect(fetchOptionsFromSettings({ ...base, 'key-file': '/k.json', 'receipt-every': '1MiB' }, args).receiptEvery).toBe(1024 * 1024);
    expect(() => fetchOptionsFromSettings({ ...base, 'key-file': '/k.json', 'receipt-every': '1KiB' }, args)).toThrow(/at least 64KiB/);
    expect(DEFAULT_RECEIPT_EVERY).toBe(4 * 1024 * 1024);
  });
});

describe('session authorisations at the gateway', () => {
  it('accepts a genuine one once, refuses a forged, malformed or expired one with a reason', async () => {
    const now = 1_800_000_000;
    const auth = await authoriseSession(client, session, epochOf(now));
    const header = encodeSessionHeader(auth);
    expect(parseSessionHeader(header)).toEqual(auth);
    const sessions = new ClientSessions();
    expect(sessions.check(header, now)).toEqual({ ok: true, auth });
    // Someone else's key claiming this client's address.
    const forged = await authoriseSession(new Wallet('0x' + '08'.repeat(32)), session, epochOf(now));
    expect(sessions.check(encodeSessionHeader({ ...forged, client: auth.client }), now)).toEqual({ ok: false, reason: 'session authorisation is not signed by the client it names' });
    expect(sessions.check('nonsense', now)).toMatchObject({ ok: false, reason: expect.stringContaining(SESSION_HEADER) });
    expect(sessions.check(header, now + 86_400)).toMatchObject({ ok: false, reason: expect.stringContaining('ended with epoch') });
  });
});

describe('the gateway issues version 2 to keyed clients and version 1 to the rest', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let gw: Gateway;
  let edge: EdgeNode;

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 300 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], allowPrivateNodes: true, probeIntervalMs: 0 }), { geoip: await GeoIp.open() });
    edge = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location: { lat: 48.85, lon: 2.35 } }));
    await until('node in rotation', () => gw.registry.nodes.get(edge.address)?.healthy === true && edge.manifests.shardCount === 2);
  });
  afterAll(async () => {
    await edge?.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  const route = async (headers: Record<string, string> = {}) => {
    const s = manifest.shards[0]!;
    const res = await request(`${gw.url}/v1/route?dataset=sample&shard=${s.sha256}`, { headers });
    return { status: res.statusCode, body: (await res.body.json()) as { candidates?: Array<{ url: string }>; error?: string } };
  };

  it('a keyed client (key file created 0600) gets a ticket naming it, its session key, the cap and the epoch; the node serves it', async () => {
    const keyFile = join(tmp.dir, 'client-key.json');
    const identity = await openClientIdentity(keyFile);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect((await openClientIdentity(keyFile)).address).toBe(identity.address); // the same account on the next run

    const keyed = await route({ [SESSION_HEADER]: identity.header });
    expect(keyed.status).toBe(200);
    const url = keyed.body.candidates![0]!.url;
    const ticket = decodeClientTicket(new URL(url).searchParams.get('ticket')!);
    const s = manifest.shards[0]!;
    expect(ticket).toMatchObject({ version: 2, node: edge.address, shard: s.sha256, client: identity.address, sessionKey: identity.session.publicHex, byteCap: byteCapFor(s.size), epoch: epochOf(Date.now() / 1000) });
    expect(byteCapFor(s.size)).toBe(BigInt(s.size + 4 * 1024 * 1024));
    const served = await request(url);
    expect(served.statusCode).toBe(200);
    expect(sha256Hex(Buffer.from(await served.body.arrayBuffer()))).toBe(s.sha256);

    // The same on the redirect path that curl users take.
    const redirect = await request(`${gw.url}/d/sample/${s.path}`, { headers: { [SESSION_HEADER]: identity.header } });
    await redirect.body.dump();
    expect(redirect.statusCode).toBe(302);
    expect(decodeClientTicket(new URL(String(redirect.headers.location)).searchParams.get('ticket')!)?.client).toBe(identity.address);
  });

  it('an anonymous client gets version 1; a forged session header is refused with 401, never served as anonymous', async () => {
    const anonymous = await route();
    expect(decodeTicket(new URL(anonymous.body.candidates![0]!.url).searchParams.get('ticket')!)).not.toBeNull();
    const auth = await authoriseSession(new Wallet('0x' + '09'.repeat(32)), generateSessionKey(), epochOf(Date.now() / 1000));
    const forged = await route({ [SESSION_HEADER]: encodeSessionHeader({ ...auth, client: '0x' + '11'.repeat(20) }) });
    expect(forged.status).toBe(401);
    expect(forged.body.error).toBe('session authorisation is not signed by the client it names');
  });
});
