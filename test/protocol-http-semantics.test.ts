// protocol/http-semantics.ts: ranges, conditionals and validators (RFC 9110), pure, as the node and the gateway use them.
import { describe, expect, it } from 'vitest';
import {
  contentRange,
  contentRangeUnsatisfied,
  evaluateConditional,
  evaluateIfRange,
  formatHttpDate,
  parseHttpDate,
  parseRange,
  type ConditionalRequest,
} from '../protocol/http-semantics.ts';

const full = { kind: 'full' };
const malformed = { kind: 'malformed' };
const unsatisfiable = { kind: 'unsatisfiable' };
const partial = (start: number, end: number) => ({ kind: 'partial', start, end });

describe('parseRange', () => {
  it('serves the whole body without a Range header', () => {
    expect(parseRange(undefined, 100)).toEqual(full);
  });

  it('parses first-last, clamping last to the end', () => {
    expect(parseRange('bytes=0-0', 100)).toEqual(partial(0, 0));
    expect(parseRange('bytes=0-9', 100)).toEqual(partial(0, 9));
    expect(parseRange('bytes=10-99', 100)).toEqual(partial(10, 99));
    expect(parseRange('bytes=10-100', 100)).toEqual(partial(10, 99));
    expect(parseRange('bytes=99-5000', 100)).toEqual(partial(99, 99));
  });

  it('parses open-ended first-', () => {
    expect(parseRange('bytes=0-', 100)).toEqual(partial(0, 99));
    expect(parseRange('bytes=42-', 100)).toEqual(partial(42, 99));
    expect(parseRange('bytes=99-', 100)).toEqual(partial(99, 99));
  });

  it('parses suffix ranges; a suffix longer than the body selects all of it as a 206', () => {
    expect(parseRange('bytes=-1', 100)).toEqual(partial(99, 99));
    expect(parseRange('bytes=-10', 100)).toEqual(partial(90, 99));
    expect(parseRange('bytes=-100', 100)).toEqual(partial(0, 99));
    expect(parseRange('bytes=-101', 100)).toEqual(partial(0, 99));
  });

  it('is unsatisfiable for -0 and for a first-pos at or past the end', () => {
    expect(parseRange('bytes=-0', 100)).toEqual(unsatisfiable);
    expect(parseRange('bytes=100-', 100)).toEqual(unsatisfiable);
    expect(parseRange('bytes=100-200', 100)).toEqual(unsatisfiable);
    expect(parseRange('bytes=5000-5001', 100)).toEqual(unsatisfiable);
  });

  it('handles zero-length bodies', () => {
    expect(parseRange('bytes=0-', 0)).toEqual(unsatisfiable);
    expect(parseRange('bytes=0-0', 0)).toEqual(unsatisfiable);
    expect(parseRange('bytes=-0', 0)).toEqual(unsatisfiable);
    // A 206 of zero bytes can't be written: answer 200 with the (empty) body.
    expect(parseRange('bytes=-5', 0)).toEqual(full);
  });

  it('handles a one-byte body', () => {
    expect(parseRange('bytes=0-0', 1)).toEqual(partial(0, 0));
    expect(parseRange('bytes=-1', 1)).toEqual(partial(0, 0));
    expect(parseRange('bytes=-2', 1)).toEqual(partial(0, 0));
    expect(parseRange('bytes=1-', 1)).toEqual(unsatisfiable);
  });

  it('ignores other units (200 with the whole body)', () => {
    expect(parseRange('items=0-1', 100)).toEqual(full);
    expect(parseRange('bytesx=0-1', 100)).toEqual(full);
    expect(parseRange('byte=0-1', 100)).toEqual(full);
  });

  it('compares the unit case-insensitively', () => {
    expect(parseRange('Bytes=0-1', 100)).toEqual(partial(0, 1));
    expect(parseRange('BYTES=0-1', 100)).toEqual(partial(0, 1));
  });

  it('ignores multi-range requests (200 with the whole body) but still rejects broken ones', () => {
    expect(parseRange('bytes=0-1,5-6', 100)).toEqual(full);
    expect(parseRange('bytes=0-1, 5-6', 100)).toEqual(full);
    expect(parseRange('bytes=-1,0-', 100)).toEqual(full);
    expect(parseRange('bytes=500-600,700-800', 100)).toEqual(full);
    expect(parseRange('bytes=0-1,abc', 100)).toEqual(malformed);
    expect(parseRange('bytes=0-1,5-3', 100)).toEqual(malformed);
  });

  it('skips empty list elements', () => {
    expect(parseRange('bytes=0-1,', 100)).toEqual(partial(0, 1));
    expect(parseRange('bytes=,0-1', 100)).toEqual(partial(0, 1));
    expect(parseRange('bytes= , 0-1 ,, ', 100)).toEqual(partial(0, 1));
  });

  it('tolerates OWS where list syntax allows it', () => {
    expect(parseRange('bytes= 0-1', 100)).toEqual(partial(0, 1));
    expect(parseRange('bytes=\t0-1\t', 100)).toEqual(partial(0, 1));
    expect(parseRange('  bytes=0-1  ', 100)).toEqual(partial(0, 1));
    expect(parseRange('bytes= -5 ', 100)).toEqual(partial(95, 99));
  });

  it.each([
    'bytes=abc',
    'bytes=5-3',
    'bytes=-',
    'bytes=--1',
    'bytes=',
    'bytes= ',
    'bytes=,',
    'bytes',
    '=0-1',
    'bytes=0',
    'bytes=0-1-2',
    'bytes=0 - 1',
    'bytes=0- 1',
    'bytes=1-x',
    'bytes=+1-2',
    'bytes=0x10-20',
    'bytes=1.5-2',
    'bytes=-1-2',
    'bytes=0-1;x',
    'bytes=0-1 2',
  ])('%j is malformed (answered like full)', (header) => {
    expect(parseRange(header, 100)).toEqual(malformed);
  });

  it('treats numbers beyond MAX_SAFE_INTEGER as valid: clamped last, past-the-end first, whole-body suffix', () => {
    const huge = '18446744073709551615';
    expect(parseRange(`bytes=0-${huge}`, 100)).toEqual(partial(0, 99));
    expect(parseRange(`bytes=10-${huge}`, 100)).toEqual(partial(10, 99));
    expect(parseRange(`bytes=${huge}-`, 100)).toEqual(unsatisfiable);
    expect(parseRange(`bytes=${huge}-${huge}`, 100)).toEqual(unsatisfiable);
    expect(parseRange(`bytes=-${huge}`, 100)).toEqual(partial(0, 99));
    expect(parseRange(`bytes=9007199254740992-9007199254740993`, 100)).toEqual(unsatisfiable);
  });

  it('still detects first > last when both are too big for a double to tell apart', () => {
    // Both round to the same double; only the digits show the range is backwards.
    expect(parseRange('bytes=18446744073709551616-18446744073709551615', 100)).toEqual(malformed);
    expect(parseRange('bytes=100000000000000000000-99999999999999999999', 100)).toEqual(malformed);
    expect(parseRange('bytes=0018446744073709551615-18446744073709551616', 100)).toEqual(unsatisfiable);
  });

  it('handles the largest safe sizes exactly', () => {
    const size = Number.MAX_SAFE_INTEGER;
    expect(parseRange('bytes=-1', size)).toEqual(partial(size - 1, size - 1));
    expect(parseRange(`bytes=${size - 1}-`, size)).toEqual(partial(size - 1, size - 1));
    expect(parseRange(`bytes=${size}-`, size)).toEqual(unsatisfiable);
  });

  it('returns shared objects for the non-partial results (no allocation per call)', () => {
    expect(parseRange(undefined, 1)).toBe(parseRange('items=0-1', 1));
    expect(parseRange('bytes=abc', 1)).toBe(parseRange('bytes=5-3', 1));
    expect(parseRange('bytes=-0', 1)).toBe(parseRange('bytes=9-', 1));
  });
});

describe('contentRange', () => {
  it('formats 206 and 416 values', () => {
    expect(contentRange(0, 499, 1234)).toBe('bytes 0-499/1234');
    expect(contentRangeUnsatisfied(1234)).toBe('bytes */1234');
  });
});

describe('parseHttpDate', () => {
  const ms = Date.UTC(1994, 10, 6, 8, 49, 37);

  it('accepts the three HTTP-date forms', () => {
    expect(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT')).toBe(ms);
    expect(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT')).toBe(ms);
    expect(parseHttpDate('Sun Nov  6 08:49:37 1994')).toBe(ms);
    expect(parseHttpDate('Wed Nov 16 08:49:37 1994')).toBe(Date.UTC(1994, 10, 16, 8, 49, 37));
  });

  it('maps two-digit RFC 850 years more than 50 years ahead into the past century', () => {
    const thisYear = new Date().getUTCFullYear();
    const nextYear2 = (thisYear + 1) % 100;
    const farYear2 = (thisYear + 60) % 100;
    const pad = (n: number) => String(n).padStart(2, '0');
    const nextYear = new Date(parseHttpDate(`Monday, 01-Jan-${pad(nextYear2)} 00:00:00 GMT`)).getUTCFullYear();
    const farYear = new Date(parseHttpDate(`Monday, 01-Jan-${pad(farYear2)} 00:00:00 GMT`)).getUTCFullYear();
    expect(nextYear).toBe(thisYear + 1);
    expect(farYear).toBe(thisYear + 60 - 100);
  });

  it('agrees with Date for many timestamps, including leap days and far years', () => {
    for (const t of [0, 951782400000, 1709164800000, 4102444799000, 253402300799000, 1_700_000_123_000]) {
      expect(parseHttpDate(new Date(t).toUTCString())).toBe(t);
    }
    expect(parseHttpDate('Sat, 01 Jan 0001 00:00:00 GMT')).toBe(Date.UTC(2000, 0, 1) - 730_119 * 86_400_000);
  });

  it.each([
    '',
    '1',
    '2020',
    '2024-01-01T00:00:00Z',
    'Sun, 06 Nov 1994 08:49:37 UTC',
    'Sun, 06 Nov 1994 08:49:37 gmt',
    'Sun, 6 Nov 1994 08:49:37 GMT',
    'Sun, 06 nov 1994 08:49:37 GMT',
    'Sun, 31 Nov 1994 08:49:37 GMT',
    'Sun, 29 Feb 1900 08:49:37 GMT',
    'Sun, 00 Nov 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 24:00:00 GMT',
    'Sun, 06 Nov 1994 08:60:00 GMT',
    'Sun, 06 Nov 1994 08:49:61 GMT',
    'Sun, 06 Nov 1994 08-49-37 GMT',
    'Xyz, 06 Nov 1994 08:49:37 GMT',
    'Sunday, 06-Nov-1994 08:49:37 GMT',
    'Sundae, 06-Nov-94 08:49:37 GMT',
    'Sun Nov 6 08:49:37 1994',
    'Sun Nov  6 08:49:37 94  ',
  ])('rejects %j', (text) => {
    expect(parseHttpDate(text)).toBeNaN();
  });

  it('accepts a leap day in a leap year', () => {
    expect(parseHttpDate('Thu, 29 Feb 2024 12:00:00 GMT')).toBe(Date.UTC(2024, 1, 29, 12));
  });
});

describe('formatHttpDate', () => {
  it('formats IMF-fixdate', () => {
    expect(formatHttpDate(Date.UTC(1994, 10, 6, 8, 49, 37))).toBe('Sun, 06 Nov 1994 08:49:37 GMT');
  });

  it('truncates to the second and reuses the string within a second', () => {
    const base = Date.UTC(2024, 0, 2, 3, 4, 5);
    const a = formatHttpDate(base);
    const b = formatHttpDate(base + 999);
    expect(a).toBe('Tue, 02 Jan 2024 03:04:05 GMT');
    expect(b).toBe(a);
    expect(formatHttpDate(base + 1000)).toBe('Tue, 02 Jan 2024 03:04:06 GMT');
    expect(formatHttpDate(base - 1)).toBe('Tue, 02 Jan 2024 03:04:04 GMT');
  });

  it('round-trips through parseHttpDate', () => {
    const t = 1_717_171_717_000;
    expect(parseHttpDate(formatHttpDate(t + 456))).toBe(t);
  });
});

describe('evaluateConditional', () => {
  const etag = '"abc123"';
  const lastModified = 'Tue, 02 Jan 2024 03:04:05 GMT';
  const entity = { etag, lastModified };
  const earlier = 'Mon, 01 Jan 2024 00:00:00 GMT';
  const later = 'Wed, 03 Jan 2024 00:00:00 GMT';
  const get = (headers: Omit<ConditionalRequest, 'method'>): ConditionalRequest => ({ method: 'GET', ...headers });

  it('proceeds without preconditions', () => {
    expect(evaluateConditional({ method: 'GET' }, entity)).toBe('proceed');
  });

  describe('If-None-Match', () => {
    it('gives 304 for GET and HEAD on a match', () => {
      expect(evaluateConditional(get({ ifNoneMatch: etag }), entity)).toBe('not-modified');
      expect(evaluateConditional({ method: 'HEAD', ifNoneMatch: etag }, entity)).toBe('not-modified');
    });

    it('gives 412 for other methods on a match', () => {
      expect(evaluateConditional({ method: 'POST', ifNoneMatch: etag }, entity)).toBe('precondition-failed');
      expect(evaluateConditional({ method: 'DELETE', ifNoneMatch: '*' }, entity)).toBe('precondition-failed');
    });

    it('uses weak comparison', () => {
      expect(evaluateConditional(get({ ifNoneMatch: 'W/"abc123"' }), entity)).toBe('not-modified');
      expect(evaluateConditional(get({ ifNoneMatch: '"abc123"' }), { etag: 'W/"abc123"', lastModified })).toBe('not-modified');
      expect(evaluateConditional(get({ ifNoneMatch: 'W/"abc123"' }), { etag: 'W/"abc123"', lastModified })).toBe('not-modified');
    });

    it('matches * and any member of a list', () => {
      expect(evaluateConditional(get({ ifNoneMatch: '*' }), entity)).toBe('not-modified');
      expect(evaluateConditional(get({ ifNoneMatch: '"x", "abc123"' }), entity)).toBe('not-modified');
      expect(evaluateConditional(get({ ifNoneMatch: '"x",W/"abc123" ,"y"' }), entity)).toBe('not-modified');
      expect(evaluateConditional(get({ ifNoneMatch: '"a,b", "abc123"' }), entity)).toBe('not-modified');
    });

    it('proceeds when nothing matches', () => {
      expect(evaluateConditional(get({ ifNoneMatch: '"x", "y"' }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifNoneMatch: '"abc12"' }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifNoneMatch: '"abc1234"' }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifNoneMatch: '"ABC123"' }), entity)).toBe('proceed');
      // Not entity-tags: unquoted, lower-case w/, unterminated.
      expect(evaluateConditional(get({ ifNoneMatch: 'abc123' }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifNoneMatch: 'w/"abc123"' }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifNoneMatch: '"abc123' }), entity)).toBe('proceed');
    });

    it('skips a broken element and still matches a later one', () => {
      expect(evaluateConditional(get({ ifNoneMatch: 'junk, "abc123"' }), entity)).toBe('not-modified');
    });

    it('takes precedence over If-Modified-Since, even when it does not match', () => {
      expect(evaluateConditional(get({ ifNoneMatch: '"other"', ifModifiedSince: later }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifNoneMatch: etag, ifModifiedSince: earlier }), entity)).toBe('not-modified');
    });
  });

  describe('If-Modified-Since', () => {
    it('gives 304 when not modified since (equal or later date)', () => {
      expect(evaluateConditional(get({ ifModifiedSince: lastModified }), entity)).toBe('not-modified');
      expect(evaluateConditional(get({ ifModifiedSince: later }), entity)).toBe('not-modified');
      expect(evaluateConditional({ method: 'HEAD', ifModifiedSince: later }, entity)).toBe('not-modified');
    });

    it('proceeds when modified since', () => {
      expect(evaluateConditional(get({ ifModifiedSince: earlier }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifModifiedSince: 'Tue, 02 Jan 2024 03:04:04 GMT' }), entity)).toBe('proceed');
    });

    it('accepts the obsolete date forms', () => {
      expect(evaluateConditional(get({ ifModifiedSince: 'Tuesday, 02-Jan-24 03:04:05 GMT' }), entity)).toBe('not-modified');
      expect(evaluateConditional(get({ ifModifiedSince: 'Tue Jan  2 03:04:05 2024' }), entity)).toBe('not-modified');
    });

    it('ignores invalid dates', () => {
      expect(evaluateConditional(get({ ifModifiedSince: 'yesterday' }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifModifiedSince: '2099' }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifModifiedSince: later }), { etag, lastModified: 'garbage' })).toBe('proceed');
    });

    it('applies only to GET and HEAD', () => {
      expect(evaluateConditional({ method: 'POST', ifModifiedSince: later }, entity)).toBe('proceed');
      expect(evaluateConditional({ method: 'get', ifModifiedSince: later }, entity)).toBe('proceed');
    });
  });

  describe('If-Match', () => {
    it('proceeds on a strong match, a list member, or *', () => {
      expect(evaluateConditional(get({ ifMatch: etag }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifMatch: '"x", "abc123"' }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifMatch: '*' }), entity)).toBe('proceed');
    });

    it('fails with 412 when nothing matches strongly', () => {
      expect(evaluateConditional(get({ ifMatch: '"x"' }), entity)).toBe('precondition-failed');
      expect(evaluateConditional(get({ ifMatch: 'W/"abc123"' }), entity)).toBe('precondition-failed');
      expect(evaluateConditional(get({ ifMatch: '"abc123"' }), { etag: 'W/"abc123"', lastModified })).toBe('precondition-failed');
      expect(evaluateConditional({ method: 'PUT', ifMatch: '"x"' }, entity)).toBe('precondition-failed');
    });

    it('is evaluated before If-None-Match', () => {
      expect(evaluateConditional(get({ ifMatch: '"x"', ifNoneMatch: etag }), entity)).toBe('precondition-failed');
      expect(evaluateConditional(get({ ifMatch: etag, ifNoneMatch: etag }), entity)).toBe('not-modified');
    });

    it('makes If-Unmodified-Since ignored', () => {
      expect(evaluateConditional(get({ ifMatch: etag, ifUnmodifiedSince: earlier }), entity)).toBe('proceed');
    });
  });

  describe('If-Unmodified-Since', () => {
    it('fails when modified after the date', () => {
      expect(evaluateConditional(get({ ifUnmodifiedSince: earlier }), entity)).toBe('precondition-failed');
      expect(evaluateConditional(get({ ifUnmodifiedSince: 'Tue, 02 Jan 2024 03:04:04 GMT' }), entity)).toBe('precondition-failed');
    });

    it('proceeds when not modified after the date', () => {
      expect(evaluateConditional(get({ ifUnmodifiedSince: lastModified }), entity)).toBe('proceed');
      expect(evaluateConditional(get({ ifUnmodifiedSince: later }), entity)).toBe('proceed');
    });

    it('ignores invalid dates', () => {
      expect(evaluateConditional(get({ ifUnmodifiedSince: 'not a date' }), entity)).toBe('proceed');
    });

    it('is evaluated before If-None-Match and If-Modified-Since', () => {
      expect(evaluateConditional(get({ ifUnmodifiedSince: earlier, ifNoneMatch: etag }), entity)).toBe('precondition-failed');
      expect(evaluateConditional(get({ ifUnmodifiedSince: later, ifNoneMatch: etag }), entity)).toBe('not-modified');
      expect(evaluateConditional(get({ ifUnmodifiedSince: later, ifModifiedSince: later }), entity)).toBe('not-modified');
    });
  });

  it('treats empty header values as absent', () => {
    expect(evaluateConditional(get({ ifMatch: '', ifNoneMatch: ' ', ifUnmodifiedSince: '' }), entity)).toBe('proceed');
    expect(evaluateConditional(get({ ifMatch: '', ifModifiedSince: later }), entity)).toBe('not-modified');
  });

  it('compares in whole seconds', () => {
    // Last-Modified is an HTTP date, so the entity is at a whole second; both forms of the same second match.
    const sameSecond = 'Tuesday, 02-Jan-24 03:04:05 GMT';
    expect(evaluateConditional(get({ ifModifiedSince: sameSecond }), entity)).toBe('not-modified');
    expect(evaluateConditional(get({ ifUnmodifiedSince: sameSecond }), entity)).toBe('proceed');
  });
});

describe('evaluateIfRange', () => {
  const entity = { etag: '"abc123"', lastModified: 'Tue, 02 Jan 2024 03:04:05 GMT' };

  it('honours Range when there is no If-Range', () => {
    expect(evaluateIfRange(undefined, entity)).toBe(true);
  });

  it('honours Range on a strong entity-tag match only', () => {
    expect(evaluateIfRange('"abc123"', entity)).toBe(true);
    expect(evaluateIfRange(' "abc123" ', entity)).toBe(true);
    expect(evaluateIfRange('"abc124"', entity)).toBe(false);
    expect(evaluateIfRange('"abc12"', entity)).toBe(false);
    expect(evaluateIfRange('W/"abc123"', entity)).toBe(false);
    expect(evaluateIfRange('"abc123"', { ...entity, etag: 'W/"abc123"' })).toBe(false);
    expect(evaluateIfRange('"abc123", "x"', entity)).toBe(false);
  });

  it('honours Range on an exact date match only', () => {
    expect(evaluateIfRange('Tue, 02 Jan 2024 03:04:05 GMT', entity)).toBe(true);
    expect(evaluateIfRange('Tue Jan  2 03:04:05 2024', entity)).toBe(true);
    expect(evaluateIfRange('Wed, 03 Jan 2024 03:04:05 GMT', entity)).toBe(false);
    expect(evaluateIfRange('Tue, 02 Jan 2024 03:04:04 GMT', entity)).toBe(false);
  });

  it('ignores Range for garbage or an empty value', () => {
    expect(evaluateIfRange('garbage', entity)).toBe(false);
    expect(evaluateIfRange('', entity)).toBe(false);
    expect(evaluateIfRange('Tue, 02 Jan 2024 03:04:05 GMT', { ...entity, lastModified: 'garbage' })).toBe(false);
  });

  it('accepts the string[] Node types unknown headers as; a repeated If-Range is invalid', () => {
    expect(evaluateIfRange(['"abc123"'], entity)).toBe(true);
    expect(evaluateIfRange(['"abc123"', '"abc123"'], entity)).toBe(false);
  });
});
