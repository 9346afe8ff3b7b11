// contracts/connect.ts's chain-id check, which every chain command and the settler's start run first: the right chain
// passes, another chain is WrongChainError (a configuration error), and an endpoint that takes the connection and never
// answers is an error after the check's deadline, not a five-minute silence (ethers' own timeout).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { chainReaderLazily, checkChainId, WrongChainError } from '../contracts/connect.ts';
import { startDevChain, type DevChain } from '../contracts/dev-chain.ts';
import { tempDir } from './helpers/net.ts';

let tmp: Awaited<ReturnType<typeof tempDir>>;
let dev: DevChain;
let hole: Server;
const held = new Set<Socket>();
let holeUrl: string;

beforeAll(async () => {
  tmp = await tempDir();
  dev = await startDevChain({ out: join(tmp.dir, 'chain'), port: 0, challengeWindowSeconds: 60 });
  hole = createServer((socket) => void held.add(socket));
  await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
  holeUrl = `http://127.0.0.1:${(hole.address() as { port: number }).port}`;
}, 120_000);
afterAll(async () => {
  for (const s of held) s.destroy();
  await new Promise((resolve) => hole?.close(resolve));
  await dev?.close();
  await tmp?.cleanup();
});

describe('checkChainId', () => {
  it('passes the contracts file\'s chain and refuses another one by name', async () => {
    const other = { ...dev.file, chainId: dev.file.chainId + 1 };
    const provider = chainReaderLazily(dev.rpc, dev.file);
    const wrong = chainReaderLazily(dev.rpc, other);
    try {
      await checkChainId(provider, dev.rpc, dev.file);
      const err = await checkChainId(wrong, dev.rpc, other).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WrongChainError);
      expect((err as Error).message).toMatch(/has chain id \d+, the contracts file is for \d+/);
    } finally {
      provider.destroy();
      wrong.destroy();
    }
  });

  it('gives up on an endpoint that never answers at its deadline, saying so', async () => {
    const provider = chainReaderLazily(holeUrl, dev.file);
    try {
      const err = await checkChainId(provider, holeUrl, dev.file, 200).catch((e: unknown) => e);
      expect(err).not.toBeInstanceOf(WrongChainError);
      expect((err as Error).message).toBe(`cannot reach the chain at ${holeUrl}: no answer within 0.2 s`);
      expect(held.size).toBeGreaterThan(0); // it did ask
    } finally {
      provider.destroy();
    }
  });
});
