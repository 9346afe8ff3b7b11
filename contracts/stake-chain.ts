// A node operator's stake in the NodeRegistry: register, add, start unbonding, withdraw, and read it back. Each
// call checks what it can before sending (a refused transaction still costs the estimate's round trip and reads as
// raw revert data), and every contract refusal that gets through anyway is named in words.
import { dataSlice, formatUnits, getAddress, type JsonRpcProvider } from 'ethers';
import { describeRevert, revertMessage, type Contracts, type RegistryContract } from './handles.ts';

export interface StakeStatus {
  node: string;
  registered: boolean;
  stake: bigint;
  /** 0 while active; otherwise the unix time the stake becomes withdrawable. */
  unbondsAt: bigint;
  active: boolean;
  minStake: bigint;
  unbondingDelay: bigint;
  /** Token balance of the node's account (what it could stake). */
  balance: bigint;
}

export interface StakeTx {
  txHash: string;
  gasUsed: bigint;
  status: StakeStatus;
}

/** A token amount for people: 18 decimals, with the token's symbol. */
export function tokens(amount: bigint): string {
  return `${formatUnits(amount, 18)} EDGE`;
}

/** A time the contracts keep in unix seconds, as an ISO date. */
export function when(unix: bigint): string {
  return new Date(Number(unix) * 1000).toISOString();
}

/** The registry's custom errors (and the token's, raised inside a stake transfer) as sentences. */
export function stakeRevertMessage(err: unknown): string {
  const r = describeRevert(err);
  if (!r) return revertMessage(err);
  const [a, b, c] = r.args as [unknown, unknown, unknown];
  switch (r.name) {
    case 'StakeBelowMinimum':
      return `a stake of ${tokens(a as bigint)} is below the registry's minimum of ${tokens(b as bigint)}`;
    case 'AlreadyRegistered':
      return `${String(a)} is already registered (add to its stake with \`edgeshard stake add\`)`;
    case 'NotRegistered':
      return `${String(a)} is not registered (register with \`edgeshard stake register --stake AMOUNT\`)`;
    case 'AlreadyUnbonding':
      return `${String(a)} is already unbonding; its stake is withdrawable from ${when(b as bigint)}`;
    case 'NotUnbonding':
      return `${String(a)} is not unbonding (run \`edgeshard stake unbond\` first, then wait out the unbonding delay)`;
    case 'StillUnbonding':
      return `${String(a)} is still unbonding; its stake is withdrawable from ${when(b as bigint)}`;
    case 'ZeroAmount':
      return 'the amount must be more than zero';
    case 'ERC20InsufficientBalance':
      return `${String(a)} holds ${tokens(b as bigint)}, less than the ${tokens(c as bigint)} to stake`;
    case 'ERC20InsufficientAllowance':
      return `the registry may move only ${tokens(b as bigint)} of this account's tokens, less than the ${tokens(c as bigint)} to stake`;
    default:
      return revertMessage(err);
  }
}

/** The node's registration, stake and unbonding time as the registry holds them. */
export async function stakeStatus(contracts: Contracts, node: string): Promise<StakeStatus> {
  const [n, active, minStake, unbondingDelay, balance] = await Promise.all([
    contracts.registry.nodes(node),
    contracts.registry.isActive(node),
    contracts.registry.minStake(),
    contracts.registry.unbondingDelay(),
    contracts.token.balanceOf(node),
  ]);
  return { node, registered: n.registered, stake: n.stake, unbondsAt: n.unbondsAt, active, minStake, unbondingDelay, balance };
}

/** A one-line account of a status, as the CLI prints it. */
export function describeStake(s: StakeStatus, nowUnix = BigInt(Math.floor(Date.now() / 1000))): string {
  if (!s.registered) return `${s.node} is not registered (minimum stake ${tokens(s.minStake)}; token balance ${tokens(s.balance)})`;
  const state = s.unbondsAt === 0n
    ? s.active ? 'active' : `inactive: the stake is below the minimum ${tokens(s.minStake)} (slashed?)`
    : s.unbondsAt > nowUnix ? `unbonding, withdrawable from ${when(s.unbondsAt)}` : `unbonded, withdrawable since ${when(s.unbondsAt)}`;
  return `${s.node} stake ${tokens(s.stake)}, ${state}`;
}

async function send(what: string, contracts: Contracts, node: string, tx: () => Promise<{ hash: string; wait(): Promise<{ gasUsed: bigint } | null> }>): Promise<StakeTx> {
  try {
    const sent = await tx();
    const receipt = await sent.wait();
    return { txHash: sent.hash, gasUsed: receipt?.gasUsed ?? 0n, status: await stakeStatus(contracts, node) };
  } catch (err) {
    throw new Error(`${what} failed: ${stakeRevertMessage(err)}`);
  }
}

/** Lets the registry move `amount` of the signer's tokens, unless it already may. */
async function approveRegistry(contracts: Contracts, node: string, amount: bigint): Promise<void> {
  const registry = await contracts.registry.getAddress();
  if ((await contracts.token.allowance(node, registry)) >= amount) return;
  try {
    await (await contracts.token.approve(registry, amount)).wait();
  } catch (err) {
    throw new Error(`approving the registry to take ${tokens(amount)} failed: ${stakeRevertMessage(err)}`);
  }
}

async function checkBalance(contracts: Contracts, node: string, amount: bigint): Promise<void> {
  const held = await contracts.token.balanceOf(node);
  if (held < amount) throw new Error(`${node} holds ${tokens(held)}, less than the ${tokens(amount)} to stake`);
}

/** Registers the signer `node` with `stake` base units (approving the registry first). */
export async function registerStake(contracts: Contracts, node: string, stake: bigint): Promise<StakeTx> {
  const s = await stakeStatus(contracts, node);
  if (s.registered) throw new Error(`register failed: ${node} is already registered with ${tokens(s.stake)} (add to it with \`edgeshard stake add\`)`);
  if (stake < s.minStake || stake === 0n) throw new Error(`register failed: a stake of ${tokens(stake)} is below the registry's minimum of ${tokens(s.minStake)}`);
  await checkBalance(contracts, node, stake);
  await approveRegistry(contracts, node, stake);
  return send('register', contracts, node, () => contracts.registry.register(stake));
}

/** Adds `amount` base units to the signer's stake (approving the registry first). */
export async function addStake(contracts: Contracts, node: string, amount: bigint): Promise<StakeTx> {
  if (amount <= 0n) throw new Error('add failed: the amount must be more than zero');
  const s = await stakeStatus(contracts, node);
  if (!s.registered) throw new Error(`add failed: ${stakeRevertMessage({ revert: { name: 'NotRegistered', args: [node] } })}`);
  if (s.unbondsAt !== 0n) throw new Error(`add failed: ${stakeRevertMessage({ revert: { name: 'AlreadyUnbonding', args: [node, s.unbondsAt] } })}`);
  await checkBalance(contracts, node, amount);
  await approveRegistry(contracts, node, amount);
  return send('add', contracts, node, () => contracts.registry.addStake(amount));
}

/** Starts the unbonding delay: the node stops being active and may withdraw once it is over (slashable until then). */
export async function startUnbonding(contracts: Contracts, node: string): Promise<StakeTx> {
  return send('unbond', contracts, node, () => contracts.registry.startUnbonding());
}

/** Withdraws the whole stake once the unbonding delay is over; the node is then unregistered. */
export async function withdrawStake(contracts: Contracts, node: string): Promise<StakeTx & { withdrawn: bigint }> {
  const before = await stakeStatus(contracts, node);
  const r = await send('withdraw', contracts, node, () => contracts.registry.withdrawStake());
  return { ...r, withdrawn: before.stake };
}

/** The registry's events that change what a node has at stake; each names the node as its first indexed argument. */
const STAKE_EVENTS = ['NodeRegistered', 'StakeAdded', 'UnbondingStarted', 'StakeWithdrawn', 'NodeSlashed'] as const;

/**
 * The registry's stake events read from the chain, for the gateway's stake refresh: the head, and the nodes named in
 * blocks `from`..`to`, asked in ranges of at most `maxBlockRange` blocks (public endpoints refuse wide eth_getLogs).
 */
export function stakeEventsOnChain(
  registry: RegistryContract,
  provider: Pick<JsonRpcProvider, 'send' | 'getLogs'>,
  maxBlockRange = 2_000,
): { head(): Promise<number>; changedNodes(from: number, to: number): Promise<string[]> } {
  const topics = STAKE_EVENTS.map((name) => registry.interface.getEvent(name)!.topicHash);
  return {
    // Not getBlockNumber(): ethers answers it from a 250 ms cache, which would let a refresh just after a block miss it.
    head: async () => Number(BigInt((await provider.send('eth_blockNumber', [])) as string)),
    async changedNodes(from, to) {
      const address = await registry.getAddress();
      const nodes = new Set<string>();
      for (let start = from; start <= to; start += maxBlockRange) {
        const logs = await provider.getLogs({ address, topics: [topics], fromBlock: start, toBlock: Math.min(to, start + maxBlockRange - 1) });
        for (const log of logs) if (log.topics[1]) nodes.add(getAddress(dataSlice(log.topics[1], 12)));
      }
      return [...nodes];
    },
  };
}
