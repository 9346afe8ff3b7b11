// Runs many scenarios, in worker threads when there is more than one core and more than one scenario. Results
// come back in input order whatever order the workers finish in, so a sweep's output is deterministic.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { simulate, type SimResult } from './simulate.ts';
import type { SweepReply, SweepTask } from './sweep-worker.ts';

export interface SweepOptions {
  /** Worker threads to use; 0 or 1 runs in this thread. Default: the number of cores. */
  threads?: number;
  onProgress?: (done: number, total: number) => void;
}

export class SweepError extends Error {
  constructor(readonly index: number, message: string) {
    super(message);
  }
}

// Workers start without this process's TypeScript loader (on Node 20, --import in a worker's execArgv does not
// reach its entry module), so a small bootstrap registers tsx first and then imports the TypeScript entry.
const WORKER_BOOTSTRAP = `
  import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})
    .then((tsx) => { tsx.register(); return import(${JSON.stringify(new URL('./sweep-worker.ts', import.meta.url).href)}); });
`;

export async function runScenarios(scenarios: unknown[], opts: SweepOptions = {}): Promise<SimResult[]> {
  const total = scenarios.length;
  const threads = Math.max(0, Math.min(opts.threads ?? availableParallelism(), total));
  if (threads <= 1) {
    const out: SimResult[] = [];
    for (let i = 0; i < total; i++) {
      try {
        out.push(simulate(scenarios[i]));
      } catch (err) {
        throw new SweepError(i, (err as Error).message);
      }
      opts.onProgress?.(i + 1, total);
      // Let a progress bar repaint and signals arrive between scenarios.
      await new Promise((r) => setImmediate(r));
    }
    return out;
  }

  const results: (SimResult | undefined)[] = new Array(total);
  let next = 0;
  let done = 0;
  const workers: Worker[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let failed = false;
      const feed = (w: Worker) => {
        if (next < total) {
          const task: SweepTask = { index: next, scenario: scenarios[next] };
          next++;
          w.postMessage(task);
        }
      };
      for (let t = 0; t < threads; t++) {
        const w = new Worker(WORKER_BOOTSTRAP, { eval: true });
        workers.push(w);
        w.on('message', (reply: SweepReply) => {
          if (failed) return;
          if (!reply.ok) {
            failed = true;
            reject(new SweepError(reply.index, reply.error));
            return;
          }
          results[reply.index] = reply.result;
          done++;
          opts.onProgress?.(done, total);
          if (done === total) resolve();
          else feed(w);
        });
        w.on('error', (err) => {
          if (!failed) {
            failed = true;
            reject(err);
          }
        });
        feed(w);
      }
    });
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  return results as SimResult[];
}
