// HTTP semantics for serving shards: Range (RFC 9110 §14), conditional requests (§13) and HTTP dates (§5.6.7).
// Pure functions, no I/O. The edge node uses all of it; the gateway's origin proxy uses the Range parts.
//
// Everything here runs once or more per request at ~50k requests/s, so the parsers walk the header with
// charCodeAt instead of regexes or split(): no per-call allocation except the `partial` result object.

// ---------------------------------------------------------------------------------------------------
// Range

export type RangeResult =
  /** Send 200 with the whole body: no Range, or one we choose to ignore (other unit, several ranges). */
  | { readonly kind: 'full' }
  /** Send 206 with bytes start..end (inclusive) and `Content-Range: contentRange(start, end, size)`. */
  | { readonly kind: 'partial'; readonly start: number; readonly end: number }
  /** Send 416 with `Content-Range: contentRangeUnsatisfied(size)`. */
  | { readonly kind: 'unsatisfiable' }
  /**
   * The `bytes=` range-set is syntactically invalid. RFC 9110 §14.2 says a server MAY ignore Range and
   * recipients ignore invalid ranges, so send 200 with the whole body, exactly as for `full`. It is a
   * separate kind only so the server can count (or log) broken clients.
   */
  | { readonly kind: 'malformed' };

// Shared results: the non-partial outcomes never allocate.
const FULL: RangeResult = Object.freeze({ kind: 'full' });
const UNSATISFIABLE: RangeResult = Object.freeze({ kind: 'unsatisfiable' });
const MALFORMED: RangeResult = Object.freeze({ kind: 'malformed' });

const SP = 0x20;
const HTAB = 0x09;
const COMMA = 0x2c;
const DASH = 0x2d;
const DQUOTE = 0x22;
const STAR = 0x2a;
const SLASH = 0x2f;
const COLON = 0x3a;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const UPPER_W = 0x57;

function isOws(c: number): boolean {
  return c === SP || c === HTAB;
}

function isDigit(c: number): boolean {
  return c >= DIGIT_0 && c <= DIGIT_9;
}

function skipOws(s: string, i: number, end: number): number {
  while (i < end && isOws(s.charCodeAt(i))) i++;
  return i;
}

/** True when s[start, start+5) is "bytes", compared case-insensitively (RFC 9110 §14.1: range units are). */
function isBytesUnit(s: string, start: number, end: number): boolean {
  if (end - start !== 5) return false;
  // `| 0x20` lower-cases ASCII letters; the unit is a token so non-letters can't alias onto "bytes".
  return (
    (s.charCodeAt(start) | 0x20) === 0x62 && // b
    (s.charCodeAt(start + 1) | 0x20) === 0x79 && // y
    (s.charCodeAt(start + 2) | 0x20) === 0x74 && // t
    (s.charCodeAt(start + 3) | 0x20) === 0x65 && // e
    (s.charCodeAt(start + 4) | 0x20) === 0x73 // s
  );
}

/**
 * Compares two runs of ASCII digits as integers of any length (used only when both exceed
 * Number.MAX_SAFE_INTEGER, where doubles can no longer tell them apart). Returns <0, 0 or >0.
 */
function compareDigitRuns(s: string, aStart: number, aEnd: number, bStart: number, bEnd: number): number {
  while (aStart < aEnd - 1 && s.charCodeAt(aStart) === DIGIT_0) aStart++;
  while (bStart < bEnd - 1 && s.charCodeAt(bStart) === DIGIT_0) bStart++;
  const lengthDiff = aEnd - aStart - (bEnd - bStart);
  if (lengthDiff !== 0) return lengthDiff;
  for (; aStart < aEnd; aStart++, bStart++) {
    const diff = s.charCodeAt(aStart) - s.charCodeAt(bStart);
    if (diff !== 0) return diff;
  }
  return 0;
}

/**
 * Interprets a Range header for a representation of `size` bytes (RFC 9110 §14.1.1, §14.2).
 *
 * Decisions (all allowed by RFC 9110, which lets a server ignore Range entirely):
 * - Only the `bytes` unit (any letter case) is honoured; other units give `full`.
 * - A range-set with more than one range gives `full`: 200 with the whole body instead of a
 *   multipart/byteranges reply, which training-data readers don't use and which is a known
 *   amplification vector. Empty list elements (`bytes=0-1,`) don't count as ranges (§5.6.1).
 * - A syntactically invalid range-set (`bytes=abc`, `bytes=5-3`, `bytes=-`, `bytes=--1`, `bytes=`,
 *   a missing `=`, whitespace inside a range) gives `malformed`, which the caller answers like `full`.
 * - Numbers beyond Number.MAX_SAFE_INTEGER are valid syntax (1*DIGIT has no limit) and some clients
 *   send `bytes=0-18446744073709551615` to mean "to the end", so they are not malformed: a huge last-pos
 *   is clamped to the end, a huge first-pos is past the end (unsatisfiable), a huge suffix is the whole body.
 * - `bytes=-0` is unsatisfiable (§14.1.1: a suffix-range needs a non-zero length).
 * - A suffix longer than the body selects the whole body, as a 206 (the client asked for a range).
 * - Zero-length bodies: every int-range is unsatisfiable (first-pos is never < 0). A suffix-range is
 *   nominally satisfiable but a 206 for zero bytes cannot be written (`bytes 0--1/0`), so it gives `full`.
 * - Whitespace (SP/HTAB) is tolerated around the field, after `=` and around commas, the places RFC 9110
 *   list syntax allows OWS, but not inside a range (`bytes=0 - 1` is malformed).
 *
 * Only call this for GET; Range has no meaning for other methods (§14.2).
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return FULL;
  const length = header.length;
  const unitStart = skipOws(header, 0, length);
  const equals = header.indexOf('=', unitStart);
  if (equals < 0 || equals === unitStart) return MALFORMED;
  if (!isBytesUnit(header, unitStart, equals)) return FULL;

  let rangeCount = 0;
  // The single range, if there turns out to be exactly one. -1 means "absent".
  let first = -1;
  let last = -1;
  let suffix = -1;

  let i = equals + 1;
  while (i <= length) {
    i = skipOws(header, i, length);
    if (i === length) break;
    let c = header.charCodeAt(i);
    if (c === COMMA) {
      // Empty list element: allowed and ignored (RFC 9110 §5.6.1).
      i++;
      continue;
    }

    let elementFirst = -1;
    let elementLast = -1;
    let elementSuffix = -1;
    if (c === DASH) {
      // suffix-range: "-" suffix-length
      const digitsStart = ++i;
      let value = 0;
      while (i < length && isDigit((c = header.charCodeAt(i)))) {
        value = value * 10 + (c - DIGIT_0);
        i++;
      }
      if (i === digitsStart) return MALFORMED;
      // Saturate: a suffix this long means "the whole body" whatever its exact value.
      elementSuffix = value > Number.MAX_SAFE_INTEGER ? Infinity : value;
    } else {
      // int-range: first-pos "-" [ last-pos ]
      const firstStart = i;
      let value = 0;
      while (i < length && isDigit((c = header.charCodeAt(i)))) {
        value = value * 10 + (c - DIGIT_0);
        i++;
      }
      const firstEnd = i;
      if (firstEnd === firstStart || i === length || header.charCodeAt(i) !== DASH) return MALFORMED;
      elementFirst = value > Number.MAX_SAFE_INTEGER ? Infinity : value;
      const lastStart = ++i;
      value = 0;
      while (i < length && isDigit((c = header.charCodeAt(i)))) {
        value = value * 10 + (c - DIGIT_0);
        i++;
      }
      if (i > lastStart) {
        elementLast = value > Number.MAX_SAFE_INTEGER ? Infinity : value;
        // last-pos < first-pos makes the range-spec invalid (§14.1.1). Two saturated values need the digits.
        const firstAfterLast =
          elementFirst === Infinity && elementLast === Infinity
            ? compareDigitRuns(header, firstStart, firstEnd, lastStart, i) > 0
            : elementFirst > elementLast;
        if (firstAfterLast) return MALFORMED;
      }
    }

    // After a range only OWS, then a comma or the end, may follow.
    i = skipOws(header, i, length);
    if (i < length && header.charCodeAt(i) !== COMMA) return MALFORMED;
    i++;
    rangeCount++;
    first = elementFirst;
    last = elementLast;
    suffix = elementSuffix;
  }

  // Every element was validated above, so one broken range made the whole set malformed already.
  if (rangeCount === 0) return MALFORMED;
  if (rangeCount > 1) return FULL;

  if (suffix >= 0) {
    if (suffix === 0) return UNSATISFIABLE;
    if (size === 0) return FULL;
    return { kind: 'partial', start: suffix >= size ? 0 : size - suffix, end: size - 1 };
  }
  if (first >= size) return UNSATISFIABLE;
  return { kind: 'partial', start: first, end: last < 0 || last >= size ? size - 1 : last };
}

/** The Content-Range value of a 206: `bytes 0-499/1234`. */
export function contentRange(start: number, end: number, size: number): string {
  return `bytes ${start}-${end}/${size}`;
}

/**
 * A status whose answer has no body and no Content-Length of its own: 1xx and 204 must not carry one (RFC 9110
 * §8.6), and a 304's would describe the stored representation, which its fields already do.
 */
export function bodylessStatus(status: number): boolean {
  return status < 200 || status === 204 || status === 304;
}

// The Content-Range value of a 416: `bytes */1234` (RFC 9110 §14.4). (A line comment: that value would end a block comment.)
export function contentRangeUnsatisfied(size: number): string {
  return `bytes */${size}`;
}

// ---------------------------------------------------------------------------------------------------
// Entity tags

/**
 * Whether `list` (an If-Match / If-None-Match value: `*` or a comma-separated list of entity-tags)
 * matches `etag`. Strong comparison (If-Match) needs both tags strong and equal; weak comparison
 * (If-None-Match) compares the opaque tags only (RFC 9110 §8.8.3.2). `*` matches because the
 * representation exists. Elements that are not entity-tags (unquoted, unterminated) never match.
 */
function etagListMatches(list: string, etag: string, strong: boolean): boolean {
  const etagIsWeak = etag.charCodeAt(0) === UPPER_W && etag.charCodeAt(1) === SLASH;
  if (strong && etagIsWeak) return false;
  const etagOpaqueStart = etagIsWeak ? 2 : 0;
  const etagOpaqueLength = etag.length - etagOpaqueStart;

  const length = list.length;
  let i = 0;
  while (i < length) {
    const c = list.charCodeAt(i);
    if (c === COMMA || isOws(c)) {
      i++;
      continue;
    }
    if (c === STAR) return true;
    let weak = false;
    if (c === UPPER_W && list.charCodeAt(i + 1) === SLASH) {
      // "W/" is case-sensitive (RFC 9110 §8.8.3).
      weak = true;
      i += 2;
    }
    if (list.charCodeAt(i) !== DQUOTE) {
      // Not an entity-tag: skip the element. (Opaque tags may contain commas, so this only happens here.)
      while (i < length && list.charCodeAt(i) !== COMMA) i++;
      continue;
    }
    const tagStart = i;
    i = list.indexOf('"', i + 1);
    if (i < 0) return false; // unterminated: nothing after it can be parsed reliably
    i++;
    if (
      !(strong && weak) &&
      i - tagStart === etagOpaqueLength &&
      // startsWith is a native compare: use it for the usual strong entity tag.
      (etagOpaqueStart === 0 ? list.startsWith(etag, tagStart) : regionEquals(list, tagStart, etag, etagOpaqueStart, etagOpaqueLength))
    ) {
      return true;
    }
  }
  return false;
}

function regionEquals(a: string, aStart: number, b: string, bStart: number, length: number): boolean {
  for (let k = 0; k < length; k++) {
    if (a.charCodeAt(aStart + k) !== b.charCodeAt(bStart + k)) return false;
  }
  return true;
}

/** Treats an empty or all-whitespace field like an absent one. */
function isBlank(value: string | undefined): boolean {
  if (value === undefined) return true;
  return skipOws(value, 0, value.length) === value.length;
}

// ---------------------------------------------------------------------------------------------------
// Conditional requests

export type ConditionalOutcome = 'proceed' | 'not-modified' | 'precondition-failed';

export interface ConditionalRequest {
  method: string;
  ifMatch?: string | undefined;
  ifNoneMatch?: string | undefined;
  ifModifiedSince?: string | undefined;
  ifUnmodifiedSince?: string | undefined;
}

export interface EntityValidators {
  /** Quoted entity-tag, strong (`"abc"`) or weak (`W/"abc"`). */
  etag: string;
  /** HTTP date. If it does not parse, the representation is treated as having no modification date. */
  lastModified: string;
}

function isGetOrHead(method: string): boolean {
  // Methods are case-sensitive (RFC 9110 §9.1); Node reports them as sent.
  return method === 'GET' || method === 'HEAD';
}

/**
 * Evaluates the preconditions in the order of RFC 9110 §13.2.2:
 * 1. If-Match (strong comparison); false → 412.
 * 2. If-Unmodified-Since, only without If-Match; Last-Modified later than the date → 412.
 * 3. If-None-Match (weak comparison); a match → 304 for GET/HEAD, 412 otherwise.
 * 4. If-Modified-Since, only without If-None-Match and only for GET/HEAD; not modified since → 304.
 * Range/If-Range come after this (see evaluateIfRange).
 *
 * An empty header counts as absent. Invalid dates are ignored, as the RFC requires, and so are the date
 * conditions when the entity's own Last-Modified does not parse. HTTP dates have 1-second resolution, so
 * times are compared in whole seconds. The "already applied state change → 2xx" escape in step 1/2 is for
 * origins that accept writes; a read-only cache never takes it.
 */
export function evaluateConditional(req: ConditionalRequest, entity: EntityValidators): ConditionalOutcome {
  if (!isBlank(req.ifMatch)) {
    if (!etagListMatches(req.ifMatch as string, entity.etag, true)) return 'precondition-failed';
  } else if (!isBlank(req.ifUnmodifiedSince)) {
    const since = parseHttpDate(req.ifUnmodifiedSince as string);
    const modified = parseHttpDate(entity.lastModified);
    if (!Number.isNaN(since) && !Number.isNaN(modified) && toSeconds(modified) > toSeconds(since)) {
      return 'precondition-failed';
    }
  }

  if (!isBlank(req.ifNoneMatch)) {
    if (etagListMatches(req.ifNoneMatch as string, entity.etag, false)) {
      return isGetOrHead(req.method) ? 'not-modified' : 'precondition-failed';
    }
    return 'proceed';
  }

  if (!isBlank(req.ifModifiedSince) && isGetOrHead(req.method)) {
    // Clients usually echo our Last-Modified verbatim, so the parse memo usually hits on the second call.
    const since = parseHttpDate(req.ifModifiedSince as string);
    const modified = parseHttpDate(entity.lastModified);
    if (!Number.isNaN(since) && !Number.isNaN(modified) && toSeconds(modified) <= toSeconds(since)) {
      return 'not-modified';
    }
  }
  return 'proceed';
}

function toSeconds(ms: number): number {
  return Math.floor(ms / 1000);
}

/**
 * Whether a Range should be honoured given If-Range (RFC 9110 §13.1.5). No If-Range → true.
 * Call it only when there is a Range header (If-Range without Range is ignored).
 * An entity-tag must match by strong comparison (a weak tag never does); an HTTP date must equal the
 * entity's Last-Modified exactly. Anything else, including an unparseable value, → false: the caller
 * ignores Range and sends the whole body, which is always safe.
 *
 * (The RFC also says a date only counts if Last-Modified is itself a strong validator, i.e. at least a
 * second older than the response. Cached shards are immutable once stored, so that check is skipped.)
 */
export function evaluateIfRange(header: string | readonly string[] | undefined, entity: EntityValidators): boolean {
  if (header === undefined) return true;
  // Node types unknown headers as string | string[]; If-Range takes a single value, so a repeated one is invalid.
  const ifRange = typeof header === 'string' ? header : header.length === 1 ? (header[0] as string) : '';
  let start = skipOws(ifRange, 0, ifRange.length);
  let end = ifRange.length;
  while (end > start && isOws(ifRange.charCodeAt(end - 1))) end--;
  if (start === end) return false;

  const c = ifRange.charCodeAt(start);
  if (c === DQUOTE) {
    const etag = entity.etag;
    if (etag.charCodeAt(0) !== DQUOTE) return false; // a weak entity tag never matches strongly
    return end - start === etag.length && ifRange.startsWith(etag, start);
  }
  if (c === UPPER_W && ifRange.charCodeAt(start + 1) === SLASH) return false; // weak tags never match strongly

  const modified = parseHttpDate(entity.lastModified);
  if (Number.isNaN(modified)) return false;
  const date = start === 0 && end === ifRange.length ? parseHttpDate(ifRange) : parseHttpDate(ifRange.slice(start, end));
  return date === modified;
}

// ---------------------------------------------------------------------------------------------------
// HTTP dates

const WEEKDAYS_SHORT = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const WEEKDAYS_LONG = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAY_MS = 86_400_000;

let formattedSecond = Number.NaN;
let formattedDate = '';

/**
 * Formats ms since the epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form a
 * sender may generate (RFC 9110 §5.6.7). Date#toUTCString allocates and is slow, and a busy node formats
 * the same second thousands of times, so the last result is cached per whole second.
 */
export function formatHttpDate(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== formattedSecond) {
    formattedDate = new Date(second * 1000).toUTCString();
    formattedSecond = second;
  }
  return formattedDate;
}

let parsedText: string | undefined;
let parsedMs = Number.NaN;

/**
 * Parses an HTTP-date in any of the three forms a recipient must accept (RFC 9110 §5.6.7):
 * IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, obsolete RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT`
 * and asctime `Sun Nov  6 08:49:37 1994`. Returns ms since the epoch, or NaN when it isn't one.
 * Date.parse is not used: it accepts almost anything ("1", "2020") and reads asctime as local time.
 * The day name is checked to be a day name, not to agree with the date. The last result is memoized
 * because the same Last-Modified string is parsed on every request for a hot shard.
 */
export function parseHttpDate(text: string): number {
  if (text === parsedText) return parsedMs;
  const ms = parseHttpDateUncached(text);
  parsedText = text;
  parsedMs = ms;
  return ms;
}

function parseHttpDateUncached(s: string): number {
  const length = s.length;
  if (length === 29 && s.charCodeAt(3) === COMMA) {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    if (!matchesAt(s, 0, WEEKDAYS_SHORT) || s.charCodeAt(4) !== SP || s.charCodeAt(7) !== SP) return NaN;
    if (s.charCodeAt(11) !== SP || s.charCodeAt(16) !== SP || s.charCodeAt(25) !== SP || !isGmt(s, 26)) return NaN;
    return dateFrom(twoDigits(s, 5), monthAt(s, 8), fourDigits(s, 12), s, 17);
  }
  if (length === 24 && s.charCodeAt(3) === SP) {
    // asctime-date: "Sun Nov  6 08:49:37 1994" (day of month space-padded)
    if (!matchesAt(s, 0, WEEKDAYS_SHORT) || s.charCodeAt(7) !== SP || s.charCodeAt(10) !== SP) return NaN;
    if (s.charCodeAt(19) !== SP) return NaN;
    const day = s.charCodeAt(8) === SP ? digitAt(s, 9) : twoDigits(s, 8);
    return dateFrom(day, monthAt(s, 4), fourDigits(s, 20), s, 11);
  }
  // rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT"
  const comma = s.indexOf(',');
  if (comma < 6 || comma > 9 || length !== comma + 24) return NaN;
  if (!matchesAt(s, 0, WEEKDAYS_LONG, comma)) return NaN;
  const d = comma + 2;
  if (s.charCodeAt(comma + 1) !== SP || s.charCodeAt(d + 2) !== DASH || s.charCodeAt(d + 6) !== DASH) return NaN;
  if (s.charCodeAt(d + 9) !== SP || s.charCodeAt(d + 18) !== SP || !isGmt(s, d + 19)) return NaN;
  const twoDigitYear = twoDigits(s, d + 7);
  if (twoDigitYear < 0) return NaN;
  // RFC 9110 §5.6.7: a year that looks more than 50 years in the future is in the past century.
  const thisYear = new Date().getUTCFullYear();
  let year = thisYear - (thisYear % 100) + twoDigitYear;
  if (year > thisYear + 50) year -= 100;
  return dateFrom(twoDigits(s, d), monthAt(s, d + 3), year, s, d + 10);
}

/** Whether one of `names` (of length `nameLength`, when given) starts at `at`. */
function matchesAt(s: string, at: number, names: readonly string[], nameLength = 3): boolean {
  for (const name of names) if (name.length === nameLength && s.startsWith(name, at)) return true;
  return false;
}

function isGmt(s: string, at: number): boolean {
  return s.charCodeAt(at) === 0x47 && s.charCodeAt(at + 1) === 0x4d && s.charCodeAt(at + 2) === 0x54;
}

/** Month index 0–11 of the three-letter name at `at`, or -1. Month names are case-sensitive. */
function monthAt(s: string, at: number): number {
  for (let m = 0; m < 12; m++) if (s.startsWith(MONTHS[m] as string, at)) return m;
  return -1;
}

function digitAt(s: string, at: number): number {
  const c = s.charCodeAt(at);
  return isDigit(c) ? c - DIGIT_0 : -1;
}

function twoDigits(s: string, at: number): number {
  const a = digitAt(s, at);
  const b = digitAt(s, at + 1);
  return a < 0 || b < 0 ? -1 : a * 10 + b;
}

function fourDigits(s: string, at: number): number {
  const hi = twoDigits(s, at);
  const lo = twoDigits(s, at + 2);
  return hi < 0 || lo < 0 ? -1 : hi * 100 + lo;
}

/** Combines date parts with the "hh:mm:ss" at `timeAt`; NaN unless every part is in range. */
function dateFrom(day: number, month: number, year: number, s: string, timeAt: number): number {
  if (month < 0 || year < 0 || day < 1 || day > daysInMonth(year, month)) return NaN;
  if (s.charCodeAt(timeAt + 2) !== COLON || s.charCodeAt(timeAt + 5) !== COLON) return NaN;
  const hours = twoDigits(s, timeAt);
  const minutes = twoDigits(s, timeAt + 3);
  const seconds = twoDigits(s, timeAt + 6);
  // 60 is a leap second, which the grammar allows; it rolls over into the next minute.
  if (hours < 0 || hours > 23 || minutes < 0 || minutes > 59 || seconds < 0 || seconds > 60) return NaN;
  return daysFromCivil(year, month + 1, day) * DAY_MS + ((hours * 60 + minutes) * 60 + seconds) * 1000;
}

function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

function daysInMonth(year: number, month: number): number {
  return month === 1 ? (isLeapYear(year) ? 29 : 28) : month === 3 || month === 5 || month === 8 || month === 10 ? 30 : 31;
}

/**
 * Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). Date.UTC would
 * do, but it maps years 0–99 onto 1900–1999.
 */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146097 + dayOfEra - 719468;
}
