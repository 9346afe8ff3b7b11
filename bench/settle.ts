// The `settle` section: what settling an epoch costs. Sub-benchmarks, each returning its own markdown and JSON, so
// later parts (the chain's gas for posting a root and claiming, contracts/) add themselves to SETTLE_SUB_BENCHES.
//
//   verify  receipts checked per CPU-second by the settlement rules (checkClaim: decode, the ticket's hash looked up in
//           the verified ticket batches, the client's Ed25519 signature, the session authorisation from cache), beside
//           the raw Ed25519 verifications per CPU-second of node:crypto in the same run (one signature per receipt,
//           so the raw rate is its ceiling); and the fallback for tickets in no batch, two signatures each.
//   epoch   an epoch of SETTLE_RECEIPTS receipts (default 1,000,000) from SETTLE_NODES nodes (10,000) and
//           SETTLE_CLIENTS clients (1,000), settled by the settler's own code path in a child process: wall and CPU
//           seconds and the child's peak RSS. Inputs are generated once into the temp directory (every receipt
//           genuine, signed on every core, every ticket in a signed batch in gateway-records.jsonl) and reused by
//           later runs with the same sizes.
//   records gateway records checked per CPU-second beside raw Ed25519 (bench/settle-records.ts).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Wallet } from 'ethers';
import { verify, type KeyObject } from 'node:crypto';
import { generateTicketKey, ticketKeyToPem, ticketKeyFromPem, type TicketKey } from '../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, TICKET_V2_LEN, type SessionAuthorisation } from '../protocol/client-tickets.ts';
import { decodeReceipt } from '../protocol/receipts.ts';
import { checkGatewayRecords, signGatewayRecord } from '../protocol/gateway-records.ts';
import { encodeTicketHashes, issuedTicketsFrom, ticketHash } from '../protocol/ticket-batches.ts';
import { applyRules, checkClaim, DEFAULT_EXPIRY_GRACE_SECONDS, type ReceiptClaim, type RuleContext } from '../protocol/receipt-rules.ts';
import { verifyClaimSignatures } from '../settler/signature-pool.ts';
import { lineFile } from '../settler/settle-files.ts';
import type { LineFile } from '../protocol/epoch-settle.ts';
import { DEFAULT_REWARD_PARAMS } from '../protocol/epoch.ts';
import { claimLine, sessionsOf, type GenSpec } from './settle-gen.ts';
import { median, mdTable, type SettleSubBench, type SubBenchResult } from './lib.ts';
import { recordsRate } from './settle-records.ts';

const EPOCH = 20_833;
const T0 = EPOCH * 86_400 + 3_600;
const RECEIPT_TARGET_PER_CORE = 10_000;

async function makeSpec(nodes: number, clients: number): Promise<{ spec: GenSpec; auths: SessionAuthorisation[]; gatewayKeyId: string; gatewayB64: string }> {
  const gateway = generateTicketKey();
  const specClients: GenSpec['clients'] = [];
  const auths: SessionAuthorisation[] = [];
  for (let c = 0; c < clients; c++) {
    const wallet = new Wallet(Wallet.createRandom().privateKey);
    const session = generateSessionKey();
    auths.push(await authoriseSession(wallet, session, EPOCH));
    specClients.push({ address: wallet.address.toLowerCase(), sessionPem: session.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() });
  }
  const nodeList = Array.from({ length: nodes }, () => `0x${randomBytes(20).toString('hex')}`);
  return { spec: { epoch: EPOCH, t0: T0, gatewayPem: ticketKeyToPem(gateway), nodes: nodeList, clients: specClients }, auths, gatewayKeyId: gateway.keyId, gatewayB64: gateway.publicKeyB64 };
}

function cpuSeconds(since: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(since);
  return (c.user + c.system) / 1e6;
}

/** `tickets` records for the tickets of `claims`, signed by the gateway as it would at issue time, through JSON. */
export function ticketBatchesFor(claims: Iterable<ReceiptClaim>, gateway: TicketKey, per = 1024): unknown[] {
  const records: unknown[] = [];
  let hashes: Buffer[] = [];
  const flush = () => {
    if (hashes.length === 0) return;
    records.push(JSON.parse(JSON.stringify(signGatewayRecord({ type: 'tickets', gateway: 'gateway@bench', epoch: EPOCH, at: T0 * 1000, count: hashes.length, hashes: encodeTicketHashes(hashes) }, gateway))));
    hashes = [];
  };
  for (const c of claims) {
    hashes.push(ticketHash(Buffer.from(c.receipt, 'base64url').subarray(1, 1 + TICKET_V2_LEN)));
    if (hashes.length === per) flush();
  }
  flush();
  return records;
}

export const verifyRate: SettleSubBench = {
  name: 'verify',
  async run() {
    const n = Number(process.env.SETTLE_VERIFY_N ?? 20_000);
    const rounds = Number(process.env.SETTLE_VERIFY_ROUNDS ?? 5);
    const { spec, auths } = await makeSpec(100, 100);
    const gateway = ticketKeyFromPem(spec.gatewayPem);
    const sessions = sessionsOf(spec);
    const claims: ReceiptClaim[] = [];
    for (let i = 0; i < n; i++) claims.push(JSON.parse(claimLine(i, spec, gateway, sessions)) as ReceiptClaim);
    // As a real epoch has them: every ticket's hash in a batch the gateway signed (1,024 per batch).
    const batches = ticketBatchesFor(claims, gateway);
    const trusted = new Map<string, KeyObject>([[gateway.keyId, gateway.publicKey]]);
    const base: RuleContext = {
      epoch: EPOCH,
      trustedGateways: trusted,
      sessions: new Map(auths.map((a) => [a.sessionKey, a])),
      spentTickets: new Map(),
      expiryGraceSeconds: DEFAULT_EXPIRY_GRACE_SECONDS,
    };
    /** The batches checked (one signature each) and indexed, as epochContext does for every epoch. */
    const batchedContext = (): RuleContext => {
      const checked = checkGatewayRecords(batches, trusted, EPOCH);
      if (checked.rejected.length > 0) throw new Error('the benchmark\'s ticket batches do not verify');
      return { ...base, issuedTickets: issuedTicketsFrom(checked.records) };
    };
    // The raw primitive on the same bytes: the client's signature over each receipt (222 signed bytes).
    const raw = claims.map((c) => {
      const buf = Buffer.from(c.receipt, 'base64url');
      return { msg: buf.subarray(0, 222), sig: buf.subarray(222, 286) };
    });
    const sessionKeyOf = new Map(sessions.map((s) => [s.publicHex, s.publicKey]));
    const rawKeys = claims.map((c) => sessionKeyOf.get(decodeReceipt(c.receipt)!.ticket.sessionKey)!);
    const verdicts = new Map<string, string | null>();
    const keys = new Map<string, KeyObject>();
    const warm = batchedContext();
    for (const c of claims.slice(0, 1000)) checkClaim(c, warm, verdicts, keys); // session checks are once per session
    const rawRates: number[] = [];
    const rawWall: number[] = [];
    const batchedRates: number[] = [];
    const batchedWall: number[] = [];
    const fallbackRates: number[] = [];
    for (let r = 0; r < rounds; r++) {
      let bad = 0;
      let c0 = process.cpuUsage();
      let t0 = performance.now();
      for (let i = 0; i < n; i++) if (!verify(null, raw[i]!.msg, rawKeys[i]!, raw[i]!.sig)) bad++;
      rawRates.push(n / cpuSeconds(c0));
      rawWall.push(n / ((performance.now() - t0) / 1000));
      // Batched: the batch signatures and the index are part of the cost.
      c0 = process.cpuUsage();
      t0 = performance.now();
      const ctx = batchedContext();
      for (const c of claims) if (!checkClaim(c, ctx, verdicts, keys).ok) bad++;
      batchedRates.push(n / cpuSeconds(c0));
      batchedWall.push(n / ((performance.now() - t0) / 1000));
      // The fallback: no batch holds the tickets (a gateway that crashed before pushing), two signatures each.
      c0 = process.cpuUsage();
      for (const c of claims) if (!checkClaim(c, base, verdicts, keys).ok) bad++;
      fallbackRates.push(n / cpuSeconds(c0));
      if (bad > 0) throw new Error(`${bad} genuine receipts failed verification: the benchmark's inputs are wrong`);
    }
    // The settler's path: signatures in worker threads, one per core, then the rules on this thread over the verdicts.
    const workers = availableParallelism();
    const poolWall: number[] = [];
    const poolCpu: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const ctx = batchedContext();
      const outcome = applyRules(claims, ctx, await verifyClaimSignatures(claims, ctx, { workers }));
      poolWall.push(n / ((performance.now() - t0) / 1000));
      poolCpu.push(n / cpuSeconds(c0)); // process CPU: this thread and the workers
      if (outcome.accepted.length !== n) throw new Error(`${n - outcome.accepted.length} genuine receipts failed verification in the pool`);
    }
    const receipts = median(batchedRates);
    const rawRate = median(rawRates);
    const json = {
      receipts: n,
      rounds,
      ticketBatches: batches.length,
      receiptsPerCpuSecond: Math.round(receipts),
      rawEd25519VerifiesPerCpuSecond: Math.round(rawRate),
      ceilingReceiptsPerCpuSecond: Math.round(rawRate),
      ofCeiling: Number((receipts / rawRate).toFixed(3)),
      receiptsPerWallSecond: Math.round(median(batchedWall)),
      rawPerWallSecond: Math.round(median(rawWall)),
      fallbackReceiptsPerCpuSecond: Math.round(median(fallbackRates)),
      fallbackOfCeiling: Number((median(fallbackRates) / (rawRate / 2)).toFixed(3)),
      poolWorkers: workers,
      poolReceiptsPerWallSecond: Math.round(median(poolWall)),
      poolReceiptsPerCpuSecond: Math.round(median(poolCpu)),
      target: RECEIPT_TARGET_PER_CORE,
      pass: receipts >= RECEIPT_TARGET_PER_CORE,
    };
    const markdown = [
      '### Receipt verification',
      '',
      `${n.toLocaleString('en')} genuine receipts (100 clients, 100 nodes), their tickets in ${batches.length} signed batches of up to 1,024 ` +
        `(\`tickets\` gateway records, as a gateway pushes them), ${rounds} alternating rounds of the raw primitive and the rules, medians. ` +
        'The batched rate includes checking the batch signatures and indexing their hashes. ' +
        'Rates per CPU-second of this process (user + system), which is what "per core" means on a shared machine; wall-clock rates beside them.',
      '',
      mdTable(
        ['what', '>per CPU-second', '>per wall second'],
        [
          ['raw Ed25519 verify (node:crypto, 222-byte receipt): the ceiling for a receipt with its ticket in a batch', json.rawEd25519VerifiesPerCpuSecond.toLocaleString('en'), json.rawPerWallSecond.toLocaleString('en')],
          ['receipts checked (checkClaim), ticket in a verified batch: one signature', json.receiptsPerCpuSecond.toLocaleString('en'), json.receiptsPerWallSecond.toLocaleString('en')],
          ['receipts checked (checkClaim), ticket in no batch: two signatures (ceiling half the raw rate)', json.fallbackReceiptsPerCpuSecond.toLocaleString('en'), ''],
          [`receipts checked by the settler's path (${workers} signature workers + rules), batched`, json.poolReceiptsPerCpuSecond.toLocaleString('en'), json.poolReceiptsPerWallSecond.toLocaleString('en')],
        ],
      ),
      '',
      `Batched receipts run at ${(json.ofCeiling * 100).toFixed(0)} % of the one-signature ceiling, unbatched ones at ${(json.fallbackOfCeiling * 100).toFixed(0)} % of the two-signature ceiling. ` +
        `Target ≥ ${RECEIPT_TARGET_PER_CORE.toLocaleString('en')} receipts per second per core: **${json.pass ? 'PASS' : 'MISS'}**.`,
      '',
    ].join('\n');
    return { markdown, json };
  },
};

function runChild(args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/run-ts.js', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${args.join(' ')} exited ${code}: ${err.slice(-2000)}`))));
  });
}

/** Generates (or reuses) the input directory of a synthetic epoch; returns it and how long generation took. */
async function epochInputs(repoRoot: string, receipts: number, nodes: number, clients: number): Promise<{ dir: string; generatedSeconds: number | null }> {
  const base = join(tmpdir(), `edgeshard-settle-bench-batched-${receipts}-${nodes}-${clients}`);
  const dir = join(base, 'inputs');
  if (existsSync(join(base, 'complete'))) return { dir, generatedSeconds: null };
  const t0 = performance.now();
  await rm(base, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const { spec, auths, gatewayKeyId, gatewayB64 } = await makeSpec(nodes, clients);
  const p = DEFAULT_REWARD_PARAMS;
  const params = { epoch: EPOCH, epochSeconds: 86_400, pricePerGiB: p.pricePerGiB.toString(), feeBps: p.feeBps.toString(), anonymousWeightBps: p.anonymousWeightBps.toString(), anonymousPool: p.anonymousPool.toString(), capacityPool: p.capacityPool.toString(), gateways: { [gatewayKeyId]: gatewayB64 } };
  await writeFile(join(dir, 'params.json'), JSON.stringify(params, null, 2) + '\n');
  await writeFile(join(dir, 'sessions.jsonl'), auths.map((a) => JSON.stringify(a) + '\n').join(''));
  const specPath = join(base, 'spec.json');
  await writeFile(specPath, JSON.stringify(spec));
  const workers = Math.max(1, cpus().length);
  const per = Math.ceil(receipts / workers);
  const parts = Array.from({ length: workers }, (_, w) => ({ from: w * per, to: Math.min(receipts, (w + 1) * per), path: join(base, `part-${w}.jsonl`) }));
  await Promise.all(parts.map((part) => runChild(['bench/settle-gen.ts', specPath, String(part.from), String(part.to), part.path], repoRoot)));
  const claims = join(dir, 'claims.jsonl');
  await writeFile(claims, '');
  for (const part of parts) {
    await appendFile(claims, await readFile(part.path));
    await rm(part.path);
  }
  // As a real epoch has them: the gateway's signed batches of the hashes of the tickets it issued.
  const records = ticketBatchesFor(claimsOf(await lineFile(claims)), ticketKeyFromPem(spec.gatewayPem));
  await writeFile(join(dir, 'gateway-records.jsonl'), records.map((r) => JSON.stringify(r) + '\n').join(''));
  await writeFile(join(base, 'complete'), '');
  return { dir, generatedSeconds: (performance.now() - t0) / 1000 };
}

function* claimsOf(file: LineFile): Generator<ReceiptClaim> {
  for (const line of file.lines()) yield JSON.parse(line) as ReceiptClaim;
}

export const epochAtScale: SettleSubBench = {
  name: 'epoch',
  async run(repoRoot) {
    const receipts = Number(process.env.SETTLE_RECEIPTS ?? 1_000_000);
    const nodes = Number(process.env.SETTLE_NODES ?? 10_000);
    const clients = Number(process.env.SETTLE_CLIENTS ?? 1_000);
    const { dir, generatedSeconds } = await epochInputs(repoRoot, receipts, nodes, clients);
    const out = join(dir, '..', 'settled');
    const r = JSON.parse(await runChild(['bench/settle-child.ts', dir, out], repoRoot)) as { wallSeconds: number; cpuSeconds: number; maxRssMiB: number; accepted: number; rejected: number; nodes: number; root: string };
    await rm(out, { recursive: true, force: true });
    if (r.accepted !== receipts) throw new Error(`expected all ${receipts} genuine receipts accepted, got ${r.accepted} (rejected ${r.rejected})`);
    const json = {
      receipts,
      nodes,
      clients,
      generatedSeconds,
      wallSeconds: Number(r.wallSeconds.toFixed(1)),
      cpuSeconds: Number(r.cpuSeconds.toFixed(1)),
      receiptsPerCpuSecond: Math.round(receipts / r.cpuSeconds),
      peakRssMiB: Math.round(r.maxRssMiB),
      accepted: r.accepted,
      nodesPaid: r.nodes,
      root: r.root,
      targets: { wallSeconds: 120, peakRssMiB: 1024 },
      pass: { wall: r.wallSeconds < 120, rss: r.maxRssMiB < 1024 },
    };
    const markdown = [
      '### Settling an epoch',
      '',
      `${receipts.toLocaleString('en')} genuine receipts from ${nodes.toLocaleString('en')} nodes and ${clients.toLocaleString('en')} clients ` +
        `(claims.jsonl read from disk line by line; every ticket in one of ${Math.ceil(receipts / 1024).toLocaleString('en')} signed batches in gateway-records.jsonl, so one signature per receipt), ` +
        `settled by the settler's own code (settler/settle-files.ts) in a child process; ` +
        (generatedSeconds === null ? 'inputs reused from an earlier run.' : `inputs generated in ${generatedSeconds.toFixed(0)} s on ${cpus().length} cores.`),
      '',
      mdTable(
        ['>wall s', '>CPU s', '>receipts per CPU-s', '>peak RSS MiB', '>accepted', '>nodes paid'],
        [[json.wallSeconds, json.cpuSeconds, json.receiptsPerCpuSecond.toLocaleString('en'), json.peakRssMiB, json.accepted.toLocaleString('en'), json.nodesPaid.toLocaleString('en')]],
      ),
      '',
      `Targets: under 120 s: **${json.pass.wall ? 'PASS' : 'MISS'}**; peak RSS under 1 GiB: **${json.pass.rss ? 'PASS' : 'MISS'}**. Merkle root ${r.root}.`,
      '',
    ].join('\n');
    return { markdown, json };
  },
};

/** The sub-benchmarks in order; SETTLE_ONLY=verify,epoch picks some. Others append theirs (e.g. the chain's gas). */
export const SETTLE_SUB_BENCHES: SettleSubBench[] = [verifyRate, epochAtScale, recordsRate];

export async function runSettleBench(repoRoot = join(import.meta.dirname, '..')): Promise<SubBenchResult> {
  const only = (process.env.SETTLE_ONLY ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const markdown: string[] = [];
  const json: Record<string, unknown> = {};
  for (const sub of SETTLE_SUB_BENCHES) {
    if (only.length > 0 && !only.includes(sub.name)) continue;
    console.error(`-- settle: ${sub.name}`);
    const r = await sub.run(repoRoot);
    markdown.push(r.markdown);
    json[sub.name] = r.json;
  }
  return { markdown: markdown.join('\n'), json };
}

// Alone: SETTLE_ONLY=verify npx tsx bench/settle.ts (prints the markdown; writes nothing).
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) console.log((await runSettleBench()).markdown);
