// A minimal static origin: serves a dataset directory over HTTP (GET/HEAD, whole files, Last-Modified, ETag).
// Real deployments point edge nodes at S3, nginx or any HTTP server; this one makes `npm start` and tests self-contained.
import { createServer, type Server } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeRequestPath } from '../protocol/paths.ts';
import { closeNow, listen, localUrl } from '../protocol/listen.ts';

export interface OriginServer {
  server: Server;
  url: string;
  /** Requests answered, for tests and the demo's "origin offload" figure. */
  requests: () => number;
  /** Body bytes read from disk and handed to responses: the origin's egress (tests, the cold split bench). */
  bytesSent: () => number;
  close(): Promise<void>;
}

export async function startOrigin(root: string, port = 0, host = '127.0.0.1'): Promise<OriginServer> {
  let requests = 0;
  let bytesSent = 0;
  const server = createServer(async (req, res) => {
    requests++;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const rawPath = (req.url ?? '/').split('?')[0]!.slice(1);
    const decoded = decodeRequestPath(rawPath);
    if ('error' in decoded) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end(`${decoded.error}\n`);
      return;
    }
    const file = join(root, decoded.path);
    const info = await stat(file).catch(() => null);
    if (!info?.isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    res.writeHead(200, {
      'content-length': info.size,
      'last-modified': info.mtime.toUTCString(),
      // As nginx makes it: mtime and size in hex. Edge nodes pass it on to clients as the validator.
      etag: `"${Math.floor(info.mtimeMs / 1000).toString(16)}-${info.size.toString(16)}"`,
      'content-type': decoded.path.endsWith('.json') ? 'application/json' : 'application/octet-stream',
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const stream = createReadStream(file, { highWaterMark: 1 << 20 });
    stream.on('error', () => res.destroy());
    stream.on('data', (chunk) => (bytesSent += chunk.length));
    stream.pipe(res);
  });
  const url = localUrl(await listen(server, port, host));
  return {
    server,
    url,
    requests: () => requests,
    bytesSent: () => bytesSent,
    close: () => closeNow(server),
  };
}
