// The gateway's status page in a real browser (Debian's chromium, driven by playwright-core) against the demo
// network as `npm start` runs it: the page loads with nothing but same-origin requests, shows the three demo nodes
// where they are announced, and its numbers change after a download. EDGESHARD_TEST_SCREENSHOT=FILE keeps a
// screenshot (docs/status-page.png is made that way).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { SHUTDOWN_LINE } from '../cli/demo.ts';
import { tempDir, until } from './helpers/net.ts';

const ROOT = join(import.meta.dirname, '..');
const CHROMIUM = '/usr/bin/chromium';
const PLACES = [
  { name: 'Paris', lat: 48.8566, lon: 2.3522 },
  { name: 'New York', lat: 40.7128, lon: -74.006 },
  { name: 'Tokyo', lat: 35.6762, lon: 139.6503 },
];

describe('status page', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let demo: ChildProcess | undefined;
  let out = '';
  let browser: BrowserContext | undefined;
  let gateway = '';

  beforeAll(async () => {
    tmp = await tempDir();
    demo = spawn(process.execPath, ['bin/edgeshard.js', 'demo', '--dir', join(tmp.dir, 'demo'), '--shards', '4', '--gateway-port', '0', '--node-port', '0', '--origin-port', '0', '--chain-port', '0'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    demo.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    demo.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    await until('the demo network', () => out.includes('stays up until Ctrl-C') || demo!.exitCode !== null, 120_000);
    const match = /^gateway {2}(http:\/\/\S+)/m.exec(out);
    if (!match) throw new Error(`the demo exited (${demo.exitCode}) before its network was up:\n${out}`);
    gateway = match[1]!;
    // A fresh profile each run (playwright passes it as --user-data-dir).
    browser = await chromium.launchPersistentContext(await mkdtemp(join(tmpdir(), 'edgeshard-chromium-')), {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    if (demo && demo.exitCode === null) {
      const exited = new Promise((r) => demo!.once('exit', r));
      demo.kill('SIGINT');
      await exited;
      expect(out).toContain(SHUTDOWN_LINE);
    }
    await tmp?.cleanup();
  }, 60_000);

  it('shows the demo nodes on the map where they are announced, and its numbers follow a download', async () => {
    const page = await browser!.newPage();
    const foreign: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(gateway)) foreign.push(r.url());
    });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${gateway}/?near=50.85,4.35`);
    await page.waitForSelector('#land path.land');
    await page.waitForFunction(() => document.querySelectorAll('circle.node.healthy').length === 3);

    // Each node's marker is at its announced position, placed by the page's own projection.
    const markers = await page.$$eval('circle.node', (cs) => cs.map((c) => ({ lat: Number(c.getAttribute('data-lat')), lon: Number(c.getAttribute('data-lon')), cx: Number(c.getAttribute('cx')), cy: Number(c.getAttribute('cy')) })));
    for (const place of PLACES) {
      const m = markers.find((x) => Math.abs(x.lat - place.lat) < 1e-6 && Math.abs(x.lon - place.lon) < 1e-6);
      expect(m, place.name).toBeDefined();
      const [x, y] = await page.evaluate(([lon, lat]) => (window as unknown as { statusProjection: (p: number[]) => number[] }).statusProjection([lon!, lat!])!, [place.lon, place.lat]);
      expect(m!.cx).toBeCloseTo(x!, 1);
      expect(m!.cy).toBeCloseTo(y!, 1);
    }
    // And the projection is a map: west is left, north is up.
    const at = (name: string) => markers.find((m) => Math.abs(m.lat - PLACES.find((p) => p.name === name)!.lat) < 1e-6)!;
    expect(at('New York').cx).toBeLessThan(at('Paris').cx);
    expect(at('Paris').cx).toBeLessThan(at('Tokyo').cx);
    expect(at('Paris').cy).toBeLessThan(at('Tokyo').cy);
    expect(await page.$$('circle.viewer')).toHaveLength(1);

    // The numbers: bytes served by the node nearest Brussels (Paris) change once a shard is downloaded through it.
    const servedText = () => page.$$eval('#nodes tbody td.served', (tds) => tds.map((td) => td.textContent).join('|'));
    await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr').length === 3);
    // The demo's gateway admits staked nodes only (as --rpc): each row shows the stake it read, the registry's minimum.
    expect(await page.$$eval('#nodes tbody td.stake', (tds) => tds.map((td) => td.textContent))).toEqual(['1000.000 EDGE', '1000.000 EDGE', '1000.000 EDGE']);
    const before = await servedText();
    const manifest = (await (await fetch(`${gateway}/d/sample/manifest.json`)).json()) as { shards: { path: string }[] };
    for (const s of manifest.shards) {
      const res = await fetch(`${gateway}/d/sample/${s.path}?near=50.85,4.35`);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    await page.waitForFunction((prev) => [...document.querySelectorAll('#nodes tbody td.served')].map((td) => td.textContent).join('|') !== prev, before, { timeout: 60_000 });
    expect(await servedText()).not.toBe(before);
    expect(await page.textContent('#summary')).toContain('3 of 3 nodes healthy');
    // The demo settled an epoch before saying "stays up": its gateway reads it (--rewards-from) and the page shows
    // each node's reward, the figures the demo printed.
    await page.waitForSelector('#rewards-note[data-state="settled"]');
    await page.waitForFunction(() => document.querySelectorAll('#rewards-table tbody tr').length >= 1);
    const printed = /^ {2}Paris +served .*→ ([0-9.]+) EDGE/m.exec(out);
    expect(printed, out).not.toBeNull();
    expect(await page.textContent('#rewards-table')).toContain(`${printed![1]} EDGE`);

    const shot = process.env.EDGESHARD_TEST_SCREENSHOT;
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    expect(errors).toEqual([]);
    expect(foreign).toEqual([]);
  }, 180_000);
});
