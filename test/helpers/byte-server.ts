// Answers a GET for one in-memory object, with single-range support (200, 206, 416) as an edge node does.
// Tests build misbehaving "nodes" around it: the well-behaved part is here, the scripted fault in the test.
import type { IncomingMessage, ServerResponse } from 'node:http';

export function sendBytes(req: IncomingMessage, res: ServerResponse, bytes: Buffer): void {
  const size = bytes.length;
  const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
  if (!m || (m[1] === '' && m[2] === '')) {
    res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' }).end(bytes);
    return;
  }
  // "bytes=-N" is the last N bytes; "bytes=N-" runs to the end.
  let start = m[1] === '' ? Math.max(0, size - Number(m[2])) : Number(m[1]);
  let end = m[1] === '' || m[2] === '' ? size - 1 : Math.min(size - 1, Number(m[2]));
  if (start >= size || end < start) {
    res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
    return;
  }
  start = Math.max(0, start);
  end = Math.max(start, end);
  res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}` }).end(bytes.subarray(start, end + 1));
}
