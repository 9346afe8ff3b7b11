// Types of compiled-entry.js (plain JavaScript: it runs before any TypeScript loader).
export function compiledEntry(entry: string, root?: string): Promise<{ url: string } | { reason: string }>;
