import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, copyFile, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ReceiptLog, RECEIPT_RECORD_BYTES, parseReceiptLog } from '../edge-node/receipt-log.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { tempDir, until } from './helpers/net.ts';

// Short leases (protocol/state-lock.ts) for the logs opened here: a refused open gives up after 3 s, not 12 s.
// A live owner (this process, the writer child) must keep its lease fresh however loaded the box is: the default
// 10 s before a lease is stale, refreshed every 1000 ms (proper-lockfile's shortest interval). A refused open and
// the reopen after kill -9 wait ~11 s.
const leaseEnv = { EDGESHARD_LOCK_STALE_MS: '10000', EDGESHARD_LOCK_UPDATE_MS: '1000' };
const savedEnv = Object.fromEntries(Object.keys(leaseEnv).map((k) => [k, process.env[k]]));
beforeAll(() => void Object.assign(process.env, leaseEnv));
afterAll(() => {
  for (const [k, v] of Object.entries(savedEnv)) if (v === undefined) delete process.env[k];
  else process.env[k] = v;
});

const gateway = generateTicketKey();
const session = generateSessionKey();
const ticket = () => signClientTicket({ shard: 'ab'.repeat(32), node: '0x' + 'aa'.repeat(20), expiresAt: 2_000_000_000, epoch: 1, byteCap: 1n << 40n, client: '0x' + 'cc'.repeat(20), sessionKey: session.publicHex }, gateway);
const receipt = (t: string, bytes: bigint) => signReceipt(t, bytes, 1_900_000_000, session);

describe('receipt log', () => {
  it('keeps the latest receipt per ticket across a restart, and only flushed batches', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const path = join(dir, 'receipts.log');
      const [t1, t2] = [ticket(), ticket()];
      const { log } = await ReceiptLog.open(path);
      expect(log.add(receipt(t1, 100n))).toBe(true);
      expect(log.add(receipt(t1, 50n))).toBe(false); // older than the one held
      expect(log.add(receipt(t2, 7n))).toBe(true);
      expect(log.add('not a receipt')).toBe(false);
      await log.flush();
      log.add(receipt(t1, 200n)); // never flushed: lost, like a kill -9 before the batch syncs
      // The file as a kill -9 here would leave it (the real kill -9 is below), opened by the next owner.
      const crashed = join(dir, 'crashed.log');
      await copyFile(path, crashed);
      const again = await ReceiptLog.open(crashed);
      expect(again.report).toEqual({ records: 2, damagedBytes: 0, damagedCopy: null });
      expect(again.log.all().map((h) => h.receipt.bytes).sort()).toEqual([100n, 7n].sort());
      await again.log.close();
      await log.close(); // the first handle flushes its 200-byte receipt now
      const third = await ReceiptLog.open(path);
      expect(third.log.get(decodeId(t1))?.receipt.bytes).toBe(200n);
      expect(third.log.staleRecords).toBe(1);
      await third.log.compact();
      expect((await stat(path)).size).toBe(8 + 2 * RECEIPT_RECORD_BYTES);
      await third.log.close();
      const fourth = await ReceiptLog.open(path);
      expect(fourth.log.size).toBe(2);
      expect(fourth.log.get(decodeId(t1))?.receipt.bytes).toBe(200n);
      await fourth.log.close();
    } finally {
      await cleanup();
    }
  });

  it('syncs the directory after the compaction\'s rename, so receipts appended later cannot vanish in a crash', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const path = join(dir, 'receipts.log');
      const synced: { dir: string; renamed: boolean }[] = [];
      // Records each directory sync and whether the compacted file had already replaced the log by then.
      const syncDir = async (d: string): Promise<void> => {
        synced.push({ dir: d, renamed: !existsSync(`${path}.compact`) && (await stat(path)).size === 8 + RECEIPT_RECORD_BYTES });
      };
      const { log } = await ReceiptLog.open(path, { syncDir });
      const t = ticket();
      log.add(receipt(t, 1n));
      log.add(receipt(t, 2n));
      await log.flush();
      expect(log.staleRecords).toBe(1);
      await log.compact();
      expect(synced).toEqual([{ dir, renamed: true }]);
      await log.close();
    } finally {
      await cleanup();
    }
  });

  it('cuts a torn or corrupt tail, keeps a copy of it, loads everything before it and appends cleanly after', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const path = join(dir, 'receipts.log');
      const tickets = [ticket(), ticket(), ticket()];
      const { log } = await ReceiptLog.open(path);
      tickets.forEach((t, i) => log.add(receipt(t, BigInt(i + 1))));
      await log.close();
      const whole = (await stat(path)).size;

      await truncate(path, whole - 100); // a write cut short in the last record
      const torn = await ReceiptLog.open(path);
      expect(torn.report).toMatchObject({ records: 2, damagedBytes: RECEIPT_RECORD_BYTES - 100 });
      expect(await readFile(torn.report.damagedCopy!)).toHaveLength(RECEIPT_RECORD_BYTES - 100);
      torn.log.add(receipt(tickets[2]!, 3n));
      await torn.log.close();
      const reopened = await ReceiptLog.open(path);
      expect(reopened.log.size).toBe(3);
      await reopened.log.close();

      const bytes = await readFile(path);
      bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0xff; // a flipped bit inside the last record's payload
      await writeFile(path, bytes);
      const corrupt = await ReceiptLog.open(path);
      expect(corrupt.report).toMatchObject({ records: 2, damagedBytes: RECEIPT_RECORD_BYTES });
      await corrupt.log.close();
      // Without the checksum the flipped record would load: its frame is whole, so only the crc tells.
      expect(parseReceiptLog(bytes).payloads).toHaveLength(2);
      expect(parseReceiptLog(bytes).goodLength).toBe(bytes.length - RECEIPT_RECORD_BYTES);

      await appendFile(path, Buffer.from([0, 0, 0])); // garbage shorter than a frame header
      const garbage = await ReceiptLog.open(path);
      expect(garbage.report.damagedBytes).toBe(3);
      await garbage.log.close();
      await writeFile(path, 'hello');
      await expect(ReceiptLog.open(path)).rejects.toThrow(/not an edgeshard receipt log/);
    } finally {
      await cleanup();
    }
  });

  it('belongs to one owner at a time: a second open is refused by name until the first closes', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const path = join(dir, 'receipts.log');
      const first = await ReceiptLog.open(path);
      await first.log.add(receipt(ticket(), 1000n));
      await expect(ReceiptLog.open(path)).rejects.toThrow(`receipt log ${path} is in use by process ${process.pid} on host ${hostname()}`);
      await first.log.close();
      const second = await ReceiptLog.open(path);
      expect(second.log.size).toBe(1);
      await second.log.close();
      expect(existsSync(`${path}.lock`)).toBe(false);
    } finally {
      await cleanup();
    }
  }, 60_000);

  it('survives kill -9 of a real writer: every batch it reported synced is there, and the log reopens', async () => {
    const { dir, cleanup } = await tempDir();
    const path = join(dir, 'receipts.log');
    const child = spawn(process.execPath, ['bin/run-ts.js', 'test/fixtures/receipt-log-writer.ts', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let synced = 0;
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.stdout.on('data', (d: Buffer) => {
        for (const m of d.toString().matchAll(/synced (\d+)/g)) synced = Math.max(synced, Number(m[1]));
      });
      await until(`writer reports 5 synced batches (stderr: ${stderr})`, () => synced >= 5 || child.exitCode !== null, 120_000);
      // While the writer lives, a second process cannot open its log (it would append under the writer's feet).
      await expect(ReceiptLog.open(path)).rejects.toThrow(`receipt log ${path} is in use by process ${child.pid} on host ${hostname()}`);
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      const reported = synced;
      const { log, report } = await ReceiptLog.open(path);
      expect(log.size).toBe(10);
      // Batch B gives every ticket B × 1000 bytes; what was reported synced must be at least there.
      for (const held of log.all()) {
        expect(held.receipt.bytes % 1000n).toBe(0n);
        expect(held.receipt.bytes).toBeGreaterThanOrEqual(BigInt(reported) * 1000n);
      }
      expect(report.records).toBeGreaterThanOrEqual(reported * 10);
      await log.close();
    } finally {
      child.kill('SIGKILL');
      await cleanup();
    }
  }, 180_000);
});

function decodeId(t: string): string {
  return Buffer.from(t, 'base64url').toString('hex', 57, 73);
}

describe('default receipt log', () => {
  it('lives beside the node key and is named after it, so nodes with their own keys never share one', async () => {
    const { receiptLogBesideKey } = await import('../edge-node/config.ts');
    expect(receiptLogBesideKey('./.edgeshard/node-key.json')).toBe('./.edgeshard/node-receipts.log');
    expect(receiptLogBesideKey('/srv/a/node-A.json')).toBe('/srv/a/node-A-receipts.log');
    expect(receiptLogBesideKey('/srv/b.d/key')).toBe('/srv/b.d/key-receipts.log');
    expect(receiptLogBesideKey('/srv/.hidden')).toBe('/srv/.hidden-receipts.log');
  });
});
