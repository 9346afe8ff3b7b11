// Writes one slice of a synthetic epoch's claims.jsonl for the `settle` benchmark: every claim a genuine receipt
// (a gateway-signed v2 ticket naming the node, signed by one of the clients' session keys), so settling it does the
// full work. Run as a child process so that slices are generated on every core:
//   node bin/run-ts.js bench/settle-gen.ts SPEC.json FROM TO OUT.jsonl
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { openSync, writeSync, closeSync, readFileSync } from 'node:fs';
import { signClientTicket, rawEd25519, type SessionKey } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { ticketKeyFromPem } from '../protocol/tickets.ts';

export interface GenSpec {
  epoch: number;
  /** Unix seconds all tickets are issued at. */
  t0: number;
  gatewayPem: string;
  nodes: string[];
  clients: Array<{ address: string; sessionPem: string }>;
}

/** Receipt i: node i mod nodes, client i mod clients, bytes varying with i; every ticket distinct. */
export function claimLine(i: number, spec: GenSpec, gateway: ReturnType<typeof ticketKeyFromPem>, sessions: SessionKey[]): string {
  const node = spec.nodes[i % spec.nodes.length]!;
  const c = i % spec.clients.length;
  const client = spec.clients[c]!;
  const cap = 64n << 20n;
  const id = i.toString(16).padStart(32, '0');
  const ticket = signClientTicket({ shard: 'ab'.repeat(32), node, expiresAt: spec.t0 + 600, epoch: spec.epoch, byteCap: cap, client: client.address, sessionKey: sessions[c]!.publicHex, id }, gateway);
  const bytes = BigInt(1 + ((i * 7919) % Number(cap)));
  return `{"node":"${node}","receipt":"${signReceipt(ticket, bytes, spec.t0 + 60, sessions[c]!)}"}\n`;
}

export function sessionsOf(spec: GenSpec): SessionKey[] {
  return spec.clients.map((c) => {
    const privateKey = createPrivateKey(c.sessionPem);
    const publicKey = createPublicKey(privateKey);
    return { privateKey, publicKey, publicHex: rawEd25519(publicKey).toString('hex') };
  });
}

if (process.argv[1]?.endsWith('settle-gen.ts')) {
  const [specPath, fromS, toS, out] = process.argv.slice(2);
  const spec = JSON.parse(readFileSync(specPath!, 'utf8')) as GenSpec;
  const gateway = ticketKeyFromPem(spec.gatewayPem);
  const sessions = sessionsOf(spec);
  const fd = openSync(out!, 'w');
  let chunk = '';
  for (let i = Number(fromS); i < Number(toS); i++) {
    chunk += claimLine(i, spec, gateway, sessions);
    if (chunk.length > 1 << 20) {
      writeSync(fd, chunk);
      chunk = '';
    }
  }
  writeSync(fd, chunk);
  closeSync(fd);
}
