// RFC 9111 decisions of the path cache, one rule per test, on plain header maps and an explicit clock.
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_FRESHNESS,
  ageHeaderValue,
  cacheControlOf,
  currentAge,
  freshUntil,
  freshnessLifetime,
  initialAge,
  invalidationTargets,
  parseCacheControl,
  reuse,
  staleOnError,
  storability,
  variantSelector,
  varyFields,
  type HeaderMap,
  type StoredFreshness,
} from '../edge-node/cache-policy.ts';
import { formatHttpDate } from '../protocol/http-semantics.ts';

const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);
const get = (headers: HeaderMap = {}) => ({ method: 'GET', headers });
const res = (status: number, headers: HeaderMap = {}) => ({ status, headers });

describe('parseCacheControl', () => {
  it('reads directives case-insensitively, with quoted and unquoted arguments', () => {
    const cc = parseCacheControl('Public, MAX-AGE="60", s-maxage=120, stale-while-revalidate=5, stale-if-error=30, must-revalidate');
    expect(cc).toMatchObject({ public: true, maxAge: 60, sMaxage: 120, staleWhileRevalidate: 5, staleIfError: 30, mustRevalidate: true });
  });

  it('keeps a quoted list with commas in one directive (no-cache="a, b" is no-cache)', () => {
    const cc = parseCacheControl('no-cache="set-cookie, x-a", max-age=10');
    expect(cc.noCache).toBe(true);
    expect(cc.maxAge).toBe(10);
  });

  it('a malformed or conflicting max-age counts as 0 (stale), as §4.2.1 encourages', () => {
    expect(parseCacheControl('max-age=abc').maxAge).toBe(0);
    expect(parseCacheControl('max-age=60, max-age=3600').maxAge).toBe(0);
    expect(parseCacheControl('max-age=60, max-age=60').maxAge).toBe(60);
    expect(parseCacheControl('max-age').maxAge).toBe(0);
  });

  it('caps delta-seconds at 2^31 (§1.2.2)', () => {
    expect(parseCacheControl('max-age=99999999999999').maxAge).toBe(2 ** 31);
  });

  it('reads a bare max-stale as any staleness and ignores unknown directives', () => {
    expect(parseCacheControl('max-stale').maxStale).toBe(Infinity);
    expect(parseCacheControl('max-stale=5, foo=bar, community="UCI"')).toMatchObject({ maxStale: 5, noStore: false });
  });

  it('reads Pragma: no-cache as no-cache only without Cache-Control (§5.4)', () => {
    expect(cacheControlOf({ pragma: 'no-cache' }).noCache).toBe(true);
    expect(cacheControlOf({ pragma: 'no-cache', 'cache-control': 'max-age=5' }).noCache).toBe(false);
  });
});

describe('storability (§3)', () => {
  it('stores a 200 with max-age', () => {
    expect(storability(get(), res(200, { 'cache-control': 'max-age=60' }))).toEqual({ store: true });
  });

  it('never stores no-store (response or request)', () => {
    expect(storability(get(), res(200, { 'cache-control': 'no-store, max-age=60' })).store).toBe(false);
    expect(storability(get({ 'cache-control': 'no-store' }), res(200, { 'cache-control': 'max-age=60' })).store).toBe(false);
  });

  it('must-understand with an understood status overrides no-store (§5.2.2.3)', () => {
    expect(storability(get(), res(200, { 'cache-control': 'must-understand, no-store, max-age=60' })).store).toBe(true);
  });

  it('never stores private, qualified or not, in a shared cache', () => {
    expect(storability(get(), res(200, { 'cache-control': 'private, max-age=60' })).store).toBe(false);
    expect(storability(get(), res(200, { 'cache-control': 'private="set-cookie", max-age=60' })).store).toBe(false);
  });

  it('stores no-cache (it is revalidated on every use, not forbidden)', () => {
    expect(storability(get(), res(200, { 'cache-control': 'no-cache' })).store).toBe(true);
  });

  it('with Authorization, stores only public, s-maxage or must-revalidate answers (§3.5)', () => {
    const auth = get({ authorization: 'Bearer x' });
    expect(storability(auth, res(200, { 'cache-control': 'max-age=60' })).store).toBe(false);
    expect(storability(auth, res(200, { 'cache-control': 'public, max-age=60' })).store).toBe(true);
    expect(storability(auth, res(200, { 'cache-control': 's-maxage=60' })).store).toBe(true);
    expect(storability(auth, res(200, { 'cache-control': 'must-revalidate, max-age=60' })).store).toBe(true);
  });

  it('stores heuristically cacheable statuses without explicit freshness, and others only with it', () => {
    for (const status of [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]) expect(storability(get(), res(status)).store, String(status)).toBe(true);
    for (const status of [302, 303, 307, 400, 403, 500, 502, 503]) expect(storability(get(), res(status)).store, String(status)).toBe(false);
    expect(storability(get(), res(503, { 'cache-control': 'max-age=5' })).store).toBe(true);
    expect(storability(get(), res(302, { expires: formatHttpDate(T0) })).store).toBe(true);
  });

  it('never stores partial answers, 304s or unsafe methods', () => {
    expect(storability(get(), res(206, { 'cache-control': 'max-age=60' })).store).toBe(false);
    expect(storability(get(), res(304, { 'cache-control': 'max-age=60' })).store).toBe(false);
    expect(storability({ method: 'POST', headers: {} }, res(200, { 'cache-control': 'max-age=60' })).store).toBe(false);
  });

  it('never stores Vary: * or a malformed Vary', () => {
    expect(storability(get(), res(200, { vary: 'accept-encoding, *', 'cache-control': 'max-age=60' })).store).toBe(false);
    expect(storability(get(), res(200, { vary: 'accept encoding', 'cache-control': 'max-age=60' })).store).toBe(false);
    expect(storability(get(), res(200, { vary: 'Accept-Encoding', 'cache-control': 'max-age=60' })).store).toBe(true);
  });

  it('never stores an answer that sets a cookie (deliberately stricter than §3, like nginx)', () => {
    expect(storability(get(), res(200, { 'set-cookie': 'a=b', 'cache-control': 'public, max-age=60' })).store).toBe(false);
  });
});

describe('freshnessLifetime (§4.2.1, §4.2.2)', () => {
  const date = formatHttpDate(T0);
  const life = (status: number, headers: HeaderMap, opts = DEFAULT_FRESHNESS) => freshnessLifetime(res(status, headers), T0, opts);

  it('s-maxage wins over max-age in a shared cache, and max-age over Expires', () => {
    expect(life(200, { 'cache-control': 'max-age=10, s-maxage=100', expires: formatHttpDate(T0 + 5000_000), date })).toEqual({ seconds: 100, source: 's-maxage' });
    expect(life(200, { 'cache-control': 'max-age=10', expires: formatHttpDate(T0 + 5000_000), date })).toEqual({ seconds: 10, source: 'max-age' });
  });

  it('Expires counts from Date; an invalid Expires (such as "0") is already expired', () => {
    expect(life(200, { expires: formatHttpDate(T0 + 300_000), date })).toEqual({ seconds: 300, source: 'expires' });
    expect(life(200, { expires: '0', date })).toEqual({ seconds: 0, source: 'expires' });
    // No Date: counted from the response time.
    expect(life(200, { expires: formatHttpDate(T0 + 60_000) })).toEqual({ seconds: 60, source: 'expires' });
  });

  it('the heuristic is 10 % of Date − Last-Modified, capped, and only for heuristically cacheable statuses', () => {
    const lm = formatHttpDate(T0 - 1000_000);
    expect(life(200, { 'last-modified': lm, date })).toEqual({ seconds: 100, source: 'heuristic' });
    const old = formatHttpDate(T0 - 365 * 86_400_000);
    expect(life(200, { 'last-modified': old, date })).toEqual({ seconds: 86_400, source: 'heuristic' });
    expect(life(302, { 'last-modified': lm, date })).toEqual({ seconds: 0, source: 'none' });
    expect(life(200, { date })).toEqual({ seconds: 0, source: 'none' });
  });

  it('the operator override replaces the heuristic only, never explicit freshness', () => {
    const opts = { ...DEFAULT_FRESHNESS, overrideSeconds: 3600 };
    expect(life(200, {}, opts)).toEqual({ seconds: 3600, source: 'override' });
    expect(life(200, { 'cache-control': 'max-age=5' }, opts)).toEqual({ seconds: 5, source: 'max-age' });
    expect(life(503, {}, opts)).toEqual({ seconds: 0, source: 'none' });
  });
});

describe('age (§4.2.3)', () => {
  it('takes the larger of the apparent age and the Age field plus the request time', () => {
    // The origin says the answer is 30 s old, and the request took 2 s.
    expect(initialAge({ age: '30', date: formatHttpDate(T0) }, T0 - 2000, T0)).toBe(32);
    // Date 10 s before the answer arrived, no Age: apparent age 10.
    expect(initialAge({ date: formatHttpDate(T0 - 10_000) }, T0, T0)).toBe(10);
    // A Date in the future never makes the age negative; a malformed Age is ignored.
    expect(initialAge({ date: formatHttpDate(T0 + 60_000), age: 'abc' }, T0, T0)).toBe(0);
  });

  it('grows with resident time and is sent in whole seconds', () => {
    expect(currentAge(5, T0, T0 + 2500)).toBe(7.5);
    expect(ageHeaderValue(7.5)).toBe('7');
  });
});

describe('reuse (§4, §4.2.4, §5.2.1, RFC 5861)', () => {
  const stored = (cacheControl: string, lifetime: number, over: Partial<StoredFreshness> = {}): StoredFreshness => ({
    lifetime,
    initialAge: 0,
    responseTime: T0,
    cc: parseCacheControl(cacheControl),
    ...over,
  });

  it('fresh until the lifetime has passed, and freshUntil says when', () => {
    const s = stored('max-age=60', 60);
    expect(reuse(s, {}, T0 + 59_000)).toBe('fresh');
    expect(reuse(s, {}, T0 + 60_000)).toBe('revalidate');
    expect(freshUntil(s)).toBe(T0 + 60_000);
    expect(freshUntil({ ...s, initialAge: 20 })).toBe(T0 + 40_000);
  });

  it('response no-cache revalidates on every use, even fresh', () => {
    expect(reuse(stored('no-cache, max-age=60', 60), {}, T0)).toBe('revalidate');
  });

  it('request no-cache and Pragma: no-cache revalidate', () => {
    const s = stored('max-age=60', 60);
    expect(reuse(s, { 'cache-control': 'no-cache' }, T0)).toBe('revalidate');
    expect(reuse(s, { pragma: 'no-cache' }, T0)).toBe('revalidate');
  });

  it('request max-age and min-fresh narrow what counts as fresh', () => {
    const s = stored('max-age=60', 60);
    expect(reuse(s, { 'cache-control': 'max-age=10' }, T0 + 11_000)).toBe('revalidate');
    expect(reuse(s, { 'cache-control': 'max-age=10' }, T0 + 9_000)).toBe('fresh');
    expect(reuse(s, { 'cache-control': 'min-fresh=30' }, T0 + 31_000)).toBe('revalidate');
    expect(reuse(s, { 'cache-control': 'min-fresh=30' }, T0 + 29_000)).toBe('fresh');
  });

  it('request max-stale accepts a stale answer, unless must-revalidate, proxy-revalidate or s-maxage forbid it', () => {
    expect(reuse(stored('max-age=60', 60), { 'cache-control': 'max-stale=30' }, T0 + 80_000)).toBe('stale');
    expect(reuse(stored('max-age=60', 60), { 'cache-control': 'max-stale=30' }, T0 + 95_000)).toBe('revalidate');
    expect(reuse(stored('max-age=60', 60), { 'cache-control': 'max-stale' }, T0 + 9_999_000)).toBe('stale');
    for (const cc of ['max-age=60, must-revalidate', 'max-age=60, proxy-revalidate', 's-maxage=60']) {
      expect(reuse(stored(cc, 60), { 'cache-control': 'max-stale' }, T0 + 80_000), cc).toBe('revalidate');
    }
  });

  it('must-revalidate does not stop a fresh answer being served', () => {
    expect(reuse(stored('max-age=60, must-revalidate', 60), {}, T0 + 1000)).toBe('fresh');
  });

  it('stale-while-revalidate serves stale within its window only', () => {
    const s = stored('max-age=60, stale-while-revalidate=30', 60);
    expect(reuse(s, {}, T0 + 80_000)).toBe('stale-while-revalidate');
    expect(reuse(s, {}, T0 + 91_000)).toBe('revalidate');
    expect(reuse(stored('max-age=60, stale-while-revalidate=30, must-revalidate', 60), {}, T0 + 80_000)).toBe('revalidate');
  });

  it('only-if-cached turns "ask the origin" into a 504 and leaves servable answers alone', () => {
    const s = stored('max-age=60', 60);
    expect(reuse(s, { 'cache-control': 'only-if-cached' }, T0 + 61_000)).toBe('only-if-cached');
    expect(reuse(s, { 'cache-control': 'only-if-cached' }, T0 + 1_000)).toBe('fresh');
  });

  it('stale-if-error: an error status hides behind stale only within the window; unreachable origins need no window', () => {
    const s = stored('max-age=60, stale-if-error=30', 60);
    expect(staleOnError(s, {}, T0 + 80_000, 'error-status')).toBe(true);
    expect(staleOnError(s, {}, T0 + 95_000, 'error-status')).toBe(false);
    expect(staleOnError(s, {}, T0 + 95_000, 'unreachable')).toBe(false);
    const plain = stored('max-age=60', 60);
    expect(staleOnError(plain, {}, T0 + 95_000, 'error-status')).toBe(false);
    expect(staleOnError(plain, {}, T0 + 95_000, 'unreachable')).toBe(true);
    // The request's own stale-if-error counts too (RFC 5861 §4).
    expect(staleOnError(plain, { 'cache-control': 'stale-if-error=60' }, T0 + 95_000, 'error-status')).toBe(true);
    expect(staleOnError(stored('max-age=60, must-revalidate', 60), {}, T0 + 61_000, 'unreachable')).toBe(false);
  });
});

describe('Vary (§4.1)', () => {
  it('lists the fields, lowercased and sorted; * and malformed names stand out', () => {
    expect(varyFields({ vary: 'Accept-Encoding, accept-language' })).toEqual(['accept-encoding', 'accept-language']);
    expect(varyFields({ vary: ['Accept', 'Origin'] })).toEqual(['accept', 'origin']);
    expect(varyFields({})).toEqual([]);
    expect(varyFields({ vary: '*' })).toBe('*');
    expect(varyFields({ vary: 'a b' })).toBeNull();
  });

  it('selects the same variant only for equal (normalised) values; absent differs from empty', () => {
    const f = ['accept-encoding'];
    expect(variantSelector(f, { 'accept-encoding': 'gzip, br' })).toBe(variantSelector(f, { 'accept-encoding': 'gzip,br' }));
    expect(variantSelector(f, { 'accept-encoding': 'gzip' })).not.toBe(variantSelector(f, { 'accept-encoding': 'br' }));
    expect(variantSelector(f, {})).not.toBe(variantSelector(f, { 'accept-encoding': '' }));
  });
});

describe('invalidationTargets (§4.4)', () => {
  const base = 'http://127.0.0.1:9000/data';

  it('invalidates the target, Location and Content-Location on the same origin, under the base', () => {
    expect(invalidationTargets('http://127.0.0.1:9000/data/a.bin', 201, { location: '/data/b.bin', 'content-location': 'c%20d.bin' }, base)).toEqual([
      'a.bin',
      'b.bin',
      'c d.bin',
    ]);
  });

  it('ignores other origins and paths outside the base', () => {
    expect(invalidationTargets('http://127.0.0.1:9000/data/a.bin', 200, { location: 'http://127.0.0.2:9000/data/x', 'content-location': '/other/y' }, base)).toEqual(['a.bin']);
  });

  it('invalidates nothing after an error answer', () => {
    expect(invalidationTargets('http://127.0.0.1:9000/data/a.bin', 500, {}, base)).toEqual([]);
    expect(invalidationTargets('http://127.0.0.1:9000/data/a.bin', 404, {}, base)).toEqual([]);
  });
});
