// The client's one HTTP connection pool and the small timing helpers the download loops share.
import { Agent } from 'undici';

export interface ClientAgentOptions {
  /** Connections per origin (node, gateway). Parallel shards and split ranges each hold one. */
  connections?: number;
  /** Our own stall watchdog aborts first; undici's timeouts are only a backstop a little later. */
  stallTimeoutMs?: number;
}

export function createClientAgent(opts: ClientAgentOptions = {}): Agent {
  const backstop = (opts.stallTimeoutMs ?? 15_000) + 5_000;
  return new Agent({
    connections: opts.connections ?? 32,
    keepAliveTimeout: 10_000,
    keepAliveMaxTimeout: 60_000,
    connectTimeout: Math.min(backstop, 10_000),
    headersTimeout: backstop,
    bodyTimeout: backstop,
  });
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Thrown (as an abort reason) when the user interrupts: never retried, never counted as a node's fault. */
export class InterruptedError extends Error {
  constructor() {
    super('interrupted');
    this.name = 'InterruptedError';
  }
}

/** The abort reason as an Error when the signal is aborted, else null. */
export function abortedReason(signal: AbortSignal | undefined): Error | null {
  if (!signal?.aborted) return null;
  return signal.reason instanceof Error ? signal.reason : new InterruptedError();
}
