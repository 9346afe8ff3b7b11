// Options that the server commands (node, gateway, settler) share mean the same in each: --log-level here.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../cli/main.ts';
import { generateTicketKey } from '../protocol/tickets.ts';

async function cli(argv: string[]): Promise<{ code: number; err: string }> {
  let err = '';
  const error = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void (err += `${a.join(' ')}\n`));
  try {
    return { code: await main(argv), err };
  } finally {
    error.mockRestore();
  }
}

const COMMANDS: Record<string, string[]> = {
  node: ['node', '--origin', 'http://127.0.0.1:9', '--open', '--host', '127.0.0.1', '--port', '0'],
  gateway: ['gateway', '--origin', 'http://127.0.0.1:9', '--dataset', 'd', '--host', '127.0.0.1', '--port', '0'],
  settler: ['settler', '--gateway-keys', generateTicketKey().publicKeyB64, '--host', '127.0.0.1', '--port', '0'],
};

describe('--log-level', () => {
  afterEach(() => vi.restoreAllMocks());

  it('an unknown level is a usage error naming the flag and the levels, before anything starts', async () => {
    for (const [name, argv] of Object.entries(COMMANDS)) {
      expect(await cli([...argv, '--log-level', 'verbose'])).toEqual({
        code: 2,
        err: `edgeshard ${name}: --log-level "verbose": use one of silent, fatal, error, warn, info, debug, trace\n`,
      });
    }
  });
});
