// The fast path: answers the hot subset of HTTP/1.1 (a GET or HEAD of a fresh memory-tier object whose answer is
// small: a whole small object, one byte range of any object, a 304) straight from the socket's bytes, and hands
// everything else to the node's ordinary node:http server.
//
// Why: for a 4 KiB memory hit or a 64 KiB range, node:http's own machinery (parser callbacks, IncomingMessage,
// ServerResponse, header validation, nextTick uncork) costs more CPU than the rest of the request. Here a hit is one
// strict parse (request-head.ts), one lookup through the node's own routing (memoised per path), and one write: a
// small whole object or a range up to 64 KiB as head and body joined once a second (the head carries the Date),
// anything larger as a corked write of that cached head plus the body Buffer (or views of it) as it is. Idle
// keep-alive connections are closed by one sweep over them, not a socket timer re-armed on every read.
//
// The first request it does not answer (a miss, /metrics, a 416, several ranges, anything unusual or malformed)
// hands the whole connection to node:http for good: unanswered bytes go back with socket.unshift() and node:http's
// own connection listener takes the socket over, so every other behaviour (errors, 414/431, fills, timeouts) is
// node:http's.
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { hitHeadOf, rangeHeadOf, rangeOf, type MemoryObject } from './memory-store.ts';
import { evaluateConditional, evaluateIfRange, parseRange } from '../protocol/http-semantics.ts';
import { INCOMPLETE, SLOW, parseRequestHead, type HeadLimits, type RequestHead } from './request-head.ts';

/**
 * Largest body answered here: a whole object, or one range of an object of any size the memory tier holds. Above
 * it the body's transfer, not the per-request work, is the cost, so larger answers keep the ordinary path and
 * whatever it does for them.
 */
export const FAST_PATH_MAX_BODY = 256 * 1024;

/**
 * Whole objects up to this size leave as one Buffer, head and body joined (kept for the current second, like the
 * head): one write instead of a corked writev of two. At 4 KiB the stream machinery of cork, writev and uncork was
 * a visible share of a request's CPU.
 */
export const FAST_PATH_JOINED_MAX_BODY = 16 * 1024;
/**
 * Single ranges up to this size leave the same way, head and the range's bytes joined once per second per object
 * (the last range of each): a loader reads the same ranges of a shard over and over, and the range's pieces of the
 * fill's chunks otherwise went out as a corked writev of three or more buffers.
 */
export const FAST_PATH_JOINED_MAX_RANGE = 64 * 1024;
/** Bytes of joined answers kept for the current second, so that many small objects cannot make the cache large. */
const JOINED_CACHE_BYTES = 4 * 1024 * 1024;

/** A memory-tier object to answer with, and the route label its metrics go under. */
export interface FastHit {
  obj: MemoryObject;
  route: string;
  /** The node's clock at the lookup (ms): the Age of a path object counts by it. */
  now: number;
}

export interface FastPathHooks {
  /**
   * The fresh memory-tier object that answers `target` (GET or HEAD) exactly as the ordinary path would, of any
   * size, or undefined to leave the request to node:http. The caller applies routing, the ticket check (without
   * verifying anything new) and the upload cap here; the fast path applies FAST_PATH_MAX_BODY to the answer.
   */
  lookup(target: string): FastHit | undefined;
  /** A response went out: the ordinary path's bookkeeping (metrics, served bytes). `started` is performance.now(). */
  served(route: string, status: number, bodyBytes: number, started: number): void;
}

export interface FastPath {
  /** Shutdown: destroys idle fast-path connections now; the others close after their current response. */
  closeIdle(): void;
  /** Connections the fast path holds now (not yet handed to node:http). */
  readonly connections: number;
  /** Responses the fast path has sent (tests and A/B checks; /metrics counts them with the rest). */
  readonly answered: number;
}

/** What node:http adds to keepAliveTimeout when it arms an idle keep-alive socket's timeout (fewer ECONNRESETs). */
const KEEP_ALIVE_TIMEOUT_BUFFER_MS = 1000;
/**
 * How often the idle sweep looks at the fast path's keep-alive connections. A connection is closed between its idle
 * timeout and one sweep later, never before: node:http's socket timeout closes it "after" its timeout too.
 */
export const IDLE_SWEEP_MS = 250;
/** What node:http would refuse in a header value (`checkInvalidHeaderChar`); such an object takes the slow path. */
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
/** node:http's own answers (`_http_server.js`) when no 'clientError' listener answers. */
const BAD_REQUEST = 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n';
const REQUEST_TIMEOUT = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n';
const noop = (): void => {};

/** Whether `buf[from..]` holds anything but CR and LF: node:http's parser skips those after a closing request. */
function hasDataAfterClose(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0x0d && buf[i] !== 0x0a) return true;
  return false;
}

/**
 * Takes over `server`'s connections: each new socket is read by the fast path until a request it does not
 * answer, then given to node:http's own connection listener. The server keeps listening, counting and limiting
 * connections, and closing as before. Returns null, changing nothing, if this Node's http server is not built
 * the way the hand-over relies on.
 */
export function installFastPath(server: Server, hooks: FastPathHooks, limits: HeadLimits): FastPath | null {
  // node:http answers a connection through the 'connection' listener its constructor registers. Swap it for ours and
  // call it at hand-over: unlike emitting 'connection' again, this leaves other listeners (connection counting)
  // seeing each socket once, and node:http's connection tracking (headersTimeout, closeIdleConnections) intact.
  const nodeListener = server.listeners('connection').find((l) => l.name === 'connectionListener') as ((socket: Socket) => void) | undefined;
  if (!nodeListener) return null;
  server.removeListener('connection', nodeListener);
  const shell = new Shell(server, hooks, limits, (socket) => nodeListener.call(server, socket));
  server.on('connection', (socket: Socket) => {
    new FastConnection(socket, shell);
  });
  return shell;
}

class Shell implements FastPath {
  readonly open = new Set<FastConnection>();
  draining = false;
  answered = 0;
  private second = -1;
  private date = '';
  /** 200 keep-alive heads by object, for the current second only (they carry its Date), with the pairs they show. */
  private heads = new Map<MemoryObject, { pairs: readonly string[]; bytes: Buffer }>();
  /** 206 keep-alive heads by object, for the current second only: the last range's `rangeHeadOf` pairs and bytes. */
  private rangeHeads = new Map<MemoryObject, { pairs: readonly string[]; bytes: Buffer }>();
  /** 200 keep-alive answers (head and body joined) of small objects, for the current second, by their head. */
  private joined = new Map<MemoryObject, { head: Buffer; bytes: Buffer }>();
  /** 206 keep-alive answers (head and the range's bytes joined), for the current second, by their head. */
  private joinedRanges = new Map<MemoryObject, { head: Buffer; bytes: Buffer }>();
  private joinedBytes = 0;
  /**
   * Idle sweeps so far: a connection notes the current one on each read (an integer store), instead of re-arming a
   * socket timer per read as socket.setTimeout does (`_unrefTimer`, 3.5 % of a 4 KiB hit's CPU in a profile).
   */
  sweeps = 0;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    readonly server: Server,
    readonly hooks: FastPathHooks,
    readonly limits: HeadLimits,
    readonly handToNode: (socket: Socket) => void,
  ) {}

  get connections(): number {
    return this.open.size;
  }

  closeIdle(): void {
    this.draining = true;
    for (const c of this.open) c.closeIfIdle();
  }

  /** Runs the idle sweep while a keep-alive connection can be idle (after its first answer), not on an idle server. */
  watchIdle(): void {
    if (this.sweeper !== undefined) return;
    this.sweeper = setInterval(this.sweep, IDLE_SWEEP_MS);
    this.sweeper.unref();
  }

  private readonly sweep = (): void => {
    const sweeps = ++this.sweeps;
    let watched = 0;
    for (const c of this.open) if (c.checkIdle(sweeps)) watched++;
    if (watched === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  };

  /**
   * The response head for `obj` (for a 206, `pairs` are its `rangeHeadOf` head), or undefined when node:http would
   * refuse one of its header values.
   */
  head(obj: MemoryObject, status: FastStatus, pairs: readonly string[], close: boolean): Buffer | undefined {
    const now = Date.now();
    const second = Math.floor(now / 1000);
    if (second !== this.second) {
      this.second = second;
      this.date = new Date(second * 1000).toUTCString();
      this.heads = new Map();
      this.rangeHeads = new Map();
      this.joined = new Map();
      this.joinedRanges = new Map();
      this.joinedBytes = 0;
    }
    if (close || status === 304) return buildHead(status, pairs, this.date, close, this.server.keepAliveTimeout);
    if (status === 200) {
      // hitHeadOf returns the same array until a path object's Age changes, so identity says the bytes are right.
      const cached = this.heads.get(obj);
      if (cached !== undefined && cached.pairs === pairs) return cached.bytes;
      const built = buildHead(200, pairs, this.date, false, this.server.keepAliveTimeout);
      if (built !== undefined) this.heads.set(obj, { pairs, bytes: built });
      return built;
    }
    // rangeHeadOf returns the same array while the same range repeats, so identity says the bytes are still right.
    const cached = this.rangeHeads.get(obj);
    if (cached !== undefined && cached.pairs === pairs) return cached.bytes;
    const built = buildHead(206, pairs, this.date, false, this.server.keepAliveTimeout);
    if (built !== undefined) this.rangeHeads.set(obj, { pairs, bytes: built });
    return built;
  }

  /**
   * `head` (this second's 200 head of `obj`) and `obj`'s whole body as one Buffer, or undefined when the object is
   * too large to join or this second's joined answers already hold JOINED_CACHE_BYTES.
   */
  joinedAnswer(obj: MemoryObject, head: Buffer): Buffer | undefined {
    if (obj.meta.size > FAST_PATH_JOINED_MAX_BODY) return undefined;
    const cached = this.joined.get(obj);
    if (cached !== undefined && cached.head === head) return cached.bytes;
    const length = head.length + obj.meta.size;
    if (this.joinedBytes + length > JOINED_CACHE_BYTES) return undefined;
    const bytes = Buffer.concat([head, ...(obj.parts ?? [obj.body])], length);
    this.joined.set(obj, { head, bytes });
    this.joinedBytes += length;
    return bytes;
  }

  /**
   * `head` (this second's 206 head of `obj` for bytes start..end, which names the range) and those bytes as one
   * Buffer, or undefined when the range is too large to join or this second's joined answers hold JOINED_CACHE_BYTES.
   */
  joinedRange(obj: MemoryObject, head: Buffer, start: number, end: number): Buffer | undefined {
    if (end - start + 1 > FAST_PATH_JOINED_MAX_RANGE) return undefined;
    const cached = this.joinedRanges.get(obj);
    if (cached !== undefined && cached.head === head) return cached.bytes;
    const length = head.length + end - start + 1;
    if (this.joinedBytes + length > JOINED_CACHE_BYTES) return undefined;
    const bytes = Buffer.concat([head, ...rangeOf(obj, start, end)], length);
    this.joinedRanges.set(obj, { head, bytes });
    this.joinedBytes += length;
    return bytes;
  }
}

/** The statuses the fast path answers with. */
export type FastStatus = 200 | 206 | 304;

const STATUS_LINES: Record<FastStatus, string> = {
  200: 'HTTP/1.1 200 OK\r\n',
  206: 'HTTP/1.1 206 Partial Content\r\n',
  304: 'HTTP/1.1 304 Not Modified\r\n',
};

/**
 * The bytes node:http sends for `res.writeHead(status, pairs)` on a keep-alive (or closing) HTTP/1.1 response:
 * the pairs in order, then Date, Connection and Keep-Alive as it adds them (`_storeHeader`).
 */
export function buildHead(status: FastStatus, pairs: readonly string[], date: string, close: boolean, keepAliveTimeoutMs: number): Buffer | undefined {
  let s = STATUS_LINES[status];
  for (let i = 0; i < pairs.length; i += 2) {
    const value = pairs[i + 1];
    if (typeof value !== 'string' || INVALID_HEADER_CHAR.test(value)) return undefined;
    s += `${pairs[i]}: ${value}\r\n`;
  }
  s += `Date: ${date}\r\n`;
  if (close) s += 'Connection: close\r\n';
  else {
    s += 'Connection: keep-alive\r\n';
    if (keepAliveTimeoutMs) s += `Keep-Alive: timeout=${Math.floor(keepAliveTimeoutMs / 1000)}\r\n`;
  }
  return Buffer.from(`${s}\r\n`, 'latin1');
}

class FastConnection {
  /** Bytes not answered yet: an incomplete head, or requests held back until the socket drains. */
  private pending: Buffer | undefined = undefined;
  /** `pending` is an incomplete head (as opposed to requests held back by backpressure). */
  private partial = false;
  /** Paused until 'drain': a slow reader must not make the node buffer responses without bound. */
  private waiting = false;
  /** The client sent FIN. */
  private ended = false;
  private answered = false;
  /** The socket is corked for the responses of the current run (uncorked at its end). */
  private corked = false;
  /** Idle timeout once answered (node:http's keepAliveTimeout + 1 s, 0 for none): the idle sweep applies it. */
  private idleMs = 0;
  /** The shell's sweep count at the last read or drain. */
  private activeAt = 0;
  /** Bytes still buffered for writing at the last sweep: a slow reader still taking them is not idle. */
  private lastPending = 0;
  /**
   * Runs while a request head is due: from the connection's start, and from the first byte of each later head. On
   * expiry the client gets node:http's answer to a headersTimeout (408): a slow-loris client cannot hold the
   * connection longer here than node:http would let it.
   */
  private headDeadline: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly shell: Shell,
  ) {
    shell.open.add(this);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    // node:http gives a fresh connection headersTimeout, counted from the connection's start, to send its first head.
    this.armHeadDeadline();
  }

  private armHeadDeadline(): void {
    const ms = this.shell.server.headersTimeout;
    if (ms > 0 && this.headDeadline === undefined) {
      this.headDeadline = setTimeout(this.onHeadTimeout, ms);
      this.headDeadline.unref();
    }
  }

  private clearHeadDeadline(): void {
    if (this.headDeadline !== undefined) clearTimeout(this.headDeadline);
    this.headDeadline = undefined;
  }

  private readonly onHeadTimeout = (): void => {
    this.headDeadline = undefined;
    this.clientError('ERR_HTTP_REQUEST_TIMEOUT', 'request head not received within headersTimeout');
  };

  private readonly onData = (chunk: Buffer): void => {
    this.activeAt = this.shell.sweeps;
    const pending = this.pending;
    if (pending === undefined) {
      this.run(chunk, false);
      return;
    }
    this.pending = undefined;
    this.run(Buffer.concat([pending, chunk]), this.partial);
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    // An incomplete head at EOF: node:http's parser fails (HPE_INVALID_EOF_STATE) and the client gets its 400.
    if (this.pending !== undefined && this.partial) {
      this.clientError('HPE_INVALID_EOF_STATE', 'connection ended inside a request head');
      return;
    }
    // node:http (httpAllowHalfOpen false) ends its side once the requests it has are answered.
    if (!this.waiting) this.socket.end();
  };

  // Resets and the like: the socket closes by itself; node:http ignores them the same way on an idle socket.
  private readonly onError = (): void => {};

  private readonly onClose = (): void => {
    this.clearHeadDeadline();
    this.shell.open.delete(this);
  };

  private readonly onDrain = (): void => {
    this.activeAt = this.shell.sweeps;
    this.waiting = false;
    const pending = this.pending;
    if (pending !== undefined && !this.partial) {
      this.pending = undefined;
      if (this.run(pending, false) !== 'open' || this.waiting) return;
    }
    if (this.ended) this.socket.end();
    else this.socket.resume();
  };

  /**
   * At sweep `sweeps`: closes the connection silently, as node:http closes an idle keep-alive socket, when nothing
   * was read and no buffered byte left for its idle timeout. Activity noted at sweep k happened after sweep k began,
   * so at sweep n at least (n - k - 1) sweep intervals have passed since: never closed early. Returns whether the
   * connection is still watched.
   */
  checkIdle(sweeps: number): boolean {
    if (this.idleMs === 0) return false;
    const pending = this.socket.writableLength;
    if (pending !== this.lastPending) {
      // As node:http's socket timer, which each completed write re-arms: a client still reading is not idle.
      this.lastPending = pending;
      if (pending > 0) this.activeAt = sweeps;
    }
    if ((sweeps - this.activeAt - 1) * IDLE_SWEEP_MS >= this.idleMs) this.socket.destroy();
    return true;
  }

  closeIfIdle(): void {
    if (this.pending !== undefined || this.waiting) return; // it closes after the response it owes (draining)
    if (this.socket.writableLength === 0) this.socket.destroy();
    else this.socket.destroySoon();
  }

  /** Answers the requests in `buf` in order until one is not the fast path's; returns what became of the socket. */
  private run(buf: Buffer, startsPartial: boolean): 'open' | 'handed-over' | 'closing' {
    const socket = this.socket;
    const shell = this.shell;
    let off = 0;
    let outcome: 'open' | 'handed-over' | 'closing' = 'open';
    let clientClosed = false;
    while (off < buf.length) {
      const head = parseRequestHead(buf, off, shell.limits);
      if (head === INCOMPLETE) {
        // One chunk boundary inside a head is common (pipelining, a large read split); a head still incomplete
        // after the next chunk is a slow or odd client, and node:http's header timeouts are the right tool.
        if (startsPartial && off === 0) outcome = 'handed-over';
        else {
          this.pending = buf.subarray(off);
          this.partial = true;
          this.armHeadDeadline();
        }
        break;
      }
      if (head === SLOW) {
        outcome = 'handed-over';
        break;
      }
      const started = performance.now();
      const hit = shell.hooks.lookup(head.target);
      if (hit === undefined) {
        outcome = 'handed-over';
        break;
      }
      // The last request of this read, with nothing written before it, may go out uncorked (one Buffer, one write).
      if (!this.respond(head, hit, started, !this.corked && head.next === buf.length)) {
        outcome = 'handed-over';
        break;
      }
      off = head.next;
      this.clearHeadDeadline();
      if (head.close || shell.draining) {
        clientClosed = head.close;
        outcome = 'closing';
        break;
      }
      if (socket.writableNeedDrain && off < buf.length) {
        // Answer the rest once the socket drains; meanwhile stop reading, so the client's requests wait in TCP.
        this.pending = buf.subarray(off);
        this.partial = false;
        this.waitForDrain();
        break;
      }
    }
    if (this.corked) {
      this.corked = false;
      socket.uncork();
    }
    if (outcome === 'handed-over') {
      this.handOver(buf.subarray(off));
    } else if (outcome === 'closing') {
      if (clientClosed && hasDataAfterClose(buf, off)) {
        // node:http's parser refuses bytes after a `Connection: close` request (HPE_CLOSED_CONNECTION): its 400
        // follows the response.
        this.clientError('HPE_CLOSED_CONNECTION', 'data after Connection: close');
        return outcome;
      }
      // As node:http after a `Connection: close` response: end once written, then destroy. Errors stay handled.
      socket.off('data', this.onData);
      socket.off('end', this.onEnd);
      this.clearHeadDeadline();
      socket.destroySoon();
    } else if (!this.waiting && socket.writableNeedDrain) {
      this.waitForDrain();
    }
    return outcome;
  }

  /**
   * Writes one response (corked by the caller); false, having written nothing, when node:http must answer: a 416,
   * a Range the ordinary path answers with the whole body (several ranges, another unit, malformed), an answer
   * larger than FAST_PATH_MAX_BODY, or a head node:http would refuse.
   */
  private respond(head: RequestHead, hit: FastHit, started: number, alone: boolean): boolean {
    const obj = hit.obj;
    const size = obj.meta.size;
    // The ordinary path's order (stored-responders.ts `negotiate`): preconditions, then If-Range, then Range.
    let status: FastStatus = 200;
    let start = 0;
    let end = size - 1;
    if (head.ifNoneMatch !== undefined && evaluateConditional({ method: head.method, ifNoneMatch: head.ifNoneMatch }, obj.meta) === 'not-modified') {
      status = 304;
    } else if (head.range !== undefined && (head.ifRange === undefined || evaluateIfRange(head.ifRange, obj.meta))) {
      const range = parseRange(head.range, size);
      if (range.kind !== 'partial') return false;
      status = 206;
      start = range.start;
      end = range.end;
    }
    if (status !== 304 && end - start + 1 > FAST_PATH_MAX_BODY) return false;
    const pairs = status === 200 ? hitHeadOf(obj, hit.now) : status === 206 ? rangeHeadOf(obj, start, end, hit.now) : hitHeadOf(obj, hit.now).slice(2);
    const close = head.close || this.shell.draining;
    const bytes = this.shell.head(obj, status, pairs, close);
    if (bytes === undefined) return false;
    const socket = this.socket;
    const joined =
      head.method !== 'GET' || close ? undefined : status === 200 ? this.shell.joinedAnswer(obj, bytes) : status === 206 ? this.shell.joinedRange(obj, bytes, start, end) : undefined;
    if (joined === undefined || !alone) this.cork();
    let sent = 0;
    if (joined !== undefined) {
      socket.write(joined);
      sent = joined.length - bytes.length;
    } else {
      socket.write(bytes);
      if (head.method === 'GET' && status === 200) {
        // A filled object may still be the fill's chunks: write them as they are, as the ordinary path does.
        const parts = obj.parts;
        if (parts === undefined) socket.write(obj.body);
        else for (const part of parts) socket.write(part);
        sent = size;
      } else if (head.method === 'GET' && status === 206) {
        // Views of the fill's chunks the range spans, as the ordinary path writes them.
        for (const piece of rangeOf(obj, start, end)) socket.write(piece);
        sent = end - start + 1;
      }
    }
    if (!this.answered) {
      // As node:http after a response: an idle keep-alive socket is closed after keepAliveTimeout (+1 s).
      this.answered = true;
      const ms = this.shell.server.keepAliveTimeout;
      if (ms) {
        this.idleMs = ms + KEEP_ALIVE_TIMEOUT_BUFFER_MS;
        this.activeAt = this.shell.sweeps;
        this.shell.watchIdle();
      }
    }
    this.shell.answered++;
    this.shell.hooks.served(hit.route, status, sent, started);
    return true;
  }

  private cork(): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
    }
  }

  private waitForDrain(): void {
    this.waiting = true;
    this.socket.pause();
    this.socket.once('drain', this.onDrain);
  }

  /** Takes the fast path's listeners and timers off the socket: node:http or the 'clientError' answer owns it now. */
  private detach(): void {
    const socket = this.socket;
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('error', this.onError);
    socket.off('close', this.onClose);
    socket.off('drain', this.onDrain);
    this.clearHeadDeadline();
    this.shell.open.delete(this);
  }

  /**
   * Answers as node:http answers a request its parser refuses or a head that timed out: through the server's
   * 'clientError' listeners (the node's own 400/408), else node:http's default answer, then closes.
   */
  private clientError(code: string, message: string): void {
    this.detach();
    const socket = this.socket;
    socket.on('error', noop);
    const err = Object.assign(new Error(message), { code });
    if (!this.shell.server.emit('clientError', err, socket)) {
      if (socket.writable) socket.write(code === 'ERR_HTTP_REQUEST_TIMEOUT' ? REQUEST_TIMEOUT : BAD_REQUEST);
      socket.destroy(err);
    }
  }

  /** Gives the socket, and the bytes not answered yet, to node:http for the rest of the connection. */
  private handOver(rest: Buffer): void {
    const socket = this.socket;
    this.detach();
    // Paused, the unshifted bytes wait in the socket's buffer until node:http's listeners are in place.
    socket.pause();
    if (rest.length > 0) socket.unshift(rest);
    this.shell.handToNode(socket);
    socket.resume();
  }
}
