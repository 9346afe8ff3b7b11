// contracts/connect.ts's chain-id check, which every chain command and the settler's start run first: the right chain
// passes, another chain is WrongChainError (a configuration error), and an endpoint that takes the connection and never
// answers is an error after the check's deadline, not a five-minute silence (ethers' own timeout).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { chainReaderLazily, checkChainId, WrongChainError } from '../contracts/connect.ts';
import { startDevChain, type DevChain } from '../contracts/dev-chain.ts';
import { startScriptedOrigin, tempDir } from './helpers/net.ts';

let tmp: Awaited<ReturnType<typeof tempDir>>;
let dev: DevChain;
let hole: Awaited<ReturnType<typeof startScriptedOrigin>>;

beforeAll(async () => {
  tmp = await tempDir();
  dev = await startDevChain({ out: join(tmp.dir, 'chain'), port: 0, challengeWindowSeconds: 60 });
  hole = await startScriptedOrigin(() => undefined); // takes the request, never answers
}, 120_000);
afterAll(async () => {
  await hole?.close();
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
    const provider = chainReaderLazily(hole.url, dev.file);
    try {
      const err = await checkChainId(provider, hole.url, dev.file, 200).catch((e: unknown) => e);
      expect(err).not.toBeInstanceOf(WrongChainError);
      expect((err as Error).message).toBe(`cannot reach the chain at ${hole.url}: no answer within 0.2 s`);
      expect(hole.requests.length).toBeGreaterThan(0); // it did ask
    } finally {
      provider.destroy();
    }
  });
});
