// The keyed client's receipt sender (client/receipts.ts) against a real HTTP server on loopback that records what
// arrives at POST /v1/receipts: receipts due at one node while its POST is in flight go together in the next one,
// and a source's URL is read once however many chunks it delivers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Agent } from 'undici';
import { readFile } from 'node:fs/promises';
import { secp256k1 } from '@noble/curves/secp256k1';
import { Wallet } from 'ethers';
import { ReceiptSender, openClientIdentity, preferOneShotSecp256k1, type ClientIdentity } from '../client/receipts.ts';
import type { Source } from '../client/sources.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { signClientTicket } from '../protocol/client-tickets.ts';
import { checkSessionAuthorisation } from '../protocol/session-auth.ts';
import { decodeReceipt } from '../protocol/receipts.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { tempDir } from './helpers/net.ts';

const MiB = 1024 * 1024;

interface Post {
  lines: string[];
  answer: (status: number, body: object) => void;
}

/** A node's receipt endpoint that hands each POST to the test, which answers it when it likes. */
function receiptServer(): Promise<{ url: string; server: Server; next: () => Promise<Post>; posts: Post[] }> {
  const posts: Post[] = [];
  const waiters: Array<(p: Post) => void> = [];
  let taken = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const post: Post = {
        lines: body.split('\n').filter((l) => l !== ''),
        answer: (status, json) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(json)),
      };
      posts.push(post);
      waiters.shift()?.(post);
    });
  });
  const next = (): Promise<Post> => {
    const i = taken++;
    return posts[i] ? Promise.resolve(posts[i]) : new Promise((resolve) => waiters.push(resolve));
  };
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server, next, posts })));
}

describe('the receipt sender', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let identity: ClientIdentity;
  const gatewayKey = generateTicketKey();
  const dispatcher = new Agent();

  beforeAll(async () => {
    tmp = await tempDir();
    identity = await openClientIdentity(join(tmp.dir, 'client-key.json'));
  });
  afterAll(async () => {
    await dispatcher.close();
    await tmp?.cleanup();
  });

  const ticketFor = (shard: string): string =>
    signClientTicket({ shard: sha256Hex(shard), node: '0x' + 'ab'.repeat(20), expiresAt: Math.floor(Date.now() / 1000) + 600, epoch: 1, byteCap: 64n * BigInt(MiB), client: identity.address, sessionKey: identity.session.publicHex }, gatewayKey);
  const bytesOf = (line: string): number => Number(decodeReceipt(line)!.bytes);

  it('sends the receipts that fall due at a node while its POST is in flight together in the next POST', async () => {
    const node = await receiptServer();
    try {
      const sender = new ReceiptSender({ identity, dispatcher, everyBytes: 4 * MiB });
      const a: Source = { kind: 'node', id: 'n', url: `${node.url}/sample/a.bin?ticket=${ticketFor('a')}` };
      const b: Source = { kind: 'node', id: 'n', url: `${node.url}/sample/b.bin?ticket=${ticketFor('b')}` };
      sender.verified(a, 4 * MiB);
      const first = await node.next();
      expect(first.lines.map(bytesOf)).toEqual([4 * MiB]);
      // While the first POST is unanswered: news for another ticket at the same node, and more for the first.
      sender.verified(b, 4 * MiB);
      sender.verified(a, 4 * MiB);
      first.answer(200, { accepted: 1 });
      const second = await node.next();
      expect(second.lines.map(bytesOf).sort()).toEqual([4 * MiB, 8 * MiB]);
      second.answer(200, { accepted: 2 });
      await sender.drain();
      expect(node.posts).toHaveLength(2);
      expect(sender.stats).toMatchObject({ signed: 3, delivered: 3, failed: 0, posts: 2 });
    } finally {
      node.server.close();
    }
  });

  it('counts the receipts a node refused in a batch as failed and the rest as delivered', async () => {
    const node = await receiptServer();
    try {
      const sender = new ReceiptSender({ identity, dispatcher, everyBytes: MiB });
      const a: Source = { kind: 'node', id: 'n', url: `${node.url}/x?ticket=${ticketFor('c')}` };
      const b: Source = { kind: 'node', id: 'n', url: `${node.url}/y?ticket=${ticketFor('d')}` };
      sender.verified(a, MiB);
      const first = await node.next();
      sender.verified(b, MiB);
      sender.verified(a, MiB);
      first.answer(200, { accepted: 1 });
      const second = await node.next();
      second.answer(400, { accepted: 1, stale: 0, rejected: [{ index: 0, reason: 'bad client signature on the receipt' }] });
      await sender.drain();
      expect(sender.stats).toMatchObject({ signed: 3, delivered: 2, failed: 1, posts: 2 });
      expect(sender.stats.lastError).toMatch(/HTTP 400 .*bad client signature/);
    } finally {
      node.server.close();
    }
  });

  it('the fetch command signs its one secp256k1 authorisation with a small base-point table, and it still verifies', async () => {
    const base = secp256k1.ProjectivePoint.BASE as unknown as { _WINDOW_SIZE?: number };
    expect(base._WINDOW_SIZE).toBe(8); // noble's default, which ethers' Wallet would fill in full
    await preferOneShotSecp256k1();
    expect(base._WINDOW_SIZE).toBe(4);
    const fresh = await openClientIdentity(join(tmp.dir, 'another-key.json'));
    expect(checkSessionAuthorisation(fresh.auth)).toBeNull();
    expect(fresh.auth.client).toBe(new Wallet(JSON.parse(await readFile(join(tmp.dir, 'another-key.json'), 'utf8')).privateKey).address.toLowerCase());
  });

  it('reads a source\'s URL once however many chunks it verifies, and still receipts every byte', async () => {
    const node = await receiptServer();
    try {
      const sender = new ReceiptSender({ identity, dispatcher, everyBytes: 64 * MiB });
      const url = `${node.url}/sample/e.bin?ticket=${ticketFor('e')}`;
      let reads = 0;
      const source: Source = {
        kind: 'node',
        id: 'n',
        get url() {
          reads++;
          return url;
        },
      };
      for (let i = 0; i < 100; i++) sender.verified(source, 64 * 1024);
      sender.final(source);
      const post = await node.next();
      expect(post.lines.map(bytesOf)).toEqual([100 * 64 * 1024]);
      post.answer(200, { accepted: 1 });
      await sender.drain();
      expect(reads).toBe(1);
      expect(sender.stats).toMatchObject({ signed: 1, delivered: 1 });
    } finally {
      node.server.close();
    }
  });
});
