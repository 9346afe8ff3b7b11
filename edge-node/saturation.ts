// When the node tells its gateways it is saturated: it holds nearly all the connections it may hold, so a new client
// would likely be refused. Two thresholds (hysteresis), so a node hovering at the limit does not flap in and out
// of routing with every connection that opens or closes.

/** Saturated from this share of the connection limit... */
export const SATURATED_AT = 0.9;
/** ...until the connections held fall below this share. */
export const UNSATURATED_BELOW = 0.75;

export class Saturation {
  saturated = false;
  private readonly on: number;
  private readonly off: number;

  constructor(maxConnections: number) {
    this.on = Math.max(1, Math.ceil(maxConnections * SATURATED_AT));
    this.off = Math.max(1, Math.floor(maxConnections * UNSATURATED_BELOW));
  }

  /** Takes the connections held now; true when that flipped the state. */
  update(connections: number): boolean {
    const next = this.saturated ? connections >= this.off : connections >= this.on;
    if (next === this.saturated) return false;
    this.saturated = next;
    return true;
  }
}
