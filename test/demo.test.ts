// `npm start` (edgeshard demo) as a person runs it: the network comes up, fetches the sample, says what to try
// next and stays up (its gateway answers) until SIGINT, then says it stopped and exits 0. Ports are 0 (free ports)
// so parallel test runs do not collide; the default ports are checked against grafana/prometheus.yml.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { JsonRpcProvider, formatUnits } from 'ethers';
import { connectContracts, readContractsFile } from '../contracts/handles.ts';
import { DEMO_PORTS, SHUTDOWN_LINE } from '../cli/demo.ts';
import { tempDir, until } from './helpers/net.ts';

const ROOT = join(import.meta.dirname, '..');

interface Run {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function startDemo(dir: string, extra: string[] = []): Run {
  const child = spawn(process.execPath, ['bin/edgeshard.js', 'demo', '--dir', dir, '--shards', '4', '--gateway-port', '0', '--node-port', '0', '--origin-port', '0', '--chain-port', '0', ...extra], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout!.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (text += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, out: () => text, exited };
}

async function stopDemo(run: Run): Promise<number | null> {
  run.child.kill('SIGINT');
  const code = await run.exited;
  expect(run.out()).toContain(SHUTDOWN_LINE);
  return code;
}

describe('edgeshard demo (npm start)', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  const runs: Run[] = [];
  beforeAll(async () => {
    tmp = await tempDir();
  });
  afterAll(async () => {
    // A failed assertion must not leave a network running.
    for (const r of runs) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
    await tmp.cleanup();
  });

  it('stays up until Ctrl-C with a "what next", shuts down saying so; a rerun starts clean, --keep-cache starts warm', async () => {
    const dir = join(tmp.dir, 'demo');
    const first = startDemo(dir);
    runs.push(first);
    await until('the demo to be up', () => first.out().includes('stays up until Ctrl-C') || first.child.exitCode !== null, 120_000);
    const text = first.out();
    expect(text).toMatch(/fetch \(cold\): 4 shards verified, 0 failed/);
    expect(text).toMatch(/fetch \(warm\): 4 shards verified, 0 failed.*origin requests 0/);
    const gateway = /^gateway {2}(http:\/\/\S+)/m.exec(text)![1]!;
    expect(text).toContain(`curl -L '${gateway}/d/sample/`);
    expect(text).toContain(`npx edgeshard fetch ${gateway} sample --out`);
    expect(text).toContain(`status page  ${gateway}/`);
    expect(text).toContain(`${gateway}/metrics`);
    // The chain: contracts deployed, the trainer's deposit in the escrow, and a command that works against it.
    expect(text).toMatch(/^chain {4}http:\/\/127\.0\.0\.1:\d+ {2}token 0x[0-9a-fA-F]{40}, settlement 0x[0-9a-fA-F]{40}$/m);
    expect(text).toMatch(/trainer 0x[0-9a-fA-F]{40} deposited 100 EDGE into the escrow \(balance 100\.0 EDGE\)/);
    const rpc = /^chain {4}(http:\/\/\S+)/m.exec(text)![1]!;
    const chainId = await fetch(rpc, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }) });
    expect(((await chainId.json()) as { result: string }).result).toBe('0x7a69');
    // The epoch settled from the trainer's receipts: each node's reward is its receipted bytes times the rate, it
    // was served no more than it was receipted for, and the escrow paid the bytes at the full price.
    expect(text).toMatch(/^rewards: epoch \d+ settled from [1-9]\d* signed receipts .* root 0x[0-9a-f]{16}… posted on chain, claimed by each node after the challenge window:$/m);
    // Each node staked the registry's minimum before serving: the stake printed is the one the chain holds.
    const reader = new JsonRpcProvider(rpc, undefined, { staticNetwork: true });
    const registry = connectContracts(await readContractsFile(join(dir, 'chain', 'contracts.json')), reader).registry;
    const minStake = await registry.minStake();
    const nodeLines = [...text.matchAll(/^node {5}http:\/\/\S+ {2}(Paris|New York|Tokyo) +(0x[0-9a-fA-F]{40}) {2}stake ([\d.]+) EDGE$/gm)];
    expect(nodeLines.map((l) => l[1])).toEqual(['Paris', 'New York', 'Tokyo']);
    const stakeOf = new Map<string, bigint>();
    for (const l of nodeLines) {
      const onChain = await registry.nodes(l[2]!);
      expect(onChain.registered).toBe(true);
      expect(onChain.stake).toBe(minStake);
      expect(l[3]).toBe(formatUnits(onChain.stake, 18));
      expect(await registry.isActive(l[2]!)).toBe(true);
      stakeOf.set(l[1]!, onChain.stake);
    }
    reader.destroy();
    const rows = [...text.matchAll(/^ {2}(Paris|New York|Tokyo) +served (.+?), receipted (.+?) → ([\d.]+) EDGE \((\d+) B × .*; balance ([\d.]+) EDGE, stake ([\d.]+) EDGE$/gm)];
    expect(rows.map((r) => r[1])).toEqual(['Paris', 'New York', 'Tokyo']);
    let receiptedTotal = 0n;
    for (const r of rows) {
      const bytes = BigInt(r[5]!);
      receiptedTotal += bytes;
      expect(r[2]).toBe(r[3]); // served = receipted: no unpaid work
      expect(r[4]).toBe(formatUnits((bytes * 9n * 10n ** 14n) / (1n << 30n), 18));
      expect(r[6]).toBe(r[4]); // the staked tokens are in the registry, not the balance
      expect(r[7]).toBe(formatUnits(stakeOf.get(r[1]!)!, 18));
    }
    expect(receiptedTotal).toBeGreaterThan(0n);
    const owed = (receiptedTotal * 10n ** 15n + (1n << 30n) - 1n) / (1n << 30n);
    expect(text).toContain(`trainer escrow 100.0 → ${formatUnits(100n * 10n ** 18n - owed, 18)} EDGE`);
    // Still up after the demo: the line it suggests works.
    const res = await fetch(`${gateway}/healthz`);
    expect(((await res.json()) as { nodesUp: number }).nodesUp).toBe(3);
    expect(first.out()).not.toContain(SHUTDOWN_LINE);
    expect(await stopDemo(first)).toBe(0);
    await expect(fetch(`${gateway}/healthz`)).rejects.toThrow();

    // A rerun on the same directory wipes the caches, so "cold" is cold (the origin is asked again).
    const second = startDemo(dir);
    runs.push(second);
    await until('the rerun to fetch', () => /fetch \(cold\).*\n/.test(second.out()) || second.child.exitCode !== null, 120_000);
    expect(second.out()).toMatch(/fetch \(cold\): 4 shards verified, 0 failed.*origin requests [1-9]/);
    // SIGINT before the demo is through still shuts down cleanly.
    expect(await stopDemo(second)).toBe(0);

    const third = startDemo(dir, ['--keep-cache']);
    runs.push(third);
    await until('the warm rerun to fetch', () => /fetch \(warm: caches kept from the last run\).*\n/.test(third.out()) || third.child.exitCode !== null, 120_000);
    expect(third.out()).toMatch(/fetch \(warm: caches kept from the last run\): 4 shards verified, 0 failed.*origin requests 0/);
    expect(await stopDemo(third)).toBe(0);
  }, 400_000);

  it('a busy port is a usage error that names its flag, and nothing is left running', async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const run = startDemo(join(tmp.dir, 'busy'), ['--shards', '1', '--origin-port', String(port)]);
      runs.push(run);
      expect(await run.exited).toBe(2);
      expect(run.out()).toContain(`edgeshard demo: --origin-port ${port}: address ${port} is already in use`);
    } finally {
      busy.close();
    }
  }, 60_000);

  it('uses default ports that grafana/prometheus.yml scrapes', () => {
    const yml = readFileSync(join(ROOT, 'grafana', 'prometheus.yml'), 'utf8');
    expect(yml).toContain(`127.0.0.1:${DEMO_PORTS.gateway}`);
    for (let i = 0; i < 3; i++) expect(yml).toContain(`127.0.0.1:${DEMO_PORTS.node + i}`);
  });
});
