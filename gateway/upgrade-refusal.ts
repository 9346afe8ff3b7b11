// Answers an HTTP upgrade the gateway will not take (a path other than the registry's, a source over its hello
// budget) on the raw socket, then closes it. node:http hands an upgrade's socket over with no 'error' listener: a
// client that resets the connection after the answer would raise an unhandled ECONNRESET and end the gateway.
import type { Duplex } from 'node:stream';

/** `status`: e.g. '404 Not Found'. `fields`: extra header lines as name/value pairs. `body`: plain text. */
export function refuseUpgrade(socket: Duplex, status: string, body = '', fields: [string, string][] = []): void {
  socket.on('error', () => socket.destroy());
  const head = [`HTTP/1.1 ${status}`, ...fields.map(([name, value]) => `${name}: ${value}`)];
  if (body) head.push('content-type: text/plain; charset=utf-8');
  head.push(`content-length: ${Buffer.byteLength(body)}`, 'connection: close');
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`, () => socket.destroy());
}
