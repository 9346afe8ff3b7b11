// How many messages a registered node may send over the registry WebSocket. Each heartbeat costs the gateway a
// JSON parse (up to 1 MiB), a Bloom filter decode when the summary changed, and a routing index update; without a
// limit a node, or many nodes with a key each, could send them as fast as their links allow and slow routing for
// everyone. The budget is a token bucket per node id, sized from the heartbeat interval the gateway asks for, so an
// honest node never reaches it; commands the gateway sends add one message each for their acks.
//
// Past the budget a message is dropped before it is parsed (and counted); a connection that has had `closeAfterDrops`
// dropped is closed with WS_CLOSE_OVER_BUDGET. The node may reconnect, but its bucket is kept by id, not per
// connection, so a reconnect brings no fresh burst.

/** Messages a node may send per heartbeat interval: its beat, one at once on each change of saturation, and slack. */
export const MESSAGES_PER_HEARTBEAT = 4;
/** Messages a node may send at once after being quiet: a registration's first beat, beats bunched by a stall. */
export const MESSAGE_BURST = 20;
/** The least rate, per second, whatever the interval: one message a second costs the gateway nothing to speak of. */
export const MIN_MESSAGES_PER_SECOND = 1;
/** WebSocket close code for a node over its budget (1008: policy violation, RFC 6455 §7.4.1). */
export const WS_CLOSE_OVER_BUDGET = 1008;

export interface MessageBudget {
  ratePerSecond: number;
  burst: number;
  /** Dropped messages after which the connection is closed. */
  closeAfterDrops: number;
}

export function messageBudget(heartbeatMs: number): MessageBudget {
  if (!(heartbeatMs > 0) || !Number.isFinite(heartbeatMs)) throw new RangeError(`heartbeatMs must be a positive number of ms, got ${heartbeatMs}`);
  return {
    ratePerSecond: Math.max(MIN_MESSAGES_PER_SECOND, (MESSAGES_PER_HEARTBEAT * 1000) / heartbeatMs),
    burst: MESSAGE_BURST,
    closeAfterDrops: MESSAGE_BURST,
  };
}

/** The reason a node over its budget is given (in an error message and the close frame, ≤ 123 bytes). */
export function overBudgetReason(b: MessageBudget): string {
  return `over the message budget (${+b.ratePerSecond.toFixed(2)} a second, bursts of ${b.burst})`;
}
