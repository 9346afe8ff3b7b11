// The settler's state and its one writer: open epochs as append-only input files, settled epochs as published,
// content-addressed directories. Everything lives in files under one directory, so a restart (or a crash) resumes
// from disk with nothing acknowledged lost. HTTP is settler/server.ts; the rules are protocol/.
//
//   <dir>/open/<epoch>/params.json              the epoch's parameters, fixed when it opens
//   <dir>/open/<epoch>/claims.jsonl             {node, receipt} per submitted receipt, in arrival order
//   <dir>/open/<epoch>/sessions.jsonl           session authorisations that verified, each once
//   <dir>/open/<epoch>/gateway-records.jsonl    gateway records that verified, each id once
//   <dir>/open/<epoch>/nonces.jsonl             {node, nonce} of accepted batches (replay defence; not published)
//   <dir>/epochs/<epoch>/...                    the published files (protocol/epoch-settle.ts), manifest.json last
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import type { Logger } from '../protocol/log.ts';
import { silentLogger } from '../protocol/log.ts';
import { publicKeyFromB64 } from '../protocol/tickets.ts';
import { type SessionAuthorisation } from '../protocol/client-tickets.ts';
import { checkSessionAuthorisation } from '../protocol/session-auth.ts';
import { checkClaim, DEFAULT_EXPIRY_GRACE_SECONDS } from '../protocol/receipt-rules.ts';
import { checkGatewayRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import type { EpochParamsFile } from '../protocol/epoch-settle.ts';
import { sha256Hex, type RewardParams } from '../protocol/epoch.ts';
import {
  checkClaimBatchSignature,
  checkClaimFreshness,
  nonceKey,
  parseClaimBatch,
  parseGatewayRecordsPost,
  type ClaimBatchAnswer,
  type GatewayRecordsAnswer,
} from '../protocol/settler-api.ts';
import { JsonlFile } from './jsonl-file.ts';
import { settleEpochDir } from './settle-files.ts';
import type { SettlerMetrics } from './metrics.ts';
import { writeFileSynced } from '../protocol/sync-dir.ts';

export interface SettlerOptions {
  dir: string;
  /** Named in every claim batch a node signs for this settler. */
  id: string;
  epochSeconds: number;
  /** Seconds after an epoch ends during which its claims are still accepted; then it settles. */
  claimWindowSeconds: number;
  params: Omit<RewardParams, 'epoch'>;
  /** Trusted gateway ticket keys: key id → raw Ed25519 public key, base64. */
  gateways: Record<string, string>;
  /** Unix milliseconds; injectable so tests drive epochs without waiting. */
  now?: () => number;
  logger?: Logger;
  metrics?: SettlerMetrics;
  /** Called after an epoch's files are published (e.g. to post its root on chain); awaited, so calls never overlap. */
  onSettled?: (epoch: number, epochDir: string) => Promise<void>;
  /**
   * Gateway records that verified and were recorded (and, when an open epoch is reopened after a restart, the
   * evidence records it held): the slasher (settler/slasher.ts) takes the `evidence` ones.
   */
  onGatewayRecords?: (records: GatewayRecord[]) => void;
}

/** An HTTP-shaped answer: the server sends it as JSON. */
export interface Answer {
  status: number;
  body: unknown;
}

interface OpenEpoch {
  epoch: number;
  dir: string;
  params: EpochParamsFile;
  trusted: Map<string, KeyObject>;
  claims: JsonlFile;
  sessions: JsonlFile;
  records: JsonlFile;
  nonces: JsonlFile;
  /** Session authorisations held (all verified), by session key. */
  sessionAuth: Map<string, SessionAuthorisation>;
  sessionLines: Set<string>;
  nonceSet: Set<string>;
  recordIds: Set<string>;
  claimCount: number;
}

export interface SettledEpoch {
  epoch: number;
  root: string;
  total: string;
  manifestSha256: string;
}

const EPOCH_FILE = /^[a-z][a-z-]*\.jsonl?$/;

export class Settler {
  private readonly open = new Map<number, OpenEpoch>();
  private readonly opening = new Map<number, Promise<OpenEpoch>>();
  private settled: SettledEpoch[] = [];
  /**
   * Ticket ids paid in the last settled epochs → the epoch that paid them (the last settled epoch's spent-after.jsonl,
   * which keeps SPENT_RETENTION_EPOCHS epochs: older tickets are refused by their epoch field, so memory stays bounded).
   */
  private spent = new Map<string, number>();
  /** The same as published (the next epoch's spent-before.jsonl, byte for byte). */
  private spentText = '';
  private settling: Promise<unknown> = Promise.resolve();
  private readonly now: () => number;
  private readonly log: Logger;

  private constructor(readonly opts: SettlerOptions) {
    this.now = opts.now ?? Date.now;
    this.log = opts.logger ?? silentLogger;
  }

  /** Opens the directory: loads settled epochs and the spent set, and reopens every open epoch's files. */
  static async open(opts: SettlerOptions): Promise<Settler> {
    const s = new Settler(opts);
    await mkdir(join(opts.dir, 'open'), { recursive: true });
    await mkdir(join(opts.dir, 'epochs'), { recursive: true });
    for (const name of await readdir(join(opts.dir, 'epochs'))) {
      if (!/^\d+$/.test(name)) continue;
      const manifestText = await readFile(join(opts.dir, 'epochs', name, 'manifest.json'), 'utf8').catch(() => null);
      if (!manifestText) continue; // a settlement that crashed before its manifest; redone from open/<epoch>
      const m = JSON.parse(manifestText) as { epoch: number; root: string; total: string };
      s.settled.push({ epoch: m.epoch, root: m.root, total: String(m.total), manifestSha256: sha256Hex(manifestText) });
    }
    s.settled.sort((a, b) => a.epoch - b.epoch);
    const last = s.settled.at(-1);
    if (last) await s.loadSpent(last.epoch);
    for (const name of await readdir(join(opts.dir, 'open'))) {
      if (!/^\d+$/.test(name)) continue;
      const epoch = Number(name);
      if (s.settled.some((e) => e.epoch === epoch)) {
        // Settled, but the crash came before the open files were removed.
        await rm(join(opts.dir, 'open', name), { recursive: true, force: true });
        continue;
      }
      await s.openEpoch(epoch);
    }
    s.opts.metrics?.setOpenClaims(() => [...s.open.values()].reduce((n, e) => n + e.claimCount, 0));
    s.opts.metrics?.setSpentTickets(() => s.spent.size);
    return s;
  }

  get id(): string {
    return this.opts.id;
  }

  private nowSeconds(): number {
    return Math.floor(this.now() / 1000);
  }

  currentEpoch(): number {
    return Math.floor(this.nowSeconds() / this.opts.epochSeconds);
  }

  /** Unix seconds from which claims for `epoch` are refused and it settles. */
  closesAt(epoch: number): number {
    return (epoch + 1) * this.opts.epochSeconds + this.opts.claimWindowSeconds;
  }

  private lastSettled(): number {
    return this.settled.at(-1)?.epoch ?? -1;
  }

  /** Null when submissions for `epoch` are accepted now; otherwise the refusal. */
  private epochRefusal(epoch: number): Answer | null {
    if (epoch <= this.lastSettled() || this.nowSeconds() >= this.closesAt(epoch)) {
      return { status: 409, body: { error: `epoch ${epoch} is settled; late claims are not paid` } };
    }
    if (epoch > this.currentEpoch()) return { status: 422, body: { error: `epoch ${epoch} has not started (the settler is in epoch ${this.currentEpoch()})` } };
    return null;
  }

  private async loadSpent(epoch: number): Promise<void> {
    const text = await readFile(join(this.opts.dir, 'epochs', String(epoch), 'spent-after.jsonl'), 'utf8');
    const spent = new Map<string, number>();
    for (const line of text.split('\n')) {
      if (!line) continue;
      const r = JSON.parse(line) as { ticketId: string; epoch: number };
      spent.set(r.ticketId, r.epoch);
    }
    this.spent = spent;
    this.spentText = text;
  }

  private paramsFor(epoch: number): EpochParamsFile {
    const p = this.opts.params;
    return {
      epoch,
      epochSeconds: this.opts.epochSeconds,
      pricePerGiB: p.pricePerGiB.toString(),
      feeBps: p.feeBps.toString(),
      anonymousWeightBps: p.anonymousWeightBps.toString(),
      anonymousPool: p.anonymousPool.toString(),
      capacityPool: p.capacityPool.toString(),
      gateways: { ...this.opts.gateways },
    };
  }

  /** The open epoch's files, created on first use; concurrent callers share one opening. */
  private openEpoch(epoch: number): Promise<OpenEpoch> {
    const held = this.open.get(epoch);
    if (held) return Promise.resolve(held);
    let pending = this.opening.get(epoch);
    if (!pending) {
      pending = this.doOpenEpoch(epoch).finally(() => this.opening.delete(epoch));
      this.opening.set(epoch, pending);
    }
    return pending;
  }

  private async doOpenEpoch(epoch: number): Promise<OpenEpoch> {
    const dir = join(this.opts.dir, 'open', String(epoch));
    await mkdir(dir, { recursive: true });
    const paramsPath = join(dir, 'params.json');
    let params: EpochParamsFile;
    const existing = await readFile(paramsPath, 'utf8').catch(() => null);
    if (existing) {
      // Fixed when the epoch opened: a restart with other parameters changes the next epoch, never this one.
      params = JSON.parse(existing) as EpochParamsFile;
    } else {
      params = this.paramsFor(epoch);
      await writeDurably(paramsPath, JSON.stringify(params, null, 2) + '\n');
    }
    const sessionAuth = new Map<string, SessionAuthorisation>();
    const sessionLines = new Set<string>();
    const nonceSet = new Set<string>();
    const recordIds = new Set<string>();
    let claimCount = 0;
    const report = (name: string, r: { damagedBytes: number; damagedCopy: string | null }) => {
      if (r.damagedBytes > 0) this.log.warn({ epoch, file: name, damagedBytes: r.damagedBytes, copy: r.damagedCopy }, 'cut a torn last line (a crash mid-write; it was never acknowledged)');
    };
    const claims = await JsonlFile.open(join(dir, 'claims.jsonl'), () => claimCount++);
    report('claims.jsonl', claims.report);
    const sessions = await JsonlFile.open(join(dir, 'sessions.jsonl'), (line) => {
      sessionLines.add(line);
      const a = JSON.parse(line) as SessionAuthorisation;
      const heldAuth = sessionAuth.get(a.sessionKey);
      if (!heldAuth || a.validUntilEpoch > heldAuth.validUntilEpoch) sessionAuth.set(a.sessionKey, a);
    });
    report('sessions.jsonl', sessions.report);
    const evidence: GatewayRecord[] = [];
    const records = await JsonlFile.open(join(dir, 'gateway-records.jsonl'), (line) => {
      const r = JSON.parse(line) as GatewayRecord;
      recordIds.add(r.id);
      if (r.type === 'evidence') evidence.push(r);
    });
    report('gateway-records.jsonl', records.report);
    const nonces = await JsonlFile.open(join(dir, 'nonces.jsonl'), (line) => nonceSet.add(nonceKey(JSON.parse(line) as { node: string; nonce: string })));
    report('nonces.jsonl', nonces.report);
    const trusted = new Map(Object.entries(params.gateways).map(([id, b64]) => [id, publicKeyFromB64(b64)]));
    const e: OpenEpoch = { epoch, dir, params, trusted, claims: claims.file, sessions: sessions.file, records: records.file, nonces: nonces.file, sessionAuth, sessionLines, nonceSet, recordIds, claimCount };
    this.open.set(epoch, e);
    if (evidence.length > 0) this.opts.onGatewayRecords?.(evidence);
    this.log.info({ epoch, claims: claimCount, sessions: sessionAuth.size, records: recordIds.size }, existing ? 'reopened epoch' : 'opened epoch');
    return e;
  }

  /** POST /v1/claims. Records nothing unless the batch is well-formed, signed by its node, fresh, and its epoch open. */
  async submitClaims(body: unknown): Promise<Answer> {
    const m = this.opts.metrics;
    const parsed = parseClaimBatch(body);
    if ('error' in parsed) {
      m?.submission('claims', 'malformed');
      return { status: 400, body: { error: parsed.error } };
    }
    const { batch } = parsed;
    const badSig = checkClaimBatchSignature(batch, this.opts.id);
    if (badSig) {
      m?.submission('claims', 'bad-signature');
      return { status: 401, body: { error: badSig } };
    }
    const refusal = this.epochRefusal(batch.epoch);
    if (refusal) {
      if (refusal.status !== 409) m?.submission('claims', 'not-open');
      else m?.submission('claims', 'late');
      return refusal;
    }
    const e = await this.openEpoch(batch.epoch);
    const stale = checkClaimFreshness(batch, this.nowSeconds(), (k) => e.nonceSet.has(k));
    if (stale) {
      m?.submission('claims', 'replay');
      return { status: 409, body: { error: stale } };
    }
    // Reserve the nonce now: a concurrent copy of this batch must not pass while this one is being written.
    const key = nonceKey(batch);
    e.nonceSet.add(key);

    const newSessions: string[] = [];
    const sessionProblems: string[] = [];
    const known = new Map(e.sessionAuth);
    for (const s of batch.sessions) {
      const line = JSON.stringify({ client: s.client, sessionKey: s.sessionKey, validUntilEpoch: s.validUntilEpoch, signature: s.signature });
      if (e.sessionLines.has(line) || newSessions.includes(line)) continue;
      const problem = checkSessionAuthorisation(s);
      if (problem) {
        sessionProblems.push(`${s.sessionKey}: ${problem}`);
        continue; // a bogus authorisation is never recorded
      }
      newSessions.push(line);
      const heldAuth = known.get(s.sessionKey);
      if (!heldAuth || s.validUntilEpoch > heldAuth.validUntilEpoch) known.set(s.sessionKey, s);
    }
    const ctx = { epoch: batch.epoch, trustedGateways: e.trusted, sessions: known, spentTickets: this.spent, expiryGraceSeconds: DEFAULT_EXPIRY_GRACE_SECONDS };
    const verdicts = new Map<string, string | null>([...known.keys()].map((k) => [k, null])); // every held one verified
    const precheck = batch.receipts.map((receipt) => {
      const v = checkClaim({ node: batch.node, receipt }, ctx, verdicts);
      return v.ok ? 'ok' : v.reason;
    });
    try {
      await e.nonces.append([JSON.stringify({ node: batch.node, nonce: batch.nonce, timestamp: batch.timestamp })]);
      await e.sessions.append(newSessions);
      await e.claims.append(batch.receipts.map((receipt) => JSON.stringify({ node: batch.node, receipt })));
    } catch (err) {
      e.nonceSet.delete(key);
      m?.submission('claims', 'storage-error');
      this.log.error({ err, epoch: batch.epoch, node: batch.node }, 'could not record a claim batch');
      return { status: 503, body: { error: `the settler could not record the batch (${(err as Error).message}); nothing was recorded, retry later` } };
    }
    for (const line of newSessions) {
      e.sessionLines.add(line);
      const a = JSON.parse(line) as SessionAuthorisation;
      const heldAuth = e.sessionAuth.get(a.sessionKey);
      if (!heldAuth || a.validUntilEpoch > heldAuth.validUntilEpoch) e.sessionAuth.set(a.sessionKey, a);
    }
    e.claimCount += batch.receipts.length;
    m?.submission('claims', 'recorded');
    for (const p of precheck) m?.precheck(p);
    this.log.info({ epoch: batch.epoch, node: batch.node, receipts: batch.receipts.length, ok: precheck.filter((p) => p === 'ok').length }, 'recorded a claim batch');
    const answer: ClaimBatchAnswer & { sessionProblems: string[] } = { epoch: batch.epoch, recorded: batch.receipts.length, precheck, closesAt: this.closesAt(batch.epoch), sessionProblems };
    return { status: 200, body: answer };
  }

  /** POST /v1/gateway-records: each record checked against the trusted gateway keys and recorded once per id. */
  async submitGatewayRecords(body: unknown): Promise<Answer> {
    const m = this.opts.metrics;
    const parsed = parseGatewayRecordsPost(body);
    if ('error' in parsed) {
      m?.submission('records', 'malformed');
      return { status: 400, body: { error: parsed.error } };
    }
    const results: string[] = [];
    const byEpoch = new Map<number, { e: OpenEpoch; lines: string[]; ids: string[]; at: number[]; records: GatewayRecord[] }>();
    for (const raw of parsed.records) {
      const epoch = (raw as { epoch?: unknown } | null)?.epoch;
      if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) {
        results.push('malformed record: epoch must be a uint32');
        continue;
      }
      const refusal = this.epochRefusal(epoch);
      if (refusal) {
        results.push((refusal.body as { error: string }).error);
        continue;
      }
      const e = await this.openEpoch(epoch);
      const check = checkGatewayRecord(raw, e.trusted, epoch);
      if (!check.ok) {
        results.push(check.reason);
        continue;
      }
      let group = byEpoch.get(epoch);
      if (!group) byEpoch.set(epoch, (group = { e, lines: [], ids: [], at: [], records: [] }));
      if (e.recordIds.has(check.record.id)) {
        results.push('duplicate');
        continue;
      }
      group.at.push(results.length);
      results.push('recorded');
      group.ids.push(check.record.id);
      e.recordIds.add(check.record.id); // reserved now: a concurrent push of the same record must see it
      group.lines.push(JSON.stringify(check.record));
      group.records.push(check.record);
    }
    for (const g of byEpoch.values()) {
      try {
        await g.e.records.append(g.lines);
        this.opts.onGatewayRecords?.(g.records);
      } catch (err) {
        for (const id of g.ids) g.e.recordIds.delete(id);
        for (const i of g.at) results[i] = `not recorded: ${(err as Error).message}; retry later`;
        this.log.error({ err, epoch: g.e.epoch }, 'could not record gateway records');
      }
    }
    for (const r of results) m?.submission('records', r === 'recorded' ? 'recorded' : r === 'duplicate' ? 'duplicate' : r.startsWith('not recorded') ? 'storage-error' : 'refused');
    const answer: GatewayRecordsAnswer = { results };
    return { status: 200, body: answer };
  }

  /** Settles, in order, every open epoch whose claim window has passed. Returns the epochs settled. */
  settleDue(): Promise<number[]> {
    const run = this.settling.then(async () => {
      const due = [...new Set([...this.open.keys(), ...(await this.openDirs())])].filter((ep) => this.nowSeconds() >= this.closesAt(ep)).sort((a, b) => a - b);
      const done: number[] = [];
      for (const epoch of due) {
        await this.settleOne(epoch);
        done.push(epoch);
      }
      return done;
    });
    this.settling = run.catch(() => undefined);
    return run;
  }

  private async openDirs(): Promise<number[]> {
    return (await readdir(join(this.opts.dir, 'open'))).filter((n) => /^\d+$/.test(n)).map(Number);
  }

  private async settleOne(epoch: number): Promise<void> {
    const started = performance.now();
    const e = await this.openEpoch(epoch);
    // Wait for writes in flight, then stop taking more: epochRefusal now answers 409 for this epoch.
    await Promise.all([e.claims.close(), e.sessions.close(), e.records.close(), e.nonces.close()]);
    this.open.delete(epoch);
    const out = await settleEpochDir(e.dir, this.spentText, join(this.opts.dir, 'epochs', String(epoch)));
    await rm(e.dir, { recursive: true, force: true });
    const manifestText = out.small.get('manifest.json')!;
    this.settled.push({ epoch, root: out.root ?? '', total: out.total.toString(), manifestSha256: sha256Hex(manifestText) });
    this.settled.sort((a, b) => a.epoch - b.epoch);
    await this.loadSpent(epoch);
    const seconds = (performance.now() - started) / 1000;
    this.opts.metrics?.settled(epoch, out, seconds);
    this.log.info({ epoch, root: out.root, total: out.total.toString(), seconds }, 'settled epoch');
    await this.opts.onSettled?.(epoch, join(this.opts.dir, 'epochs', String(epoch)));
  }

  settledEpochs(): SettledEpoch[] {
    return [...this.settled];
  }

  status(): { id: string; epochSeconds: number; claimWindowSeconds: number; currentEpoch: number; open: Array<{ epoch: number; claims: number; closesAt: number }>; settled: SettledEpoch[] } {
    return {
      id: this.opts.id,
      epochSeconds: this.opts.epochSeconds,
      claimWindowSeconds: this.opts.claimWindowSeconds,
      currentEpoch: this.currentEpoch(),
      open: [...this.open.values()].sort((a, b) => a.epoch - b.epoch).map((e) => ({ epoch: e.epoch, claims: e.claimCount, closesAt: this.closesAt(e.epoch) })),
      settled: this.settledEpochs(),
    };
  }

  /** A published file of a settled epoch, or null. Only names of the epoch format are served (no path tricks). */
  async epochFile(epoch: number, name: string): Promise<Buffer | null> {
    if (!EPOCH_FILE.test(name) || !this.settled.some((s) => s.epoch === epoch)) return null;
    return readFile(join(this.opts.dir, 'epochs', String(epoch), name)).catch(() => null);
  }

  async close(): Promise<void> {
    await this.settling;
    for (const e of this.open.values()) await Promise.all([e.claims.close(), e.sessions.close(), e.records.close(), e.nonces.close()]);
    this.open.clear();
  }
}

async function writeDurably(path: string, body: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFileSynced(tmp, body);
  await rename(tmp, path);
}
