// The chain commands check their arguments before they touch a chain: a bad token amount or --node address is a
// usage error (exit 2) naming the value, even with no chain, key file or contracts file anywhere.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../cli/main.ts';

async function cli(...argv: string[]): Promise<{ code: number; err: string }> {
  let err = '';
  const error = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void (err += `${a.join(' ')}\n`));
  try {
    return { code: await main(argv), err };
  } finally {
    error.mockRestore();
  }
}

const NOWHERE = ['--rpc', 'http://127.0.0.1:9', '--contracts', '/nonexistent/contracts.json', '--key-file', '/nonexistent/key'];

describe('chain command arguments', () => {
  afterEach(() => vi.restoreAllMocks());

  it('token amounts: deposit AMOUNT, stake add AMOUNT, stake register --stake', async () => {
    expect(await cli('deposit', 'lots', ...NOWHERE)).toEqual({ code: 2, err: 'edgeshard deposit: AMOUNT "lots" is not a token amount (e.g. 1000 or 0.5)\n' });
    expect(await cli('stake', 'add', '1.2.3', ...NOWHERE)).toEqual({ code: 2, err: 'edgeshard stake add: AMOUNT "1.2.3" is not a token amount (e.g. 1000 or 0.5)\n' });
    expect(await cli('stake', 'register', '--stake', 'lots', ...NOWHERE)).toEqual({ code: 2, err: 'edgeshard stake register: --stake "lots" is not a token amount (e.g. 1000 or 0.5)\n' });
  });

  it('--node: stake status, rewards claim', async () => {
    expect(await cli('rewards', 'claim', '--settler', 'http://127.0.0.1:9', '--node', 'nope', ...NOWHERE)).toEqual({ code: 2, err: 'edgeshard rewards claim: --node "nope" is not an Ethereum address\n' });
    expect(await cli('stake', 'status', '--node', '0x123', ...NOWHERE)).toEqual({ code: 2, err: 'edgeshard stake status: --node "0x123" is not an Ethereum address\n' });
  });
});
