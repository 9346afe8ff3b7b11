// A strict parser for the HTTP/1.1 request heads the fast path answers itself (fast-path.ts). Pure, no I/O.
//
// It accepts only the plain case: `GET|HEAD SP origin-form SP HTTP/1.1`, well-formed header lines, one Host, no
// body, at most one each of If-None-Match, Range and If-Range (handed on as they are, for fast-path.ts to evaluate),
// and no other header that changes the answer (the other conditionals, Expect, Upgrade, Cache-Control, Pragma). Everything else, including
// every request node:http would refuse, is reported as SLOW and goes to node:http untouched, so being strict here
// can cost speed but never correctness.

/** The parsed head of a request the fast path may answer. */
export interface RequestHead {
  method: 'GET' | 'HEAD';
  /** The request target as sent (origin-form: path and optional query). */
  target: string;
  /** `Connection: close`: answer, then close. */
  close: boolean;
  /** The If-None-Match field value, if any (the only precondition the fast path evaluates). */
  ifNoneMatch: string | undefined;
  /** The Range field value, if any, not interpreted here. */
  range: string | undefined;
  /** The If-Range field value, if any, not interpreted here. */
  ifRange: string | undefined;
  /** Offset just past the head's final CRLF CRLF: where the next pipelined request starts. */
  next: number;
}

/** The head is not complete yet: more bytes are needed. */
export const INCOMPLETE = 0;
/** Not a request the fast path answers: hand it to node:http. */
export const SLOW = 1;

export interface HeadLimits {
  /** node:http's maxHeaderSize: a head this long or longer goes to node:http, which decides 431 or not. */
  maxHeaderBytes: number;
  /** Longest request target answered here; longer ones go to node:http (the node's 414). */
  maxUrlBytes: number;
}

/** More header lines than this go to node:http (it has its own limit on header pairs). */
const MAX_HEADER_LINES = 64;

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const HTTP11_CRLF = Buffer.from(' HTTP/1.1\r\n', 'latin1');

/** tchar (RFC 9110 §5.6.2): the bytes a header name may hold. */
const TCHAR = charTable("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
/**
 * Bytes of an origin-form target answered here: RFC 3986 pchar, "/" and "?" (percent-encoded bytes included).
 * Narrower than what node:http accepts, on purpose: anything unusual takes the ordinary path.
 */
const TARGET_CHAR = charTable("!$%&'()*+,-./0123456789:;=?@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~");

function charTable(chars: string): Uint8Array {
  const t = new Uint8Array(256);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  return t;
}

/** True when buf[start, start+name.length) equals `name` (lowercase ASCII letters and '-') case-insensitively. */
function nameIs(buf: Buffer, start: number, len: number, name: string): boolean {
  if (len !== name.length) return false;
  // `| 0x20` lower-cases letters; a name is tchars only, and no tchar other than a letter folds onto a letter or '-'.
  for (let i = 0; i < len; i++) if ((buf[start + i]! | 0x20) !== name.charCodeAt(i)) return false;
  return true;
}

/**
 * Parses the request head starting at `start`. Returns the head, INCOMPLETE when no CRLF CRLF has arrived yet
 * (and what has arrived is short enough to wait for), or SLOW for anything the fast path leaves to node:http.
 */
export function parseRequestHead(buf: Buffer, start: number, limits: HeadLimits): RequestHead | typeof INCOMPLETE | typeof SLOW {
  const end = buf.indexOf(CRLFCRLF, start);
  if (end < 0) {
    if (buf.length - start >= limits.maxHeaderBytes || !couldBeFast(buf, start)) return SLOW;
    // A bare LF (`\n` line ends, or CRLF then LF) can never become the CRLF CRLF waited for here: node:http answers
    // such a head at once (400), so waiting would hang the client until a timeout.
    return hasBareLf(buf, start) ? SLOW : INCOMPLETE;
  }
  const next = end + 4;
  if (next - start >= limits.maxHeaderBytes) return SLOW;

  // Request line: method, one space, target, " HTTP/1.1\r\n".
  let i = start;
  let method: 'GET' | 'HEAD';
  if (buf[i] === 0x47 && buf[i + 1] === 0x45 && buf[i + 2] === 0x54 && buf[i + 3] === SP) {
    method = 'GET';
    i += 4;
  } else if (buf[i] === 0x48 && buf[i + 1] === 0x45 && buf[i + 2] === 0x41 && buf[i + 3] === 0x44 && buf[i + 4] === SP) {
    method = 'HEAD';
    i += 5;
  } else {
    return SLOW;
  }
  const targetStart = i;
  if (buf[i] !== 0x2f /* / */) return SLOW;
  while (i < end && TARGET_CHAR[buf[i]!] === 1) i++;
  if (i - targetStart > limits.maxUrlBytes) return SLOW;
  const targetEnd = i;
  for (let k = 0; k < HTTP11_CRLF.length; k++) if (buf[i + k] !== HTTP11_CRLF[k]) return SLOW;
  i += HTTP11_CRLF.length;

  // Header lines up to the empty line at `end` + 2.
  let hosts = 0;
  let close = false;
  let ifNoneMatch: string | undefined;
  let range: string | undefined;
  let ifRange: string | undefined;
  let lines = 0;
  while (i < end + 2) {
    if (++lines > MAX_HEADER_LINES) return SLOW;
    const nameStart = i;
    while (TCHAR[buf[i]!] === 1) i++;
    const nameLen = i - nameStart;
    // No name, space before the colon, or a continuation line (obs-fold): node:http decides.
    if (nameLen === 0 || buf[i] !== COLON) return SLOW;
    i++;
    while (buf[i] === SP || buf[i] === HTAB) i++;
    const valueStart = i;
    let valueEnd = i;
    for (;;) {
      const c = buf[i]!;
      if (c === CR) break;
      // Visible ASCII and inner whitespace only: control bytes, bare LF and obs-text go to node:http.
      if ((c < SP && c !== HTAB) || c > 0x7e) return SLOW;
      i++;
      if (c !== SP && c !== HTAB) valueEnd = i;
    }
    if (buf[i + 1] !== LF) return SLOW;
    i += 2;

    switch (nameLen) {
      case 4:
        if (nameIs(buf, nameStart, 4, 'host')) hosts++;
        break;
      case 5:
        // A repeated Range or If-Range reaches node:http's handler joined with ", ": leave that to it.
        if (nameIs(buf, nameStart, 5, 'range')) {
          if (range !== undefined) return SLOW;
          range = buf.toString('latin1', valueStart, valueEnd);
        }
        break;
      case 6:
        // Pragma and Cache-Control can forbid a stored answer (RFC 9111 §5.2.1): the ordinary path weighs them.
        if (nameIs(buf, nameStart, 6, 'expect') || nameIs(buf, nameStart, 6, 'pragma')) return SLOW;
        break;
      case 7:
        if (nameIs(buf, nameStart, 7, 'upgrade')) return SLOW;
        break;
      case 8:
        if (nameIs(buf, nameStart, 8, 'if-range')) {
          if (ifRange !== undefined) return SLOW;
          ifRange = buf.toString('latin1', valueStart, valueEnd);
        } else if (nameIs(buf, nameStart, 8, 'if-match')) return SLOW;
        break;
      case 10:
        if (nameIs(buf, nameStart, 10, 'connection')) {
          // node:http does not read `close<TAB>` as close (its parser trims spaces only): let it decide.
          const tab = buf.indexOf(HTAB, nameStart + 11);
          if (tab >= 0 && tab < i - 2) return SLOW;
          if (nameIs(buf, valueStart, valueEnd - valueStart, 'close')) close = true;
          else if (!nameIs(buf, valueStart, valueEnd - valueStart, 'keep-alive')) return SLOW;
        }
        break;
      case 13:
        if (nameIs(buf, nameStart, 13, 'if-none-match')) {
          if (ifNoneMatch !== undefined) return SLOW;
          ifNoneMatch = buf.toString('latin1', valueStart, valueEnd);
        } else if (nameIs(buf, nameStart, 13, 'cache-control')) return SLOW;
        break;
      case 14:
        // A body, even an empty one announced as such, is unusual for GET: let node:http deal with it.
        if (nameIs(buf, nameStart, 14, 'content-length')) return SLOW;
        break;
      case 17:
        if (nameIs(buf, nameStart, 17, 'transfer-encoding') || nameIs(buf, nameStart, 17, 'if-modified-since')) return SLOW;
        break;
      case 19:
        if (nameIs(buf, nameStart, 19, 'if-unmodified-since')) return SLOW;
        break;
    }
  }
  // node:http answers a missing Host with 400; several Hosts are left to it as well.
  if (hosts !== 1) return SLOW;
  return { method, target: buf.toString('latin1', targetStart, targetEnd), close, ifNoneMatch, range, ifRange, next };
}

/** Whether buf[start..] holds an LF not preceded by a CR. */
function hasBareLf(buf: Buffer, start: number): boolean {
  for (let i = buf.indexOf(LF, start); i >= 0; i = buf.indexOf(LF, i + 1)) if (i === start || buf[i - 1] !== CR) return true;
  return false;
}

/** Whether an incomplete head still starts like one the fast path answers ("GET /" or "HEAD /"). */
function couldBeFast(buf: Buffer, start: number): boolean {
  return startsLike(buf, start, 'GET /') || startsLike(buf, start, 'HEAD /');
}

function startsLike(buf: Buffer, start: number, prefix: string): boolean {
  const n = Math.min(buf.length - start, prefix.length);
  for (let k = 0; k < n; k++) if (buf[start + k] !== prefix.charCodeAt(k)) return false;
  return true;
}
