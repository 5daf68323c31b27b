/**
 * The plain byte-bounded CLOCK map as it was before `src/internal/ClockMap.ts` had groups: the
 * reference that test/ClockMap.test.ts checks a single group against, and the baseline of
 * scratchpad/bench-clockmap.ts.
 */
export class PlainClock<V> {
  readonly entries = new Map<string, { value: V; bytes: number; used: boolean }>()
  total = 0
  readonly maxBytes: number
  /** Told the id of each entry removed (evicted, replaced or deleted). */
  readonly onRemove: ((id: string) => void) | undefined
  constructor(maxBytes: number, onRemove?: (id: string) => void) {
    this.maxBytes = maxBytes
    this.onRemove = onRemove
  }
  get(id: string): V | undefined {
    const entry = this.entries.get(id)
    if (entry !== undefined) entry.used = true
    return entry?.value
  }
  set(id: string, value: V, bytes: number): boolean {
    if (this.maxBytes <= 0 || bytes > this.maxBytes) return false
    this.delete(id)
    this.entries.set(id, { value, bytes, used: false })
    this.total += bytes
    while (this.total > this.maxBytes) {
      for (const [other, entry] of this.entries) {
        if (this.total <= this.maxBytes) return true
        if (other === id) continue
        if (entry.used) {
          entry.used = false
          this.entries.delete(other)
          this.entries.set(other, entry)
        } else {
          this.delete(other)
        }
      }
    }
    return true
  }
  delete(id: string): void {
    const entry = this.entries.get(id)
    if (entry === undefined) return
    this.entries.delete(id)
    this.total -= entry.bytes
    this.onRemove?.(id)
  }
}
