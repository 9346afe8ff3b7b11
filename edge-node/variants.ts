// Variants (RFC 9111 §4.1): an answer with Vary is stored under its path's key plus the request's values of the
// fields it varies on; the index says, per path, which fields its stored answers vary on. The variant part follows a
// NUL, which a decoded request path never holds (protocol/paths.ts), so no path can name another path's variant.
import { sha256Hex } from '../protocol/hash.ts';
import { variantSelector } from './cache-policy.ts';

type Forwarded = Record<string, string | string[]>;

/** The path's own key of a stored key: the key itself, or what precedes a variant's NUL. Pure. */
export function primaryKeyOf(key: string): string {
  const nul = key.indexOf('\0');
  return nul < 0 ? key : key.slice(0, nul);
}

/** The key of `primary`'s variant for a request with `forwarded` header values, when answers vary on `fields`. Pure. */
export function variantKey(primary: string, fields: readonly string[], forwarded: Forwarded): string {
  return `${primary}\0${sha256Hex(variantSelector(fields, forwarded))}`;
}

export class VariantIndex {
  private readonly fieldsOf = new Map<string, string[]>();

  /** Whether answers stored for `primary` vary (a request without its variant stored is a vary-miss). */
  has(primary: string): boolean {
    return this.fieldsOf.has(primary);
  }

  forget(primary: string): void {
    this.fieldsOf.delete(primary);
  }

  /**
   * The key of the stored answer that would serve a request for `primary`; `forwarded` (the request's forwarded
   * header values) is asked for only when the path's answers vary.
   */
  storageKeyFor(primary: string, forwarded: () => Forwarded): string {
    const fields = this.fieldsOf.get(primary);
    return fields === undefined ? primary : variantKey(primary, fields, forwarded());
  }

  /** Notes that `primary`'s stored answers vary on `fields` (none: they do not vary). */
  learn(primary: string, fields: string[]): void {
    if (fields.length === 0) this.fieldsOf.delete(primary);
    else this.fieldsOf.set(primary, fields);
  }

  /** Where to store an answer for `primary` that varies on `fields` (none: the path's own key), noting the fields. */
  keyForAnswer(primary: string, fields: string[], forwarded: Forwarded): string {
    this.learn(primary, fields);
    return fields.length === 0 ? primary : variantKey(primary, fields, forwarded);
  }
}
