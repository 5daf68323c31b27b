/**
 * The TranspileStore service: L2, the `module_transpile_cache` table shared by a fleet.
 *
 * Writes are optimistic (OCC): a writer passes the {@link Captured} state it read before
 * transpiling, and the write applies only if no tombstone or realm wipe landed since.
 *
 * @since 0.1.0
 */
import { Context, Effect, Stream } from "effect"
import type { ModuleKey, TranspiledModule } from "./Domain.ts"
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

/** What prune removes. */
export interface PruneOptions {
  /** Tombstones (and recorded failures) older than this many milliseconds. */
  readonly tombstonesOlderThanMillis: number
  /** Rows not read for this many milliseconds. */
  readonly unreadForMillis: number
  /**
   * A cap on the bytes of each realm's live rows (bodies and recorded failures). Over it,
   * the least recently read rows are tombstoned (never deleted, so OCC still holds) until
   * the realm fits; the tombstones go with a later prune. No cap when absent.
   */
  readonly maxBytesPerRealm?: number | undefined
}

/** What {@link TranspileStore} `preload` reads. */
export interface PreloadRequest {
  readonly realmUrl: string
  /** Only rows written under this fingerprint. */
  readonly fingerprint: string
  /**
   * Stops before the row whose body would take the total past this many bytes (UTF-8, as L1
   * counts them). Rows are taken most recently read first.
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

/** Rows per preload read, by default. */
export const defaultPreloadPageSize = 500

/** L2. */
export class TranspileStore extends Context.Service<TranspileStore, {
  /** The layer's kind, for stats and spans. */
  readonly kind: "postgres" | "pglite" | "memory" | "none"
  /** Reads a key's row and the state a later write is conditioned on. */
  readonly read: (key: ModuleKey) => Effect.Effect<StoredRow, StoreError>
  /**
   * Reads many keys' rows in one round trip: the rows `read` would give, one per key, in the
   * order of `keys` (a key given twice reads twice). Keys may span realms.
   */
  readonly readMany: (keys: ReadonlyArray<ModuleKey>) => Effect.Effect<ReadonlyArray<StoredRow>, StoreError>
  /**
   * Writes with OCC: applies only if the row's generation is still `<= captured.generation`
   * and the realm epoch is still `captured.realmEpoch`. Returns whether it applied.
   */
  readonly write: (request: WriteRequest) => Effect.Effect<boolean, StoreError>
  /** Tombstones a key (`body NULL, generation + 1`; a row is made when none exists). Returns the new generation. */
  readonly tombstone: (key: ModuleKey) => Effect.Effect<number, StoreError>
  /** Wipes a realm: tombstones its rows and bumps its epoch, so that every earlier capture fails to write. */
  readonly wipeRealm: (realmUrl: string) => Effect.Effect<void, StoreError>
  /**
   * Removes old tombstones and rows not read for a while, then applies the byte cap.
   * Returns the number of rows removed or evicted. The embedded store also checkpoints, so
   * its write-ahead log stays bounded.
   */
  readonly prune: (options: PruneOptions) => Effect.Effect<number, StoreError>
  /**
   * The realm's live module rows of one fingerprint, most recently read first, up to
   * `maxBytes` of bodies, in a few large reads (never one per row). Each row is read whole
   * by one statement. Tombstones and recorded failures are left out. Does not refresh
   * `accessed_at`.
   */
  readonly preload: (request: PreloadRequest) => Stream.Stream<PreloadedRow, StoreError>
  /**
   * The realm's live rows (modules and recorded failures, of every fingerprint) and their
   * bytes, as the byte cap counts them: for `stats` and the metrics. Optional: a store
   * without it reports none.
   */
  readonly usage?: ((realmUrl: string) => Effect.Effect<RealmUsage, StoreError>) | undefined
}>()("module-transpile-cache/TranspileStore") {}

/** What a realm holds in L2 (see `TranspileStore.usage`). */
export interface RealmUsage {
  readonly rows: number
  readonly bytes: number
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
  tombstone: () => Effect.succeed(0),
  wipeRealm: () => Effect.void,
  prune: () => Effect.succeed(0),
  preload: () => Stream.empty
})

/** The row of a key that has none, or a tombstone. */
export const absent = (captured: Captured): StoredRow => ({ _tag: "Absent", captured })
