// Every option that takes an http(s) URL answers a bad one with a usage error that names the flag and the value,
// through the command's own option spec (so every other option has its default).
import { describe, expect, it } from 'vitest';
import { parseCommand, UsageError } from '../protocol/cli/options.ts';
import { gatewayCommand } from '../gateway/cli.ts';
import { gatewayConfigFromSettings } from '../gateway/config.ts';
import { nodeCommand } from '../edge-node/cli.ts';
import { nodeConfigFromSettings } from '../edge-node/config.ts';
import { fetchCommand, fetchOptionsFromSettings } from '../client/cli.ts';

const gateway = (argv: string[]) => gatewayConfigFromSettings(parseCommand(gatewayCommand.spec, ['--origin', 'http://o', '--dataset', 'sample', ...argv], {}).settings);
const node = (argv: string[]) => nodeConfigFromSettings(parseCommand(nodeCommand.spec, ['--origin', 'http://o', ...argv], {}).settings);
const fetch = (gateways: string) => {
  const { settings, positionals } = parseCommand(fetchCommand.spec, [gateways, 'sample', '--out', '/tmp/x'], {});
  return fetchOptionsFromSettings(settings, positionals);
};

function usageError(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('no usage error');
}

describe('http(s) URL options', () => {
  it('gateway --origin, --settler and --rewards-from', () => {
    expect(usageError(() => gatewayConfigFromSettings(parseCommand(gatewayCommand.spec, ['--origin', 'ftp://o', '--dataset', 'sample'], {}).settings))).toBe(
      '--origin "ftp://o": expected an http(s) URL such as http://127.0.0.1:8000; ftp: URLs are not supported',
    );
    expect(gateway(['--settler', 'http://127.0.0.1:8700']).settlerUrl).toBe('http://127.0.0.1:8700');
    expect(gateway(['--rewards-from', 'https://s.example/']).rewardsUrl).toBe('https://s.example/');
    expect(usageError(() => gateway(['--settler', 'nope']))).toBe('--settler "nope": expected an http(s) URL such as http://127.0.0.1:8700; this is not a URL');
    expect(usageError(() => gateway(['--settler', 'ftp://s']))).toBe('--settler "ftp://s": expected an http(s) URL such as http://127.0.0.1:8700; ftp: URLs are not supported');
    expect(usageError(() => gateway(['--rewards-from', 'nope']))).toBe('--rewards-from "nope": expected an http(s) URL such as http://127.0.0.1:8700; this is not a URL');
    expect(usageError(() => gateway(['--rewards-from', 'ftp://s']))).toBe('--rewards-from "ftp://s": expected an http(s) URL such as http://127.0.0.1:8700; ftp: URLs are not supported');
  });

  it('node --origin, --settler and --rpc', () => {
    const ok = node(['--settler', 'http://a:1/, https://b', '--rpc', 'http://127.0.0.1:8545']);
    expect(ok.settlers).toEqual(['http://a:1', 'https://b']);
    expect(ok.chainRpc).toBe('http://127.0.0.1:8545');
    expect(usageError(() => nodeConfigFromSettings(parseCommand(nodeCommand.spec, ['--origin', 'nope'], {}).settings))).toBe('--origin "nope": expected an http(s) URL such as http://127.0.0.1:8000; this is not a URL');
    expect(usageError(() => nodeConfigFromSettings(parseCommand(nodeCommand.spec, ['--origin', 'ftp://o'], {}).settings))).toBe('--origin "ftp://o": expected an http(s) URL such as http://127.0.0.1:8000; ftp: URLs are not supported');
    expect(usageError(() => node(['--settler', 'http://a,nope']))).toBe('--settler "nope": expected an http(s) URL such as http://127.0.0.1:8700; this is not a URL');
    expect(usageError(() => node(['--settler', 'ftp://s']))).toBe('--settler "ftp://s": expected an http(s) URL such as http://127.0.0.1:8700; ftp: URLs are not supported');
    expect(usageError(() => node(['--settler', 'http://s', '--rpc', 'nope']))).toBe('--rpc "nope": expected an http(s) URL such as http://127.0.0.1:8545; this is not a URL');
    expect(usageError(() => node(['--settler', 'http://s', '--rpc', 'ws://r']))).toBe('--rpc "ws://r": expected an http(s) URL such as http://127.0.0.1:8545; ws: URLs are not supported');
  });

  it('fetch GATEWAY', () => {
    expect(fetch('http://a,https://b').gateway).toEqual(['http://a', 'https://b']);
    expect(usageError(() => fetch('http://a,nope'))).toBe('gateway "nope": expected an http(s) URL such as http://gateway.example.org:8443 (several replicas: comma-separated); this is not a URL');
    expect(usageError(() => fetch('ftp://a'))).toBe('gateway "ftp://a": expected an http(s) URL such as http://gateway.example.org:8443 (several replicas: comma-separated); ftp: URLs are not supported');
  });
});
