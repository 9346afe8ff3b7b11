import { describe, expect, it } from 'vitest';
import { chmod, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeTicket, generateTicketKey, keyIdOf, publicKeyFromB64, signTicket, ticketKeyFromPem, ticketKeyToPem, verifyTicket } from '../protocol/tickets.ts';
import { BloomFilter } from '../protocol/bloom.ts';
import { loadOrCreateNodeKey, recoverChallengeSigner, recoverUrlProofSigner, signChallenge, signUrlProof } from '../protocol/identity.ts';
import { parseGatewayMessage, parseNodeMessage } from '../protocol/registry-messages.ts';
import { TicketGate, ticketFromUrl } from '../edge-node/ticket-gate.ts';
import { backoffDelayMs } from '../edge-node/registry-client.ts';
import { TicketIssuer } from '../gateway/ticket-issuer.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { tempDir } from './helpers/net.ts';

const shard = sha256Hex('a shard');
const other = sha256Hex('another shard');
const node = '0x' + 'ab'.repeat(20);

describe('tickets', () => {
  const key = generateTicketKey();
  const trusted = new Map([[key.keyId, key.publicKey]]);
  const now = 1_800_000_000;

  it('round-trips and verifies for the right node and shard', () => {
    const token = signTicket({ shard, node, expiresAt: now + 60 }, key);
    expect(token).toHaveLength(194);
    expect(decodeTicket(token)).toMatchObject({ shard, node, expiresAt: now + 60, keyId: key.keyId });
    expect(verifyTicket(token, { shard, node }, trusted, now)).toMatchObject({ ok: true });
  });

  it('refuses forged, expired, wrong-shard, wrong-node and untrusted tickets with a reason', () => {
    const token = signTicket({ shard, node, expiresAt: now + 60 }, key);
    const bytes = Buffer.from(token, 'base64url');
    bytes[10] = bytes[10]! ^ 1; // flip a bit in the signed shard field
    expect(verifyTicket(bytes.toString('base64url'), { shard, node }, trusted, now)).toEqual({ ok: false, reason: 'bad ticket signature' });
    expect(verifyTicket(token, { shard, node }, trusted, now + 60 + 31)).toEqual({ ok: false, reason: 'ticket expired' });
    expect(verifyTicket(token, { shard, node }, trusted, now + 60 + 29)).toMatchObject({ ok: true }); // clock skew allowance
    expect(verifyTicket(token, { shard: other, node }, trusted, now)).toEqual({ ok: false, reason: 'ticket is for another shard' });
    expect(verifyTicket(token, { shard, node: '0x' + 'cd'.repeat(20) }, trusted, now)).toEqual({ ok: false, reason: 'ticket is for another node' });
    const stranger = generateTicketKey();
    const forged = signTicket({ shard, node, expiresAt: now + 60 }, stranger);
    expect(verifyTicket(forged, { shard, node }, trusted, now)).toMatchObject({ ok: false, reason: expect.stringContaining('does not trust') });
    expect(verifyTicket('garbage', { shard, node }, trusted, now)).toEqual({ ok: false, reason: 'malformed ticket' });
  });

  it('keeps keys portable: PEM round trip and the announced public key', () => {
    const again = ticketKeyFromPem(ticketKeyToPem(key));
    expect(again.keyId).toBe(key.keyId);
    expect(keyIdOf(publicKeyFromB64(key.publicKeyB64))).toBe(key.keyId);
  });

  it('the issuer reuses a ticket within a window and renews it after', () => {
    let t = now * 1000;
    const issuer = new TicketIssuer({ key, validitySeconds: 300, windowSeconds: 60, now: () => t });
    const a = issuer.issue(node, shard);
    expect(issuer.issue(node, shard)).toBe(a);
    expect(issuer.issue(node, other)).not.toBe(a);
    t += 61_000;
    const b = issuer.issue(node, shard);
    expect(b).not.toBe(a);
    expect(decodeTicket(b)!.expiresAt).toBeGreaterThan(decodeTicket(a)!.expiresAt);
  });

  it('the node gate checks, caches verified tickets, and explains refusals', () => {
    let t = now * 1000;
    const gate = new TicketGate({ nodeAddress: node, open: false, now: () => t });
    const token = signTicket({ shard, node, expiresAt: now + 60 }, key);
    expect(gate.check(token, shard)).toContain('does not trust');
    gate.trustGatewayKeys([{ keyId: key.keyId, publicKey: key.publicKeyB64 }]);
    expect(gate.check(token, shard)).toBeNull();
    expect(gate.check(token, shard)).toBeNull(); // from the cache
    expect(gate.check(token, other)).toBe('ticket is for another shard');
    expect(gate.check(undefined, shard)).toContain('missing ticket');
    t += 120_000;
    expect(gate.check(token, shard)).toBe('ticket expired');
    expect(new TicketGate({ nodeAddress: node, open: true }).check(undefined, undefined)).toBeNull();
    // Pinned keys: announcements are ignored.
    const pinned = new TicketGate({ nodeAddress: node, open: false, pinnedKeys: [generateTicketKey().publicKeyB64], now: () => now * 1000 });
    pinned.trustGatewayKeys([{ keyId: key.keyId, publicKey: key.publicKeyB64 }]);
    expect(pinned.check(token, shard)).toContain('does not trust');
    expect(ticketFromUrl(`/shard/x?a=1&ticket=${token}`)).toBe(token);
    expect(ticketFromUrl('/shard/x')).toBeUndefined();
  });
});

describe('bloom filter', () => {
  it('has no false negatives and about the configured false-positive rate', () => {
    const members = Array.from({ length: 2000 }, (_, i) => sha256Hex(`in ${i}`));
    const f = BloomFilter.forCapacity(2000, 0.01);
    for (const m of members) f.add(m);
    expect(members.every((m) => f.has(m))).toBe(true);
    let fp = 0;
    for (let i = 0; i < 20_000; i++) if (f.has(sha256Hex(`out ${i}`))) fp++;
    expect(fp / 20_000).toBeLessThan(0.02);
    const copy = BloomFilter.fromSummary(JSON.parse(JSON.stringify(f.summary())));
    expect(members.every((m) => copy.has(m))).toBe(true);
    expect(() => BloomFilter.fromSummary({ ...f.summary(), bits: 64 })).toThrow(/bytes/);
  });
});

describe('node identity', () => {
  it('creates the key file 0600 once, reuses it, and refuses a world-readable one', async () => {
    const { dir, cleanup } = await tempDir();
    const file = join(dir, 'sub', 'node-key.json');
    const a = await loadOrCreateNodeKey(file);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const b = await loadOrCreateNodeKey(file);
    expect(b.address).toBe(a.address);
    await chmod(file, 0o644);
    await expect(loadOrCreateNodeKey(file)).rejects.toThrow(/chmod 600/);
    await writeFile(join(dir, 'bad.json'), 'nonsense', { mode: 0o600 });
    await expect(loadOrCreateNodeKey(join(dir, 'bad.json'))).rejects.toThrow(/not a valid key file/);
    await cleanup();
  });

  it('binds the challenge signature to gateway, nonce and URL', async () => {
    const { Wallet } = await import('ethers');
    const w = new Wallet(Wallet.createRandom().privateKey);
    const sig = await signChallenge(w, 'gw', 'n1', 'http://a');
    expect(recoverChallengeSigner('gw', 'n1', 'http://a', sig)).toBe(w.address.toLowerCase());
    expect(recoverChallengeSigner('gw', 'n2', 'http://a', sig)).not.toBe(w.address.toLowerCase());
    expect(recoverChallengeSigner('gw', 'n1', 'http://b', sig)).not.toBe(w.address.toLowerCase());
    expect(recoverChallengeSigner('gw', 'n1', 'http://a', '0x1234')).toBeNull();
    // The URL proof: the same rules, over its own text (a challenge signature is no URL proof).
    const proof = await signUrlProof(w, 'gw', 'n1', 'http://a');
    expect(recoverUrlProofSigner('gw', 'n1', 'http://a', proof)).toBe(w.address.toLowerCase());
    expect(recoverUrlProofSigner('gw', 'n1', 'http://a', sig)).not.toBe(w.address.toLowerCase());
    expect(recoverUrlProofSigner('gw', 'n1', 'http://a', '0x1234')).toBeNull();
  });
});

describe('registry messages', () => {
  it('accepts well-formed messages and rejects malformed ones with a reason', () => {
    const hello = { type: 'hello', address: node, signature: '0xsig', url: 'http://127.0.0.1:1/', capacity: { uploadBytesPerSecond: 1, cacheBytes: 2 }, version: '0.1.0', location: { lat: 1, lon: 2 } };
    expect(parseNodeMessage(JSON.stringify(hello))).toMatchObject({ type: 'hello', url: 'http://127.0.0.1:1' });
    expect(() => parseNodeMessage(JSON.stringify({ ...hello, url: 'file:///etc/passwd' }))).toThrow(/http/);
    expect(() => parseNodeMessage(JSON.stringify({ ...hello, location: { lat: 91, lon: 0 } }))).toThrow(/lat/);
    expect(() => parseNodeMessage('not json')).toThrow(/JSON/);
    expect(() => parseNodeMessage(JSON.stringify({ type: 'nope' }))).toThrow(/unknown message type/);
    expect(() => parseGatewayMessage(JSON.stringify({ type: 'prefetch', id: 'x', shards: ['../etc'] }))).toThrow(/sha256/);
    expect(parseGatewayMessage(JSON.stringify({ type: 'purge', id: 'x', shards: [shard] }))).toEqual({ type: 'purge', id: 'x', shards: [shard] });
  });
});

describe('reconnect backoff', () => {
  it('grows exponentially to a cap with full jitter', () => {
    expect(backoffDelayMs(0, 500, 30_000, () => 0.999)).toBe(499);
    expect(backoffDelayMs(3, 500, 30_000, () => 0.999)).toBe(3996);
    expect(backoffDelayMs(20, 500, 30_000, () => 0.999)).toBe(29_970);
    expect(backoffDelayMs(20, 500, 30_000, () => 0)).toBe(250);
    const samples = Array.from({ length: 200 }, () => backoffDelayMs(5, 500, 30_000));
    expect(new Set(samples).size).toBeGreaterThan(50); // jittered, not synchronized
  });
});
