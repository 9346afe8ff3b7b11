// The pure parts of answering from a cached object (edge-node/stored-responders.ts): what preconditions and Range
// make of an answer, what of a fill is sent when they do not apply, and which chunk of a disk copy read whole fails its hash. The node's own answers (memory, disk,
// fills, promotion) are in test/edge-node.test.ts, test/edge-disk-reads.test.ts and test/edge-verified-ranges.test.ts.
import { describe, expect, it } from 'vitest';
import { leafHashesOf } from '../protocol/chunks.ts';
import { ChunkIntegrityError } from '../edge-node/fill.ts';
import { firstBadChunk, negotiate, wholeFillPlan } from '../edge-node/stored-responders.ts';
import type { VerifiedReadSource } from '../edge-node/verified-read.ts';

describe('negotiate', () => {
  const entity = { etag: '"abc"', lastModified: 'Wed, 21 Oct 2015 07:28:00 GMT', size: 100 };
  const head = ['etag', '"abc"'];

  it('sends the whole body without preconditions or Range', () => {
    expect(negotiate({}, 'GET', entity, head)).toEqual({ status: 200, start: 0, end: 99, head: ['content-length', '100', 'etag', '"abc"'] });
  });

  it('answers preconditions before Range', () => {
    expect(negotiate({ 'if-none-match': '"abc"', range: 'bytes=0-9' }, 'GET', entity, head)).toBe('not-modified');
    expect(negotiate({ 'if-match': '"other"', range: 'bytes=0-9' }, 'GET', entity, head)).toBe('precondition-failed');
    expect(negotiate({ 'if-none-match': '"other"', range: 'bytes=0-9' }, 'GET', entity, head)).toMatchObject({ status: 206, start: 0, end: 9 });
  });

  it('sends one satisfiable range as a 206 with its Content-Range', () => {
    expect(negotiate({ range: 'bytes=90-' }, 'GET', entity, head)).toEqual({
      status: 206,
      start: 90,
      end: 99,
      head: ['content-length', '10', 'content-range', 'bytes 90-99/100', 'etag', '"abc"'],
    });
    expect(negotiate({ range: 'bytes=100-' }, 'GET', entity, head)).toBe('unsatisfiable');
  });

  it('ignores Range when If-Range names another version, and Range it does not serve', () => {
    expect(negotiate({ range: 'bytes=0-9', 'if-range': '"other"' }, 'GET', entity, head)).toMatchObject({ status: 200, start: 0, end: 99 });
    expect(negotiate({ range: 'bytes=0-9', 'if-range': '"abc"' }, 'GET', entity, head)).toMatchObject({ status: 206, start: 0, end: 9 });
    expect(negotiate({ range: 'bytes=0-1,5-6' }, 'GET', entity, head)).toMatchObject({ status: 200 });
    expect(negotiate({ range: 'lines=0-1' }, 'GET', entity, head)).toMatchObject({ status: 200 });
  });
});

describe('wholeFillPlan', () => {
  const head = ['x-edgeshard-cache', 'MISS'];

  it('streams a body of unknown length whole, without Content-Length', () => {
    expect(wholeFillPlan(200, undefined, head)).toEqual({ status: 200, start: 0, end: Number.MAX_SAFE_INTEGER, head });
  });

  it("sends the origin's status with the whole body; a 204 or 304 has no Content-Length", () => {
    expect(wholeFillPlan(404, 9, head)).toEqual({ status: 404, start: 0, end: 8, head: ['content-length', '9', ...head] });
    expect(wholeFillPlan(204, 0, head)).toEqual({ status: 204, start: 0, end: -1, head });
  });
});

describe('firstBadChunk', () => {
  const CHUNK = 4;
  const body = Buffer.from('0123456789');
  const source = (checks: number[] = [0, 0, 0]): VerifiedReadSource =>
    ({ handle: null as never, size: body.length, chunkSize: CHUNK, leaves: leafHashesOf(body, CHUNK), checks: Uint8Array.from(checks) });

  it('finds none in a good body, and marks every chunk checked', () => {
    const src = source();
    expect(firstBadChunk(src, body)).toBeNull();
    expect([...src.checks]).toEqual([1, 1, 1]);
  });

  it('names the first chunk that fails, with both hashes', () => {
    const bad = Buffer.from('0123x567x9');
    const src = source();
    const err = firstBadChunk(src, bad);
    expect(err).toBeInstanceOf(ChunkIntegrityError);
    expect(err!.mismatch.index).toBe(1);
    expect(err!.mismatch.expected).toBe(src.leaves[1]!.toString('hex'));
    expect([...src.checks]).toEqual([1, 0, 0]);
  });

  it('skips chunks already checked in this process', () => {
    expect(firstBadChunk(source([1, 1, 0]), Buffer.from('xxxxxxxx89'))).toBeNull();
  });
});
