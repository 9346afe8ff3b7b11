// `edgeshard rewards verify EPOCH --node ADDR | --all`: recomputes an epoch's payouts from its published files alone
// (a settler's directory or its HTTP API) and says, line by line, whether each matches, with the reason for every
// receipt that did not count: the answer to "why did my reward change". Loading is I/O; the report is pure.
// Every read is bounded (the settler, its URL or its directory may be hostile or broken): manifest.json by
// MAX_EPOCH_MANIFEST_BYTES, each file by its size in the manifest, and the sizes the manifest lists by --max-epoch-size.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import type { Command } from '../protocol/cli/command.ts';
import { sizeSetting, stringSetting, UsageError } from '../protocol/cli/options.ts';
import { verifyEpoch, type VerifyLine } from '../protocol/epoch-settle.ts';
import { sha256Hex } from '../protocol/epoch.ts';
import { BodyTooLargeError, NotRegularFileError, readBounded, readFileBounded } from '../protocol/bounded-body.ts';
import { DEFAULT_MAX_EPOCH_BYTES, MAX_EPOCH_MANIFEST_BYTES } from '../protocol/settler-api.ts';

export interface PublishedEpoch {
  source: string;
  manifestText: string;
  files: Map<string, string>;
  /** Files whose bytes do not match the manifest (or that could not be read). */
  fileProblems: string[];
}

interface Manifest {
  format: string;
  epoch: number;
  root: string;
  total: string;
  files: Array<{ name: string; sha256: string; bytes: number }>;
}

const FILE_NAME = /^[a-z][a-z-]*\.jsonl?$/;

function parseManifest(text: string, epoch: number, where: string): Manifest {
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch {
    throw new Error(`${where}: manifest.json is not JSON`);
  }
  if (m?.format !== 'edgeshard-epoch-v1' || !Array.isArray(m.files)) throw new Error(`${where}: manifest.json is not an edgeshard epoch manifest (format edgeshard-epoch-v1)`);
  if (m.epoch !== epoch) throw new Error(`${where}: manifest.json is for epoch ${m.epoch}, not ${epoch}`);
  return m;
}

/** Reads a published file, at most `maxBytes` (BodyTooLargeError past them; NotRegularFileError for a FIFO, a device); null when it is not there. */
type FileReader = (name: string, maxBytes: number) => Promise<string | null>;

async function collect(epoch: number, source: string, manifestText: string, read: FileReader, maxEpochBytes: number): Promise<PublishedEpoch> {
  const manifest = parseManifest(manifestText, epoch, source);
  const files = new Map<string, string>();
  const fileProblems: string[] = [];
  const listed = manifest.files.filter((f) => FILE_NAME.test(f.name));
  // Each file is read up to its size in the manifest, so what the manifest lists is what reading can cost.
  const declared = listed.reduce((sum, f) => sum + (Number.isSafeInteger(f.bytes) && f.bytes >= 0 ? f.bytes : 0), 0);
  if (declared > maxEpochBytes) throw new Error(`${source}: manifest.json lists ${declared} bytes of files, over the ${maxEpochBytes}-byte limit (--max-epoch-size)`);
  for (const f of manifest.files) {
    if (!FILE_NAME.test(f.name)) {
      fileProblems.push(`${f.name}: not a file name an epoch publishes`);
      continue;
    }
    if (!Number.isSafeInteger(f.bytes) || f.bytes < 0) {
      fileProblems.push(`${f.name}: its size in manifest.json is not a byte count`);
      continue;
    }
    let body: string | null;
    try {
      body = await read(f.name, f.bytes);
    } catch (err) {
      if (err instanceof NotRegularFileError) fileProblems.push(err.message);
      else if (err instanceof BodyTooLargeError) fileProblems.push(`${err.message} (its size in manifest.json)`);
      else throw err;
      continue;
    }
    if (body === null) fileProblems.push(`${f.name}: missing`);
    else if (sha256Hex(body) !== f.sha256) fileProblems.push(`${f.name}: sha256 ${sha256Hex(body)} does not match the manifest's ${f.sha256}`);
    else files.set(f.name, body);
  }
  files.set('manifest.json', manifestText);
  return { source, manifestText, files, fileProblems };
}

/** Finds the epoch under a settler's directory (<dir>/epochs/<n>), an epochs directory (<dir>/<n>) or the epoch's own directory. */
export async function loadEpochFromDir(dir: string, epoch: number, maxEpochBytes = DEFAULT_MAX_EPOCH_BYTES): Promise<PublishedEpoch> {
  const candidates = [join(dir, 'epochs', String(epoch)), join(dir, String(epoch)), dir];
  const at = candidates.find((d) => existsSync(join(d, 'manifest.json')));
  if (!at) throw new Error(`no published epoch ${epoch} under ${dir} (looked for manifest.json in ${candidates.join(', ')})`);
  const manifestText = (await readFileBounded(join(at, 'manifest.json'), MAX_EPOCH_MANIFEST_BYTES, join(at, 'manifest.json'))).toString('utf8');
  const read: FileReader = async (name, maxBytes) => {
    try {
      return (await readFileBounded(join(at, name), maxBytes, name)).toString('utf8');
    } catch (err) {
      if (err instanceof BodyTooLargeError || err instanceof NotRegularFileError) throw err;
      return null;
    }
  };
  return collect(epoch, at, manifestText, read, maxEpochBytes);
}

export async function loadEpochFromSettler(base: string, epoch: number, maxEpochBytes = DEFAULT_MAX_EPOCH_BYTES): Promise<PublishedEpoch> {
  const url = (name: string) => `${base.replace(/\/$/, '')}/v1/epochs/${epoch}/${name}`;
  const get = async (name: string, maxBytes: number, what = name): Promise<string | null> => {
    const res = await request(url(name), { headersTimeout: 30_000, bodyTimeout: 60_000 });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return null;
    }
    return (await readBounded(res.body, maxBytes, what, res.headers['content-length'])).toString('utf8');
  };
  let manifestText: string | null;
  try {
    manifestText = await get('manifest.json', MAX_EPOCH_MANIFEST_BYTES, `manifest.json from the settler at ${base}`);
  } catch (err) {
    if (err instanceof BodyTooLargeError) throw err;
    throw new Error(`cannot reach the settler at ${base} (${(err as Error).message})`);
  }
  if (manifestText === null) throw new Error(`the settler at ${base} has no published epoch ${epoch} (GET ${url('manifest.json')} failed)`);
  return collect(epoch, base, manifestText, (name, maxBytes) => get(name, maxBytes), maxEpochBytes);
}

export interface VerifyReport {
  ok: boolean;
  lines: string[];
}

function describeNode(l: VerifyLine, listReceipts: boolean): string[] {
  const out = [`node ${l.node}: published ${l.published ?? 'nothing'}, recomputed ${l.recomputed ?? 'nothing'}: ${l.matches ? 'MATCHES' : 'DIFFERS'}`];
  const f = l.figures;
  if (f) {
    out.push(
      `  paid bytes ${f.paidBytes} → ${f.paid}; anonymous bytes ${f.anonymousBytes} → ${f.anonymous}; capacity points ${f.capacityPoints} → ${f.capacity}; score ${f.scoreBps} bps`,
    );
  }
  const reasons = Object.entries(l.rejectedReasons);
  if (!f && reasons.length === 0) out.push('  no receipts or gateway records name this node in this epoch');
  else if (reasons.length === 0) out.push('  every receipt it submitted counted');
  else if (listReceipts) {
    out.push(`  ${l.rejected.length} receipt(s) did not count:`);
    for (const r of l.rejected) out.push(`    ticket ${r.ticketId ?? '(undecodable)'}, ${r.bytes ?? '?'} bytes: ${r.reason}`);
    const recordReasons = reasons.filter(([reason]) => reason.startsWith('gateway record: '));
    for (const [reason, n] of recordReasons) out.push(`    ${n} × ${reason}`);
  } else {
    out.push('  did not count:');
    for (const [reason, n] of reasons.sort((a, b) => b[1] - a[1])) out.push(`    ${n} × ${reason}`);
  }
  return out;
}

/** The report, pure: file checks, the root, then one block per node. `listReceipts` names every rejected receipt. */
export function verifyReport(epoch: number, published: PublishedEpoch, nodes: string[], listReceipts: boolean): VerifyReport {
  const lines: string[] = [];
  const manifest = JSON.parse(published.manifestText) as Manifest;
  lines.push(`epoch ${epoch} from ${published.source} (manifest sha256 ${sha256Hex(published.manifestText)})`);
  if (published.fileProblems.length === 0) lines.push(`files: all ${manifest.files.length} match their sha256 in the manifest`);
  else for (const p of published.fileProblems) lines.push(`file ${p}`);
  const result = verifyEpoch(published.files, nodes);
  const treeRoot = (JSON.parse(published.files.get('tree.json') ?? 'null') as { tree?: string[] } | null)?.tree?.[0] ?? '';
  lines.push(`root ${manifest.root || '(none: nobody earned anything)'}: ${result.rootMatches && treeRoot === manifest.root ? 'matches the recomputed tree' : 'DIFFERS from the recomputed tree'}`);
  const publishedTotal = (JSON.parse(published.files.get('totals.json') ?? '[]') as Array<{ amount: string }>).reduce((s, t) => s + BigInt(t.amount), 0n);
  const totalOk = publishedTotal.toString() === String(manifest.total);
  if (!totalOk) lines.push(`total ${manifest.total} in the manifest DIFFERS from the sum of totals.json (${publishedTotal})`);
  for (const l of result.lines) lines.push(...describeNode(l, listReceipts));
  const differ = result.lines.filter((l) => !l.matches).length;
  const ok = result.ok && totalOk && treeRoot === manifest.root && published.fileProblems.length === 0;
  lines.push(
    ok
      ? `result: ${result.lines.length} node(s) checked, all match`
      : `result: MISMATCH (${differ} of ${result.lines.length} node(s) differ${published.fileProblems.length ? `, ${published.fileProblems.length} file(s) do not match the manifest` : ''}${result.rootMatches ? '' : ', the root differs'})`,
  );
  return { ok, lines };
}

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

export const rewardsVerifyCommand: Command = {
  spec: {
    name: 'rewards verify',
    usage: 'edgeshard rewards verify EPOCH (--node ADDR[,ADDR] | --all) [--dir DIR | --settler URL] [--max-epoch-size 1GiB]',
    summary:
      "Recomputes an epoch's rewards from its published files alone and compares them with what was published, node by node, " +
      'with the reason for every receipt that did not count (with --node each receipt is listed; with --all the reasons are counted). ' +
      'Files come from a settler directory (--dir, default ./.edgeshard/settler) or a settler over HTTP (--settler URL), and each is checked against ' +
      "the manifest's sha256. Exit code 0 when everything matches, 1 on any mismatch.",
    options: [
      { name: 'node', type: 'string', description: 'node address(es) to check, comma-separated' },
      { name: 'all', type: 'boolean', default: false, description: 'check every node of the epoch' },
      { name: 'dir', type: 'string', description: "a settler's directory, its epochs/ directory, or the epoch's own directory (default ./.edgeshard/settler)" },
      { name: 'settler', type: 'string', description: 'fetch the published files from this settler URL instead' },
      { name: 'max-epoch-size', type: 'string', default: '1GiB', description: "the most the epoch's files may add up to, by their sizes in manifest.json (refused beyond; each file is read no further than its own size)" },
      { name: 'contracts', type: 'string', description: 'also check the chain: the root and manifest hash posted for the epoch, and each node’s claim (contracts JSON file)' },
      { name: 'rpc', type: 'string', default: 'http://127.0.0.1:8545', description: 'JSON-RPC URL of the chain (with --contracts)' },
    ],
    positionals: true,
  },
  async run(settings, positionals) {
    if (positionals.length !== 1 || !/^\d{1,10}$/.test(positionals[0]!)) throw new UsageError('give exactly one EPOCH number, e.g. edgeshard rewards verify 20833 --all');
    const epoch = Number(positionals[0]);
    const all = settings.all === true;
    const nodes = (stringSetting(settings, 'node') ?? '').split(',').map((n) => n.trim()).filter(Boolean);
    if (all === (nodes.length > 0)) throw new UsageError('use either --node ADDR or --all');
    for (const n of nodes) if (!ADDRESS.test(n)) throw new UsageError(`--node "${n}": not a 0x address of 40 hex digits`);
    const settler = stringSetting(settings, 'settler');
    const dir = stringSetting(settings, 'dir');
    if (settler && dir) throw new UsageError('use either --dir or --settler');
    const maxEpochBytes = sizeSetting(settings, 'max-epoch-size', '1GiB');
    const published = settler ? await loadEpochFromSettler(settler, epoch, maxEpochBytes) : await loadEpochFromDir(dir ?? './.edgeshard/settler', epoch, maxEpochBytes);
    const report = verifyReport(epoch, published, nodes.map((n) => n.toLowerCase()), !all);
    for (const line of report.lines) console.log(line);
    const contractsFile = stringSetting(settings, 'contracts');
    if (!contractsFile) return report.ok ? 0 : 1;
    const chain = await checkOnChain(epoch, published, all ? null : nodes.map((n) => n.toLowerCase()), contractsFile, String(settings.rpc));
    for (const line of chain.lines) console.log(line);
    return report.ok && chain.ok ? 0 : 1;
  },
};

/** The chain's view of the epoch (read only: no key needed). */
async function checkOnChain(epoch: number, published: PublishedEpoch, nodes: string[] | null, contractsFile: string, rpc: string) {
  const { JsonRpcProvider } = await import('ethers');
  const { connectContracts, readContractsFile } = await import('../contracts/handles.ts');
  const { onChainCheck } = await import('../contracts/onchain-check.ts');
  const file = await readContractsFile(contractsFile);
  const provider = new JsonRpcProvider(rpc, undefined, { staticNetwork: true });
  try {
    const totals = JSON.parse(published.files.get('totals.json') ?? '[]') as Array<{ node: string; amount: string }>;
    const amountOf = new Map(totals.filter((t) => BigInt(t.amount) > 0n).map((t) => [t.node.toLowerCase(), t.amount]));
    const list = (nodes ?? [...amountOf.keys()]).map((node) => ({ node, amount: amountOf.get(node) ?? null }));
    const manifest = JSON.parse(published.manifestText) as Manifest;
    return await onChainCheck(connectContracts(file, provider), epoch, manifest.root, sha256Hex(published.manifestText), list);
  } catch (err) {
    return { ok: false, lines: [`on chain: cannot check at ${rpc} (${(err as Error).message})`] };
  } finally {
    provider.destroy();
  }
}
