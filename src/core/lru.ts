/**
 * A small LRU bounded by entry count and by total bytes, on a Map (which iterates in insertion
 * order: the first key is the least recently used).
 */
export class ByteLru<V extends { readonly byteLength: number }> {
  readonly #map = new Map<string, V>();
  #bytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
  ) {}

  get(key: string): V | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }

  /** Values larger than the byte bound are not kept (they would evict everything else). */
  set(key: string, value: V): void {
    const old = this.#map.get(key);
    if (old !== undefined) {
      this.#map.delete(key);
      this.#bytes -= old.byteLength;
    }
    if (value.byteLength > this.maxBytes || this.maxEntries <= 0) return;
    this.#map.set(key, value);
    this.#bytes += value.byteLength;
    for (const [k, v] of this.#map) {
      if (this.#map.size <= this.maxEntries && this.#bytes <= this.maxBytes) break;
      this.#map.delete(k);
      this.#bytes -= v.byteLength;
    }
  }

  delete(key: string): void {
    const old = this.#map.get(key);
    if (old === undefined) return;
    this.#map.delete(key);
    this.#bytes -= old.byteLength;
  }

  get size(): number {
    return this.#map.size;
  }

  get bytes(): number {
    return this.#bytes;
  }
}

/**
 * A small LRU bounded by entry count whose entries also expire: a resolved route until its DNS TTL,
 * a host's plain-text fallback for an hour, a verified secret for minutes. An expired entry is
 * dropped when it is read.
 */
export class ExpiringLru<V> {
  readonly #map = new Map<string, { value: V; expiresAt: number }>();

  constructor(private readonly maxEntries: number) {}

  /** The value while `now` is before its expiry (the entry becomes the most recently used), else undefined. */
  get(key: string, now: number): V | undefined {
    const e = this.#map.get(key);
    if (e === undefined) return undefined;
    this.#map.delete(key);
    if (e.expiresAt <= now) return undefined;
    this.#map.set(key, e);
    return e.value;
  }

  set(key: string, value: V, expiresAt: number): void {
    this.#map.delete(key);
    this.#map.set(key, { value, expiresAt });
    while (this.#map.size > this.maxEntries) this.#map.delete(this.#map.keys().next().value as string);
  }

  delete(key: string): void {
    this.#map.delete(key);
  }

  clear(): void {
    this.#map.clear();
  }

  get size(): number {
    return this.#map.size;
  }
}
