import { describe, expect, it } from 'vitest';
import { parseRate, parseSize, formatBytes } from '../protocol/units.ts';
import { decodeRequestPath, unsafePathReason } from '../protocol/paths.ts';
import { buildManifest, canonicalJson, manifestId, parseManifest, validateManifest } from '../protocol/manifest.ts';
import { isSha256Hex, sha256Hex } from '../protocol/hash.ts';

describe('units', () => {
  it('parses sizes with decimal and binary units', () => {
    expect(parseSize('50GB')).toBe(50e9);
    expect(parseSize('512MiB')).toBe(512 * 1024 * 1024);
    expect(parseSize('1.5 KiB')).toBe(1536);
    expect(parseSize('4096')).toBe(4096);
    expect(() => parseSize('50XB', '--cache-size')).toThrow(/--cache-size "50XB".*units/);
    expect(() => parseSize('-1GB')).toThrow();
    // Case-insensitive, as the help says; a bare G is refused with the two forms it could mean.
    expect(parseSize('50gb')).toBe(50e9);
    expect(() => parseSize('50G', '--cache-size')).toThrow('--cache-size "50G": say 50GB (powers of 1000) or 50GiB (powers of 1024)');
  });
  it('parses rates as bits per second unless given in bytes', () => {
    expect(parseRate('200Mbps')).toBe(25e6);
    expect(parseRate('1Gbps')).toBe(125e6);
    expect(parseRate('50MB/s')).toBe(50e6);
    expect(parseRate('200mbps')).toBe(25e6);
    expect(() => parseRate('200', '--max-upload')).toThrow(/--max-upload "200".*Mbps/);
    expect(parseRate('unlimited')).toBe(0);
    expect(() => parseRate('fast')).toThrow(/200Mbps/);
  });
  it('formats bytes', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
  });
});

describe('paths', () => {
  it('accepts ordinary relative shard paths', () => {
    expect(unsafePathReason('train/shard-000001.tar')).toBeNull();
    expect(decodeRequestPath('train/a%20b.tar')).toEqual({ path: 'train/a b.tar' });
  });
  it.each([
    ['../etc/passwd', '".." segment'],
    ['a/../../b', '".." segment'],
    ['/abs', 'absolute'],
    ['a//b', 'empty path segment'],
    ['a\\..\\b', 'backslash'],
    ['a/./b', '"." segment'],
    ['', 'empty path'],
  ])('refuses %s', (p, reason) => {
    expect(unsafePathReason(p)).toContain(reason);
  });
  it('decodes percent-encoding exactly once', () => {
    expect(decodeRequestPath('%2e%2e/x')).toEqual({ error: '".." segment in path' });
    expect(decodeRequestPath('%252e%252e/x')).toEqual({ path: '%2e%2e/x' });
    expect(decodeRequestPath('%zz')).toEqual({ error: 'malformed percent-encoding in path' });
    expect(decodeRequestPath('a%00b')).toEqual({ error: 'NUL byte in path' });
  });
});

describe('manifest', () => {
  const shard = (path: string, body: string) => ({ path, size: body.length, sha256: sha256Hex(body) });
  it('is sorted, totals its shards, and has an id that does not depend on key order', () => {
    const m = buildManifest('ds', '1', [shard('b.bin', 'bb'), shard('a.bin', 'a')]);
    expect(m.shards.map((s) => s.path)).toEqual(['a.bin', 'b.bin']);
    expect(m.totalBytes).toBe(3);
    const reordered = JSON.parse(JSON.stringify({ totalBytes: m.totalBytes, shards: m.shards, version: '1', name: 'ds', format: m.format }));
    expect(manifestId(reordered)).toBe(manifestId(m));
    expect(canonicalJson({ b: 1, a: [1, { d: 2, c: 3 }] })).toBe('{"a":[1,{"c":3,"d":2}],"b":1}');
    expect(isSha256Hex(manifestId(m))).toBe(true);
  });
  it('rejects manifests that could hurt a node, with a message naming the field', () => {
    const good = buildManifest('ds', '1', [shard('a.bin', 'a')]);
    const bad = (patch: object) => () => validateManifest({ ...good, ...patch });
    expect(bad({ format: 'x' })).toThrow(/format/);
    expect(bad({ name: '../x' })).toThrow(/name/);
    expect(bad({ shards: [{ ...good.shards[0], path: '../../etc/passwd' }] })).toThrow(/shards\[0\]\.path.*".." segment/);
    expect(bad({ shards: [{ ...good.shards[0], sha256: 'abc' }] })).toThrow(/sha256/);
    expect(bad({ shards: [{ ...good.shards[0], size: -1 }] })).toThrow(/size/);
    expect(bad({ totalBytes: 99 })).toThrow(/totalBytes/);
    expect(bad({ shards: [good.shards[0], good.shards[0]] })).toThrow(/twice/);
    expect(() => parseManifest('{not json')).toThrow(/not JSON/);
  });
});
