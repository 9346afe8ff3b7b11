// The datasets a gateway serves: their manifests, loaded from the origin, and lookups from a shard's sha256 or
// path to its manifest entry.
import { request, type Dispatcher } from 'undici';
import { DEFAULT_MAX_MANIFEST_BYTES, manifestId, parseManifest, type Manifest, type ShardEntry } from '../protocol/manifest.ts';
import { readBoundedText } from '../protocol/bounded-body.ts';

export interface Dataset {
  name: string;
  manifest: Manifest;
  id: string;
  /** Origin-relative path of the manifest, e.g. "sample/manifest.json": what nodes are told to load. */
  manifestPath: string;
  /** Canonical manifest JSON as served to clients. */
  json: string;
  bySha: Map<string, ShardEntry>;
  byPath: Map<string, ShardEntry>;
}

export class DatasetCatalog {
  private readonly datasets = new Map<string, Dataset>();

  constructor(
    readonly originUrl: string,
    private readonly dispatcher?: Dispatcher,
    /** Largest manifest read from the origin (--max-manifest-size). */
    private readonly maxManifestBytes = DEFAULT_MAX_MANIFEST_BYTES,
  ) {}

  /** Fetches `<origin>/<name>/manifest.json` and validates it. */
  async load(name: string): Promise<Dataset> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name)) throw new Error(`dataset name "${name}" is not valid`);
    const manifestPath = `${name}/manifest.json`;
    const res = await request(`${this.originUrl}/${manifestPath}`, { ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}), headersTimeout: 15_000, bodyTimeout: 15_000 });
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => {}); // an error page is not read (dump stops at 128 KiB)
      throw new Error(`dataset ${name}: origin answered ${res.statusCode} for ${manifestPath}`);
    }
    const text = await readBoundedText(res, this.maxManifestBytes, `dataset ${name}: ${manifestPath} (--max-manifest-size)`);
    const manifest = parseManifest(text);
    if (manifest.name !== name) throw new Error(`dataset ${name}: the manifest at ${manifestPath} names itself "${manifest.name}"`);
    return this.add(manifest, manifestPath);
  }

  add(manifest: Manifest, manifestPath: string): Dataset {
    const ds: Dataset = {
      name: manifest.name,
      manifest,
      id: manifestId(manifest),
      manifestPath,
      json: JSON.stringify(manifest),
      bySha: new Map(manifest.shards.map((s) => [s.sha256, s])),
      byPath: new Map(manifest.shards.map((s) => [s.path, s])),
    };
    this.datasets.set(ds.name, ds);
    return ds;
  }

  get(name: string): Dataset | undefined {
    return this.datasets.get(name);
  }

  all(): Dataset[] {
    return [...this.datasets.values()];
  }

  manifestPaths(): string[] {
    return this.all().map((d) => d.manifestPath);
  }

  /** A shard of a dataset by sha256 or by path. */
  shard(ds: Dataset, idOrPath: string): ShardEntry | undefined {
    return ds.bySha.get(idOrPath) ?? ds.byPath.get(idOrPath);
  }

  originUrlFor(ds: Dataset, shard: ShardEntry): string {
    return `${this.originUrl}/${ds.name}/${shard.path.split('/').map(encodeURIComponent).join('/')}`;
  }
}
