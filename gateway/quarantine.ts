// Quarantine: a node caught serving wrong bytes gets no traffic until it passes a probe again, and not before a
// back-off that doubles with each offence. Offences are remembered by node id and by URL, across release and
// re-registration, so reconnecting does not wipe the record (a fresh key at a fresh URL does: that is a new node
// with a neutral score and nothing cached, see docs/security.md). Pure: the clock is passed in.

export interface QuarantineEntry {
  reason: string;
  since: number;
  /** Epoch ms after which a probe may release the node. */
  until: number;
  offences: number;
}

export interface QuarantinePolicy {
  /** Back-off after the first offence, ms; doubled for each further one. */
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_QUARANTINE_POLICY: QuarantinePolicy = { baseMs: 60_000, maxMs: 24 * 3_600_000 };

export function quarantineBackoffMs(offences: number, policy: QuarantinePolicy = DEFAULT_QUARANTINE_POLICY): number {
  return Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, Math.min(offences - 1, 40)));
}

export class QuarantineBook {
  private readonly active = new Map<string, QuarantineEntry>();
  private readonly offences = new Map<string, number>();

  constructor(private readonly policy: QuarantinePolicy = DEFAULT_QUARANTINE_POLICY) {}

  get(id: string): QuarantineEntry | undefined {
    return this.active.get(id);
  }

  /** Records an offence by the node known by `keys` (its id first, then its URL) and quarantines it. */
  add(keys: string[], reason: string, now: number): QuarantineEntry {
    const offences = Math.max(0, ...keys.map((k) => this.offences.get(k) ?? 0)) + 1;
    for (const k of keys) this.offences.set(k, offences);
    const entry = { reason, since: now, until: now + quarantineBackoffMs(offences, this.policy), offences };
    this.active.set(keys[0]!, entry);
    return entry;
  }

  /** A recheck that could not reach the node: try again after the same back-off, no new offence. */
  postpone(id: string, now: number): void {
    const e = this.active.get(id);
    if (e) e.until = now + quarantineBackoffMs(e.offences, this.policy);
  }

  due(id: string, now: number): boolean {
    const e = this.active.get(id);
    return e !== undefined && now >= e.until;
  }

  release(id: string): QuarantineEntry | undefined {
    const e = this.active.get(id);
    this.active.delete(id);
    return e;
  }
}
