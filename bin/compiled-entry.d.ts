// Types of compiled-entry.js (plain JavaScript: it runs before any TypeScript loader).
export function compiledEntry(entry: string, root?: string): Promise<{ url: string } | { reason: string }>;
/** Builds ENTRY into the cache now. `afterLoad` (tests): runs after each source is read, before it is compiled. */
export function build(root: string, entry: string, hooks?: { afterLoad?: (path: string) => Promise<void> | void }): Promise<void>;
