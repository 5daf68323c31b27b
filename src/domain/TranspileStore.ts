/**
 * The TranspileStore service: L2, the `module_transpile_cache` table shared by a fleet.
 *
 * Writes are optimistic (OCC): a writer passes the {@link Captured} state it read before
 * transpiling, and the write applies only if no tombstone or realm wipe landed since.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { ModuleKey, TranspiledModule, VersionedKey } from "./Domain.ts"
import type { ModuleBuildError, StoreError } from "./Errors.ts"

/** The state a reader saw, on which its later write is conditioned. */
export interface Captured {
  /** The row's generation (0 when there was no row). */
  readonly generation: number
  /** The realm's epoch, bumped by every realm wipe (0 when the realm was never wiped). */
  readonly realmEpoch: number
}

/** A row of L2 as read. */
export type StoredRow =
  | {
    readonly _tag: "Module"
    readonly captured: Captured
    readonly fingerprint: string
    readonly sourceHash: string
    readonly module: TranspiledModule
  }
  | {
    readonly _tag: "Failure"
    readonly captured: Captured
    readonly fingerprint: string
    readonly sourceHash: string
    readonly error: ModuleBuildError
  }
  | {
    /** No row, or a tombstone. */
    readonly _tag: "Absent"
    readonly captured: Captured
  }

/** What a writer stores: the transpiled module, or the failure of this generation. */
export type WriteContent =
  | { readonly _tag: "Module"; readonly module: TranspiledModule }
  | { readonly _tag: "Failure"; readonly error: ModuleBuildError }

/** One OCC write. */
export interface WriteRequest {
  readonly key: ModuleKey
  readonly captured: Captured
  readonly fingerprint: string
  readonly sourceHash: string
  readonly content: WriteContent
}

/** What a {@link TranspileStore} `tombstone` did. */
export interface Tombstoned {
  /** The key's generation after it. */
  readonly generation: number
  /** Whether any row changed (false: every row already satisfied the named source). */
  readonly changed: boolean
}

/** What prune removes. */
export interface PruneOptions {
  /** Tombstones (and recorded failures) older than this many milliseconds. */
  readonly tombstonesOlderThanMillis: number
  /** Rows not read for this many milliseconds. */
  readonly unreadForMillis: number
  /**
   * A cap on the bytes of each realm's live rows (bodies with their compressed forms and source
   * maps, and recorded failures), every version
   * counted. Over it, the least recently read rows (an old version's first, once nobody reads it) are tombstoned (never deleted, so OCC still holds) until
   * the realm fits; the tombstones go with a later prune. No cap when absent.
   */
  readonly maxBytesPerRealm?: number | undefined
}

/** What {@link TranspileStore} `preload` reads. */
export interface PreloadRequest {
  /** The realms whose rows are read, under one byte bound (none: nothing is read). */
  readonly realmUrls: ReadonlyArray<string>
  /** Only rows written under this fingerprint. */
  readonly fingerprint: string
  /**
   * Stops before the row whose bytes would take the total past this many (its body, compressed
   * forms and source map: `moduleBytes`, as L1 counts them), one bound over every realm. Rows are taken most recently read first across
   * the realms (then by realm URL and path, on a tie).
   */
  readonly maxBytes: number
  /** Rows per read (default {@link defaultPreloadPageSize}). */
  readonly pageSize?: number | undefined
}

/** A live module row, as `preload` reads it (its `module.sourceHash` is the row's source hash). */
export interface PreloadedRow {
  readonly key: ModuleKey
  readonly module: TranspiledModule
}

/** The live rows of one fingerprint in a realm, as `versions` reports them. */
export interface StoredVersion {
  readonly fingerprint: string
  /** Live rows: modules and recorded failures. */
  readonly rows: number
  /** Their bytes (bodies with their compressed forms and maps, and encoded failures), as the byte cap counts them. */
  readonly bytes: number
  /** When a row of this version was last read or written (ISO 8601), as finely as reads refresh it. */
  readonly lastReadAt: string
}

/** Rows per preload read, by default. */
export const defaultPreloadPageSize = 500

/** L2. */
export class TranspileStore extends Context.Service<TranspileStore, {
  /** The layer's kind, for stats and spans. */
  readonly kind: "postgres" | "pglite" | "memory" | "none"
  /**
   * Reads the row of one version of a key (the key's row of that fingerprint), and the state a
   * later write is conditioned on: the key's generation, over the rows of every version.
   */
  readonly read: (key: VersionedKey) => Effect.Effect<StoredRow, StoreError>
  /**
   * Reads many keys' rows in one round trip: the rows `read` would give, one per key, in the
   * order of `keys` (a key given twice reads twice). Keys may span realms and fingerprints.
   */
  readonly readMany: (keys: ReadonlyArray<VersionedKey>) => Effect.Effect<ReadonlyArray<StoredRow>, StoreError>
  /**
   * Writes the row of the request's fingerprint with OCC: applies only if the realm epoch is
   * still `captured.realmEpoch` and every row of the key (of any version) with a generation
   * above `captured.generation` names the request's source: it holds that source, or is a
   * tombstone awaiting it (a module version is a pure function of its source and fingerprint,
   * so such a write is the one the tombstone waits for). A tombstone that names no source, or
   * another, defeats it. The row takes the key's generation (at least the captured one).
   * Returns whether it applied. Never touches another fingerprint's row.
   */
  readonly write: (request: WriteRequest) => Effect.Effect<boolean, StoreError>
  /**
   * Writes many rows at once, each exactly as `write` would (its own OCC check against
   * its key's generation and its realm's epoch), in fewer statements: whether each applied,
   * in the order of `requests`. Optional: a store without it is written one `write` at a time.
   */
  readonly writeMany?: (requests: ReadonlyArray<WriteRequest>) => Effect.Effect<ReadonlyArray<boolean>, StoreError>
  /**
   * Tombstones a key in every version: each of its rows becomes `body NULL` at the key's next
   * generation (a row is made when none exists), so that a write of any version captured
   * before fails.
   *
   * With `sourceHash` (the source that now stands, as an edit's invalidation names it), rows
   * that hold that source, or are tombstones awaiting it, are left as they are: they already
   * satisfy the edit. The others become tombstones awaiting it, which a write of that source
   * may still fill (see `write`). Without it, every row goes.
   */
  readonly tombstone: (key: ModuleKey, sourceHash?: string) => Effect.Effect<Tombstoned, StoreError>
  /** Wipes a realm (every version): tombstones its rows and bumps its epoch, so that every earlier capture fails to write. */
  readonly wipeRealm: (realmUrl: string) => Effect.Effect<void, StoreError>
  /**
   * Removes old tombstones and rows not read for a while, then applies the byte cap.
   * Returns the number of rows removed or evicted. The embedded store also checkpoints, so
   * its write-ahead log stays bounded.
   */
  readonly prune: (options: PruneOptions) => Effect.Effect<number, StoreError>
  /**
   * The realms' live module rows of one fingerprint, most recently read first across the
   * realms, up to `maxBytes` of bodies in all, in a few large reads (never one per row). Each row is read whole
   * by one statement. Tombstones and recorded failures are left out. Does not refresh
   * `accessed_at`.
   */
  readonly preload: (request: PreloadRequest) => Stream.Stream<PreloadedRow, StoreError>
  /**
   * The versions present in L2 for a realm: per fingerprint, its live rows, their bytes and
   * when one was last read. Most recently read first.
   */
  readonly versions: (realmUrl: string) => Effect.Effect<ReadonlyArray<StoredVersion>, StoreError>
  /**
   * A Postgres store's row catalog for solo mode (see `store/RowCatalog.ts`): while this
   * process is the only fleet session, no peer writes rows, so a read of an absent row is
   * answered from memory. `enter` loads the catalog (the process just went solo); `leave`
   * turns it off at once (a peer joins, the session is lost). Absent: no catalog.
   */
  readonly soloCatalog?: SoloCatalog | undefined
}>()("module-transpile-cache/TranspileStore") {}

/** See `TranspileStore.soloCatalog`. */
export interface SoloCatalog {
  /** Loads the catalog and turns it on, unless `leave` was called meanwhile. */
  readonly enter: Effect.Effect<void>
  /** Turns the catalog off, at once. */
  readonly leave: () => void
}

/** Whether a row may be served for the given fingerprint and current source hash. */
export const isUsable = (row: StoredRow, fingerprint: string, sourceHash: string): boolean =>
  row._tag !== "Absent" && row.fingerprint === fingerprint && row.sourceHash === sourceHash

/** The state of a key that has no row in a realm never wiped. */
export const emptyCapture: Captured = { generation: 0, realmEpoch: 0 }

/** A store that keeps nothing: every read is a miss and every write is dropped (L1 only). */
export const none: TranspileStore["Service"] = TranspileStore.of({
  kind: "none",
  read: () => Effect.succeed(absent(emptyCapture)),
  readMany: (keys) => Effect.succeed(keys.map(() => absent(emptyCapture))),
  write: () => Effect.succeed(false),
  tombstone: () => Effect.succeed({ generation: 0, changed: true }),
  wipeRealm: () => Effect.void,
  prune: () => Effect.succeed(0),
  preload: () => Stream.empty,
  versions: () => Effect.succeed([])
})

/** The row of a key that has none, or a tombstone. */
export const absent = (captured: Captured): StoredRow => ({ _tag: "Absent", captured })
