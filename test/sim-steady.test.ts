// Numbers that hold: a start-up transient still in the steady-state window makes simulate() run longer, until the
// second half of the window agrees with the whole to within one point.
import { describe, expect, it } from 'vitest';
import { presetScenario } from '../simulator/presets.ts';
import { resolveScenario, withOverride } from '../simulator/scenario.ts';
import { STEADY_TOLERANCE, simulate, simulateResolved } from '../simulator/simulate.ts';

const set = (sc: unknown, kv: Record<string, unknown>) => Object.entries(kv).reduce((s, [k, v]) => withOverride(s, k, v), sc);

describe('steady state', () => {
  it('runs longer when the window still drifts, until no figure moves by more than a point', () => {
    // Data-centre nodes 5,000 km away, one V100 host: over 200 steps the loaders are still draining the buffer
    // they filled at start-up, and the second half of the window reads 12 points below the whole.
    const sc = set(presetScenario('resnet50', 'edge-datacenter', 5000), { 'job.gpu': 'V100', simulation: { steps: 200 } });
    const short = simulateResolved(resolveScenario(sc));
    expect(short.steadyDrift).toBeGreaterThan(0.1);
    const r = simulate(sc);
    expect(r.simulatedSteps).toBeGreaterThan(200);
    expect(r.steadyDrift).toBeLessThanOrEqual(STEADY_TOLERANCE);
    expect(Math.abs(r.utilization - short.utilization)).toBeGreaterThan(0.01); // the longer run changed the answer
  });

  it('leaves a run that is already steady alone', () => {
    const sc = set(presetScenario('llm-1b', 'edge-home', 1000), { simulation: { steps: 100 } });
    const r = simulate(sc);
    expect(r.simulatedSteps).toBe(100);
    expect(r.steadyDrift).toBeLessThanOrEqual(STEADY_TOLERANCE);
  });
});
