// The fast path's request-head parser: pure inputs, no sockets. What it accepts, node:http would answer the same
// way; everything else must come back SLOW (or INCOMPLETE while a plausible head is still arriving).
import { describe, expect, it } from 'vitest';
import { INCOMPLETE, SLOW, parseRequestHead, type RequestHead } from '../edge-node/request-head.ts';

const LIMITS = { maxHeaderBytes: 16384, maxUrlBytes: 8192 };
const parse = (text: string, start = 0, limits = LIMITS) => parseRequestHead(Buffer.from(text, 'latin1'), start, limits);
const fast = (text: string): RequestHead => {
  const r = parse(text);
  if (typeof r === 'number') throw new Error(`expected a fast head for ${JSON.stringify(text)}, got ${r === SLOW ? 'SLOW' : 'INCOMPLETE'}`);
  return r;
};

describe('parseRequestHead', () => {
  it('parses a plain GET and HEAD with Host, and says where the next request starts', () => {
    const text = 'GET /4k/shard-0001.bin HTTP/1.1\r\nHost: 127.0.0.1:18085\r\n\r\n';
    expect(fast(text)).toEqual({ method: 'GET', target: '/4k/shard-0001.bin', close: false, ifNoneMatch: undefined, range: undefined, ifRange: undefined, next: text.length });
    expect(fast('HEAD /shard/ab?ticket=x.y-z_ HTTP/1.1\r\nhost: a\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n')).toMatchObject({ method: 'HEAD', target: '/shard/ab?ticket=x.y-z_' });
  });

  it('finds pipelined requests one after the other', () => {
    const one = 'GET /a HTTP/1.1\r\nHost: x\r\n\r\n';
    const two = 'GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
    const first = fast(one + two);
    expect(first.target).toBe('/a');
    const second = parse(one + two, first.next) as RequestHead;
    expect(second).toMatchObject({ target: '/b', close: true, next: (one + two).length });
  });

  it('reads Connection (close, keep-alive, any case) and If-None-Match, trimming whitespace', () => {
    expect(fast('GET / HTTP/1.1\r\nHost: x\r\nCONNECTION:   Close  \r\n\r\n').close).toBe(true);
    expect(fast('GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n').close).toBe(false);
    expect(fast('GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \t"abc", W/"d" \r\n\r\n').ifNoneMatch).toBe('"abc", W/"d"');
  });

  it('hands Range and If-Range on as sent (trimmed), for the fast path to evaluate; repeated ones are SLOW', () => {
    const head = fast('GET / HTTP/1.1\r\nHost: x\r\nRANGE:  bytes=0-65535 \r\nIf-Range: \t"abc"\r\n\r\n');
    expect(head).toMatchObject({ range: 'bytes=0-65535', ifRange: '"abc"' });
    // Not interpreted here: a malformed or multi-range value is still passed on (fast-path.ts hands those over).
    expect(fast('GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,5-9\r\n\r\n').range).toBe('bytes=0-1,5-9');
    expect(fast('GET / HTTP/1.1\r\nHost: x\r\nRange: items=x\r\n\r\n').range).toBe('items=x');
    expect(fast('GET / HTTP/1.1\r\nHost: x\r\nRange:\r\n\r\n').range).toBe('');
    expect(fast('HEAD / HTTP/1.1\r\nHost: x\r\nIf-Range: Tue, 24 Nov 2026 10:00:00 GMT\r\n\r\n')).toMatchObject({ range: undefined, ifRange: 'Tue, 24 Nov 2026 10:00:00 GMT' });
    expect(parse('GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nrange: bytes=2-3\r\n\r\n')).toBe(SLOW);
    expect(parse('GET / HTTP/1.1\r\nHost: x\r\nIf-Range: "a"\r\nIf-Range: "a"\r\n\r\n')).toBe(SLOW);
  });

  it('waits for the rest of a head that starts like a fast one', () => {
    const full = 'GET /a HTTP/1.1\r\nHost: x\r\n\r\n';
    for (let n = 1; n < full.length; n++) expect(parse(full.slice(0, n)), full.slice(0, n)).toBe(INCOMPLETE);
    expect(parse('HEAD /a HTTP/1.1\r\nHo')).toBe(INCOMPLETE);
  });

  it('gives up early on incomplete heads that cannot be fast, or that reach the header limit', () => {
    expect(parse('POST /a HTTP/1.1\r\n')).toBe(SLOW);
    expect(parse('GEt')).toBe(SLOW);
    expect(parse('\r\nGET /')).toBe(SLOW);
    // A bare LF can never become the CRLF CRLF awaited: node:http answers 400 at once, so must the fast path.
    expect(parse('GET /x HTTP/1.1\nHost: x\n\n')).toBe(SLOW);
    expect(parse('GET /x HTTP/1.1\r\nHost: x\r\n\n')).toBe(SLOW);
    expect(parse('GET /x HTTP/1.1\nHo')).toBe(SLOW);
    expect(parse(`GET /a HTTP/1.1\r\nx: ${'a'.repeat(200)}`, 0, { maxHeaderBytes: 100, maxUrlBytes: 50 })).toBe(SLOW);
  });

  it('leaves other methods, versions and malformed request lines to node:http', () => {
    for (const line of [
      'POST / HTTP/1.1',
      'get / HTTP/1.1',
      'GET  / HTTP/1.1',
      'GET / HTTP/1.0',
      'GET / HTTP/2.0',
      'GET / http/1.1',
      'GET /  HTTP/1.1',
      'GET http://x/ HTTP/1.1',
      'GET * HTTP/1.1',
      'GET /a b HTTP/1.1',
      'GET /a"b HTTP/1.1',
      'GET /a<b HTTP/1.1',
      'GET /a\\b HTTP/1.1',
      'GET /a#frag HTTP/1.1',
      'GET /caf\xe9 HTTP/1.1',
      'GET /\x00 HTTP/1.1',
      'GET / HTTP/1.1 ',
      'OPTIONS * HTTP/1.1',
    ]) {
      expect(parse(`${line}\r\nHost: x\r\n\r\n`), JSON.stringify(line)).toBe(SLOW);
    }
  });

  it('leaves malformed header lines to node:http', () => {
    for (const h of [
      'bad header line',
      'Host : x',
      ' folded: x',
      ': empty-name',
      'X-A: a\rb',
      'X-A: a\nb',
      'X-A: \x01',
      'X-A: caf\xe9',
      'X(A): b',
    ]) {
      expect(parse(`GET / HTTP/1.1\r\nHost: x\r\n${h}\r\n\r\n`), JSON.stringify(h)).toBe(SLOW);
    }
    expect(parse('GET / HTTP/1.1\nHost: x\r\n\r\n')).toBe(SLOW);
  });

  it('leaves requests with a body, other conditionals, Expect and Upgrade to node:http', () => {
    for (const h of [
      'Content-Length: 0',
      'content-length: 5',
      'Transfer-Encoding: chunked',
      'If-Match: "x"',
      'If-Modified-Since: Tue, 24 Nov 2026 10:00:00 GMT',
      'If-Unmodified-Since: Tue, 24 Nov 2026 10:00:00 GMT',
      'Expect: 100-continue',
      'Upgrade: websocket',
      'Connection: Upgrade',
      'Connection: close, foo',
      'Connection: close\t',
      'Connection:\tclose',
      'If-None-Match: "a"\r\nIf-None-Match: "b"',
    ]) {
      expect(parse(`GET / HTTP/1.1\r\nHost: x\r\n${h}\r\n\r\n`), h).toBe(SLOW);
    }
  });

  it('needs exactly one Host', () => {
    expect(parse('GET / HTTP/1.1\r\nAccept: */*\r\n\r\n')).toBe(SLOW);
    expect(parse('GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')).toBe(SLOW);
    expect(parse('GET / HTTP/1.1\r\n\r\n')).toBe(SLOW);
  });

  it('leaves long targets, long heads and many header lines to node:http (414, 431)', () => {
    const limits = { maxHeaderBytes: 200, maxUrlBytes: 20 };
    expect(typeof parse('GET /aaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n', 0, limits)).toBe('object');
    expect(parse('GET /aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n', 0, limits)).toBe(SLOW);
    expect(parse(`GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(200)}\r\n\r\n`, 0, limits)).toBe(SLOW);
    const many = Array.from({ length: 70 }, (_, i) => `X-${i}: y\r\n`).join('');
    expect(parse(`GET / HTTP/1.1\r\nHost: x\r\n${many}\r\n`)).toBe(SLOW);
  });
});
