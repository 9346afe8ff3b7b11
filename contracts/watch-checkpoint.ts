// The chain watcher's checkpoint: the last block whose events are fully counted, that block's hash, and the ledger's
// totals at it, for one deployment. A restarted watcher resumes from it instead of reading every block from the
// deployment again. Parsing and the resume decision are pure; reading and the atomic write (temp file, fsync,
// rename, directory fsync) are the thin shell.
import { readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ChainLedger, type LedgerState } from './chain-ledger.ts';
import type { ContractsFile } from './handles.ts';
import { syncDir, writeFileSynced } from '../protocol/sync-dir.ts';

export const CHECKPOINT_FORMAT = 'edgeshard-chain-watch-v1';

export interface WatchCheckpoint {
  format: typeof CHECKPOINT_FORMAT;
  chainId: number;
  /** The deployment it counts: a checkpoint of another one (a new contracts file) is not resumed. */
  contracts: { registry: string; escrow: string; settlement: string };
  deployBlock: number;
  /** The last block whose events the ledger counts; always at least the confirmations behind the head it was read at. */
  block: number;
  /** That block's hash: a chain reset or reorganised past it no longer has it. */
  blockHash: string;
  ledger: LedgerState;
}

function deploymentOf(file: ContractsFile): WatchCheckpoint['contracts'] {
  return { registry: file.registry.toLowerCase(), escrow: file.escrow.toLowerCase(), settlement: file.settlement.toLowerCase() };
}

export function checkpointOf(file: ContractsFile, block: number, blockHash: string, ledger: ChainLedger): WatchCheckpoint {
  return { format: CHECKPOINT_FORMAT, chainId: file.chainId, contracts: deploymentOf(file), deployBlock: file.deployBlock ?? 0, block, blockHash, ledger: ledger.toJSON() };
}

/** The checkpoint in `text`, with its ledger rebuilt, or why it cannot be used for this deployment. Pure. */
export function parseCheckpoint(text: string, file: ContractsFile): { checkpoint: WatchCheckpoint; ledger: ChainLedger } | { problem: string } {
  let raw: Partial<WatchCheckpoint>;
  try {
    raw = JSON.parse(text) as Partial<WatchCheckpoint>;
  } catch (err) {
    return { problem: `not JSON (${(err as Error).message})` };
  }
  if (typeof raw !== 'object' || raw === null || raw.format !== CHECKPOINT_FORMAT) return { problem: `not a ${CHECKPOINT_FORMAT} checkpoint` };
  const here = deploymentOf(file);
  const there = raw.contracts;
  if (raw.chainId !== file.chainId || there?.registry !== here.registry || there.escrow !== here.escrow || there.settlement !== here.settlement) {
    return { problem: `it is for another deployment (chain ${String(raw.chainId)}, settlement ${String(there?.settlement)})` };
  }
  if (typeof raw.block !== 'number' || !Number.isSafeInteger(raw.block) || raw.block < 0) return { problem: 'its block is not a block number' };
  if (typeof raw.blockHash !== 'string' || !/^0x[0-9a-f]{64}$/i.test(raw.blockHash)) return { problem: 'its block hash is not a hash' };
  try {
    return { checkpoint: raw as WatchCheckpoint, ledger: ChainLedger.fromJSON(raw.ledger) };
  } catch (err) {
    return { problem: (err as Error).message };
  }
}

/**
 * Whether the chain still holds the checkpoint's block as it was: null when it can be resumed; otherwise why not (a
 * dev chain reset to fewer blocks, or one reset or reorganised so that the block there is another). Pure.
 */
export function resumeProblem(checkpoint: WatchCheckpoint, head: number, hashOnChain: string | null): string | null {
  if (checkpoint.block > head) return `its block ${checkpoint.block} is ahead of the chain's head ${head} (a reset chain?)`;
  if (hashOnChain === null || hashOnChain.toLowerCase() !== checkpoint.blockHash.toLowerCase()) {
    return `its block ${checkpoint.block} is not on this chain any more (hash ${hashOnChain ?? 'none'}, the checkpoint has ${checkpoint.blockHash}: a reset chain, or a reorganisation deeper than the confirmations)`;
  }
  return null;
}

/** The checkpoint file's text, or null when there is none. */
export async function readCheckpointText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Replaces the checkpoint in one step: a crash leaves the old one or the new one, never a torn file. */
export async function writeCheckpoint(path: string, checkpoint: WatchCheckpoint): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFileSynced(tmp, JSON.stringify(checkpoint) + '\n');
  await rename(tmp, path);
  await syncDir(dirname(path));
}
