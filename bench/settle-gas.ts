// The chain half of the `settle` section (#10): gas for one claim (beside a Uniswap-MerkleDistributor-style claim
// measured in the same run), gas for one root with 10, 1,000 and 100,000 nodes in the epoch, the gas to pay the
// same nodes one ERC-20 transfer each instead, and the time from an epoch's end to a claimable root on the
// embedded chain. Real EVM: hardhat EDR in process, through ethers v6. Also runnable alone (writes
// bench/results/settle-gas.md): flock /tmp/edgeshard-bench.lock npx tsx bench/settle-gas.ts
// SETTLE_GAS_SIZES=10,1000 shrinks a smoke run (default 10,1000,100000).
import { SimpleMerkleTree } from '@openzeppelin/merkle-tree';
import { ContractFactory, Wallet, dataSlice, getAddress, id, parseEther, solidityPackedKeccak256 } from 'ethers';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadArtifacts } from '../contracts/build.ts';
import { startEmbeddedChain } from '../contracts/chain.ts';
import { DEFAULT_DEPLOY_PARAMS, TOKEN, deployContracts } from '../contracts/deploy.ts';
import { attach, connectContracts, type RegistryContract } from '../contracts/handles.ts';
import { claimReward, postRoot } from '../contracts/rewards-chain.ts';
import { managedWallet, type ResettingNonceManager } from '../contracts/wallet.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { DEFAULT_REWARD_PARAMS, GIB, jsonLines, rewardTree, stableJson, type Leaf } from '../protocol/epoch.ts';
import { settleEpoch } from '../protocol/epoch-settle.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { fmt, headerMarkdown, mdTable, median, runHeader } from './lib.ts';

const SIZES = (process.env.SETTLE_GAS_SIZES ?? '10,1000,100000').split(',').map(Number);
const CLAIMS_PER_SIZE = 7;
const TRANSFERS_MEASURED = 30;
const LATENCY_RUNS = 5;
const LATENCY_NODES = 100;
const LATENCY_RECEIPTS = 1_000;

/** A deterministic fresh address per index: a node that holds no tokens yet (the dearest claim). */
function nodeAddress(i: number, salt: string): string {
  return getAddress(dataSlice(id(`${salt} node ${i}`), 12));
}

/** The key of a node that registers (it sends transactions itself); deterministic, public: bench use only. */
function nodeKey(i: number, salt: string): string {
  return id(`${salt} node key ${i}`);
}

export async function runSettleGasBench(): Promise<{ markdown: string; json: unknown }> {
  const chain = await startEmbeddedChain({ accounts: 4 });
  const [admin, settler, , relayer] = chain.wallets as [ResettingNonceManager, ResettingNonceManager, ResettingNonceManager, ResettingNonceManager];
  const [adminAddr, settlerAddr, arbiterAddr, gatewayAddr] = await Promise.all(chain.wallets.map((w) => w.getAddress()));
  const { contracts, file } = await deployContracts(chain.wallets[0]!, {
    ...DEFAULT_DEPLOY_PARAMS,
    challengeWindowSeconds: 0, // gas and processing time only; the window is policy (default 24 h), added in the text
    treasury: adminAddr!,
    settler: settlerAddr!,
    arbiter: arbiterAddr!,
    gateways: [gatewayAddr!],
  });
  const asSettler = attach<typeof contracts.settlement>('Settlement', file.settlement, settler);
  const asRelayer = attach<typeof contracts.settlement>('Settlement', file.settlement, relayer);
  await (await contracts.token.approve(file.escrow, 100_000_000n * TOKEN)).wait();
  await (await contracts.escrow.deposit(100_000_000n * TOKEN)).wait();
  const art = loadArtifacts().BitmapDistributor!;
  // A first root, unmeasured: it makes the settlement contract's own token balance non-zero, a one-time 17,100 gas
  // that would otherwise land on whichever size is measured first.
  const warm = rewardTree([['99', nodeAddress(0, 'warm').toLowerCase(), '1']]);
  await (await asSettler.postRoot(99n, warm.root, 1n, id('warm-up'), [{ payer: adminAddr!, amount: 1n }], 0n)).wait();
  const minStake = await contracts.registry.minStake();
  // Registration's gas with and without warming the claim word: the same registry code on a second registry that
  // names no Settlement (setClaimWords never called), each node registering on both.
  const bareArt = loadArtifacts().NodeRegistry!;
  const bare = await new ContractFactory(bareArt.abi as never, bareArt.bytecode, admin).deploy(file.token, minStake, 86_400, adminAddr!);
  await bare.waitForDeployment();
  const bareAddr = await bare.getAddress();
  const registerGas: number[] = [];
  const bareRegisterGas: number[] = [];

  type Row = { nodes: number; treeMs: number; rootGas: number; proofLength: number; firstClaimGas: number; coldFirstClaimGas: number; coldClaims: number; laterClaimGas: number; peerFirstClaimGas: number; peerLaterClaimGas: number };
  const rows: Row[] = [];
  for (const [k, n] of SIZES.entries()) {
    const picks = Array.from({ length: CLAIMS_PER_SIZE }, (_, j) => Math.floor((j * (n - 1)) / Math.max(1, CLAIMS_PER_SIZE - 1)));
    // Nodes that never registered: the neighbours of the picks (at 10 nodes only the 3 indices left over).
    const coldPicks = [...new Set(picks.map((p) => p + 1))].filter((p) => p < n && !picks.includes(p)).slice(0, CLAIMS_PER_SIZE);
    const keyOf = new Map(picks.map((p) => [p, nodeKey(p, `n${n}`)]));
    const accounts = Array.from({ length: n }, (_, i) => (keyOf.has(i) ? new Wallet(keyOf.get(i)!).address : nodeAddress(i, `n${n}`)));
    const amountOf = (i: number) => (BigInt(i) + 1n) * 10n ** 15n;
    // The picks register as a node does: ether for gas, exactly the minimum stake in tokens, approve, register (so
    // they hold no tokens afterwards: their first claim still writes a fresh balance). Registration warms the claim
    // word of the epoch after the newest root. Each also registers on the bare registry, for the comparison.
    for (const p of picks) {
      const node = managedWallet(keyOf.get(p)!, chain.provider);
      await (await admin.sendTransaction({ to: accounts[p]!, value: parseEther('1') })).wait();
      const asNode = connectContracts(file, node);
      // Each registration starts from exactly minStake and ends at zero, so both get the same refunds.
      await (await contracts.token.transfer(accounts[p]!, minStake)).wait();
      await (await asNode.token.approve(bareAddr, minStake)).wait();
      const bareReg = attach<RegistryContract>('NodeRegistry', bareAddr, node);
      bareRegisterGas.push(Number((await (await bareReg.register(minStake)).wait())!.gasUsed));
      await (await contracts.token.transfer(accounts[p]!, minStake)).wait();
      await (await asNode.token.approve(file.registry, minStake)).wait();
      registerGas.push(Number((await (await asNode.registry.register(minStake)).wait())!.gasUsed));
    }
    // Two epochs with the same nodes: the first claim a node ever makes (no token balance yet; claim word warmed
    // by registration, or fresh for a node that never registered), then its claim in a later epoch (the usual case
    // for a node that stays).
    const gas: number[][] = [];
    const coldGas: number[] = [];
    let rootGas = 0;
    let treeMs = 0;
    let proofLength = 0;
    for (const epoch of [100 + k, 110 + k]) {
      const leaves: Leaf[] = accounts.map((a, i) => [String(epoch), a.toLowerCase(), amountOf(i).toString()]);
      const t0 = performance.now();
      const tree = rewardTree(leaves);
      treeMs = performance.now() - t0;
      const total = leaves.reduce((s, l) => s + BigInt(l[2]), 0n);
      const post = await (await asSettler.postRoot(BigInt(epoch), tree.root, total, id(`manifest ${epoch}`), [{ payer: adminAddr!, amount: total }], 0n)).wait();
      rootGas = Math.max(rootGas, Number(post!.gasUsed));
      const index = new Map<string, number>();
      for (const [i, leaf] of tree.entries()) index.set(leaf[1], i);
      const g: number[] = [];
      for (const p of picks) {
        const leaf = leaves[p]!;
        const proof = tree.getProof(index.get(leaf[1])!);
        proofLength = Math.max(proofLength, proof.length);
        const r = await (await asRelayer.claim(BigInt(epoch), leaf[1], BigInt(leaf[2]), proof)).wait();
        g.push(Number(r!.gasUsed));
      }
      gas.push(g);
      if (gas.length === 1) {
        for (const p of coldPicks) {
          const leaf = leaves[p]!;
          const r = await (await asRelayer.claim(BigInt(epoch), leaf[1], BigInt(leaf[2]), tree.getProof(index.get(leaf[1])!))).wait();
          coldGas.push(Number(r!.gasUsed));
        }
      }
    }
    // The peer: the same shape in the MerkleDistributor layout, one contract per distribution, its own fresh
    // recipients; then a second distribution to the same recipients (who now hold tokens).
    const peerAccounts = accounts.map((_, i) => nodeAddress(i, `peer${n}`));
    const peerGas: number[][] = [];
    for (let round = 0; round < 2; round++) {
      const peerLeaves = peerAccounts.map((a, i) => solidityPackedKeccak256(['uint256', 'address', 'uint256'], [i, a, amountOf(i)]));
      const peerTree = SimpleMerkleTree.of(peerLeaves);
      const peer = await new ContractFactory(art.abi as never, art.bytecode, admin).deploy(file.token, peerTree.root);
      await peer.waitForDeployment();
      await (await contracts.token.transfer(await peer.getAddress(), peerAccounts.reduce((s, _, i) => s + amountOf(i), 0n))).wait();
      const peerHandle = attach<never>('BitmapDistributor', await peer.getAddress(), relayer) as unknown as { claim(i: number, a: string, amt: bigint, p: string[]): Promise<{ wait(): Promise<{ gasUsed: bigint } | null> }> };
      const peerIndex = new Map<string, number>();
      for (const [i, v] of peerTree.entries()) peerIndex.set(String(v), i);
      const g: number[] = [];
      for (const p of picks) {
        const proof = peerTree.getProof(peerIndex.get(peerLeaves[p]!)!);
        const r = await (await peerHandle.claim(p, peerAccounts[p]!, amountOf(p), proof)).wait();
        g.push(Number(r!.gasUsed));
      }
      peerGas.push(g);
    }
    const row: Row = { nodes: n, treeMs, rootGas, proofLength, firstClaimGas: median(gas[0]!), coldFirstClaimGas: median(coldGas), coldClaims: coldGas.length, laterClaimGas: median(gas[1]!), peerFirstClaimGas: median(peerGas[0]!), peerLaterClaimGas: median(peerGas[1]!) };
    rows.push(row);
    console.error(`settle-gas: ${n} nodes: root ${rootGas} gas; claim ${row.firstClaimGas} first (registered) / ${row.coldFirstClaimGas} first (never registered) / ${row.laterClaimGas} later (peer ${row.peerFirstClaimGas} / ${row.peerLaterClaimGas})`);
  }

  // Paying every node directly: one ERC-20 transfer per node to a fresh address.
  const transferGas: number[] = [];
  for (let i = 0; i < TRANSFERS_MEASURED; i++) {
    const r = await (await contracts.token.transfer(nodeAddress(i, 'direct'), 10n ** 15n)).wait();
    transferGas.push(Number(r!.gasUsed));
  }
  const perTransfer = median(transferGas);

  // Epoch end to claimable root: settle real signed receipts, write the files, post the root, first claim lands.
  const client = new Wallet(chain.keys[0]!);
  const latency: { settleMs: number; writeMs: number; postMs: number; claimMs: number; totalMs: number }[] = [];
  const dirRoot = await mkdtemp(join(tmpdir(), 'edgeshard-settle-gas-'));
  try {
    for (let r = 0; r < LATENCY_RUNS; r++) {
      const epoch = 20_000 + r;
      const gateway = generateTicketKey();
      const session = generateSessionKey();
      const auth = await authoriseSession(client, session, epoch);
      const nodes = Array.from({ length: LATENCY_NODES }, (_, i) => nodeAddress(i, `lat${epoch}`).toLowerCase());
      const claims = Array.from({ length: LATENCY_RECEIPTS }, (_, i) => {
        const node = nodes[i % nodes.length]!;
        const ticket = signClientTicket({ shard: id(`shard ${i}`).slice(2), node, expiresAt: 1_800_000_300, epoch, byteCap: GIB, client: client.address.toLowerCase(), sessionKey: session.publicHex }, gateway);
        return { node, receipt: signReceipt(ticket, 64n << 20n, 1_800_000_100, session) };
      });
      const params = { epoch, epochSeconds: 86_400, pricePerGiB: DEFAULT_REWARD_PARAMS.pricePerGiB.toString(), feeBps: '1000', anonymousWeightBps: '2500', anonymousPool: '0', capacityPool: '0', gateways: { [gateway.keyId]: gateway.publicKeyB64 } };
      const inputs = new Map([
        ['params.json', stableJson(params)],
        ['sessions.jsonl', jsonLines([auth])],
        ['claims.jsonl', jsonLines(claims)],
      ]);
      const dir = join(dirRoot, String(epoch));
      const t0 = performance.now();
      const out = settleEpoch(inputs);
      const t1 = performance.now();
      await mkdir(dir);
      for (const [name, body] of [...inputs, ...out.files]) await writeFile(join(dir, name), body);
      const t2 = performance.now();
      await postRoot(connectContracts(file, settler), dir);
      const t3 = performance.now();
      await claimReward(connectContracts(file, relayer), dir, nodes[0]!);
      const t4 = performance.now();
      latency.push({ settleMs: t1 - t0, writeMs: t2 - t1, postMs: t3 - t2, claimMs: t4 - t3, totalMs: t3 - t0 });
    }
  } finally {
    await rm(dirRoot, { recursive: true, force: true });
  }
  const med = (k: keyof (typeof latency)[number]) => median(latency.map((l) => l[k]));

  const markdown = [
    '## Settlement on chain: gas and time to a claimable root',
    '',
    'Embedded chain (hardhat EDR, in process), contracts compiled by solc-js 0.8.30 (optimizer 10,000 runs). Each claim goes to a',
    `fresh address, sent by a relayer; ${CLAIMS_PER_SIZE} claims per size and case, spread over the tree.`,
    'The peer is the design of Uniswap\'s MerkleDistributor (bitmap by index, single-hashed packed leaves, no guard, no epochs) rebuilt',
    'for 0.8.30 in contracts/test-src/BitmapDistributor.sol, one contract per distribution, measured on the same chain.',
    '',
    mdTable(
      ['nodes in epoch', 'proof length', 'claim gas: first ever (registered)', 'first ever (never registered)', 'claim gas: later epoch', 'peer: first', 'peer: later', 'first (registered) / peer first', 'later / peer later', 'root gas', 'tree build (ms)'],
      rows.map((r) => [fmt(r.nodes), r.proofLength, fmt(r.firstClaimGas), `${fmt(r.coldFirstClaimGas)}${r.coldClaims < CLAIMS_PER_SIZE ? ` (${r.coldClaims} claims)` : ''}`, fmt(r.laterClaimGas), fmt(r.peerFirstClaimGas), fmt(r.peerLaterClaimGas), (r.firstClaimGas / r.peerFirstClaimGas).toFixed(2) + 'x', (r.laterClaimGas / r.peerLaterClaimGas).toFixed(2) + 'x', fmt(r.rootGas), fmt(r.treeMs)]),
    ),
    '',
    '"First ever (registered)": the node registered (approve, `register(minStake)` with exactly the minimum stake, so it holds no',
    'tokens afterwards) and has never claimed: its claim word was warmed by registration, its token balance is a fresh slot.',
    '"Never registered": a fresh address, two fresh slots (claim word and balance). "Later epoch": a registered node claims its',
    'next epoch (both slots already non-zero). Medians of the claims per cell.',
    '',
    `Registration (\`register\`, median of ${registerGas.length}): ${fmt(median(registerGas))} gas; the same registry code naming no Settlement (no claim word warmed):`,
    `${fmt(median(bareRegisterGas))} gas. Warming adds ${fmt(median(registerGas) - median(bareRegisterGas))} gas to registration (the fresh claim-word slot and the call into Settlement),`,
    'paid once, against the first-claim saving in the table (never registered − registered).',
    '',
    `Paying the nodes directly instead, one ERC-20 transfer each to a fresh address: ${fmt(perTransfer)} gas per transfer (median of ${TRANSFERS_MEASURED} measured).`,
    '',
    mdTable(
      ['nodes', 'one root (measured)', 'direct transfers', 'direct / root'],
      rows.map((r) => [fmt(r.nodes), fmt(r.rootGas), `${fmt(perTransfer * r.nodes)} (${r.nodes <= TRANSFERS_MEASURED ? 'per-transfer median × nodes' : 'extrapolated: per-transfer median × nodes'})`, (perTransfer * r.nodes / r.rootGas).toFixed(1) + 'x']),
    ),
    '',
    `Epoch end to claimable root (${LATENCY_NODES} nodes, ${LATENCY_RECEIPTS} signed receipts, 1 paying client; median of ${LATENCY_RUNS}):`,
    `settleEpoch ${fmt(med('settleMs'))} ms + writing the files ${fmt(med('writeMs'))} ms + checking them and posting the root ${fmt(med('postMs'))} ms`,
    `= ${fmt(med('totalMs'))} ms; the first claim then took ${fmt(med('claimMs'))} ms. On a real deployment the challenge window (default 24 h) comes on top:`,
    'that wait is policy, not processing.',
    '',
  ].join('\n');
  return { markdown, json: { rows, registerGas, bareRegisterGas, perTransferGas: perTransfer, transferGasSamples: transferGas, latency } };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const repoRoot = join(import.meta.dirname, '..');
  const header = runHeader(repoRoot);
  const r = await runSettleGasBench();
  const dir = join(import.meta.dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'settle-gas.md'), `${headerMarkdown('Settlement on chain (#10)', header)}\n${r.markdown}`);
  writeFileSync(join(dir, 'settle-gas.json'), `${JSON.stringify({ header, ...(r.json as object) }, null, 2)}\n`);
  console.log(r.markdown);
  process.exit(0);
}
