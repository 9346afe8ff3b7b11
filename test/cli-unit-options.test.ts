// Options in units (sizes, rates, durations) parse the same way in every command, and a bad value is a usage error
// that names the flag and the units: through each command's own option spec, so every other option has its default.
import { describe, expect, it } from 'vitest';
import { parseCommand, UsageError, type Settings } from '../protocol/cli/options.ts';
import { gatewayCommand } from '../gateway/cli.ts';
import { gatewayConfigFromSettings } from '../gateway/config.ts';
import { nodeCommand } from '../edge-node/cli.ts';
import { nodeConfigFromSettings } from '../edge-node/config.ts';
import { fetchCommand, fetchOptionsFromSettings } from '../client/cli.ts';
import { DEFAULT_MAX_MANIFEST_BYTES } from '../protocol/manifest.ts';

const gatewaySettings = (argv: string[]) => parseCommand(gatewayCommand.spec, ['--origin', 'http://o', '--dataset', 'sample', ...argv], {}).settings;
const nodeSettings = (argv: string[]) => parseCommand(nodeCommand.spec, ['--origin', 'http://o', ...argv], {}).settings;
const fetchSettings = (argv: string[]) => parseCommand(fetchCommand.spec, ['--out', '/tmp/x', ...argv], {}).settings;
const gateway = (argv: string[]) => gatewayConfigFromSettings(gatewaySettings(argv));
const node = (argv: string[]) => nodeConfigFromSettings(nodeSettings(argv));
const fetch = (argv: string[]) => fetchOptionsFromSettings(fetchSettings(argv), ['http://gw', 'sample']);
const without = (s: Settings, key: string): Settings => Object.fromEntries(Object.entries(s).filter(([k]) => k !== key));

function usageError(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('no usage error');
}

const BAD_MiB = '--max-manifest-size "1M": say 1MB (powers of 1000) or 1MiB (powers of 1024)';
const NOT_A_SIZE = (flag: string, v: string) => `${flag} "${v}": expected a number with a unit such as 512MiB, 50GB or 1TB (units, any case: B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB (powers of 1024))`;

describe('--max-manifest-size (node, gateway, fetch)', () => {
  it('parses a size, defaults to 64 MiB (also when the settings lack it) and names the flag when wrong', () => {
    expect(node(['--max-manifest-size', '1MiB']).maxManifestBytes).toBe(1 << 20);
    expect(gateway(['--max-manifest-size', '1MiB']).maxManifestBytes).toBe(1 << 20);
    expect(fetch(['--max-manifest-size', '1MiB']).maxManifestBytes).toBe(1 << 20);
    expect(node([]).maxManifestBytes).toBe(DEFAULT_MAX_MANIFEST_BYTES);
    expect(gateway([]).maxManifestBytes).toBe(DEFAULT_MAX_MANIFEST_BYTES);
    expect(fetch([]).maxManifestBytes).toBe(DEFAULT_MAX_MANIFEST_BYTES);
    expect(nodeConfigFromSettings(without(nodeSettings([]), 'max-manifest-size')).maxManifestBytes).toBe(DEFAULT_MAX_MANIFEST_BYTES);
    expect(gatewayConfigFromSettings(without(gatewaySettings([]), 'max-manifest-size')).maxManifestBytes).toBe(DEFAULT_MAX_MANIFEST_BYTES);
    expect(fetchOptionsFromSettings(without(fetchSettings([]), 'max-manifest-size'), ['http://gw', 'sample']).maxManifestBytes).toBe(DEFAULT_MAX_MANIFEST_BYTES);
    expect(usageError(() => node(['--max-manifest-size', '1M']))).toBe(BAD_MiB);
    expect(usageError(() => gateway(['--max-manifest-size', '1M']))).toBe(BAD_MiB);
    expect(usageError(() => fetch(['--max-manifest-size', '1M']))).toBe(BAD_MiB);
    expect(usageError(() => fetch(['--max-manifest-size', 'big']))).toBe(NOT_A_SIZE('--max-manifest-size', 'big'));
  });
});

describe('the other unit options', () => {
  it('node sizes and rate', () => {
    expect(node(['--cache-size', '2GB', '--memory-cache', '1MiB', '--memory-max-object', '2MiB', '--max-upload', '8Mbps'])).toMatchObject({
      cacheBytes: 2e9,
      memoryBytes: 1 << 20,
      memoryMaxObjectBytes: 1 << 20,
      maxUploadBytesPerSecond: 1e6,
    });
    for (const flag of ['--cache-size', '--memory-cache', '--memory-max-object', '--max-request-body', '--unpaid-allowance']) {
      expect(usageError(() => node([flag, 'lots']))).toBe(NOT_A_SIZE(flag, 'lots'));
    }
    expect(usageError(() => node(['--max-upload', 'fast']))).toMatch(/^--max-upload "fast": expected a rate such as 200Mbps/);
  });

  it('gateway --startup-grace; fetch --gateway-patience, --source-patience, --split-threshold, --receipt-every', () => {
    expect(gateway(['--startup-grace', '2m']).startupGraceMs).toBe(120_000);
    expect(usageError(() => gateway(['--startup-grace', 'soon']))).toBe('--startup-grace "soon": expected a duration such as 30s, 500ms, 2m or 1h');
    expect(fetch(['--gateway-patience', '1h', '--source-patience', '500ms', '--split-threshold', '1KiB', '--key-file', '/k', '--receipt-every', '1MiB'])).toMatchObject({
      gatewayPatienceMs: 3_600_000,
      sourcePatienceMs: 500,
      splitThreshold: 1024,
      receiptEvery: 1 << 20,
    });
    expect(fetchOptionsFromSettings(without(fetchSettings([]), 'source-patience'), ['http://gw', 'sample']).sourcePatienceMs).toBe(30_000);
    expect(usageError(() => fetch(['--gateway-patience', 'x']))).toBe('--gateway-patience "x": expected a duration such as 30s, 500ms, 2m or 1h');
    expect(usageError(() => fetch(['--source-patience', 'x']))).toBe('--source-patience "x": expected a duration such as 30s, 500ms, 2m or 1h');
    expect(usageError(() => fetch(['--split-threshold', 'x']))).toBe(NOT_A_SIZE('--split-threshold', 'x'));
    expect(usageError(() => fetch(['--receipt-every', 'x']))).toBe(NOT_A_SIZE('--receipt-every', 'x'));
    expect(usageError(() => fetch(['--receipt-every', '1KiB']))).toBe('--receipt-every must be at least 64KiB');
  });
});
