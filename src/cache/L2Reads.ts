/**
 * Batched L2 reads: single-key reads that arrive together are read by one
 * {@link TranspileStore} `readMany` (one round trip) instead of one `read` each.
 *
 * Built on `internal/batching.ts` (Effect's `RequestResolver`). A batch opens with its first read and collects the
 * reads that follow until
 * - the `window` has passed (by default one scheduler yield: the reads of the same tick), and
 *   the store is free: fewer than `concurrency` batches are in flight, so reads that arrive
 *   while the store is busy wait for it together instead of queueing one by one; or
 * - it holds `maxBatch` reads, when it runs at once.
 *
 * A caller interrupted before its batch runs is left out of it; one interrupted while it runs
 * just stops waiting. A failed `readMany` fails every read of the batch with its error.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type { VersionedKey } from "../domain/Domain.ts"
import type { StoreError } from "../domain/Errors.ts"
import type { StoredRow, TranspileStore } from "../domain/TranspileStore.ts"
import * as Batching from "../internal/batching.ts"

/** Options of {@link make}. */
export interface L2ReadsOptions {
  /** How long a batch collects reads at least (default 0: one scheduler yield). */
  readonly window?: Duration.Input | undefined
  /** Reads per batch at most (default 100). */
  readonly maxBatch?: number | undefined
  /** Batches in flight at most; a batch waits for a free slot, collecting reads (default 1). */
  readonly concurrency?: number | undefined
}

/** A batching reader over `store`: call it as `store.read`. */
export const make = (
  store: TranspileStore["Service"],
  options: L2ReadsOptions = {}
): (key: VersionedKey) => Effect.Effect<StoredRow, StoreError> =>
  Batching.make(store.readMany, { ...options, maxBatch: options.maxBatch ?? 100 })
