// Origin fallback is the last resort. Right after a gateway (re)starts its registry is empty: the nodes are seconds
// from reconnecting (their backoff is capped at 2 s), so "no node" then means "not yet", not "none". For a bounded
// grace after start, and only while no node that may take traffic has registered, a request that would go to the
// origin is told to retry in a second instead; clients ride that out with their gateway patience. A node that is
// registered but quarantined (or down) is not back: it takes no traffic, and the others are still reconnecting.
// After the grace, or once a healthy node is back, routing and origin fallback are as always.

export interface StartupGrace {
  /** When the gateway started, by its clock (ms). */
  startedAtMs: number;
  /** How long the grace lasts (ms); 0: off. */
  graceMs: number;
}

/**
 * True when a request that found no node should get 503 + Retry-After rather than the origin. `healthyNodes`: the
 * registered nodes that may take traffic (not quarantined, not down).
 */
export function inStartupGrace(grace: StartupGrace, nowMs: number, healthyNodes: number): boolean {
  return healthyNodes === 0 && nowMs - grace.startedAtMs < grace.graceMs;
}

/** Retry-After (seconds) sent during the grace: nodes reconnect within about 2 s, so a second is a fair first wait. */
export const STARTUP_GRACE_RETRY_AFTER_S = 1;

/** The 503 body's message: why, and for how much longer at most. */
export function startupGraceMessage(grace: StartupGrace, nowMs: number): string {
  const left = Math.max(0, grace.startedAtMs + grace.graceMs - nowMs);
  return `the gateway has just started and no node that may take traffic has registered yet; retry in ${STARTUP_GRACE_RETRY_AFTER_S} s (origin fallback in at most ${(left / 1000).toFixed(1)} s)`;
}
