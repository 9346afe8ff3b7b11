// What the node and the gateway answer when node:http's parser refuses a request, or a client is too slow to send
// its head: the raw bytes for a 'clientError' listener, and the server options that make the header timeout bite.
import type { ServerOptions } from 'node:http';

const REASONS: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

/** The status for a 'clientError': 408 for a head that did not arrive in time, 431 for one too large, else 400. */
export function clientErrorStatus(err: NodeJS.ErrnoException): 400 | 408 | 431 {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  if (err.code === 'HPE_HEADER_OVERFLOW') return 431;
  return 400;
}

/** The whole answer to a 'clientError', closing the connection; the body says what to do. */
export function clientErrorResponse(err: NodeJS.ErrnoException, headersTimeoutMs: number): string {
  const status = clientErrorStatus(err);
  const text =
    status === 408
      ? `request head not received within ${headersTimeoutMs / 1000} s; send the whole head at once`
      : status === 431
        ? 'request headers too large'
        : 'malformed request';
  return `HTTP/1.1 ${status} ${REASONS[status]}\r\ncontent-type: text/plain\r\ncontent-length: ${text.length + 1}\r\nconnection: close\r\n\r\n${text}\n`;
}

/**
 * node:http options for a header timeout of `ms`. node:http checks its connections for expired heads only every
 * connectionsCheckingInterval (30 s by default), far too coarse for a timeout of seconds: check four times per
 * timeout, at most once a second and at least every 100 ms.
 */
export function headerTimeouts(ms: number): Pick<ServerOptions, 'headersTimeout' | 'requestTimeout' | 'connectionsCheckingInterval'> {
  return {
    headersTimeout: ms,
    // node:http requires requestTimeout ≥ headersTimeout; it bounds receiving a request (head and body), never
    // sending the response, so slow downloads are not cut.
    requestTimeout: Math.max(ms, 300_000),
    connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(ms / 4))),
  };
}
