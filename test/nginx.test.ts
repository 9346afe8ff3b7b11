// deploy/nginx-gateway.conf as shipped (names, paths and ports substituted) in front of a real gateway, with the
// real nginx on loopback and a self-signed certificate: the status page and /healthz over TLS, the client's address
// forwarded, and the node registration WebSocket upgraded through the proxy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import WebSocket from 'ws';
import { REGISTRY_PATH } from '../protocol/registry-messages.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { tempDir, until, freePort, stopChild } from './helpers/net.ts';

const ROOT = join(import.meta.dirname, '..');

describe('nginx TLS proxy config', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let gateway: Gateway;
  let nginx: ChildProcess | undefined;
  let nginxLog = '';

  beforeAll(async () => {
    tmp = await tempDir();
    await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 1000 });
    origin = await startOrigin(join(tmp.dir, 'origin'));
    gateway = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], allowPrivateNodes: true, trustedProxies: ['127.0.0.1'] }));
  }, 60_000);

  afterAll(async () => {
    await stopChild(nginx);
    await gateway?.close();
    await origin?.close();
    await tmp?.cleanup();
  }, 60_000);

  it('serves the gateway over TLS, forwards the client address, and carries the node registration WebSocket', async () => {
    const cert = join(tmp.dir, 'cert.pem');
    const key = join(tmp.dir, 'key.pem');
    const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
    expect(gen.status, gen.stderr).toBe(0);

    const port = await freePort();
    const shipped = readFileSync(join(ROOT, 'deploy', 'nginx-gateway.conf'), 'utf8');
    const site = shipped
      .replace('server 127.0.0.1:8443;', `server ${new URL(gateway.url).host};`)
      .replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`)
      .replace('server_name gw.example.org;', 'server_name 127.0.0.1;')
      .replace('/etc/ssl/edgeshard/fullchain.pem', cert)
      .replace('/etc/ssl/edgeshard/privkey.pem', key);
    expect(site).toContain(`listen 127.0.0.1:${port} ssl;`);
    const prefix = join(tmp.dir, 'nginx');
    await mkdir(join(prefix, 'logs'), { recursive: true });
    // The shipped file goes inside an http block, as in /etc/nginx/conf.d/; this wrapper is the rest of nginx.conf.
    const conf = join(prefix, 'nginx.conf');
    await writeFile(
      conf,
      `pid ${join(prefix, 'nginx.pid')};\nerror_log stderr warn;\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n` +
        ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(prefix, t)};\n`).join('') +
        `${site}\n}\n`,
    );
    const check = spawnSync('nginx', ['-t', '-p', prefix, '-c', conf], { encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
    nginx = spawn('nginx', ['-p', prefix, '-c', conf, '-g', 'daemon off; master_process off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
    nginx.stderr!.on('data', (c: Buffer) => (nginxLog += c.toString()));

    const tls = new Agent({ connect: { ca: readFileSync(cert) } });
    const https = `https://127.0.0.1:${port}`;
    await until(
      'nginx to answer',
      async () => {
        if (nginx!.exitCode !== null) throw new Error(`nginx exited: ${nginxLog}`);
        return request(`${https}/healthz`, { dispatcher: tls }).then(
          async (r) => (await r.body.text(), r.statusCode === 200),
          () => false,
        );
      },
      30_000,
    );
    const page = await request(`${https}/`, { dispatcher: tls });
    expect(page.statusCode).toBe(200);
    expect(await page.body.text()).toContain('edgeshard gateway');
    // The gateway sees the client through X-Forwarded-For (from the trusted proxy): ?near is absent, so it locates
    // 127.0.0.1, which GeoIP cannot place, and says so rather than placing the proxy.
    const where = await request(`${https}/v1/whereami`, { dispatcher: tls });
    expect(await where.body.json()).toEqual({ location: null, source: null });

    // Node registration's WebSocket upgrade passes through: the gateway's first message (its challenge) arrives.
    const ws = new WebSocket(`wss://127.0.0.1:${port}${REGISTRY_PATH}`, { ca: readFileSync(cert) });
    const first = await new Promise<string>((resolve, reject) => {
      ws.once('message', (d) => resolve(d.toString()));
      ws.once('error', reject);
    });
    expect(JSON.parse(first)).toMatchObject({ type: 'challenge' });
    ws.close();
    await tls.close();
  }, 120_000);
});
