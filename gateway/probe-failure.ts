// What a failed request to a node is called where anyone can read it. Raw errors (ECONNREFUSED, "status 404",
// byte counts) would tell a registrant which internal ports are open; categories tell an operator what to fix.
export type FailureCategory = 'unreachable' | 'timeout' | 'bad-status' | 'wrong-bytes';

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT', 'ETIMEOUT', 'ABORT_ERR', 'TimeoutError']);

/** The category of a thrown request error: a timeout, or else the node was unreachable. Pure. */
export function failureCategory(err: unknown): FailureCategory {
  const e = err as { code?: string; name?: string } | null;
  return TIMEOUT_CODES.has(e?.code ?? '') || TIMEOUT_CODES.has(e?.name ?? '') ? 'timeout' : 'unreachable';
}
