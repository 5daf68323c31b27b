/**
 * L1: the in-process map of transpiled modules, bounded by bytes with least-recently-used
 * eviction that is fair between realms (over the bound, the realm holding the most bytes
 * pays, see {@link ClockMap}), and guarded by per-key and per-realm generations so that a
 * fill that raced an invalidation is dropped.
 *
 * Recency is kept the CLOCK (second-chance) way: a hit only sets the entry's `used` bit, and
 * eviction walks from the oldest insertion, giving used entries another round. A hit is
 * then a single map lookup, where an exact LRU list would re-insert on every hit.
 *
 * An edit's invalidation names the source that now stands: an entry of that source stays.
 *
 * @since 0.1.0
 */
import { type CachedModule, keyString, keyHash, moduleBytes, type ModuleKey, realmHash } from "../domain/Domain.ts"
import { ClockMap } from "../internal/ClockMap.ts"

/** The default bound on L1's total bytes: 64 MiB. */
export const defaultMaxBytes = 64 * 1024 * 1024

/** The generations a loader captured before it started; its fill counts only if they did not move. */
export interface L1Capture {
  readonly key: number
  readonly realm: number
  readonly flush: number
}

/**
 * The state of every generation at one moment (see {@link L1Cache.snapshot}): a bulk loader
 * that does not know its keys yet takes one before it reads, and fills only keys that no
 * invalidation touched since.
 */
export interface L1Snapshot {
  readonly counter: number
  readonly flush: number
}

interface Entry {
  readonly module: CachedModule
  readonly hash: bigint
}

/** The L1 store. Synchronous: every method is a few map operations. */
export class L1Cache {
  /** Lock-key hash to the ids of the entries with that hash (peers invalidate by hash). */
  private readonly byHash = new Map<bigint, Set<string>>()
  private readonly entries: ClockMap<Entry>
  private readonly keyGenerations = new Map<bigint, number>()
  private readonly realmGenerations = new Map<string, number>()
  private readonly realmsByHash = new Map<bigint, string>()
  private readonly realms = new Set<string>()
  private flushGeneration = 0
  private counter = 0

  constructor(maxBytes: number = defaultMaxBytes) {
    this.entries = new ClockMap<Entry>(maxBytes, (entry) => {
      const ids = this.byHash.get(entry.hash)
      ids?.delete(keyString(entry.module.key))
      if (ids?.size === 0) this.byHash.delete(entry.hash)
    })
  }

  /** The live entry of a key, marked as used. */
  get(id: string): CachedModule | undefined {
    return this.entries.get(id)?.module
  }

  capture(key: ModuleKey, hash: bigint): L1Capture {
    this.registerRealm(key.realmUrl)
    return {
      key: this.keyGenerations.get(hash) ?? 0,
      realm: this.realmGenerations.get(key.realmUrl) ?? 0,
      flush: this.flushGeneration
    }
  }

  /** Whether nothing invalidated the key since `capture`. */
  isCurrent(key: ModuleKey, hash: bigint, captured: L1Capture): boolean {
    return captured.key === (this.keyGenerations.get(hash) ?? 0) &&
      captured.realm === (this.realmGenerations.get(key.realmUrl) ?? 0) &&
      captured.flush === this.flushGeneration
  }

  /** The generations now, for {@link fillSince}. */
  snapshot(): L1Snapshot {
    return { counter: this.counter, flush: this.flushGeneration }
  }

  /**
   * Stores a module if neither its key nor its realm was invalidated, and L1 was not
   * flushed, since `snapshot` (every invalidation takes a generation above the snapshot's
   * counter). Returns whether it was stored.
   */
  fillSince(module: CachedModule, hash: bigint, snapshot: L1Snapshot): boolean {
    const captured = this.capture(module.key, hash)
    if (captured.key > snapshot.counter || captured.realm > snapshot.counter || captured.flush !== snapshot.flush) {
      return false
    }
    return this.fill(module, hash, captured)
  }

  /** Registers a realm, so that a peer's invalidation of it (by hash) reaches this L1. */
  registerRealm(realmUrl: string): void {
    // Hashed once per realm: every load registers its realm.
    if (this.realms.has(realmUrl)) return
    this.realms.add(realmUrl)
    this.realmsByHash.set(realmHash(realmUrl), realmUrl)
  }

  /** Stores a module if nothing invalidated it since `captured`. Returns whether it was stored. */
  fill(module: CachedModule, hash: bigint, captured: L1Capture): boolean {
    if (!this.isCurrent(module.key, hash, captured)) return false
    const id = keyString(module.key)
    if (!this.entries.set(id, { module, hash }, moduleBytes(module), module.key.realmUrl)) return false
    let ids = this.byHash.get(hash)
    if (ids === undefined) this.byHash.set(hash, ids = new Set())
    ids.add(id)
    return true
  }

  /**
   * Bumps the key's generation and drops its entries (every key sharing its hash), but an
   * entry of `sourceHash` when one is named (an edit's invalidation: that entry is the edit's).
   */
  invalidateHash(hash: bigint, sourceHash?: string): void {
    this.keyGenerations.set(hash, ++this.counter)
    const ids = this.byHash.get(hash)
    if (ids === undefined) return
    for (const id of [...ids]) {
      if (sourceHash === undefined || this.entries.get(id)?.module.sourceHash !== sourceHash) this.entries.delete(id)
    }
  }

  /** {@link invalidateHash} of a key. */
  invalidateKey(key: ModuleKey, sourceHash?: string): void {
    this.invalidateHash(keyHash(key), sourceHash)
  }

  /** Bumps the realm's generation and drops its entries. */
  invalidateRealm(realmUrl: string): void {
    this.realmGenerations.set(realmUrl, ++this.counter)
    for (const [id] of this.entries.ofGroup(realmUrl)) this.entries.delete(id)
  }

  /**
   * Drops a realm that is no longer served: its entries go (fills that were running are
   * refused, as after {@link invalidateRealm}), and so does its registration, so that a
   * peer's wipe of it is no longer looked up here. Nothing else is told.
   */
  forgetRealm(realmUrl: string): void {
    this.invalidateRealm(realmUrl)
    if (this.realms.delete(realmUrl)) this.realmsByHash.delete(realmHash(realmUrl))
  }

  /** The bytes of a realm's entries. */
  bytesOf(realmUrl: string): number {
    return this.entries.bytesOf(realmUrl)
  }

  /** The number of a realm's entries. */
  sizeOf(realmUrl: string): number {
    return this.entries.sizeOf(realmUrl)
  }

  /** The realm URL whose realm hash is `hash`, if this process ever loaded one of its modules. */
  realmOfHash(hash: bigint): string | undefined {
    return this.realmsByHash.get(hash)
  }

  /** Drops everything; fills captured before this are refused. */
  flush(): void {
    this.flushGeneration++
    this.entries.clear()
    this.byHash.clear()
  }

  get bytes(): number {
    return this.entries.bytes
  }

  get size(): number {
    return this.entries.size
  }

  get maxBytes(): number {
    return this.entries.maxBytes
  }
}
