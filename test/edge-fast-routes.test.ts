// The fast path's routing memo (edge-node/fast-routes.ts): bounded in entries and path length, so paths an attacker
// makes up cannot grow it, and dropped when the generation changes (a manifest learned: a path may now name a shard
// under another key). The node's own use is in test/edge-fast-path.test.ts.
import { describe, expect, it } from 'vitest';
import { FastRoutes } from '../edge-node/fast-routes.ts';

describe('FastRoutes', () => {
  const memo = (opts: { maxEntries?: number; maxPathChars?: number } = {}) => {
    const state = { generation: 1, resolved: 0 };
    const routes = new FastRoutes<{ key: string }>({
      generation: () => state.generation,
      resolve: (p) => (state.resolved++, p.startsWith('/known') ? { key: `k${p}` } : undefined),
      ...opts,
    });
    return { routes, state };
  };

  it('resolves a path until it is remembered, then answers from memory', () => {
    const { routes, state } = memo();
    const r = routes.of('/known/a')!;
    expect(routes.of('/known/a')).toEqual(r);
    expect(state.resolved).toBe(2);
    routes.remember('/known/a', r);
    expect(routes.of('/known/a')).toBe(r);
    expect(state.resolved).toBe(2);
    expect(routes.of('/other')).toBeUndefined();
  });

  it('forgets everything when the generation changes', () => {
    const { routes, state } = memo();
    routes.remember('/known/a', routes.of('/known/a')!);
    state.generation++;
    routes.of('/known/a');
    expect(state.resolved).toBe(2);
    expect(routes.size).toBe(0);
  });

  it('keeps no path longer than the limit, and starts over past the most entries', () => {
    const { routes } = memo({ maxEntries: 3, maxPathChars: 20 });
    routes.remember(`/known/${'x'.repeat(20)}`, { key: 'long' });
    expect(routes.size).toBe(0);
    for (let i = 0; i < 3; i++) routes.remember(`/known/${i}`, { key: String(i) });
    expect(routes.size).toBe(3);
    routes.remember('/known/3', { key: '3' });
    expect(routes.size).toBe(1);
  });
});
