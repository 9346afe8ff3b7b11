// Worker-thread entry for sweeps: receives scenarios, runs them, posts results back. Errors are returned as
// messages (with the scenario's index) so that one bad point does not kill the pool.
import { parentPort } from 'node:worker_threads';
import { simulate } from './simulate.ts';

export interface SweepTask {
  index: number;
  scenario: unknown;
}

export type SweepReply = { index: number; ok: true; result: ReturnType<typeof simulate> } | { index: number; ok: false; error: string };

if (!parentPort) throw new Error('sweep-worker.ts runs only as a worker thread');
const port = parentPort;
port.on('message', (task: SweepTask) => {
  let reply: SweepReply;
  try {
    reply = { index: task.index, ok: true, result: simulate(task.scenario) };
  } catch (err) {
    reply = { index: task.index, ok: false, error: (err as Error).message };
  }
  port.postMessage(reply);
});
