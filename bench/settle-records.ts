// The settle section's `records` sub-benchmark: gateway records (protocol/gateway-records.ts) checked per CPU-second
// by checkGatewayRecords, the settler's path (shape, canonical JSON, one Ed25519 signature, one count per id), beside
// raw Ed25519 verifications of the same signed bytes in the same run: what the settler spends on capacity challenges
// and the other gateway records of an epoch. Also runnable alone (writes bench/results/settle-records.md):
//   flock /tmp/edgeshard-bench.lock npx tsx bench/settle-records.ts
import { randomBytes, verify } from 'node:crypto';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateTicketKey } from '../protocol/tickets.ts';
import { checkGatewayRecords, RECORD_DOMAIN, signGatewayRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { canonicalJson } from '../protocol/manifest.ts';
import { median, mdTable, type SettleSubBench, type SubBenchResult } from './lib.ts';

const EPOCH = 20_833;

function cpuSeconds(since: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(since);
  return (c.user + c.system) / 1e6;
}

export const recordsRate: SettleSubBench = {
  name: 'records',
  async run(): Promise<SubBenchResult> {
    const n = Number(process.env.SETTLE_RECORDS_N ?? 20_000);
    const rounds = Number(process.env.SETTLE_RECORDS_ROUNDS ?? 5);
    const key = generateTicketKey();
    const trusted = new Map([[key.keyId, key.publicKey]]);
    const nodes = Array.from({ length: 100 }, () => `0x${randomBytes(20).toString('hex')}`);
    const shard = randomBytes(32).toString('hex');
    // Challenge records as a gateway writes them, through JSON as the settler reads gateway-records.jsonl.
    const records: unknown[] = [];
    for (let i = 0; i < n; i++) {
      const ok = i % 10 !== 0;
      const r = signGatewayRecord(
        { type: 'challenge', gateway: 'gateway@bench', epoch: EPOCH, at: 1_800_000_000_000 + i, node: nodes[i % nodes.length]!, shard, offset: (i % 64) << 20, length: 4 << 20, deadlineMs: 6195, elapsedMs: 80, bytesPerSecond: ok ? 52_428_800 : 0, ok, ...(ok ? {} : { failure: 'timeout' as const }) },
        key,
      );
      records.push(JSON.parse(JSON.stringify(r)));
    }
    const raw = (records as GatewayRecord[]).map(({ signature, ...body }) => ({ msg: Buffer.from(RECORD_DOMAIN + canonicalJson(body)), sig: Buffer.from(signature, 'base64url') }));
    const recordRates: number[] = [];
    const rawRates: number[] = [];
    for (let r = 0; r < rounds; r++) {
      let c0 = process.cpuUsage();
      let bad = 0;
      for (const x of raw) if (!verify(null, x.msg, key.publicKey, x.sig)) bad++;
      rawRates.push(n / cpuSeconds(c0));
      c0 = process.cpuUsage();
      const out = checkGatewayRecords(records, trusted, EPOCH);
      recordRates.push(n / cpuSeconds(c0));
      bad += out.rejected.length;
      if (bad > 0) throw new Error(`${bad} genuine records failed verification: the benchmark's inputs are wrong`);
    }
    const perCpu = median(recordRates);
    const rawRate = median(rawRates);
    const json = { records: n, rounds, recordsPerCpuSecond: Math.round(perCpu), rawEd25519VerifiesPerCpuSecond: Math.round(rawRate), ofRaw: Number((perCpu / rawRate).toFixed(3)) };
    const markdown = [
      '### Gateway records',
      '',
      `${n.toLocaleString('en')} signed challenge records (100 nodes, one gateway key) read from JSON and checked by \`checkGatewayRecords\` ` +
        `(shape, canonical JSON, one Ed25519 signature, one count per id), ${rounds} alternating rounds against the raw primitive on the same signed bytes, medians per CPU-second of this process.`,
      '',
      mdTable(
        ['what', '>per CPU-second'],
        [
          ['raw Ed25519 verify (node:crypto, the record\'s signed bytes)', json.rawEd25519VerifiesPerCpuSecond.toLocaleString('en')],
          ['gateway records checked (checkGatewayRecords)', json.recordsPerCpuSecond.toLocaleString('en')],
        ],
      ),
      '',
      `Records checked at ${(json.ofRaw * 100).toFixed(0)} % of the raw signature rate.`,
      '',
    ].join('\n');
    return { markdown, json };
  },
};

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await recordsRate.run(join(import.meta.dirname, '..'));
  const dir = join(import.meta.dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'settle-records.md'), `# Settle: gateway records\n\n${new Date().toISOString()}, load average ${(await import('node:os')).loadavg()[0]!.toFixed(1)}\n\n${r.markdown}`);
  writeFileSync(join(dir, 'settle-records.json'), `${JSON.stringify(r.json, null, 2)}\n`);
  console.log(r.markdown);
}
