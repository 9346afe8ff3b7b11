// The upload rate a node reports in its heartbeat: bytes written per second, smoothed. Pure (the caller passes the
// time), so it is tested without a clock.
//
// Why smoothed: a heartbeat samples the bytes written since the last one. One long transfer at the cap gives a
// steady rate, but many short responses arrive in bursts, and routing on a raw sample would swing the node from
// "idle" to "full" between heartbeats. An exponentially weighted moving average with a time constant of a few
// heartbeats follows a real change within seconds and ignores one noisy sample.

/** Seconds over which the average forgets: after TAU a step change is 63 % reflected, after 3·TAU 95 %. */
export const UPLOAD_RATE_TAU_SECONDS = 3;

export class UploadRate {
  private lastAtMs: number | undefined;
  private lastBytes = 0;
  private smoothed = 0;

  constructor(private readonly tauSeconds = UPLOAD_RATE_TAU_SECONDS) {}

  /** Takes the total bytes written so far at time `nowMs`; returns the smoothed bytes per second. */
  sample(nowMs: number, totalBytes: number): number {
    if (this.lastAtMs === undefined) {
      this.lastAtMs = nowMs;
      this.lastBytes = totalBytes;
      return 0;
    }
    const dt = (nowMs - this.lastAtMs) / 1000;
    if (!(dt > 0)) return this.smoothed;
    const instant = Math.max(0, totalBytes - this.lastBytes) / dt;
    // Weight for an irregular interval: the same decay per second whatever the heartbeat period.
    const alpha = 1 - Math.exp(-dt / this.tauSeconds);
    this.smoothed += alpha * (instant - this.smoothed);
    this.lastAtMs = nowMs;
    this.lastBytes = totalBytes;
    return this.smoothed;
  }
}
