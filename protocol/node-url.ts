// What a node may announce as its URL: scheme, host and port, nothing else. A path, query, user-info or fragment
// would let a registrant aim the gateway's requests (and clients' redirects) at any resource on a host; with only
// an origin, every request the gateway makes to a node is one of its own fixed paths (/shard/…, the identity route).

export type NodeUrlCheck = { ok: true; url: string; protocol: 'http:' | 'https:'; hostname: string; port: number } | { ok: false; reason: string };

const HINT = 'a node URL is scheme://host[:port] only, e.g. https://node.example.org:8443';

/** Parses and normalises an announced node URL to its origin (lowercase host, default port dropped). Pure. */
export function parseNodeUrl(raw: string): NodeUrlCheck {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 2048) return { ok: false, reason: `url is empty or too long; ${HINT}` };
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return { ok: false, reason: `url "${raw.slice(0, 100)}" does not parse; ${HINT}` };
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return { ok: false, reason: `url scheme ${u.protocol} is not http or https; ${HINT}` };
  if (u.username || u.password || raw.includes('@')) return { ok: false, reason: `url carries user-info; ${HINT}` };
  if (u.pathname !== '/' && u.pathname !== '') return { ok: false, reason: `url has a path (${u.pathname.slice(0, 60)}); ${HINT}` };
  if (u.search !== '' || raw.includes('?')) return { ok: false, reason: `url has a query; ${HINT}` };
  if (u.hash !== '' || raw.includes('#')) return { ok: false, reason: `url has a fragment; ${HINT}` };
  const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
  return { ok: true, url: u.origin, protocol: u.protocol, hostname: u.hostname.replace(/^\[|\]$/g, ''), port };
}
