// Settling one epoch from its input files to its output files, pure: the settler writes what this returns, and
// `rewards verify` runs the same function on the published inputs and compares, file by file and node by node.
import { publicKeyFromB64 } from './tickets.ts';
import { type SessionAuthorisation } from './client-tickets.ts';
import { checkSessionAuthorisation } from './session-auth.ts';
import { createHash } from 'node:crypto';
import { DEFAULT_EXPIRY_GRACE_SECONDS, applyRulesCompact, spentStillCarried, type ReceiptClaim, type RuleContext } from './receipt-rules.ts';
import { checkGatewayRecords, figuresFromRecords, type RecordsOutcome } from './gateway-records.ts';
import { issuedTicketsFrom } from './ticket-batches.ts';
import { computeRewards, epochManifest, jsonLines, rewardLeaves, rewardTree, stableJson, type NodeInputs, type RewardParams } from './epoch.ts';

export interface EpochParamsFile {
  epoch: number;
  epochSeconds: number;
  pricePerGiB: string;
  feeBps: string;
  anonymousWeightBps: string;
  anonymousPool: string;
  capacityPool: string;
  /** Gateway ticket keys: key id → raw Ed25519 public key, base64. */
  gateways: Record<string, string>;
}

/**
 * A file too large to hold as one string (an epoch's claims.jsonl may have a million lines): its lines, read on
 * demand, and the digest and size the manifest records. The settler builds one over a file on disk.
 */
export interface LineFile {
  lines(): Iterable<string>;
  sha256: string;
  bytes: number;
}

/** The input files by name (see docs/proof-of-bandwidth.md); missing optional files count as empty. */
export type EpochInputs = Map<string, string | LineFile>;
export const INPUT_FILES = ['params.json', 'sessions.jsonl', 'claims.jsonl', 'anonymous.jsonl', 'capacity.jsonl', 'scores.jsonl', 'gateway-records.jsonl', 'spent-before.jsonl'] as const;

/** The non-empty lines of a text, without splitting it into an array first. */
function* textLines(text: string): Generator<string> {
  let at = 0;
  while (at < text.length) {
    let nl = text.indexOf('\n', at);
    if (nl < 0) nl = text.length;
    const line = text.slice(at, nl);
    at = nl + 1;
    if (line.trim() !== '') yield line;
  }
}

/** Each non-empty line parsed as JSON, lazily; a line that is not JSON is an error naming the file and line. */
export function* rows<T>(name: string, input: string | LineFile | undefined): Generator<T> {
  if (input === undefined) return;
  let n = 0;
  for (const l of typeof input === 'string' ? textLines(input) : input.lines()) {
    if (l.trim() === '') continue;
    n++;
    try {
      yield JSON.parse(l) as T;
    } catch {
      throw new Error(`${name} line ${n} is not JSON; the epoch's input files are damaged`);
    }
  }
}

function lines<T>(name: string, input: string | LineFile | undefined): T[] {
  return [...rows<T>(name, input)];
}

function textOf(input: string | LineFile | undefined): string | undefined {
  return input === undefined || typeof input === 'string' ? input : [...input.lines()].join('\n');
}

function big(name: string, v: unknown): bigint {
  if (typeof v !== 'string' && typeof v !== 'number') throw new Error(`${name} must be an integer (decimal string)`);
  try {
    const b = BigInt(v);
    if (b < 0n) throw new Error('negative');
    return b;
  } catch {
    throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  }
}

/**
 * Session authorisations by session key. Whoever submits claims can also submit authorisations, so a bogus one must
 * not displace a genuine one: when a key has several different authorisations, only those that verify count, and of
 * those the one valid longest (only the client itself can sign an alternative).
 */
function sessionsByKey(rows: SessionAuthorisation[]): Map<string, SessionAuthorisation> {
  const byKey = new Map<string, SessionAuthorisation[]>();
  for (const s of rows) {
    if (!s || typeof s.sessionKey !== 'string') continue;
    const list = byKey.get(s.sessionKey) ?? [];
    if (!list.some((o) => o.signature === s.signature && o.client === s.client && o.validUntilEpoch === s.validUntilEpoch)) list.push(s);
    byKey.set(s.sessionKey, list);
  }
  const out = new Map<string, SessionAuthorisation>();
  for (const [key, list] of byKey) {
    if (list.length === 1) out.set(key, list[0]!);
    else {
      const good = list.filter((s) => checkSessionAuthorisation(s) === null).sort((a, b) => b.validUntilEpoch - a.validUntilEpoch);
      out.set(key, good[0] ?? list[0]!);
    }
  }
  return out;
}

export interface EpochOutputs {
  files: Map<string, string>;
  root: string | null;
  total: bigint;
}

/**
 * Where settleEpochTo writes one output file, line by line in order; `end` answers the file's sha256 and size for the
 * manifest. The settler's sink writes to disk as it goes (settler/settle-files.ts); stringSinks keeps strings.
 */
export interface FileSink {
  write(text: string): void;
  end(): { sha256: string; bytes: number };
}

/** What settleEpochTo wrote, besides the files: the figures the settler's metrics report. */
export interface EpochSummary {
  root: string | null;
  total: bigint;
  /** The small output files (totals.json, tree.json, manifest.json) as text, also written to their sinks. */
  small: Map<string, string>;
  accepted: number;
  acceptedBytes: bigint;
  rejectedByReason: Map<string, number>;
}

/**
 * The parsed parameters, the gateway records that verified (checked once: the `tickets` batches among them are what
 * lets the rules skip a ticket's own signature) and the rule context of an epoch, from its inputs.
 */
export function epochContext(inputs: EpochInputs): { p: EpochParamsFile; params: RewardParams; ctx: RuleContext; gatewayRecords: RecordsOutcome } {
  const paramsText = textOf(inputs.get('params.json'));
  if (!paramsText) throw new Error('params.json is missing: an epoch cannot be settled without its parameters');
  const p = JSON.parse(paramsText) as EpochParamsFile;
  const params: RewardParams = {
    epoch: p.epoch,
    pricePerGiB: big('pricePerGiB', p.pricePerGiB),
    feeBps: big('feeBps', p.feeBps),
    anonymousWeightBps: big('anonymousWeightBps', p.anonymousWeightBps),
    anonymousPool: big('anonymousPool', p.anonymousPool),
    capacityPool: big('capacityPool', p.capacityPool),
  };
  const trustedGateways = new Map(Object.entries(p.gateways ?? {}).map(([id, b64]) => [id, publicKeyFromB64(b64)]));
  const sessions = sessionsByKey(lines<SessionAuthorisation>('sessions.jsonl', inputs.get('sessions.jsonl')));
  const spentTickets = new Map<string, number>();
  for (const s of rows<{ ticketId: string; epoch: number }>('spent-before.jsonl', inputs.get('spent-before.jsonl'))) spentTickets.set(s.ticketId, s.epoch);
  // Only records a trusted gateway key signed for this epoch count, ticket batches included.
  const gatewayRecords = checkGatewayRecords(lines<unknown>('gateway-records.jsonl', inputs.get('gateway-records.jsonl')), trustedGateways, p.epoch);
  const issuedTickets = issuedTicketsFrom(gatewayRecords.records);
  return { p, params, gatewayRecords, ctx: { epoch: p.epoch, trustedGateways, sessions, spentTickets, expiryGraceSeconds: DEFAULT_EXPIRY_GRACE_SECONDS, issuedTickets } };
}

/** Sinks that keep each file as a string, for settleEpoch. */
function stringSinks(): { sinkFor: (name: string) => FileSink; files: Map<string, string> } {
  const files = new Map<string, string>();
  return {
    files,
    sinkFor(name) {
      const parts: string[] = [];
      return {
        write: (text) => void parts.push(text),
        end() {
          const body = parts.join('');
          files.set(name, body);
          return { sha256: createHash('sha256').update(body).digest('hex'), bytes: Buffer.byteLength(body) };
        },
      };
    },
  };
}

/** Settles an epoch into strings: the files by name, the root and the total. */
export function settleEpoch(inputs: EpochInputs): EpochOutputs {
  const { sinkFor, files } = stringSinks();
  const out = settleEpochTo(inputs, sinkFor);
  return { files, root: out.root, total: out.total };
}

/**
 * Settles an epoch, writing each output file to `sinkFor(name)` as it is built (manifest.json last), so that the
 * large files (accepted, rejected, spent-after: a line per receipt or ticket) are never held whole. `signatures` and
 * `context` are what settler/signature-pool.ts computed ahead (the verdicts are the same without them).
 */
export function settleEpochTo(inputs: EpochInputs, sinkFor: (name: string) => FileSink, opts: { signatures?: Uint8Array; context?: ReturnType<typeof epochContext> } = {}): EpochSummary {
  const { p, params, ctx, gatewayRecords } = opts.context ?? epochContext(inputs);
  const { accepted, rejected } = applyRulesCompact(rows<ReceiptClaim>('claims.jsonl', inputs.get('claims.jsonl')), ctx, opts.signatures);
  const order = accepted.sortedSlots();

  const perNode = new Map<string, NodeInputs>();
  const row = (node: string): NodeInputs => {
    const key = node.toLowerCase();
    let r = perNode.get(key);
    if (!r) perNode.set(key, (r = { node: key, paidBytes: 0n, anonymousBytes: 0n, capacityPoints: 0n, scoreBps: 10_000n }));
    return r;
  };
  let acceptedBytes = 0n;
  for (const slot of order) {
    const a = accepted.at(slot);
    row(a.node).paidBytes += a.bytes;
    acceptedBytes += a.bytes;
  }
  // Plain per-node figures (simulations and tests); a settler fed by gateways writes only gateway-records.jsonl.
  for (const a of lines<{ node: string; bytes: string }>('anonymous.jsonl', inputs.get('anonymous.jsonl'))) row(a.node).anonymousBytes += big('anonymous bytes', a.bytes);
  for (const c of lines<{ node: string; points: string }>('capacity.jsonl', inputs.get('capacity.jsonl'))) row(c.node).capacityPoints += big('capacity points', c.points);
  const scores = lines<{ node: string; scoreBps: string }>('scores.jsonl', inputs.get('scores.jsonl'));
  for (const s of scores) row(s.node).scoreBps = big('scoreBps', s.scoreBps);
  // Gateway-signed records (protocol/gateway-records.ts), as epochContext checked them.
  for (const f of figuresFromRecords(gatewayRecords.records)) {
    const r = row(f.node);
    r.anonymousBytes += f.anonymousBytes;
    r.capacityPoints += f.capacityPoints;
    if (f.scoreBps !== null) r.scoreBps = f.scoreBps;
  }

  const rewards = computeRewards([...perNode.values()], params);
  const leaves = rewardLeaves(p.epoch, rewards);
  const total = rewards.reduce((s, r) => s + r.amount, 0n);
  const digests = new Map<string, { sha256: string; bytes: number }>();
  const small = new Map<string, string>();
  const whole = (name: string, body: string) => {
    const sink = sinkFor(name);
    sink.write(body);
    digests.set(name, sink.end());
    small.set(name, body);
  };
  // Written in chunks of about 1 MiB of lines, built by hand: every field is hex or digits, and a million lines
  // through JSON.stringify's replacer is slow.
  const chunked = (name: string, each: (emit: (line: string) => void) => void) => {
    const sink = sinkFor(name);
    let chunk = '';
    each((line) => {
      chunk += line;
      if (chunk.length >= 1 << 20) {
        sink.write(chunk);
        chunk = '';
      }
    });
    if (chunk !== '') sink.write(chunk);
    digests.set(name, sink.end());
  };
  chunked('accepted.jsonl', (emit) => {
    for (const slot of order) {
      const a = accepted.at(slot);
      emit(`{"claim":${a.claim},"node":"${a.node}","ticketId":"${a.ticketId}","client":"${a.client}","bytes":"${a.bytes}"}\n`);
    }
  });
  const rejectedByReason = new Map<string, number>();
  chunked('rejected.jsonl', (emit) => {
    for (const r of rejected) {
      rejectedByReason.set(r.reason, (rejectedByReason.get(r.reason) ?? 0) + 1);
      emit(jsonLines([r]));
    }
  });
  whole('rejected-records.jsonl', jsonLines(gatewayRecords.rejected));
  whole('totals.json', stableJson(rewards));
  const tree = leaves.length > 0 ? rewardTree(leaves) : null;
  whole('tree.json', stableJson(tree ? tree.dump() : null));
  // spent-after: the tickets paid before and those paid now, merged in id order (a ticket paid before is never
  // accepted again, so the two lists do not overlap); tickets paid more than SPENT_RETENTION_EPOCHS ago are dropped,
  // since rule 4 refuses them anyway, so the carried set stays the size of the live window.
  const before = [...ctx.spentTickets].filter(([, paidIn]) => spentStillCarried(paidIn, p.epoch)).map(([id]) => id).sort();
  chunked('spent-after.jsonl', (emit) => {
    let i = 0;
    let j = 0;
    while (i < before.length || j < order.length) {
      const b = before[i];
      const a = j < order.length ? accepted.ticketIds[order[j]!]! : undefined;
      if (a !== undefined && (b === undefined || a <= b)) {
        emit(`{"ticketId":${JSON.stringify(a)},"epoch":${p.epoch}}\n`);
        j++;
        if (a === b) i++;
      } else {
        emit(`{"ticketId":${JSON.stringify(b)},"epoch":${ctx.spentTickets.get(b!)}}\n`);
        i++;
      }
    }
  });
  const root = tree ? tree.root : null;
  const all = new Map<string, string | LineFile | { sha256: string; bytes: number }>([...INPUT_FILES.filter((n) => inputs.has(n)).map((n) => [n, inputs.get(n)!] as const), ...digests]);
  whole('manifest.json', epochManifest(p.epoch, all, root ?? '', total));
  return { root, total, small, accepted: accepted.size, acceptedBytes, rejectedByReason };
}

export interface VerifyLine {
  node: string;
  published: string | null;
  recomputed: string | null;
  matches: boolean;
  /** Why receipts this node submitted, and gateway records naming it, did not count, with how many each. */
  rejectedReasons: Record<string, number>;
  /** Every receipt of this node that did not count: its ticket id and bytes (null when it does not decode) and why. */
  rejected: Array<{ ticketId: string | null; bytes: string | null; reason: string }>;
  /** The recomputed figures behind the amount (null when the node earned nothing): what changed, and why. */
  figures: Record<string, string> | null;
}

/**
 * Recomputes an epoch from its published input files and compares each node's amount with the published totals.
 * `nodes` limits the answer to some nodes (all when empty).
 */
export function verifyEpoch(published: Map<string, string>, nodes: string[] = []): { ok: boolean; rootMatches: boolean; lines: VerifyLine[] } {
  const inputs: EpochInputs = new Map(INPUT_FILES.filter((n) => published.has(n)).map((n) => [n, published.get(n)!]));
  const recomputed = settleEpoch(inputs);
  const amounts = (text: string | undefined) => new Map(((text ? JSON.parse(text) : []) as Array<{ node: string; amount: string }>).map((r) => [r.node.toLowerCase(), r.amount]));
  const pub = amounts(published.get('totals.json'));
  const rec = amounts(recomputed.files.get('totals.json'));
  const reasons = new Map<string, Record<string, number>>();
  const details = new Map<string, VerifyLine['rejected']>();
  for (const r of rows<{ node: string; ticketId: string | null; bytes: string | null; reason: string }>('rejected.jsonl', recomputed.files.get('rejected.jsonl'))) {
    const node = String(r.node).toLowerCase();
    const m = reasons.get(node) ?? {};
    m[r.reason] = (m[r.reason] ?? 0) + 1;
    reasons.set(node, m);
    const list = details.get(node) ?? [];
    list.push({ ticketId: r.ticketId ?? null, bytes: r.bytes ?? null, reason: r.reason });
    details.set(node, list);
  }
  const figures = new Map(((JSON.parse(recomputed.files.get('totals.json') ?? '[]') ?? []) as Array<Record<string, string>>).map((r) => [String(r.node).toLowerCase(), r]));
  for (const r of lines<{ record: { node?: unknown }; reason: string }>('rejected-records.jsonl', recomputed.files.get('rejected-records.jsonl'))) {
    if (typeof r.record?.node !== 'string') continue;
    const m = reasons.get(r.record.node.toLowerCase()) ?? {};
    const reason = `gateway record: ${r.reason}`;
    m[reason] = (m[reason] ?? 0) + 1;
    reasons.set(r.record.node.toLowerCase(), m);
  }
  const wanted = nodes.length > 0 ? nodes.map((n) => n.toLowerCase()) : [...new Set([...pub.keys(), ...rec.keys()])].sort();
  const out = wanted.map((node) => {
    const published = pub.get(node) ?? null;
    const again = rec.get(node) ?? null;
    return { node, published, recomputed: again, matches: published === again, rejectedReasons: reasons.get(node) ?? {}, rejected: details.get(node) ?? [], figures: figures.get(node) ?? null };
  });
  const publishedTree = published.get('tree.json');
  const rootMatches = (publishedTree ? (JSON.parse(publishedTree) as { tree?: string[] } | null)?.tree?.[0] ?? null : null) === recomputed.root;
  return { ok: rootMatches && out.every((l) => l.matches), rootMatches, lines: out };
}
