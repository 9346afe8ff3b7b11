import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../cli/main.ts';
import { renderBar } from '../simulator/progress.ts';

let dir: string;
let stderr: string[];
let stdout: string[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'edgeshard-sim-'));
  stderr = [];
  stdout = [];
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void stderr.push(a.join(' ')));
  vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void stdout.push(a.join(' ')));
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (stdout.push(String(s)), true));
});
afterEach(() => vi.restoreAllMocks());

describe('edgeshard sim', () => {
  it('runs a preset and writes JSON', async () => {
    const out = join(dir, 'r.json');
    expect(await main(['sim', '--job', 'llm-1b', '--source', 'hpc-nvme', '--steps', '50', '--format', 'json', '--out', out])).toBe(0);
    const [r] = JSON.parse(readFileSync(out, 'utf8')) as { utilization: number; source: string; checks: Record<string, boolean> }[];
    expect(r!.source).toBe('hpc-nvme');
    expect(r!.utilization).toBeGreaterThan(0.999);
    expect(Object.values(r!.checks).every(Boolean)).toBe(true);
  });

  it('prints a table by default', async () => {
    expect(await main(['sim', '--job', 'resnet50', '--source', 'edge-datacenter', '--ring', '10', '--steps', '40', '--nodes', '200'])).toBe(0);
    const text = stdout.join('');
    expect(text).toMatch(/GPU util/);
    expect(text).toMatch(/resnet50 \/ edge-datacenter @ 10 km/);
  });

  it('sweeps in worker threads with the same results as in one thread, plus CSV and a chart', async () => {
    const args = ['sim', '--job', 'resnet50', '--source', 'edge-home', '--steps', '40', '--nodes', '300', '--sweep', 'source.placement.ringKm=1,1000;source.parallelRanges=1,4', '--format', 'csv'];
    const a = join(dir, 'a.csv'), b = join(dir, 'b.csv'), svg = join(dir, 'c.svg');
    expect(await main([...args, '--threads', '2', '--out', a, '--chart', svg])).toBe(0);
    expect(await main([...args, '--threads', '0', '--out', b])).toBe(0);
    const rowsA = readFileSync(a, 'utf8').trim().split('\n');
    expect(rowsA).toHaveLength(5);
    const strip = (rows: string[]) => rows.map((r) => r.split(',').slice(0, -1).join(',')); // events column is equal too, but keep it simple
    expect(strip(rowsA)).toEqual(strip(readFileSync(b, 'utf8').trim().split('\n')));
    const chart = readFileSync(svg, 'utf8');
    expect(chart).toMatch(/^<svg/);
    expect(chart).toMatch(/parallelRanges=4/);
  }, 60_000);

  it('reads a scenario file with overrides and a trace', async () => {
    const file = join(dir, 's.json');
    writeFileSync(file, JSON.stringify({
      name: 'from file',
      job: { gpus: 8, model: { samplesPerSecondPerGpu: 100 }, sampleBytes: '100kB', batchPerGpu: 32, datasetSamples: 100000 },
      source: { kind: 'edge', placement: { ringKm: 50 }, uplink: 'home', churn: false },
      simulation: { steps: 30 },
    }));
    const trace = new URL('./fixtures/sim/trace-example.csv', import.meta.url).pathname;
    const out = join(dir, 'r.json');
    expect(await main(['sim', '--scenario', file, '--trace', trace, '--set', 'job.gpus=16', '--format', 'json', '--out', out])).toBe(0);
    const [r] = JSON.parse(readFileSync(out, 'utf8')) as { gpus: number; nodes: number; edge: { meanNodeRttS: number } }[];
    expect(r!.gpus).toBe(16);
    expect(r!.nodes).toBe(4);
    expect(r!.edge.meanNodeRttS).toBeCloseTo((4.2 + 11.8 + 23.5 + 61.0) / 4 / 1000, 9);
  });

  it('rejects bad input with exit code 2 and a message naming the field', async () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ job: { gpus: 0 }, source: { kind: 'hpc' } }));
    expect(await main(['sim', '--scenario', file])).toBe(2);
    expect(stderr.join('\n')).toMatch(/job\.gpus: expected a number ≥ 1, got 0/);
    expect(await main(['sim', '--scenario', join(dir, 'missing.json')])).toBe(2);
    expect(stderr.join('\n')).toMatch(/no such file/);
    writeFileSync(file, '{ not json');
    expect(await main(['sim', '--scenario', file])).toBe(2);
    expect(stderr.join('\n')).toMatch(/not valid JSON/);
    expect(await main(['sim', '--format', 'xml'])).toBe(2);
    expect(await main(['sim', '--job', 'gpt-9'])).toBe(2);
    expect(await main(['sim', '--sweep', 'job.gpus'])).toBe(2);
    expect(await main(['sim', '--set', 'source.placement.ringKm=-4'])).toBe(2);
    expect(stderr.join('\n')).toMatch(/ringKm: expected a number ≥ 0/);
  });
});

describe('edgeshard sim report', () => {
  it('writes one page answering both questions on one GPU class: data delivery and gradient sync', async () => {
    const out = join(dir, 'report.html');
    const json = join(dir, 'report.json');
    const code = await main([
      'sim', 'report', '--gpu', 'A100', '--models', 'resnet50,llm-1b', '--rings', '1,5000', '--seeds', '1,2', '--sync-models', 'llm-1b',
      '--site-spacings', '100,10000', '--nodes', '200', '--steps', '40', '--out', out, '--json', json, '--threads', '0',
    ]);
    expect(code).toBe(0);
    const html = readFileSync(out, 'utf8');
    // two data-delivery charts (home, data-centre) and one gradient-sync chart per sync model
    expect(html.match(/<svg/g)).toHaveLength(3);
    expect(html).toMatch(/1\. Data delivery/);
    expect(html).toMatch(/2\. Gradient sync/);
    expect(html).toMatch(/runs on <b>A100<\/b>/);
    expect(html).toMatch(/When the claim holds/);
    const r = JSON.parse(readFileSync(json, 'utf8'));
    // 2 models × 2 node classes × 2 rings; 1 model × 4 sync variants × (3 presets + 2 spacings)
    expect(r.data).toHaveLength(8);
    expect(r.sync).toHaveLength(20);
    for (const p of r.data) expect(p.best.med).toBeGreaterThanOrEqual(p.default.med - 0.02);
    // one site is the baseline; per-step all-reduce across 10,000 km is not
    const at = (variant: string, where: unknown) => r.sync.find((p: { variant: string; where: unknown }) => p.variant === variant && p.where === where);
    expect(at('allreduce', 'one-site').utilization).toBeGreaterThan(0.99);
    expect(at('allreduce', 10000).utilization).toBeLessThan(at('allreduce', 100).utilization);
    expect(at('diloco', 10000).utilization).toBeGreaterThan(at('allreduce', 10000).utilization);
    expect(html.match(/<tr><td>/g)).toHaveLength(8 + 20);
  }, 120_000);

  it('rejects unknown models', async () => {
    expect(await main(['sim', 'report', '--models', 'resnet50,bert'])).toBe(2);
    expect(stderr.join('\n')).toMatch(/unknown job preset "bert"/);
  });
});

describe('progress bar', () => {
  it('renders count, percentage and remaining time', () => {
    const line = renderBar('sim', 5, 20, 10, 80);
    expect(line).toMatch(/^sim \[#+\.+\] 5\/20 25% 10s eta 30s$/);
    expect(renderBar('sim', 20, 20, 12, 80)).toMatch(/20\/20 100% 12s$/);
  });
});
