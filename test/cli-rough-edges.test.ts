// The rough edges a new user hit trying the CLI, each as it was met: the command as typed, what it must say.
// main() runs in-process (its output captured) so each case costs milliseconds, not a process start.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { main } from '../cli/main.ts';
import { parseCommand } from '../protocol/cli/options.ts';
import { describePathError } from '../protocol/cli/start-errors.ts';
import { NODE_OPTIONS, nodeConfigFromSettings } from '../edge-node/config.ts';
import { simReportCommand } from '../simulator/cli.ts';
import { RATE_UNITS_HELP, SIZE_UNITS_HELP } from '../protocol/units.ts';
import { tempDir } from './helpers/net.ts';
import { generateTicketKey } from '../protocol/tickets.ts';

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void (out += `${a.join(' ')}\n`));
  const error = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void (err += `${a.join(' ')}\n`));
  try {
    return { code: await main(argv), out, err };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

const nodeSpec = { name: 'node', usage: '', summary: '', options: NODE_OPTIONS };

describe('CLI rough edges', () => {
  afterEach(() => vi.restoreAllMocks());

  it('answers an unknown flag with one clean line and a "did you mean"', async () => {
    const r = await cli(['node', '--cache-sise', '1GB']);
    expect(r.code).toBe(2);
    expect(r.err).toBe('edgeshard node: unknown option --cache-sise (did you mean --cache-size?); run "edgeshard node --help" for the options\n');
    // Quotes balance, and Node's parser text about positionals is gone.
    expect(r.err).not.toMatch(/positional|'/);
    expect((await cli(['node', '--port'])).err).toContain('--port needs a value');
    expect((await cli(['fetch', '--zzzzzz'])).err).toMatch(/unknown option --zzzzzz; run/);
    expect((await cli(['nod'])).err).toContain('unknown command "nod" (did you mean node?)');
  });

  it('prints the version', async () => {
    const r = await cli(['--version']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^edgeshard \d+\.\d+\.\d+\n$/);
  });

  it('accepts exactly the units its help lists, in any case, and refuses a bare G with both readings', async () => {
    const help = (await cli(['node', '--help'])).out;
    expect(help).toContain(SIZE_UNITS_HELP);
    expect(help).toContain(RATE_UNITS_HELP);
    const config = (argv: string[]) => nodeConfigFromSettings(parseCommand(nodeSpec, ['--origin', 'http://o.example', ...argv], {}).settings);
    expect(config(['--max-upload', '200mbps']).maxUploadBytesPerSecond).toBe(25e6);
    expect(config(['--cache-size', '50gb']).cacheBytes).toBe(50e9);
    expect(() => config(['--cache-size', '50G'])).toThrow('--cache-size "50G": say 50GB (powers of 1000) or 50GiB (powers of 1024)');
  });

  it("reads only the command's own environment variables, so fetch's cannot break sim report", () => {
    const env = { EDGESHARD_OUT: '/nonexistent/dir/x.html', EDGESHARD_FETCH_OUT: '/nonexistent/dir' };
    const parsed = parseCommand(simReportCommand.spec, [], env);
    expect(parsed.settings.out).toBe('sim-report.html');
    expect(parsed.warnings).toEqual(['ignoring EDGESHARD_OUT: environment variables are per command now; for "edgeshard sim report" set EDGESHARD_SIM_REPORT_OUT']);
    expect(parseCommand(simReportCommand.spec, [], { EDGESHARD_SIM_REPORT_OUT: 'r.html' }).settings.out).toBe('r.html');
  });

  it('names the option behind EADDRINUSE and ENOTDIR', async () => {
    const { dir, cleanup } = await tempDir();
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const inUse = await cli(['node', '--origin', 'http://127.0.0.1:9', '--open', '--host', '127.0.0.1', '--port', String(port), '--key-file', join(dir, 'k.json')]);
      expect(inUse.code).toBe(2);
      expect(inUse.err).toContain(`--port ${port}: address 127.0.0.1:${port} is already in use`);
      expect(inUse.err).toContain('or 0 for any free one');

      await writeFile(join(dir, 'file'), 'x');
      const notDir = await cli(['node', '--origin', 'http://127.0.0.1:9', '--open', '--host', '127.0.0.1', '--port', '0', '--cache-dir', join(dir, 'file', 'cache'), '--key-file', join(dir, 'k.json')]);
      expect(notDir.code).toBe(2);
      expect(notDir.err).toContain(`--cache-dir ${join(dir, 'file', 'cache')}: a part of this path is a file, not a directory`);

      const ticketNotDir = await cli(['gateway', '--origin', 'http://127.0.0.1:9', '--dataset', 'd', '--host', '127.0.0.1', '--port', '0', '--ticket-key', join(dir, 'file', 'key.pem')]);
      expect(ticketNotDir.code).toBe(2);
      expect(ticketNotDir.err).toContain(`--ticket-key ${join(dir, 'file', 'key.pem')}: a part of this path is a file`);

      const settler = (...argv: string[]) => cli(['settler', '--gateway-keys', generateTicketKey().publicKeyB64, '--host', '127.0.0.1', ...argv]);
      const settlerInUse = await settler('--port', String(port), '--dir', join(dir, 'settler'));
      expect(settlerInUse.code).toBe(2);
      expect(settlerInUse.err).toContain(`--port ${port}: address 127.0.0.1:${port} is already in use`);
      const settlerNotDir = await settler('--port', '0', '--dir', join(dir, 'file', 'settler'));
      expect(settlerNotDir.code).toBe(2);
      expect(settlerNotDir.err).toContain(`--dir ${join(dir, 'file', 'settler')}: a part of this path is a file`);
    } finally {
      busy.close();
      await cleanup();
    }
  });

  it('names the option behind EACCES (built here: as root the test cannot be refused a directory)', () => {
    const err = Object.assign(new Error("EACCES: permission denied, mkdir '/var/cache/edgeshard'"), { code: 'EACCES', path: '/var/cache/edgeshard' });
    expect(describePathError(err, '--cache-dir', '/var/cache/edgeshard')).toBe(
      '--cache-dir /var/cache/edgeshard: permission denied; give the user running edgeshard write access, or choose another path with --cache-dir',
    );
  });

  it('says plainly that an https:// gateway URL points at a plain-HTTP server', async () => {
    const { dir, cleanup } = await tempDir();
    const plain = createHttpServer((_req, res) => res.end('{}'));
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    const port = (plain.address() as { port: number }).port;
    try {
      const r = await cli(['fetch', `https://127.0.0.1:${port}`, 'sample', '--out', join(dir, 'out')]);
      expect(r.code).toBe(1);
      expect(r.err).toBe(`edgeshard fetch: gateway https://127.0.0.1:${port}: the server there speaks plain HTTP, not TLS; use http://127.0.0.1:${port}, or serve the gateway through a TLS proxy for https (docs/operators.md)\n`);
    } finally {
      plain.closeAllConnections();
      plain.close();
      await cleanup();
    }
  });

  it('says why --ring does not fit an HPC source, in the words the user typed', async () => {
    const r = await cli(['sim', '--ring', '100', '--source', 'hpc-nvme']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('--ring places edge nodes at a distance, but --source hpc-nvme is hpc storage');
    expect(r.err).not.toContain('placement');
  });
});
