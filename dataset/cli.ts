import type { Command } from '../protocol/cli/command.ts';
import { UsageError, stringSetting, intSetting } from '../protocol/cli/options.ts';
import { formatBytes, parseSize } from '../protocol/units.ts';
import { packDataset } from './pack.ts';
import { isValidChunkSize } from '../protocol/chunks.ts';
import { writeSampleDataset } from './sample.ts';

export const packCommand: Command = {
  spec: {
    name: 'dataset pack',
    usage: 'edgeshard dataset pack DIR --name NAME [--version V] [--out FILE] [--chunk-size 1MiB|none]',
    summary:
      'Hashes every file under DIR (tar, MDS or Parquet shards; any files) and writes the manifest: per shard its path, size, sha256 and the Merkle root of its chunk hashes, plus one chunk list per shard in .chunks/ next to the manifest (docs/verified-chunks.md). Prints the manifest id (sha256 of its canonical JSON).',
    positionals: true,
    options: [
      { name: 'name', type: 'string', description: 'dataset name' },
      { name: 'version', type: 'string', default: '1', description: 'dataset version' },
      { name: 'out', type: 'string', description: 'manifest path (default DIR/manifest.json)' },
      { name: 'chunk-size', type: 'string', default: '1MiB', description: 'bytes per verified chunk, a power of two from 64KiB to 64MiB; "none" writes a format 1 manifest without chunk hashes' },
    ],
  },
  async run(settings, positionals) {
    const [dir, extra] = positionals;
    if (!dir || extra) throw new UsageError('expected exactly one directory\nusage: ' + this.spec.usage);
    const name = stringSetting(settings, 'name');
    if (!name) throw new UsageError('--name is required');
    const chunkText = stringSetting(settings, 'chunk-size') ?? '1MiB';
    let chunkSize: number | null;
    try {
      chunkSize = chunkText === 'none' ? null : parseSize(chunkText, '--chunk-size');
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (chunkSize !== null && !isValidChunkSize(chunkSize)) {
      throw new UsageError(`--chunk-size ${chunkText}: use a power of two from 64KiB to 64MiB (e.g. 1MiB), or "none"`);
    }
    const { manifest, id, path } = await packDataset(dir, {
      name,
      chunkSize,
      version: stringSetting(settings, 'version') ?? '1',
      ...(stringSetting(settings, 'out') ? { out: stringSetting(settings, 'out')! } : {}),
    });
    console.log(`${path}: ${manifest.shards.length} shards, ${formatBytes(manifest.totalBytes)}, manifest id ${id}`);
    return 0;
  },
};

export const sampleCommand: Command = {
  spec: {
    name: 'dataset sample',
    usage: 'edgeshard dataset sample DIR [--shards N] [--shard-size BYTES]',
    summary: 'Writes the deterministic sample dataset (the one `npm start` and the tests use) into DIR, with its manifest.',
    positionals: true,
    options: [
      { name: 'shards', type: 'string', default: '8', description: 'number of shards' },
      { name: 'shard-size', type: 'string', default: String(512 * 1024), description: 'bytes per shard' },
    ],
  },
  async run(settings, positionals) {
    const [dir] = positionals;
    if (!dir) throw new UsageError('expected a directory\nusage: ' + this.spec.usage);
    const { manifest, id } = await writeSampleDataset(dir, {
      shards: intSetting(settings, 'shards', 1, 100_000),
      shardSize: intSetting(settings, 'shard-size', 1, 2 ** 40),
    });
    console.log(`${dir}: ${manifest.shards.length} shards, ${formatBytes(manifest.totalBytes)}, manifest id ${id}`);
    return 0;
  },
};
