/**
 * A map of values by id, bounded by their total bytes, with CLOCK (second-chance) eviction:
 * a hit only sets the entry's `used` bit, and eviction walks from the oldest insertion,
 * giving used entries another round. A hit is then a single map lookup, where an exact LRU
 * list would re-insert on every hit.
 *
 * Entries belong to groups (L1's are realms). One byte bound holds over every group; over it,
 * the group holding the most bytes pays (max-min fairness), by CLOCK over its own insertion
 * order. So one group's burst of new entries evicts its own older ones first, and never takes
 * another group below the burst's share. With a single group this is plain CLOCK.
 *
 * @since 0.1.0
 */

interface Entry<V> {
  readonly id: string
  readonly value: V
  readonly bytes: number
  readonly group: Group<V>
  used: boolean
}

/** A group's entries in its CLOCK order, its bytes, and its place in the heap of groups. */
interface Group<V> {
  readonly name: string
  readonly entries: Map<string, Entry<V>>
  bytes: number
  /** Index in {@link ClockMap}'s max-heap of groups by bytes. */
  index: number
  /** The CLOCK hand: a live iterator over `entries` (it sees entries moved to the back), renewed at the end. */
  hand: Iterator<Entry<V>> | undefined
}

/**
 * Values by id, bounded by their total bytes, with CLOCK eviction within the group that holds
 * the most bytes: a hit only marks its entry as used. L1 and the raw-file cache are both one of
 * these.
 */
export class ClockMap<V> {
  private readonly entries = new Map<string, Entry<V>>()
  private readonly groups = new Map<string, Group<V>>()
  /** The groups as a binary max-heap by bytes: the one that pays is at the root. */
  private readonly heap: Array<Group<V>> = []
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

  /**
   * Stores a value of `bytes` in `group` (replacing the id's, in whichever group), then evicts
   * others until the bound holds, each time from the group holding the most bytes (the
   * inserting group on a tie). False if it can never fit.
   */
  set(id: string, value: V, bytes: number, group: string = ""): boolean {
    if (this.maxBytes <= 0 || bytes > this.maxBytes) return false
    this.delete(id)
    let owner = this.groups.get(group)
    if (owner === undefined) {
      owner = { name: group, entries: new Map(), bytes: 0, index: this.heap.length, hand: undefined }
      this.groups.set(group, owner)
      this.heap.push(owner)
    }
    const entry: Entry<V> = { id, value, bytes, group: owner, used: false }
    this.entries.set(id, entry)
    owner.entries.set(id, entry)
    owner.bytes += bytes
    this.totalBytes += bytes
    this.siftUp(owner.index)
    while (this.totalBytes > this.maxBytes) {
      const victim = this.payer(owner, id)
      if (victim === undefined) break
      this.delete(this.clockVictim(victim, id))
    }
    return true
  }

  delete(id: string): void {
    const entry = this.entries.get(id)
    if (entry === undefined) return
    this.entries.delete(id)
    const group = entry.group
    group.entries.delete(id)
    group.bytes -= entry.bytes
    this.totalBytes -= entry.bytes
    if (group.entries.size === 0) this.dropGroup(group)
    else this.siftDown(group.index)
    this.onRemove(entry.value)
  }

  clear(): void {
    this.entries.clear()
    this.groups.clear()
    this.heap.length = 0
    this.totalBytes = 0
  }

  /** The ids and values, oldest insertion first (not marked as used). */
  *[Symbol.iterator](): IterableIterator<[string, V]> {
    for (const [id, entry] of this.entries) yield [id, entry.value]
  }

  /** The ids and values of one group, in its CLOCK order (not marked as used). Deleting while iterating is fine. */
  *ofGroup(group: string): IterableIterator<[string, V]> {
    const found = this.groups.get(group)
    if (found === undefined) return
    for (const [id, entry] of found.entries) yield [id, entry.value]
  }

  /** The bytes of one group's values. */
  bytesOf(group: string): number {
    return this.groups.get(group)?.bytes ?? 0
  }

  /** The number of one group's values. */
  sizeOf(group: string): number {
    return this.groups.get(group)?.entries.size ?? 0
  }

  get bytes(): number {
    return this.totalBytes
  }

  get size(): number {
    return this.entries.size
  }

  /**
   * The group that pays for going over the bound: the one holding the most bytes, the inserting
   * group on a tie. A group whose only entry is the one being inserted (`keep`) cannot pay: then
   * the biggest of the others does (a child of the heap's root).
   */
  private payer(inserting: Group<V>, keep: string): Group<V> | undefined {
    const canPay = (group: Group<V> | undefined): group is Group<V> =>
      group !== undefined && group.entries.size > (group.entries.has(keep) ? 1 : 0)
    const top = this.heap[0]
    if (top !== undefined && inserting.bytes === top.bytes && canPay(inserting)) return inserting
    if (canPay(top)) return top
    const left = this.heap[1]
    const right = this.heap[2]
    const child = left === undefined ? right : right === undefined || left.bytes >= right.bytes ? left : right
    return canPay(child) ? child : canPay(left) ? left : canPay(right) ? right : undefined
  }

  /**
   * CLOCK within a group: from the hand on, a used entry loses its mark and moves to the back
   * (where the hand meets it again); the first unused one (never `keep`) is the victim. The group
   * has one (see {@link payer}), so the walk ends within two rounds.
   */
  private clockVictim(group: Group<V>, keep: string): string {
    let skipped = false
    for (;;) {
      const hand = group.hand ?? (group.hand = group.entries.values())
      const next = hand.next()
      if (next.done === true) {
        group.hand = undefined
        continue
      }
      const entry = next.value
      if (entry.id === keep) {
        skipped = true
        continue
      }
      if (!entry.used) {
        // `keep` stayed where it was, behind the hand: the next walk starts from the oldest
        // again, so that it meets `keep` first, as a walk from the front always would.
        if (skipped) group.hand = undefined
        return entry.id
      }
      entry.used = false
      group.entries.delete(entry.id)
      group.entries.set(entry.id, entry)
    }
  }

  private dropGroup(group: Group<V>): void {
    this.groups.delete(group.name)
    const last = this.heap.pop()
    if (last === undefined || last === group) return
    this.heap[group.index] = last
    last.index = group.index
    this.siftDown(last.index)
    this.siftUp(last.index)
  }

  private swap(a: number, b: number): void {
    const heap = this.heap
    const first = heap[a]!
    const second = heap[b]!
    heap[a] = second
    heap[b] = first
    second.index = a
    first.index = b
  }

  private siftUp(at: number): void {
    const heap = this.heap
    while (at > 0) {
      const parent = (at - 1) >> 1
      if (heap[parent]!.bytes >= heap[at]!.bytes) return
      this.swap(at, parent)
      at = parent
    }
  }

  private siftDown(at: number): void {
    const heap = this.heap
    for (;;) {
      const left = 2 * at + 1
      const right = left + 1
      let largest = at
      if (left < heap.length && heap[left]!.bytes > heap[largest]!.bytes) largest = left
      if (right < heap.length && heap[right]!.bytes > heap[largest]!.bytes) largest = right
      if (largest === at) return
      this.swap(at, largest)
      at = largest
    }
  }
}
