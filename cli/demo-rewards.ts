// The demo's last act: the epoch's rewards. Each node submits the receipts the trainer signed to a settler, the
// epoch settles, the settler posts its root on the dev chain, and every node claims by itself (its auto-claimer). The demo cannot wait a day for
// an epoch to end: it runs the settler on a clock set to the epoch's end, and moves the chain's clock past the
// challenge window. Everything else is the real code path: signed receipts, the settler's checks, Merkle proofs.
import { join } from 'node:path';
import { readFile, rm } from 'node:fs/promises';
import { formatUnits } from 'ethers';
import type { EdgeNode } from '../edge-node/server.ts';
import { ClaimSubmitter } from '../edge-node/claim-submitter.ts';
import { loadOrCreateNodeKey } from '../protocol/identity.ts';
import { DEFAULT_REWARD_PARAMS } from '../protocol/epoch.ts';
import { formatBytes } from '../protocol/units.ts';
import type { TicketKey } from '../protocol/tickets.ts';
import { startSettler, type RunningSettler } from '../settler/server.ts';
import { DEV_ROLES, type DevChain } from '../contracts/dev-chain.ts';
import { connectContracts } from '../contracts/handles.ts';
import { createRootPoster, type PostOutcome } from '../contracts/root-poster.ts';
import { leafFromTree } from '../contracts/rewards-chain.ts';

export interface DemoNode {
  name: string;
  node: EdgeNode;
  keyFile: string;
}

const EPOCH_SECONDS = 86_400;

export interface DemoSettler {
  settler: RunningSettler;
  dir: string;
  /** null: the real clock (until the demo settles, when it is set to the epoch's end). */
  clock: { nowMs: number | null };
  posted: PostOutcome[];
}

/** The demo's settler, started before the nodes so that they know where to submit and what to claim from. */
export async function startDemoSettler(opts: { dir: string; dev: DevChain; gatewayKey: TicketKey }): Promise<DemoSettler> {
  const dir = join(opts.dir, 'settler');
  await rm(dir, { recursive: true, force: true });
  const clock: DemoSettler['clock'] = { nowMs: null };
  const poster = createRootPoster(connectContracts(opts.dev.file, opts.dev.chain.wallets[DEV_ROLES.indexOf('settler')]!));
  const posted: PostOutcome[] = [];
  const settler = await startSettler({
    host: '127.0.0.1',
    port: 0,
    dir,
    id: 'demo-settler',
    epochSeconds: EPOCH_SECONDS,
    claimWindowSeconds: 3_600,
    params: DEFAULT_REWARD_PARAMS,
    gateways: { [opts.gatewayKey.keyId]: opts.gatewayKey.publicKeyB64 },
    settleCheckMs: 0,
    now: () => clock.nowMs ?? Date.now(),
    onSettled: async (_e, epochDir) => void posted.push(await poster.post(epochDir)),
  });
  return { settler, dir, clock, posted };
}

/**
 * Settles the epoch of the receipts the nodes hold and posts it; then each node's auto-claimer (edge-node/
 * auto-claimer.ts) claims its reward by itself. Returns the lines to print.
 */
export async function settleDemoEpoch(opts: { dev: DevChain; settler: DemoSettler; nodes: DemoNode[]; escrowBefore: bigint; trainer: string }): Promise<string[]> {
  const held = opts.nodes.flatMap((n) => n.node.receipts.all());
  if (held.length === 0) return ['rewards: no receipts were signed, nothing to settle'];
  const epoch = held[0]!.receipt.ticket.epoch;
  const { settler, clock, posted } = opts.settler;
  clock.nowMs = (epoch + 1) * EPOCH_SECONDS * 1000 + 1_000;
  for (const n of opts.nodes) {
    const submitter = new ClaimSubmitter({ wallet: await loadOrCreateNodeKey(n.keyFile), settlers: [settler.url], source: n.node.receipts, now: () => clock.nowMs! });
    await submitter.submitDue();
  }
  clock.nowMs += 3_600_000;
  await settler.settler.settleDue();
  const outcome = posted[0];
  if (!outcome || !('posted' in outcome)) return [`rewards: epoch ${epoch} was not posted on chain (${outcome && 'failed' in outcome ? outcome.failed : outcome && 'skipped' in outcome ? outcome.skipped : 'nothing settled'})`];
  await opts.dev.chain.advanceTime(Number(outcome.posted.challengeEnds) - (await opts.dev.chain.now()));
  const chain = connectContracts(opts.dev.file, opts.dev.chain.provider);
  const treeJson = await readFile(join(opts.settler.dir, 'epochs', String(epoch), 'tree.json'), 'utf8');
  // Each node claims by itself on its auto-claimer's next pass (every second in the demo), paying the gas from its key.
  const leaves = new Map(opts.nodes.map((n) => [n, leafFromTree(treeJson, n.node.address)]));
  const earners = opts.nodes.filter((n) => leaves.get(n));
  const deadline = Date.now() + 30_000;
  while (!(await Promise.all(earners.map((n) => chain.settlement.claimed(BigInt(epoch), n.node.address)))).every(Boolean)) {
    if (Date.now() > deadline) return [`rewards: epoch ${epoch} posted, but not every node claimed it within 30 s (see the nodes' log)`];
    await new Promise((r) => setTimeout(r, 100));
  }
  const lines = [`rewards: epoch ${epoch} settled from ${held.length} signed receipts (settler clock set to the epoch's end), root ${outcome.posted.root.slice(0, 18)}… posted on chain, claimed by each node after the challenge window:`];
  const price = DEFAULT_REWARD_PARAMS.pricePerGiB;
  const ratePerGiB = (price * (10_000n - DEFAULT_REWARD_PARAMS.feeBps)) / 10_000n;
  for (const n of opts.nodes) {
    const receipted = n.node.receipts.all().reduce((s, h) => s + h.receipt.bytes, 0n);
    const served = BigInt(n.node.allowance.servedTotal);
    const reward = leaves.get(n)?.amount ?? 0n;
    const balance = await chain.token.balanceOf(n.node.address);
    const { stake } = await chain.registry.nodes(n.node.address);
    lines.push(
      `  ${n.name.padEnd(9)} served ${formatBytes(Number(served))}, receipted ${formatBytes(Number(receipted))} → ${formatUnits(reward, 18)} EDGE ` +
        `(${receipted} B × ${formatUnits(ratePerGiB, 18)} EDGE/GiB ÷ 2^30, rounded down); balance ${formatUnits(balance, 18)} EDGE, stake ${formatUnits(stake, 18)} EDGE`,
    );
  }
  const escrowAfter = await chain.escrow.chargeable(opts.trainer);
  lines.push(`  trainer escrow ${formatUnits(opts.escrowBefore, 18)} → ${formatUnits(escrowAfter, 18)} EDGE (${formatUnits(price, 18)} EDGE/GiB; the 10 % fee goes to the treasury)`);
  return lines;
}
