// The variant index of the node's HTTP cache (edge-node/variants.ts): which key a request's stored answer has when
// the path's answers vary, and that no path can name another path's variant. The whole behaviour over HTTP is in
// test/edge-http-cache.test.ts (Vary).
import { describe, expect, it } from 'vitest';
import { primaryKeyOf, VariantIndex, variantKey } from '../edge-node/variants.ts';

describe('VariantIndex', () => {
  it('keys a varying path\'s answers by the request\'s values of the fields, and the path alone once it stops varying', () => {
    const index = new VariantIndex();
    let asked = 0;
    const fr = (lang: string) => () => (asked++, { 'accept-language': lang });
    expect(index.storageKeyFor('/a', fr('fr'))).toBe('/a');
    expect(asked).toBe(0); // the forwarded headers are not even computed for a path that does not vary

    const frKey = index.keyForAnswer('/a', ['accept-language'], { 'accept-language': 'fr' });
    expect(index.has('/a')).toBe(true);
    expect(index.storageKeyFor('/a', fr('fr'))).toBe(frKey);
    expect(index.storageKeyFor('/a', fr('de'))).not.toBe(frKey);
    expect(primaryKeyOf(frKey)).toBe('/a');

    expect(index.keyForAnswer('/a', [], { 'accept-language': 'fr' })).toBe('/a');
    expect(index.has('/a')).toBe(false);
    index.keyForAnswer('/b', ['accept-encoding'], {});
    index.forget('/b');
    expect(index.storageKeyFor('/b', fr('fr'))).toBe('/b');
  });

  it('puts the variant after a NUL, which no decoded request path holds, so no path names another\'s variant', () => {
    const key = variantKey('/a', ['accept-language'], { 'accept-language': 'fr' });
    expect(key).toMatch(/^\/a\0[0-9a-f]{64}$/);
    expect(primaryKeyOf('/a')).toBe('/a');
  });
});
