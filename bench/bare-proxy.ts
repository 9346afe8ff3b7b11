// The Node ceiling for the cold-fill section: a bare pass-through proxy, undici to the origin and node:http to the
// client, each chunk written as it arrives with backpressure. No hashing, no memory or disk tier, no coalescing:
// what moving the bytes through one Node process costs on this machine, next to which the node's cold fill is read.
//
//   node bin/run-ts.js bench/bare-proxy.ts ORIGIN_URL PORT
import { createServer } from 'node:http';
import { Agent, request } from 'undici';

const [originUrl, portArg] = process.argv.slice(2);
if (!originUrl || !portArg) {
  console.error('usage: bare-proxy.ts ORIGIN_URL PORT');
  process.exit(2);
}
const dispatcher = new Agent({ connections: 32 });

const server = createServer((req, res) => {
  if (req.url === '/healthz') {
    res.end('ok');
    return;
  }
  request(`${originUrl}${req.url ?? '/'}`, { dispatcher }).then(
    ({ statusCode, headers, body }) => {
      const length = headers['content-length'];
      res.writeHead(statusCode, typeof length === 'string' ? { 'content-length': length } : {});
      body.on('data', (chunk: Buffer) => {
        if (!res.write(chunk)) {
          body.pause();
          res.once('drain', () => body.resume());
        }
      });
      body.once('end', () => res.end());
      body.once('error', () => res.destroy());
      res.once('close', () => body.destroy());
    },
    () => {
      res.writeHead(502).end();
    },
  );
});
server.listen(Number(portArg), '127.0.0.1');
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void dispatcher.close();
});
