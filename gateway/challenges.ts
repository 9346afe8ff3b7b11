// Capacity challenges: at random times the gateway asks each node for a random byte range of a shard the node's
// cache summary says it holds, within a deadline, verifies the bytes against the manifest's chunk hashes, and writes
// the outcome (throughput, pass or fail) as a record signed with its ticket key (protocol/gateway-records.ts). The
// records feed the node's score here and its capacity points at the settler.
//
// "Holds it" is the claim under test. A node that answers from a cold cache (x-edgeshard-cache: MISS, i.e. it filled
// from the origin during the challenge) fails it as `not-held`, and its fill time never counts as its throughput. A
// node that hides a fill behind a HIT header passes only if the fill fits the deadline: what a challenge proves is
// "delivered these bytes this fast", which is the capacity being paid for (docs/proof-of-bandwidth.md).
//
// Pure core (planning, deadlines, checking the answer) first; the Challenger below is the I/O shell.
import { getGlobalDispatcher, request, type Dispatcher } from 'undici';
import { chunkBounds, chunkListPath, chunkCount, leafHash } from '../protocol/chunks.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { epochOf } from '../protocol/client-tickets.ts';
import { signGatewayRecord, type ChallengeFailure, type ChallengeRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import type { TicketKey } from '../protocol/tickets.ts';
import type { Manifest, ShardEntry } from '../protocol/manifest.ts';
import { failureCategory } from './probe-failure.ts';
import { ChunkLists } from '../protocol/chunk-lists.ts';
import type { DatasetCatalog } from './datasets.ts';
import type { NodeRecord } from './registry.ts';
import type { TicketIssuer } from './ticket-issuer.ts';

export interface ChallengeRules {
  /** Most bytes one challenge asks for (whole chunks; a format 1 shard is challenged whole only if it fits). */
  maxBytes: number;
  /** Deadline = baseDeadlineMs + the time the range takes at minBytesPerSecond. */
  baseDeadlineMs: number;
  minBytesPerSecond: number;
}

export const DEFAULT_CHALLENGE_RULES: ChallengeRules = { maxBytes: 4 << 20, baseDeadlineMs: 2_000, minBytesPerSecond: 1_000_000 };

export interface ChallengePlan {
  dataset: string;
  shard: ShardEntry;
  offset: number;
  length: number;
  deadlineMs: number;
  /** Format 2: the chunk size and the first chunk of the range (the range is whole chunks). */
  chunkSize?: number;
  firstChunk?: number;
}

export function challengeDeadlineMs(length: number, rules: ChallengeRules = DEFAULT_CHALLENGE_RULES): number {
  return rules.baseDeadlineMs + Math.ceil((length * 1000) / rules.minBytesPerSecond);
}

/**
 * A random range of a random shard among those `holds` says the node holds. Format 2 shards: whole chunks starting
 * at a random chunk, at most rules.maxBytes (at least one chunk). Format 1: the whole shard, if it fits. Null when
 * the node claims no challengeable shard. Pure, given `random`.
 */
export function planChallenge(manifests: ReadonlyArray<{ name: string; manifest: Manifest }>, holds: (sha: string) => boolean, random: () => number, rules: ChallengeRules = DEFAULT_CHALLENGE_RULES): ChallengePlan | null {
  const candidates: Array<{ dataset: string; shard: ShardEntry; chunkSize?: number }> = [];
  for (const { name, manifest } of manifests) {
    for (const shard of manifest.shards) {
      if (shard.size === 0 || !holds(shard.sha256)) continue;
      const chunked = manifest.chunkSize !== undefined && shard.chunkRoot !== undefined;
      if (!chunked && shard.size > rules.maxBytes) continue;
      candidates.push({ dataset: name, shard, ...(chunked ? { chunkSize: manifest.chunkSize! } : {}) });
    }
  }
  if (candidates.length === 0) return null;
  const pick = candidates[Math.min(candidates.length - 1, Math.floor(random() * candidates.length))]!;
  if (pick.chunkSize === undefined) {
    return { dataset: pick.dataset, shard: pick.shard, offset: 0, length: pick.shard.size, deadlineMs: challengeDeadlineMs(pick.shard.size, rules) };
  }
  const chunks = chunkCount(pick.shard.size, pick.chunkSize);
  const span = Math.max(1, Math.floor(rules.maxBytes / pick.chunkSize));
  const firstChunk = Math.min(chunks - 1, Math.floor(random() * chunks));
  const lastChunk = Math.min(chunks - 1, firstChunk + span - 1);
  const offset = chunkBounds(firstChunk, pick.shard.size, pick.chunkSize).start;
  const end = chunkBounds(lastChunk, pick.shard.size, pick.chunkSize).end;
  return { dataset: pick.dataset, shard: pick.shard, offset, length: end - offset, deadlineMs: challengeDeadlineMs(end - offset, rules), chunkSize: pick.chunkSize, firstChunk };
}

/** What is wrong with the node's answer, or null when every byte is right. `leaves`: the shard's chunk list (format 2). Pure. */
export function checkChallengeAnswer(plan: ChallengePlan, answer: { status: number; contentRange?: string; body: Buffer }, leaves: Buffer[] | null): string | null {
  const whole = plan.offset === 0 && plan.length === plan.shard.size;
  if (answer.status === 200 && !whole) return 'answered 200 with the whole shard to a range request';
  if (answer.status !== 206 && answer.status !== 200) return `status ${answer.status}`;
  if (answer.status === 206 && answer.contentRange !== `bytes ${plan.offset}-${plan.offset + plan.length - 1}/${plan.shard.size}`) return `wrong Content-Range: ${answer.contentRange ?? 'none'}`;
  if (answer.body.length !== plan.length) return `${answer.body.length} bytes, want ${plan.length}`;
  if (plan.chunkSize === undefined || plan.firstChunk === undefined) return sha256Hex(answer.body) === plan.shard.sha256 ? null : 'sha256 mismatch';
  if (!leaves) return 'no chunk list to check against';
  for (let i = plan.firstChunk, at = 0; at < answer.body.length; i++) {
    const { start, end } = chunkBounds(i, plan.shard.size, plan.chunkSize);
    if (!leafHash(answer.body.subarray(at, at + (end - start))).equals(leaves[i]!)) return `chunk ${i} failed its hash`;
    at += end - start;
  }
  return null;
}

// ---- the shell ------------------------------------------------------------------------------------------------

/** When to run the next round: tests pass one they fire by hand. */
export interface ChallengeScheduler {
  after(ms: number, run: () => void): { cancel(): void };
}

export const timerScheduler: ChallengeScheduler = {
  after(ms, run) {
    const t = setTimeout(run, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

export interface ChallengeOutcome {
  node: NodeRecord;
  record: GatewayRecord & ChallengeRecord;
  /** The raw reason (admin and logs only). */
  detail?: string;
  /** A re-check of another gateway's evidence (gateway/corroborator.ts): it signs that evidence, never its own. */
  corroboration?: true;
}

export interface ChallengerOptions {
  catalog: DatasetCatalog;
  issuer: TicketIssuer;
  key: TicketKey;
  gatewayId: string;
  /** The pinned dispatcher's agent: only verified node origins are reachable through it. */
  dispatcher: Dispatcher;
  /** For chunk lists from the origin. */
  originDispatcher?: Dispatcher;
  /** The gateway's chunk list cache, shared with the origin proxy (default: one of the challenger's own). */
  chunkLists?: ChunkLists;
  /** Mean time between rounds; each gap is uniform in [0.5, 1.5] × this. 0: no rounds (challenge() still works). */
  intervalMs: number;
  epochSeconds: number;
  rules?: ChallengeRules;
  random?: () => number;
  scheduler?: ChallengeScheduler;
  /** Clock for the records' time and epoch. */
  now?: () => number;
  /** Which nodes a round challenges (default: the healthy ones). */
  due?: (node: NodeRecord) => boolean;
  /** A challenge is about to be sent. */
  onIssue?(node: NodeRecord, plan: ChallengePlan): void;
  onResult?(outcome: ChallengeOutcome): void;
  /** Switch off byte verification (tests show the claim-everything attack passing without it). Not a flag. */
  verifyBytes?: boolean;
}

/**
 * The gateway's chunk list cache (challenges, signed reports, the origin proxy). 16 MiB holds the lists of about
 * 512 GiB of shards at 1 MiB chunks; a list fetch gives up after 15 s (the dispatcher's own timeouts are for shards).
 */
export function gatewayChunkLists(originUrl: string, dispatcher: Dispatcher): ChunkLists {
  return new ChunkLists({ originUrl, dispatcher, maxBytes: 16 * 1024 * 1024, timeoutMs: 15_000 });
}

export class Challenger {
  private pending: { cancel(): void } | null = null;
  private round: Promise<void> | null = null;
  private closed = false;
  /** Verified chunk lists (bounded). */
  private readonly lists: ChunkLists;
  /** Rounds started (tests wait on it). */
  rounds = 0;
  /** The last challenges of each node (what /v1/nodes shows operators). */
  readonly history = new Map<string, ChallengeRecord[]>();

  constructor(
    private readonly nodes: () => Iterable<NodeRecord>,
    private readonly opts: ChallengerOptions,
  ) {
    this.lists = opts.chunkLists ?? gatewayChunkLists(opts.catalog.originUrl, opts.originDispatcher ?? getGlobalDispatcher());
  }

  private get random(): () => number {
    return this.opts.random ?? Math.random;
  }

  start(): void {
    if (this.opts.intervalMs <= 0 || this.closed) return;
    const gap = Math.round(this.opts.intervalMs * (0.5 + this.random()));
    this.pending = (this.opts.scheduler ?? timerScheduler).after(gap, () => {
      this.pending = null;
      this.round = this.challengeAll().finally(() => this.start());
    });
  }

  /** One round: every due node, each with its own random shard and range. */
  async challengeAll(): Promise<void> {
    this.rounds++;
    const due = this.opts.due ?? ((n: NodeRecord) => n.healthy);
    await Promise.all([...this.nodes()].filter(due).map((n) => this.challenge(n).catch(() => null)));
  }

  /** Waits for the round in progress, if any. */
  async settled(): Promise<void> {
    await this.round;
  }

  /** Challenges one node now; null when it claims no shard there is to challenge (or the chunk list is unavailable). */
  async challenge(
    node: NodeRecord,
    plan: ChallengePlan | null = planChallenge(this.opts.catalog.all(), (sha) => node.holdsShard(sha), this.random, this.opts.rules),
    kind: { corroboration?: boolean } = {},
  ): Promise<ChallengeOutcome | null> {
    if (!plan) return null;
    let leaves: Buffer[] | null = null;
    if (plan.chunkSize !== undefined) {
      leaves = await this.chunkList(plan).catch(() => null);
      if (!leaves) return null; // the origin's fault, not the node's: no record
    }
    const at = (this.opts.now ?? Date.now)();
    this.opts.onIssue?.(node, plan);
    const started = performance.now();
    let failure: ChallengeFailure | undefined;
    let detail: string | undefined;
    let elapsedMs = plan.deadlineMs;
    try {
      const ticket = this.opts.issuer.issue(node.id, plan.shard.sha256);
      const res = await request(`${node.url}/shard/${plan.shard.sha256}?ticket=${ticket}`, {
        dispatcher: this.opts.dispatcher,
        headers: { range: `bytes=${plan.offset}-${plan.offset + plan.length - 1}` },
        signal: AbortSignal.timeout(plan.deadlineMs),
      });
      const parts: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > plan.length) {
          res.body.destroy();
          break;
        }
        parts.push(chunk as Buffer);
      }
      elapsedMs = Math.max(1, Math.ceil(performance.now() - started));
      const range = res.headers['content-range'];
      const answer = { status: res.statusCode, ...(typeof range === 'string' ? { contentRange: range } : {}), body: Buffer.concat(parts) };
      const wrong =
        this.opts.verifyBytes === false
          ? res.statusCode >= 400
            ? `status ${res.statusCode}`
            : null
          : size > plan.length
            ? `more than the ${plan.length} bytes asked for`
            : checkChallengeAnswer(plan, answer, leaves);
      if (wrong) {
        failure = /^status /.test(wrong) ? 'bad-status' : 'wrong-bytes';
        detail = wrong;
      } else if (res.headers['x-edgeshard-cache'] === 'MISS') {
        failure = 'not-held';
        detail = 'the node filled the shard from the origin: it did not hold it';
      } else if (elapsedMs > plan.deadlineMs) {
        failure = 'timeout';
        detail = `took ${elapsedMs} ms, deadline ${plan.deadlineMs} ms`;
      }
    } catch (err) {
      elapsedMs = Math.max(1, Math.ceil(performance.now() - started));
      failure = (err as Error).name === 'TimeoutError' ? 'timeout' : failureCategory(err);
      detail = (err as Error & { code?: string }).code ?? (err as Error).name ?? (err as Error).message;
    }
    const record = signGatewayRecord(
      {
        type: 'challenge',
        gateway: this.opts.gatewayId,
        epoch: epochOf(Math.floor(at / 1000), this.opts.epochSeconds),
        at,
        node: node.id,
        shard: plan.shard.sha256,
        offset: plan.offset,
        length: plan.length,
        deadlineMs: plan.deadlineMs,
        elapsedMs,
        bytesPerSecond: failure ? 0 : Math.floor((plan.length * 1000) / elapsedMs),
        ok: failure === undefined,
        ...(failure ? { failure } : {}),
      },
      this.opts.key,
    ) as GatewayRecord & ChallengeRecord;
    let h = this.history.get(node.id);
    if (!h) this.history.set(node.id, (h = []));
    h.push(record);
    if (h.length > 10) h.shift();
    const outcome: ChallengeOutcome = { node, record, ...(detail ? { detail } : {}), ...(kind.corroboration ? { corroboration: true as const } : {}) };
    this.opts.onResult?.(outcome);
    return outcome;
  }

  /** Drops a forgotten node's challenge records (see Prober.forget). */
  forget(id: string): void {
    this.history.delete(id);
  }

  /** The shard's leaf hashes, from the origin (checked against the manifest's root, so the source needs no trust). */
  chunkList(plan: Pick<ChallengePlan, 'dataset' | 'shard' | 'chunkSize'>): Promise<Buffer[]> {
    const { sha256, size, chunkRoot } = plan.shard;
    return this.lists.get({ sha256, size, chunks: { chunkSize: plan.chunkSize!, chunkRoot: chunkRoot!, listPath: chunkListPath(plan.dataset, sha256) } });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.pending?.cancel();
    await this.round?.catch(() => {});
  }
}
