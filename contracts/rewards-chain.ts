// The chain side of an epoch, as the settler, a node and a trainer use it: post an epoch directory's root, claim a
// node's leaf, deposit into the escrow. Each checks what it can before sending, so a refusal reads as a sentence.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';
import { getAddress } from 'ethers';
import { request } from 'undici';
import { EpochStatus, revertMessage, type Contracts } from './handles.ts';
import { rootPostingFromFiles, type RootPosting } from './root-posting.ts';
import type { Leaf } from '../protocol/epoch.ts';
import { readBounded } from '../protocol/bounded-body.ts';

/** Reads manifest.json and every file it lists from an epoch directory. */
export async function readEpochDir(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const manifestText = await readFile(join(dir, 'manifest.json'), 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new Error(`${dir}: cannot read manifest.json (${err.code ?? err.message})`);
  });
  files.set('manifest.json', manifestText);
  let listed: { name: string }[] = [];
  try {
    listed = (JSON.parse(manifestText) as { files?: { name: string }[] }).files ?? [];
  } catch {
    throw new Error(`${dir}/manifest.json is not JSON`);
  }
  for (const { name } of listed) {
    if (name.includes('/') || name.includes('\\') || name.startsWith('.')) throw new Error(`manifest.json lists a file outside the epoch directory: ${name}`);
    files.set(name, await readFile(join(dir, name), 'utf8').catch(() => ''));
  }
  return files;
}

export interface PostedRoot extends RootPosting {
  txHash: string;
  gasUsed: bigint;
  challengeEnds: bigint;
}

/** Posts the root of the epoch in `epochDir` (as the settler). Refuses a directory that fails its own manifest. */
export async function postRoot(contracts: Contracts, epochDir: string): Promise<PostedRoot> {
  const posting = rootPostingFromFiles(await readEpochDir(epochDir));
  const existing = await contracts.settlement.epochs(posting.epoch);
  if (existing.status === EpochStatus.Posted || existing.status === EpochStatus.Disputed) {
    if (existing.root === posting.root && existing.manifestSha256 === posting.manifestSha256) {
      throw new Error(`epoch ${posting.epoch}: this root is already on chain (claimable from ${new Date(Number(existing.challengeEnds) * 1000).toISOString()})`);
    }
    throw new Error(`epoch ${posting.epoch}: a different root ${existing.root} is already on chain; only a dispute can void it`);
  }
  try {
    const tx = await contracts.settlement.postRoot(posting.epoch, posting.root, posting.total, posting.manifestSha256, posting.charges, posting.capacityDraw);
    const receipt = await tx.wait();
    const rec = await contracts.settlement.epochs(posting.epoch);
    return { ...posting, txHash: tx.hash, gasUsed: receipt?.gasUsed ?? 0n, challengeEnds: rec.challengeEnds };
  } catch (err) {
    throw new Error(`posting the root of epoch ${posting.epoch} failed: ${revertMessage(err)}`);
  }
}

/** Largest settler answers read: the epoch list (~100 bytes an epoch) and one tree.json (~300 bytes a node). */
const MAX_EPOCH_LIST_BYTES = 4 << 20;
const MAX_TREE_BYTES = 512 << 20;

/** The node's leaf and proof from an epoch's tree.json (StandardMerkleTree.dump()). */
export function leafFromTree(treeJson: string, node: string): { epoch: bigint; amount: bigint; proof: string[] } | null {
  const tree = StandardMerkleTree.load<Leaf>(JSON.parse(treeJson));
  const want = node.toLowerCase();
  for (const [i, leaf] of tree.entries()) {
    if (leaf[1].toLowerCase() === want) return { epoch: BigInt(leaf[0]), amount: BigInt(leaf[2]), proof: tree.getProof(i) };
  }
  return null;
}

export interface ClaimResult {
  epoch: bigint;
  node: string;
  amount: bigint;
  txHash: string;
  gasUsed: bigint;
}

/** Claims `node`'s reward for the epoch in `epochDir` (anyone may send it; the tokens go to `node`). */
export async function claimReward(contracts: Contracts, epochDir: string, node: string): Promise<ClaimResult> {
  const treeJson = await readFile(join(epochDir, 'tree.json'), 'utf8').catch(() => {
    throw new Error(`${epochDir}: no tree.json`);
  });
  return claimFromTree(contracts, treeJson, node, `${epochDir}/tree.json`);
}

/** Claims `node`'s leaf of a published tree.json (`where` names it in errors). */
export async function claimFromTree(contracts: Contracts, treeJson: string, node: string, where: string): Promise<ClaimResult> {
  const address = getAddress(node);
  const leaf = leafFromTree(treeJson, address);
  if (!leaf) throw new Error(`${address} earned nothing in this epoch (no leaf in ${where})`);
  const rec = await contracts.settlement.epochs(leaf.epoch);
  if (rec.status === EpochStatus.None) throw new Error(`epoch ${leaf.epoch}: no root on chain yet`);
  if (rec.status === EpochStatus.Disputed) throw new Error(`epoch ${leaf.epoch}: the root is disputed; nothing is paid until the arbiter resolves it`);
  if (rec.status === EpochStatus.Voided) throw new Error(`epoch ${leaf.epoch}: the root was voided by a dispute; wait for the settler's new root`);
  if (await contracts.settlement.claimed(leaf.epoch, address)) throw new Error(`epoch ${leaf.epoch}: ${address} has already claimed`);
  try {
    const tx = await contracts.settlement.claim(leaf.epoch, address, leaf.amount, leaf.proof);
    const receipt = await tx.wait();
    return { epoch: leaf.epoch, node: address, amount: leaf.amount, txHash: tx.hash, gasUsed: receipt?.gasUsed ?? 0n };
  } catch (err) {
    const msg = revertMessage(err);
    if (msg.startsWith('ChallengeWindowOpen')) {
      throw new Error(`epoch ${leaf.epoch}: the challenge window is open until ${new Date(Number(rec.challengeEnds) * 1000).toISOString()}; claim after that`);
    }
    throw new Error(`claiming epoch ${leaf.epoch} for ${address} failed: ${msg}`);
  }
}

export type SettlerClaimOutcome = { epoch: number; claimed: ClaimResult } | { epoch: number; skipped: string };

/**
 * Claims every epoch a settler has published in which `node` has a leaf and whose root is claimable on chain: what a
 * node runs after each epoch (or with --watch) so that it needs no epoch directory of its own. Never throws per epoch.
 * `skip`: epochs the caller has finished with (claimed, or already claimed), whose tree.json is not fetched again.
 */
export async function claimAllFromSettler(contracts: Contracts, settlerUrl: string, node: string, opts: { skip?: ReadonlySet<number> } = {}): Promise<SettlerClaimOutcome[]> {
  const base = settlerUrl.replace(/\/$/, '');
  const list = await request(`${base}/v1/epochs`, { headersTimeout: 10_000, bodyTimeout: 30_000 }).catch((err: Error) => {
    throw new Error(`cannot reach the settler at ${base} (${err.message})`);
  });
  if (list.statusCode !== 200) {
    await list.body.dump();
    throw new Error(`GET ${base}/v1/epochs answered ${list.statusCode}`);
  }
  // The settler is another party: its answers are bounded and checked before anything is fetched by them.
  const listed: unknown = JSON.parse((await readBounded(list.body, MAX_EPOCH_LIST_BYTES, `${base}/v1/epochs`, list.headers['content-length'])).toString('utf8'));
  if (!Array.isArray(listed)) throw new Error(`GET ${base}/v1/epochs: not a list of epochs`);
  const epochs = listed.filter((e): e is { epoch: number; root: string } => Number.isSafeInteger(e?.epoch) && e.epoch >= 0 && (e.root === null || e.root === undefined || (typeof e.root === 'string' && /^0x[0-9a-f]{64}$/i.test(e.root))));
  const out: SettlerClaimOutcome[] = [];
  for (const e of epochs) {
    if (!e.root || opts.skip?.has(e.epoch)) continue;
    const res = await request(`${base}/v1/epochs/${e.epoch}/tree.json`, { headersTimeout: 10_000, bodyTimeout: 60_000 });
    if (res.statusCode !== 200) {
      await res.body.dump();
      out.push({ epoch: e.epoch, skipped: `tree.json not served (${res.statusCode})` });
      continue;
    }
    const treeJson = (await readBounded(res.body, MAX_TREE_BYTES, `${base} epoch ${e.epoch} tree.json`, res.headers['content-length'])).toString('utf8');
    try {
      if (!leafFromTree(treeJson, node)) continue; // nothing earned in this epoch
      out.push({ epoch: e.epoch, claimed: await claimFromTree(contracts, treeJson, node, `${base} epoch ${e.epoch}`) });
    } catch (err) {
      out.push({ epoch: e.epoch, skipped: (err as Error).message });
    }
  }
  return out;
}

/** Approves and deposits `amount` base units into the escrow for the signer. */
export async function depositToEscrow(contracts: Contracts, payer: string, amount: bigint): Promise<{ balance: bigint }> {
  if (amount <= 0n) throw new Error('the amount must be more than zero');
  const held = await contracts.token.balanceOf(payer);
  if (held < amount) throw new Error(`${payer} holds ${held} token base units, less than the ${amount} to deposit`);
  try {
    await (await contracts.token.approve(await contracts.escrow.getAddress(), amount)).wait();
    await (await contracts.escrow.deposit(amount)).wait();
  } catch (err) {
    throw new Error(`deposit failed: ${revertMessage(err)}`);
  }
  return { balance: (await contracts.escrow.accounts(payer)).balance };
}
