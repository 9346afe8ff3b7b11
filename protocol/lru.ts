// A least-recently-used index bounded by total bytes rather than by entry count. Pure (no I/O): the
// node's disk and memory tiers use it to decide *what* to evict, and then delete the victims themselves;
// smaller caches (verified tickets, chunk lists) keep their values in it. In protocol/ so any part can.
//
// Layout: a Map from key to node for O(1) lookup, plus an intrusive doubly linked list through the
// nodes for recency (head = oldest, tail = newest). A Map alone can express recency (delete + re-set
// moves a key to the end), but every touch then churns the Map's hash table; relinking two pointers
// allocates nothing, which matters on a lookup path that runs tens of thousands of times a second.

/** An entry as the index sees it. Evicted and deleted entries are handed back in this shape. */
export interface LruEntry<V, K = string> {
  readonly key: K;
  readonly value: V;
  readonly size: number;
}

/** The outcome of `set`. A refused entry (larger than the whole budget) leaves the index untouched. */
export type LruSetResult<V, K = string> =
  | { readonly stored: true; readonly evicted: LruEntry<V, K>[] }
  | { readonly stored: false; readonly reason: 'too-large'; readonly evicted: LruEntry<V, K>[] };

class LruNode<K, V> implements LruEntry<V, K> {
  prev: LruNode<K, V> | undefined = undefined;
  next: LruNode<K, V> | undefined = undefined;
  constructor(
    readonly key: K,
    public value: V,
    public size: number,
  ) {}
}

function checkSize(size: number, what: string): void {
  if (!Number.isFinite(size) || size < 0) throw new RangeError(`${what} must be a finite number >= 0, got ${size}`);
}

export class ByteLru<V, K = string> {
  private readonly nodes = new Map<K, LruNode<K, V>>();
  private oldestNode: LruNode<K, V> | undefined = undefined;
  private newestNode: LruNode<K, V> | undefined = undefined;
  private used = 0;
  private budget: number;

  constructor(maxBytes: number) {
    checkSize(maxBytes, 'maxBytes');
    this.budget = maxBytes;
  }

  get maxBytes(): number {
    return this.budget;
  }

  /** Sum of the sizes of all entries. Never exceeds `maxBytes` after a `set` or `setMaxBytes` returns. */
  get usedBytes(): number {
    return this.used;
  }

  /** Number of entries. */
  get size(): number {
    return this.nodes.size;
  }

  has(key: K): boolean {
    return this.nodes.has(key);
  }

  /** Looks up and marks the entry most recently used. */
  get(key: K): V | undefined {
    const node = this.nodes.get(key);
    if (node === undefined) return undefined;
    if (node !== this.newestNode) {
      this.unlink(node);
      this.append(node);
    }
    return node.value;
  }

  /** Looks up without changing recency (for diagnostics, verification, metrics). */
  peek(key: K): V | undefined {
    return this.nodes.get(key)?.value;
  }

  /** The size recorded for `key`, without changing recency. */
  sizeOf(key: K): number | undefined {
    return this.nodes.get(key)?.size;
  }

  /**
   * Inserts or replaces `key` as the most recently used entry, then evicts the oldest other entries
   * until the total fits. An entry larger than `maxBytes` is refused: storing it would mean evicting
   * everything for an object that still does not fit, so the caller must serve it uncached instead.
   * A refused `set` of an existing key leaves the old entry in place.
   */
  set(key: K, value: V, size: number): LruSetResult<V, K> {
    checkSize(size, 'size');
    if (size > this.budget) return { stored: false, reason: 'too-large', evicted: [] };
    const existing = this.nodes.get(key);
    if (existing !== undefined) {
      this.used += size - existing.size;
      existing.value = value;
      existing.size = size;
      if (existing !== this.newestNode) {
        this.unlink(existing);
        this.append(existing);
      }
    } else {
      const node = new LruNode(key, value, size);
      this.nodes.set(key, node);
      this.append(node);
      this.used += size;
    }
    // The new entry is newest and fits on its own, so eviction stops before reaching it.
    return { stored: true, evicted: this.evictToFit(0) };
  }

  /** Removes `key`; returns the removed entry, if there was one. */
  delete(key: K): LruEntry<V, K> | undefined {
    const node = this.nodes.get(key);
    if (node === undefined) return undefined;
    this.nodes.delete(key);
    this.unlink(node);
    this.used -= node.size;
    return node;
  }

  /**
   * Evicts oldest entries until `extraBytes` more would fit within `maxBytes`; returns them, oldest
   * first. If `extraBytes` alone exceeds the budget the index is emptied.
   */
  evictToFit(extraBytes: number): LruEntry<V, K>[] {
    checkSize(extraBytes, 'extraBytes');
    const evicted: LruEntry<V, K>[] = [];
    while (this.oldestNode !== undefined && this.used + extraBytes > this.budget) {
      const victim = this.oldestNode;
      this.nodes.delete(victim.key);
      this.unlink(victim);
      this.used -= victim.size;
      evicted.push(victim);
    }
    return evicted;
  }

  /** Changes the budget (an operator lowered the cache size) and returns what had to go. */
  setMaxBytes(maxBytes: number): LruEntry<V, K>[] {
    checkSize(maxBytes, 'maxBytes');
    this.budget = maxBytes;
    return this.evictToFit(0);
  }

  /** The entry that would be evicted next, without changing recency. */
  oldest(): LruEntry<V, K> | undefined {
    return this.oldestNode;
  }

  /** The most recently used entry. */
  newest(): LruEntry<V, K> | undefined {
    return this.newestNode;
  }

  /** Removes everything; returns the removed entries, oldest first. */
  clear(): LruEntry<V, K>[] {
    const removed = [...this.entries()];
    this.nodes.clear();
    this.oldestNode = undefined;
    this.newestNode = undefined;
    this.used = 0;
    return removed;
  }

  /**
   * Entries from oldest to newest, without changing recency. Do not mutate the index while iterating
   * (take a copy with `[...lru.entries()]` first).
   */
  *entries(): IterableIterator<LruEntry<V, K>> {
    for (let node = this.oldestNode; node !== undefined; node = node.next) yield node;
  }

  /** Keys from oldest to newest. */
  *keys(): IterableIterator<K> {
    for (let node = this.oldestNode; node !== undefined; node = node.next) yield node.key;
  }

  [Symbol.iterator](): IterableIterator<LruEntry<V, K>> {
    return this.entries();
  }

  private append(node: LruNode<K, V>): void {
    node.prev = this.newestNode;
    node.next = undefined;
    if (this.newestNode !== undefined) this.newestNode.next = node;
    else this.oldestNode = node;
    this.newestNode = node;
  }

  private unlink(node: LruNode<K, V>): void {
    if (node.prev !== undefined) node.prev.next = node.next;
    else this.oldestNode = node.next;
    if (node.next !== undefined) node.next.prev = node.prev;
    else this.newestNode = node.prev;
    node.prev = undefined;
    node.next = undefined;
  }
}
