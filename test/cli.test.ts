// The CLI as operators run it: a real child process, real flags, env vars and config files.
import { describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { locationSetting, parseCommand, type CommandSpec } from '../protocol/cli/options.ts';
import { startOrigin } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { parseManifest, manifestId } from '../protocol/manifest.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { leafHash } from '../protocol/chunks.ts';
import { tempDir } from './helpers/net.ts';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');

describe('option precedence', () => {
  const spec: CommandSpec = {
    name: 't',
    usage: 't',
    summary: 't',
    options: [
      { name: 'cache-size', type: 'string', default: '10GB', description: '' },
      { name: 'port', type: 'string', default: '8080', description: '' },
      { name: 'verbose', type: 'boolean', default: false, description: '' },
    ],
  };
  it('takes flag over env over config file over default', async () => {
    const { dir, cleanup } = await tempDir();
    const config = join(dir, 'c.json');
    await writeFile(config, JSON.stringify({ 'cache-size': '1GB', port: '1', verbose: true }));
    const env = { EDGESHARD_T_PORT: '2', EDGESHARD_T_CONFIG: config };
    const { settings } = parseCommand(spec, ['--port', '3'], env);
    expect(settings).toEqual({ 'cache-size': '1GB', port: '3', verbose: true });
    expect(parseCommand(spec, [], env).settings.port).toBe('2');
    expect(parseCommand(spec, [], {}).settings).toEqual({ 'cache-size': '10GB', port: '8080', verbose: false });
    await writeFile(config, JSON.stringify({ colour: 'red' }));
    expect(() => parseCommand(spec, [], env)).toThrow(/unknown setting "colour"/);
    expect(() => parseCommand(spec, ['--nope'], {})).toThrow(/nope/);
    await cleanup();
  });
});

describe('location settings', () => {
  it('takes --lat and --lon together, in range, or neither', () => {
    expect(locationSetting({})).toBeNull();
    expect(locationSetting({ lat: '48.85', lon: '2.35' })).toEqual({ lat: 48.85, lon: 2.35 });
    expect(() => locationSetting({ lat: '48.85' })).toThrow(/go together/);
    expect(() => locationSetting({ lat: '91', lon: '0' })).toThrow(/-90\.\.90/);
    expect(() => locationSetting({ lat: 'north', lon: '0' })).toThrow(/go together/);
  });
});

// Each child process starts tsx: seconds apiece on a loaded machine, so these tests get a larger budget.
describe('edgeshard CLI', { timeout: 120_000 }, () => {
  it('prints help for each command and exits 2 on bad usage with a clear message', async () => {
    const top = await run('node', [CLI, '--help']);
    expect(top.stdout).toContain('dataset pack');
    const nodeHelp = await run('node', [CLI, 'node', '--help']);
    expect(nodeHelp.stdout).toContain('--max-upload');
    expect(nodeHelp.stdout).toContain('EDGESHARD_');
    const bad = await run('node', [CLI, 'node', '--origin', 'http://127.0.0.1:1', '--cache-size', '50XB']).catch((e) => e);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--cache-size "50XB"');
    const unknown = await run('node', [CLI, 'frobnicate']).catch((e) => e);
    expect(unknown.code).toBe(2);
  });

  it('packs a directory into a manifest with per-shard sha256', async () => {
    const { dir, cleanup } = await tempDir();
    await mkdir(join(dir, 'ds', 'train'), { recursive: true });
    await writeFile(join(dir, 'ds', 'train', 'a.tar'), 'alpha');
    await writeFile(join(dir, 'ds', 'b.parquet'), 'beta');
    const { stdout } = await run('node', [CLI, 'dataset', 'pack', join(dir, 'ds'), '--name', 'tiny']);
    const manifest = parseManifest(await readFile(join(dir, 'ds', 'manifest.json'), 'utf8'));
    // One chunk each: the Merkle root of a one-chunk shard is its only leaf hash.
    expect(manifest.shards).toEqual([
      { path: 'b.parquet', size: 4, sha256: sha256Hex('beta'), chunkRoot: leafHash(Buffer.from('beta')).toString('hex') },
      { path: 'train/a.tar', size: 5, sha256: sha256Hex('alpha'), chunkRoot: leafHash(Buffer.from('alpha')).toString('hex') },
    ]);
    expect(manifest.chunkSize).toBe(1024 * 1024);
    expect(stdout).toContain(manifestId(manifest));
    // Packing again (the manifest is now in the directory) gives the same manifest.
    await run('node', [CLI, 'dataset', 'pack', join(dir, 'ds'), '--name', 'tiny']);
    expect(manifestId(parseManifest(await readFile(join(dir, 'ds', 'manifest.json'), 'utf8')))).toBe(manifestId(manifest));
    await cleanup();
  });

  it('runs a node from flags, env and a config file, serves, and drains on SIGTERM', async () => {
    const { dir, cleanup } = await tempDir();
    const { manifest } = await writeSampleDataset(join(dir, 'origin', 'sample'), { shards: 2, shardSize: 2_000_000 });
    const origin = await startOrigin(join(dir, 'origin'));
    const config = join(dir, 'node.json');
    await writeFile(config, JSON.stringify({ 'cache-dir': join(dir, 'cache'), 'max-upload': '4MB/s', open: true, 'key-file': join(dir, 'key.json') }));
    const child = spawn('node', [CLI, 'node', '--port', '0', '--host', '127.0.0.1', '--config', config, '--manifest', 'sample/manifest.json'], {
      env: { ...process.env, EDGESHARD_NODE_ORIGIN: origin.url },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          // The start lines name the node's address, where it listens and the cache it restored.
          const m = /edge node 0x[0-9a-f]{40} on (http:\/\/[^ ]+)[^\n]*\n {2}cache: restored 0 objects/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`node exited early with ${code}`)));
      });
      const shard = manifest.shards[0]!;
      // 2 MB at 4 MB/s takes about half a second: SIGTERM lands once the response has started, and it must complete.
      const response = await request(`${url}/shard/${shard.sha256}`);
      child.kill('SIGTERM');
      const body = Buffer.from(await response.body.arrayBuffer());
      expect(sha256Hex(body)).toBe(shard.sha256);
      const code = await new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', resolve)));
      expect(code).toBe(0);
      // The identity key was created on first start, readable by its owner only.
      const { stat } = await import('node:fs/promises');
      expect((await stat(join(dir, 'key.json'))).mode & 0o777).toBe(0o600);
    } finally {
      child.kill('SIGKILL');
      await origin.close();
      await cleanup();
    }
  });
});
