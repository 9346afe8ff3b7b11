// What the settler posts on chain for one epoch, computed from its published files alone (pure): the root and total
// from manifest.json, sha256(manifest.json), each paying client's charge from accepted.jsonl at the epoch's price,
// and the capacity-pool draw (what nodes earn beyond the paid part: anonymous and capacity shares). Every file is
// checked against the manifest first, so a damaged or edited epoch directory is refused before anything is sent.
import { getAddress } from 'ethers';
import { clientCharge, sha256Hex } from '../protocol/epoch.ts';

export interface RootPosting {
  epoch: bigint;
  root: string;
  total: bigint;
  /** 0x-prefixed sha256 of manifest.json's bytes: the content address of the epoch's files. */
  manifestSha256: string;
  charges: { payer: string; amount: bigint }[];
  capacityDraw: bigint;
}

interface Manifest {
  format: string;
  epoch: number;
  root: string;
  total: string;
  files: { name: string; sha256: string; bytes: number }[];
}

function jsonLines<T>(name: string, text: string): T[] {
  return text.split('\n').filter((l) => l.trim() !== '').map((l, i) => {
    try {
      return JSON.parse(l) as T;
    } catch {
      throw new Error(`${name} line ${i + 1} is not JSON`);
    }
  });
}

/** Files by name, manifest.json included; throws a clear error for anything missing, damaged or inconsistent. */
export function rootPostingFromFiles(files: ReadonlyMap<string, string>): RootPosting {
  const manifestText = files.get('manifest.json');
  if (manifestText === undefined) throw new Error('manifest.json is missing: not an epoch directory');
  let manifest: Manifest;
  try {
    manifest = JSON.parse(manifestText) as Manifest;
  } catch {
    throw new Error('manifest.json is not JSON');
  }
  if (manifest.format !== 'edgeshard-epoch-v1') throw new Error(`manifest.json format "${manifest.format}" is not edgeshard-epoch-v1`);
  if (!/^0x[0-9a-f]{64}$/.test(manifest.root)) throw new Error('manifest.json has no Merkle root: an epoch where nobody earned anything has nothing to post');
  for (const f of manifest.files) {
    const body = files.get(f.name);
    if (body === undefined) throw new Error(`${f.name} is listed in manifest.json but missing`);
    if (sha256Hex(body) !== f.sha256) throw new Error(`${f.name} does not match its sha256 in manifest.json: the file was changed or damaged`);
  }
  const tree = JSON.parse(files.get('tree.json') ?? 'null') as { tree?: string[] } | null;
  if (!tree?.tree?.[0] || tree.tree[0] !== manifest.root) throw new Error('tree.json’s root is not the root in manifest.json');
  const params = JSON.parse(files.get('params.json') ?? '{}') as { pricePerGiB?: string };
  if (params.pricePerGiB === undefined) throw new Error('params.json has no pricePerGiB');
  const price = BigInt(params.pricePerGiB);
  const totals = JSON.parse(files.get('totals.json') ?? '[]') as { paid: string; anonymous: string; capacity: string; amount: string }[];
  const total = BigInt(manifest.total);
  const sum = totals.reduce((s, t) => s + BigInt(t.amount), 0n);
  if (sum !== total) throw new Error(`totals.json adds up to ${sum}, manifest.json says ${total}`);
  const capacityDraw = totals.reduce((s, t) => s + BigInt(t.anonymous) + BigInt(t.capacity), 0n);

  // Bytes per paying client, then the charge per client (rounded up, as clientCharge does).
  const bytesByClient = new Map<string, bigint>();
  for (const a of jsonLines<{ client: string; bytes: string }>('accepted.jsonl', files.get('accepted.jsonl') ?? '')) {
    const client = getAddress(a.client);
    bytesByClient.set(client, (bytesByClient.get(client) ?? 0n) + BigInt(a.bytes));
  }
  const charges = [...bytesByClient.entries()]
    .sort(([a], [b]) => (a.toLowerCase() < b.toLowerCase() ? -1 : 1))
    .map(([payer, bytes]) => ({ payer, amount: clientCharge(bytes, { pricePerGiB: price }) }))
    .filter((c) => c.amount > 0n);
  return { epoch: BigInt(manifest.epoch), root: manifest.root, total, manifestSha256: '0x' + sha256Hex(manifestText), charges, capacityDraw };
}
