// Header pass-through, forwarding, 304 updates and the fields the node adds, on plain inputs.
import { describe, expect, it } from 'vitest';
import { cacheStatus, endToEndResponseHeaders, flatField, flatToMap, forwardedRequestHeaders, reprDigest, updatedOn304 } from '../edge-node/cache-headers.ts';
import { sha256Hex } from '../protocol/hash.ts';

describe('endToEndResponseHeaders', () => {
  it('passes end-to-end fields through in order, repeated ones as separate lines', () => {
    const h = endToEndResponseHeaders({ etag: '"v1"', 'content-disposition': 'attachment', 'x-meta': ['a', 'b'], 'content-encoding': 'gzip' });
    expect(h).toEqual(['etag', '"v1"', 'content-disposition', 'attachment', 'x-meta', 'a', 'x-meta', 'b', 'content-encoding', 'gzip']);
  });

  it('drops hop-by-hop fields and those the Connection field names', () => {
    const h = endToEndResponseHeaders({
      connection: 'close, X-Hop',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      'x-hop': 'secret',
      'proxy-authenticate': 'Basic',
      upgrade: 'h2c',
      'x-kept': '1',
    });
    expect(h).toEqual(['x-kept', '1']);
  });

  it('drops the fields the node writes itself, and values node:http would refuse', () => {
    expect(endToEndResponseHeaders({ 'content-length': '5', date: 'x', age: '3', 'cache-status': 'up; hit', 'x-bad': 'a\u0001b', 'x-ok': 'é' })).toEqual(['x-ok', 'é']);
  });
});

describe('forwardedRequestHeaders', () => {
  it('forwards end-to-end request fields (Authorization, Accept-Encoding, Cache-Control) and adds Via', () => {
    const f = forwardedRequestHeaders({ authorization: 'Bearer t', 'accept-encoding': 'gzip', 'cache-control': 'no-cache', 'x-trace': ['1', '2'] });
    expect(f).toEqual({ authorization: 'Bearer t', 'accept-encoding': 'gzip', 'cache-control': 'no-cache', 'x-trace': ['1', '2'], via: '1.1 edgeshard' });
  });

  it('drops hop-by-hop fields, Connection-named ones, Host, preconditions and Range', () => {
    const f = forwardedRequestHeaders({
      host: 'edge',
      connection: 'keep-alive, x-secret',
      'x-secret': 's',
      te: 'trailers',
      'proxy-authorization': 'Basic x',
      'if-none-match': '"a"',
      'if-modified-since': 'x',
      range: 'bytes=0-1',
      'if-range': '"a"',
      via: '1.1 downstream',
    });
    expect(f).toEqual({ via: '1.1 downstream, 1.1 edgeshard' });
  });

  it('keeps preconditions and Range when asked (an unsafe request passed through)', () => {
    expect(forwardedRequestHeaders({ host: 'edge', 'if-match': '"a"' }, true)).toEqual({ 'if-match': '"a"', via: '1.1 edgeshard' });
  });
});

describe('updatedOn304 (§3.2, §4.3.4)', () => {
  it('replaces and adds the 304 fields, keeping the ones that describe the stored body', () => {
    const stored = ['etag', '"v1"', 'cache-control', 'max-age=0', 'content-type', 'text/plain', 'content-encoding', 'gzip', 'x-a', '1', 'x-a', '2'];
    const updated = updatedOn304(stored, {
      'cache-control': 'max-age=3600',
      'x-a': '3',
      'x-new': 'n',
      'content-type': 'application/json',
      'content-encoding': 'br',
      'content-length': '0',
      connection: 'close',
    });
    expect(flatField(updated, 'cache-control')).toBe('max-age=3600');
    expect(flatField(updated, 'x-a')).toBe('3');
    expect(flatField(updated, 'x-new')).toBe('n');
    expect(flatField(updated, 'content-type')).toBe('text/plain');
    expect(flatField(updated, 'content-encoding')).toBe('gzip');
    expect(flatField(updated, 'etag')).toBe('"v1"');
    expect(flatField(updated, 'content-length')).toBeUndefined();
    expect(flatField(updated, 'connection')).toBeUndefined();
  });
});

describe('fields the node adds', () => {
  it('Repr-Digest carries the sha-256 as base64 in a byte sequence (RFC 9530)', () => {
    const hex = sha256Hex(Buffer.from('hello'));
    expect(reprDigest(hex)).toBe(`sha-256=:${Buffer.from(hex, 'hex').toString('base64')}:`);
    expect(reprDigest(hex)).toBe('sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:');
  });

  it('Cache-Status says hit, fwd, fwd-status, stored, collapsed, ttl and detail (RFC 9211)', () => {
    expect(cacheStatus({ hit: true, ttl: 30.7 })).toBe('edgeshard; hit; ttl=30');
    expect(cacheStatus({ fwd: 'miss', fwdStatus: 200, stored: true, collapsed: true })).toBe('edgeshard; fwd=miss; fwd-status=200; stored; collapsed');
    expect(cacheStatus({ fwd: 'miss', detail: 'origin "x" unreachable\n' })).toBe('edgeshard; fwd=miss; detail="origin \\"x\\" unreachable?"');
  });

  it('flatToMap turns repeated lines into arrays', () => {
    expect(flatToMap(['a', '1', 'b', '2', 'a', '3'])).toEqual({ a: ['1', '3'], b: '2' });
  });
});
