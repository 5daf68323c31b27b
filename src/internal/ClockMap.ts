/**
 * A map of values by id, bounded by their total bytes, with CLOCK (second-chance) eviction:
 * a hit only sets the entry's `used` bit, and eviction walks from the oldest insertion,
 * giving used entries another round. A hit is then a single map lookup, where an exact LRU
 * list would re-insert on every hit.
 *
 * @since 0.1.0
 */

/**
 * Values by id, bounded by their total bytes, with CLOCK eviction (see {@link evictClock}):
 * a hit only marks its entry as used. L1 and the raw-file cache are both one of these.
 */
export class ClockMap<V> {
  private readonly entries = new Map<string, { readonly value: V; readonly bytes: number; used: boolean }>()
  private totalBytes = 0
  private readonly onRemove: (value: V) => void

  readonly maxBytes: number

  /** `onRemove` sees every value that leaves the map (evicted, deleted or replaced), but not a `clear`. */
  constructor(maxBytes: number, onRemove: (value: V) => void = () => {}) {
    this.maxBytes = maxBytes
    this.onRemove = onRemove
  }

  /** The value of an id, marked as used. */
  get(id: string): V | undefined {
    const entry = this.entries.get(id)
    if (entry !== undefined) entry.used = true
    return entry?.value
  }

  /** Stores a value of `bytes` (replacing the id's), then evicts others until the bound holds. False if it can never fit. */
  set(id: string, value: V, bytes: number): boolean {
    if (this.maxBytes <= 0 || bytes > this.maxBytes) return false
    this.delete(id)
    this.entries.set(id, { value, bytes, used: false })
    this.totalBytes += bytes
    evictClock(this.entries, () => this.totalBytes > this.maxBytes, id, (evicted) => this.delete(evicted))
    return true
  }

  delete(id: string): void {
    const entry = this.entries.get(id)
    if (entry === undefined) return
    this.entries.delete(id)
    this.totalBytes -= entry.bytes
    this.onRemove(entry.value)
  }

  clear(): void {
    this.entries.clear()
    this.totalBytes = 0
  }

  /** The ids and values, oldest insertion first (not marked as used). */
  *[Symbol.iterator](): IterableIterator<[string, V]> {
    for (const [id, entry] of this.entries) yield [id, entry.value]
  }

  get bytes(): number {
    return this.totalBytes
  }

  get size(): number {
    return this.entries.size
  }
}

/**
 * CLOCK eviction over an insertion-ordered map, while `over()` holds: the oldest unused entry
 * is removed (through `remove`); a used one loses its mark and moves to the back. `keep` stays.
 */
const evictClock = <E extends { used: boolean }>(
  entries: Map<string, E>,
  over: () => boolean,
  keep: string,
  remove: (id: string) => void
): void => {
  while (over()) {
    for (const [id, entry] of entries) {
      if (!over()) return
      if (id === keep) continue
      if (entry.used) {
        entry.used = false
        entries.delete(id)
        entries.set(id, entry)
      } else {
        remove(id)
      }
    }
  }
}
