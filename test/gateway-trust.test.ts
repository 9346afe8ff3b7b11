// The gateway does not take a node's word for its URL: each attack from issue #8 on loopback, shown working with the
// defence switched off and failing with it on (docs/security.md lists them).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, bearerMatches, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig, type GatewayConfig } from '../gateway/config.ts';
import { ALL_NODE_CHECKS } from '../gateway/registry.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { addressRange, isPublicAddress, resolveNodeHost } from '../gateway/node-address.ts';
import { PinnedDispatcher } from '../gateway/pinned-dispatcher.ts';
import { parseNodeUrl } from '../protocol/node-url.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';
import { allOnesSummary, startIdentityServer, startScriptedNode, type ScriptedNode } from './helpers/scripted-node.ts';

const PARIS = { lat: 48.8566, lon: 2.3522 };
const BERLIN = { lat: 52.52, lon: 13.405 };
const CLIENT = BERLIN; // 880 km from the only honest node

describe('node URLs: origin only, public addresses only', () => {
  it('accepts scheme://host[:port] and refuses paths, queries, fragments, user-info and other schemes', () => {
    expect(parseNodeUrl('HTTP://Node.Example:8080/')).toMatchObject({ ok: true, url: 'http://node.example:8080', port: 8080 });
    expect(parseNodeUrl('https://[2606:4700::1]')).toMatchObject({ ok: true, url: 'https://[2606:4700::1]', hostname: '2606:4700::1', port: 443 });
    for (const [bad, why] of [
      ['http://127.0.0.1:9/internal/admin?cmd', /path/],
      ['http://node.example?x', /query/],
      ['http://node.example/#x', /fragment/],
      ['http://user:pw@node.example', /user-info/],
      ['http://@node.example', /user-info/],
      ['ftp://node.example', /scheme/],
      ['not a url', /does not parse/],
    ] as const) {
      const r = parseNodeUrl(bad);
      expect(r.ok, bad).toBe(false);
      if (!r.ok) expect(r.reason, bad).toMatch(why);
    }
  });

  it('calls only ordinary public unicast addresses public, IPv4 and IPv6, mapped or not', () => {
    for (const ip of ['8.8.8.8', '2606:4700::1111', '::ffff:8.8.8.8']) expect(isPublicAddress(ip), ip).toBe(true);
    const refused: Record<string, string> = {
      '127.0.0.1': 'loopback', '127.9.9.9': 'loopback', '::1': 'loopback', '::ffff:127.0.0.1': 'loopback', '::ffff:7f00:1': 'loopback',
      '10.1.2.3': 'private', '172.16.0.1': 'private', '192.168.1.1': 'private', '::ffff:10.0.0.1': 'private',
      '169.254.169.254': 'linkLocal', 'fe80::1': 'linkLocal', 'fc00::1': 'uniqueLocal',
      '224.0.0.1': 'multicast', 'ff02::1': 'multicast', '0.0.0.0': 'unspecified', '::': 'unspecified',
      '100.64.0.1': 'carrierGradeNat', '2002:7f00:1::1': '6to4', '64:ff9b::a00:1': 'rfc6052',
    };
    for (const [ip, range] of Object.entries(refused)) {
      expect(addressRange(ip), ip).toBe(range);
      expect(isPublicAddress(ip), ip).toBe(false);
    }
    expect(addressRange('not-an-ip')).toBeNull();
  });

  it('resolves a hostname once and refuses it if any of its addresses is not public', async () => {
    const lookup = (answers: string[]) => async () => answers.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    expect(await resolveNodeHost('node.example', { allowPrivate: false, lookup: lookup(['8.8.4.4']) })).toEqual({ ok: true, address: '8.8.4.4', family: 4 });
    const mixed = await resolveNodeHost('rebind.example', { allowPrivate: false, lookup: lookup(['8.8.4.4', '10.0.0.5']) });
    expect(mixed).toMatchObject({ ok: false, reason: expect.stringMatching(/rebind\.example resolves to 10\.0\.0\.5 is a private address/) });
    expect(await resolveNodeHost('localhost', { allowPrivate: false })).toMatchObject({ ok: false, reason: expect.stringMatching(/loopback/) });
    expect(await resolveNodeHost('::ffff:127.0.0.1', { allowPrivate: false })).toMatchObject({ ok: false });
    expect(await resolveNodeHost('localhost', { allowPrivate: true })).toMatchObject({ ok: true });
    expect(await resolveNodeHost('nx.invalid', { allowPrivate: true, lookup: async () => Promise.reject(Object.assign(new Error('x'), { code: 'ENOTFOUND' })) })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/ENOTFOUND/),
    });
  });

  it('connects a verified origin to its checked address (no second DNS lookup) and refuses every other origin', async () => {
    const target = await startScriptedOrigin((req, res) => void res.writeHead(200).end(`host ${req.headers.host}`));
    const pinned = new PinnedDispatcher({ timeoutMs: 5000 });
    try {
      const port = new URL(target.url).port;
      // A name that resolves nowhere: only the pin can take the request to 127.0.0.1.
      pinned.pin(`http://node.invalid:${port}`, '127.0.0.1');
      const ok = await request(`http://node.invalid:${port}/shard/x`, { dispatcher: pinned.agent });
      expect(await ok.body.text()).toBe(`host node.invalid:${port}`);
      await expect(request(`${target.url}/internal`, { dispatcher: pinned.agent })).rejects.toMatchObject({ code: 'ENOTVERIFIED' });
      expect(target.requests).toEqual(['/shard/x']);
    } finally {
      await pinned.close();
      await target.close();
    }
  });

  it('compares the admin token in constant time, by hash', () => {
    expect(bearerMatches('Bearer sekrit', 'sekrit')).toBe(true);
    expect(bearerMatches('Bearer sekri', 'sekrit')).toBe(false);
    expect(bearerMatches(undefined, 'sekrit')).toBe(false);
    expect(bearerMatches('Bearer sekrit-and-more', 'sekrit')).toBe(false);
  });
});

describe('registration on loopback', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let geoip: GeoIp;
  let honest: EdgeNode;
  let trusting: Gateway;
  let checking: Gateway;
  const gateways: Gateway[] = [];
  const scripted: ScriptedNode[] = [];

  const gateway = async (over: Partial<GatewayConfig>): Promise<Gateway> => {
    const gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, ticketKeyFile: join(tmp.dir, 'ticket.pem'), allowPrivateNodes: true, ...over }), { geoip, sweepEveryMs: 0 });
    gateways.push(gw);
    return gw;
  };
  const scriptedNode = async (...args: Parameters<typeof startScriptedNode>): Promise<ScriptedNode> => {
    const n = await startScriptedNode(...args);
    scripted.push(n);
    return n;
  };
  /** How many of the dataset's shards `node` is the primary for, for a client at CLIENT. */
  const primaryFor = async (gw: Gateway, node: string): Promise<number> => {
    let n = 0;
    for (const s of manifest.shards) {
      const res = await request(`${gw.url}/v1/route?dataset=sample&shard=${s.sha256}&near=${CLIENT.lat},${CLIENT.lon}&count=1`);
      const body = (await res.body.json()) as { candidates: { node: string }[] };
      if (body.candidates[0]?.node === node) n++;
    }
    return n;
  };

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 64, shardSize: 4096 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
    // The same honest Paris node registers with a gateway that trusts what nodes say, and one that checks.
    trusting = await gateway({ nodeChecks: { ...ALL_NODE_CHECKS, urlProof: false, cacheSummary: false } });
    checking = await gateway({});
    honest = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [trusting.url, checking.url], location: PARIS, cacheDir: null }));
    await until('honest node registered with both', () => trusting.registry.nodes.get(honest.address)?.healthy === true && checking.registry.nodes.get(honest.address)?.healthy === true);
  });
  afterAll(async () => {
    for (const n of scripted) await n.close();
    await honest?.close();
    for (const g of gateways) await g.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('hijack: a fresh key with the honest node\'s URL, a location next to the client and an all-ones filter takes every shard, unless the URL must be proved', async () => {
    const hijack = { location: CLIENT, capacity: { uploadBytesPerSecond: 0, cacheBytes: 0 }, summary: () => allOnesSummary() };
    // Defence off: the gateway takes the URL as announced.
    const taken = await scriptedNode({ gatewayUrl: trusting.url, url: honest.url, ...hijack });
    await until('hijacker registered', () => trusting.registry.nodes.get(taken.address)?.healthy === true);
    await until('hijacker heartbeat', () => trusting.registry.nodes.get(taken.address)?.bloom !== null);
    expect(await primaryFor(trusting, taken.address)).toBe(64);

    // Defence on: the URL is held by the node that proved it.
    const refused = await scriptedNode({ gatewayUrl: checking.url, url: honest.url, ...hijack });
    expect((await refused.next('error')).reason).toMatch(/already registered by node/);
    expect((await refused.closed).code).toBe(4000);
    expect(checking.registry.nodes.has(refused.address)).toBe(false);
    expect(await primaryFor(checking, honest.address)).toBe(64);
  });

  it('hijack: any URL the registrant does not answer at with its own key is refused', async () => {
    // A plain server that is not a node (404 on the identity route).
    const bystander = await startScriptedOrigin((_req, res) => void res.writeHead(404).end());
    try {
      const n = await scriptedNode({ gatewayUrl: checking.url, url: bystander.url, location: CLIENT });
      expect((await n.next('error')).reason).toMatch(/url proof failed .*bad-status/);
      expect(bystander.requests).toHaveLength(1);
      expect(bystander.requests[0]).toMatch(/^\/\.well-known\/edgeshard\/identity\?gateway=.*&nonce=[0-9a-f]{32}$/);
    } finally {
      await bystander.close();
    }
    // A node whose server signs with another key (a relay in front of someone else's node).
    const other = await startIdentityServer(new Wallet(Wallet.createRandom().privateKey));
    try {
      const n = await scriptedNode({ gatewayUrl: checking.url, url: other.url, location: CLIENT });
      expect((await n.next('error')).reason).toMatch(/signed by another key/);
    } finally {
      await other.close();
    }
    // A node that answers, but with a signature over another URL (its honest answer relayed from elsewhere).
    const wallet = new Wallet(Wallet.createRandom().privateKey);
    const relay = await startIdentityServer(wallet, { claimedUrl: () => 'http://127.0.0.1:1' });
    try {
      const n = await scriptedNode({ gatewayUrl: checking.url, wallet, url: relay.url });
      expect((await n.next('error')).reason).toMatch(/not for this URL/);
    } finally {
      await relay.close();
    }
  });

  it('SSRF: a registrant aiming the gateway at an internal service reaches it only with private nodes allowed and URL proof off', async () => {
    const internal = await startScriptedOrigin((_req, res) => void res.writeHead(404).end('internal admin'));
    const internalPort = new URL(internal.url).port;
    try {
      // Defences off: the gateway registers it and its probe reaches the internal service.
      const open = await gateway({ adminToken: 'sekrit', nodeChecks: { ...ALL_NODE_CHECKS, urlProof: false } });
      const n = await scriptedNode({ gatewayUrl: open.url, url: internal.url, location: PARIS });
      await until('registered', () => open.registry.nodes.get(n.address)?.healthy === true);
      await open.prober.probeAll();
      expect(internal.requests.some((r) => r.startsWith('/shard/'))).toBe(true);
      // Even then /v1/nodes is no oracle: a category for everyone, the raw outcome only for the admin.
      const anon = (await (await request(`${open.url}/v1/nodes`)).body.json()) as { nodes: { id: string; probes: Record<string, unknown>[] }[] };
      const probe = anon.nodes.find((x) => x.id === n.address)!.probes.at(-1)!;
      expect(probe).toMatchObject({ ok: false, failure: 'bad-status' });
      // The raw outcome is the admin's `detail` ('status 404' here). A bare /404/ also matched this run's random
      // port or ids (a node on port 40461 failed it), so look for the detail itself.
      for (const p of anon.nodes.flatMap((x) => x.probes)) expect(p).not.toHaveProperty('detail');
      expect(JSON.stringify(anon)).not.toMatch(/status 404|ECONNREFUSED|short body|address/);
      const admin = (await (await request(`${open.url}/v1/nodes`, { headers: { authorization: 'Bearer sekrit' } })).body.json()) as typeof anon;
      expect(admin.nodes.find((x) => x.id === n.address)!.probes.at(-1)).toMatchObject({ failure: 'bad-status', detail: 'status 404' });

      // Defence on (the default: private addresses refused): refused before any connection.
      const strict = await gateway({ allowPrivateNodes: false });
      const before = internal.requests.length;
      const a = await scriptedNode({ gatewayUrl: strict.url, url: internal.url, location: PARIS });
      expect((await a.next('error')).reason).toMatch(/127\.0\.0\.1 is a loopback address/);
      const b = await scriptedNode({ gatewayUrl: strict.url, url: `http://127.0.0.1:${internalPort}/internal/admin?cmd`, location: PARIS });
      expect((await b.next('error')).reason).toMatch(/url has a path/);
      const c = await scriptedNode({ gatewayUrl: strict.url, url: `http://localhost:${internalPort}`, location: PARIS });
      expect((await c.next('error')).reason).toMatch(/localhost resolves to .* loopback address/);
      expect(internal.requests.length).toBe(before);
      expect(await strict.metrics.registry.metrics()).toMatch(/edgeshard_gateway_registrations_refused_total 3/);
      // With private nodes allowed but the URL proof on, the internal service gets one identity request and the
      // registrant learns only a category.
      const d = await scriptedNode({ gatewayUrl: checking.url, url: internal.url, location: PARIS });
      expect((await d.next('error')).reason).toMatch(/url proof failed .*: bad-status;/);
      expect(internal.requests.slice(before).every((r) => r.startsWith('/.well-known/edgeshard/identity?'))).toBe(true);
    } finally {
      await internal.close();
    }
  });

  it('a URL its node moved away from is free again: the next key to prove it registers there, where before the old key held it until the gateway restarted', async () => {
    const mover = new Wallet(Wallet.createRandom().privateKey);
    let first = await startIdentityServer(mover);
    const second = await startIdentityServer(mover);
    try {
      const before = await scriptedNode({ gatewayUrl: checking.url, wallet: mover, url: first.url, location: PARIS });
      await until('registered at its first URL', () => checking.registry.nodes.get(before.address)?.url === first.url);
      // The same key comes back at another URL (a new host, a new port): its old connection is replaced.
      const after = await scriptedNode({ gatewayUrl: checking.url, wallet: mover, url: second.url, location: PARIS });
      await after.next('welcome');
      expect(checking.registry.nodes.get(mover.address.toLowerCase())?.url).toBe(second.url);
      expect((await before.closed).code).toBe(4001);
      // The first address changes hands (a recycled cloud address): its new operator proves it with their own key.
      const port = Number(new URL(first.url).port);
      await first.close();
      const heir = new Wallet(Wallet.createRandom().privateKey);
      first = await startIdentityServer(heir, { port });
      const taker = await scriptedNode({ gatewayUrl: checking.url, wallet: heir, url: first.url, location: PARIS });
      await until('the heir is welcomed or refused', () => taker.inbox.some((m) => m.type === 'welcome' || m.type === 'error'));
      expect(taker.inbox.find((m) => m.type === 'error')).toBeUndefined();
      expect(checking.registry.nodes.get(taker.address)?.url).toBe(first.url);
      expect(first.challenges).toBe(1); // the heir's server was asked for the heir's proof
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('answers a malformed percent-encoding in a dataset name with 400 and a JSON reason', async () => {
    const res = await request(`${checking.url}/d/%zz/x`);
    expect(res.statusCode).toBe(400);
    expect(((await res.body.json()) as { error: string }).error).toMatch(/malformed percent-encoding/);
  });
});

describe('the node\'s identity route', () => {
  it('signs (gateway, nonce, its own public URL) with its key, and refuses malformed challenges', async () => {
    const { IDENTITY_PATH, recoverUrlProofSigner } = await import('../protocol/identity.ts');
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: 'http://127.0.0.1:1', open: false, gateways: [], cacheDir: null }));
    try {
      const nonce = 'ab'.repeat(16);
      const res = await request(`${node.url}${IDENTITY_PATH}?gateway=gw-1&nonce=${nonce}`);
      const body = (await res.body.json()) as { address: string; url: string; signature: string };
      expect(res.statusCode).toBe(200);
      expect(body.url).toBe(node.url);
      expect(recoverUrlProofSigner('gw-1', nonce, node.url, body.signature)).toBe(node.address);
      // Not a registration signature, and not valid for any other URL, gateway or nonce.
      expect(recoverUrlProofSigner('gw-2', nonce, node.url, body.signature)).not.toBe(node.address);
      expect(recoverUrlProofSigner('gw-1', nonce, 'http://127.0.0.1:1', body.signature)).not.toBe(node.address);
      for (const q of ['gateway=gw-1', `nonce=${nonce}`, `gateway=gw%0A1&nonce=${nonce}`, 'gateway=gw-1&nonce=xyz']) {
        const bad = await request(`${node.url}${IDENTITY_PATH}?${q}`);
        expect(bad.statusCode, q).toBe(400);
        await bad.body.text();
      }
    } finally {
      await node.close();
    }
  });
});

describe('the identity route\'s signature budget', () => {
  it('signs a burst, then as many per second as the rate, whatever the demand', async () => {
    const { SignatureBudget } = await import('../edge-node/identity-budget.ts');
    const budget = new SignatureBudget(10, 20);
    let granted = 0;
    for (let i = 0; i < 100; i++) if (budget.take(0)) granted++;
    expect(granted).toBe(20);
    // One second later: ten more, not a hundred.
    granted = 0;
    for (let i = 0; i < 100; i++) if (budget.take(1000)) granted++;
    expect(granted).toBe(10);
    // A clock that steps back mints nothing.
    expect(budget.take(500)).toBe(false);
  });
});
