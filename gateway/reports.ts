// Client reports of bad bytes: POST /v1/reports {"ticket","shard","chunk","kind":"hash-mismatch"}. A report is
// evidence only if it carries a ticket this gateway signed for that shard (so the node named is the node the client
// was sent to); it is never enough alone to punish a node. Each accepted report triggers a verification probe of
// that node and shard (the server's job); without a confirming probe, a node is quarantined only when reports for
// it arrive from `quorum` distinct client networks, each with its own ticket, within `windowMs` (a node that serves
// wrong bytes to clients but right bytes to the gateway's probes is caught that way). Pure: the clock is passed in.
import type { KeyObject } from 'node:crypto';
import { decodeTicket, verifyTicket } from '../protocol/tickets.ts';
import { isSha256Hex } from '../protocol/hash.ts';
import ipaddr from 'ipaddr.js';
import { normalizeIp } from './geoip.ts';

export const REPORT_KINDS = ['hash-mismatch'] as const;

export interface ClientReport {
  ticket: string;
  shard: string;
  chunk: number | null;
  kind: (typeof REPORT_KINDS)[number];
}

/** Parses a report body. Pure. */
export function parseReport(body: string): { ok: true; report: ClientReport } | { ok: false; reason: string } {
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return { ok: false, reason: 'body must be JSON: {"ticket","shard","chunk","kind":"hash-mismatch"}' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, reason: 'body must be a JSON object' };
  const r = v as Record<string, unknown>;
  if (typeof r.ticket !== 'string' || r.ticket.length === 0 || r.ticket.length > 400) return { ok: false, reason: 'ticket must be the ticket string of the URL the node was fetched with' };
  if (typeof r.shard !== 'string' || !isSha256Hex(r.shard)) return { ok: false, reason: 'shard must be the shard sha256 (64 lowercase hex digits)' };
  if (!(r.chunk === null || r.chunk === undefined || (Number.isInteger(r.chunk) && (r.chunk as number) >= 0 && (r.chunk as number) < 2 ** 32))) {
    return { ok: false, reason: 'chunk must be a chunk index (integer ≥ 0) or null' };
  }
  const kind = REPORT_KINDS.find((k) => k === r.kind);
  if (!kind) return { ok: false, reason: `kind must be one of ${REPORT_KINDS.join(', ')}` };
  return { ok: true, report: { ticket: r.ticket, shard: r.shard, chunk: (r.chunk as number | null | undefined) ?? null, kind } };
}

/**
 * The network a client address counts for: its /24 (IPv4) or /48 (IPv6). Several reports from one network count
 * once, so a quorum needs addresses in several networks, not several addresses from one host's range.
 */
export function reporterNetwork(ip: string): string {
  const n = normalizeIp(ip);
  if (!n) return ip;
  if (n.family === 4) return n.address.split('.').slice(0, 3).join('.') + '.0/24';
  return ipaddr.parse(n.address).toNormalizedString().split(':').slice(0, 3).join(':') + '::/48';
}

export interface ReportDeskOptions {
  /** The gateway's ticket keys by key id. */
  keys: ReadonlyMap<string, KeyObject>;
  /** Distinct client networks whose reports quarantine a node without a confirming probe. */
  quorum: number;
  windowMs: number;
  /** How long after its expiry a ticket still backs a report, seconds. */
  graceSeconds: number;
}

export type ReportVerdict =
  | { ok: true; node: string; shard: string; reporters: number; corroborated: boolean }
  | { ok: false; reason: string };

interface Tally {
  since: number;
  networks: Set<string>;
  tickets: Set<string>;
}

export class ReportDesk {
  private readonly tallies = new Map<string, Tally>();

  constructor(private readonly opts: ReportDeskOptions) {}

  /** Checks a report's ticket and counts it towards its node's tally. */
  accept(report: ClientReport, clientIp: string, nowMs: number): ReportVerdict {
    const decoded = decodeTicket(report.ticket);
    if (!decoded) return { ok: false, reason: 'ticket is malformed' };
    const check = verifyTicket(report.ticket, { shard: report.shard, node: decoded.node }, this.opts.keys, Math.floor(nowMs / 1000), this.opts.graceSeconds);
    if (!check.ok) return { ok: false, reason: check.reason === 'ticket signed by a key this node does not trust' ? 'ticket was not signed by this gateway' : check.reason };
    return { ok: true, node: decoded.node, shard: report.shard, ...this.count(decoded.node, decoded.id, clientIp, nowMs) };
  }

  /** Counts a checked report (unsigned, or signed: gateway/signed-reports.ts) towards its node's tally. */
  count(node: string, ticketId: string, clientIp: string, nowMs: number): { reporters: number; corroborated: boolean } {
    let tally = this.tallies.get(node);
    if (!tally || nowMs - tally.since > this.opts.windowMs) this.tallies.set(node, (tally = { since: nowMs, networks: new Set(), tickets: new Set() }));
    const network = reporterNetwork(clientIp);
    if (!tally.networks.has(network) && !tally.tickets.has(ticketId)) {
      tally.networks.add(network);
      tally.tickets.add(ticketId);
    }
    if (this.tallies.size > 100_000) this.sweep(nowMs);
    return { reporters: tally.networks.size, corroborated: tally.networks.size >= this.opts.quorum };
  }

  /** After a quarantine the tally starts again. */
  reset(node: string): void {
    this.tallies.delete(node);
  }

  private sweep(nowMs: number): void {
    for (const [node, t] of this.tallies) if (nowMs - t.since > this.opts.windowMs) this.tallies.delete(node);
  }
}
