// A ChallengeScheduler the test fires by hand (the challenger's and the corroborator's rounds): no timer runs a round
// behind the test's back, and every wait asked for is recorded.
import type { ChallengeScheduler } from '../../gateway/challenges.ts';

export function manualScheduler() {
  const waits: number[] = [];
  let run: (() => void) | null = null;
  const scheduler: ChallengeScheduler = {
    after(ms, fn) {
      waits.push(ms);
      run = fn;
      return { cancel: () => (run = null) };
    },
  };
  return {
    scheduler,
    waits,
    /** Whether a round is waiting to be fired (false once cancelled). */
    get armed(): boolean {
      return run !== null;
    },
    fire(): void {
      const r = run;
      run = null;
      if (!r) throw new Error('no round scheduled');
      r();
    },
  };
}
