// One GET of a JSON answer from the settler, as the gateway's readers of it (settler-rewards.ts, corroborator.ts) make
// it: bounded in size (protocol/bounded-body.ts) and in time, and any answer but a 200 with JSON is an error naming the
// path, so a settler that is down, slow or lying yields a clear message, never a hang.
import { request, type Dispatcher } from 'undici';
import { readBoundedText } from '../protocol/bounded-body.ts';

const TIMEOUT_MS = 5_000;

/** The parsed JSON of the settler's 200 answer at `url`, read up to `maxBytes`; throws naming the path otherwise. */
export async function getSettlerJson(url: URL, maxBytes: number, dispatcher?: Dispatcher): Promise<unknown> {
  const res = await request(url, { method: 'GET', headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS, signal: AbortSignal.timeout(TIMEOUT_MS * 2), ...(dispatcher ? { dispatcher } : {}) });
  const text = await readBoundedText(res, maxBytes, url.pathname);
  if (res.statusCode !== 200) throw new Error(`${url.pathname}: settler answered ${res.statusCode}: ${text.slice(0, 200)}`);
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${url.pathname}: settler answer is not JSON`);
  }
}
