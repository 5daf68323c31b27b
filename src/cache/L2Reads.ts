/**
 * Batched L2 reads: single-key reads that arrive together are read by one
 * {@link TranspileStore} `readMany` (one round trip) instead of one `read` each.
 *
 * Built on Effect's `RequestResolver`. A batch opens with its first read and collects the
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
import { Deferred, Duration, Effect, Exit, Request, RequestResolver } from "effect"
import type { VersionedKey } from "../domain/Domain.ts"
import type { StoreError } from "../domain/Errors.ts"
import type { StoredRow, TranspileStore } from "../domain/TranspileStore.ts"

/** Options of {@link make}. */
export interface L2ReadsOptions {
  /** How long a batch collects reads at least (default 0: one scheduler yield). */
  readonly window?: Duration.Input | undefined
  /** Reads per batch at most (default 100). */
  readonly maxBatch?: number | undefined
  /** Batches in flight at most; a batch waits for a free slot, collecting reads (default 1). */
  readonly concurrency?: number | undefined
}

/** The defaults of {@link L2ReadsOptions}. */
const defaults = { window: Duration.zero, maxBatch: 100, concurrency: 1 } as const

interface L2Read extends Request.Request<StoredRow, StoreError> {
  readonly key: VersionedKey
}
const L2Read = Request.of<L2Read>()

/** A batching reader over `store`: call it as `store.read`. */
export const make = (
  store: TranspileStore["Service"],
  options: L2ReadsOptions = {}
): (key: VersionedKey) => Effect.Effect<StoredRow, StoreError> => {
  const window = Duration.fromInputUnsafe(options.window ?? defaults.window)
  const concurrency = Math.max(1, options.concurrency ?? defaults.concurrency)
  let inFlight = 0
  /** Completed (and replaced) whenever a batch ends, waking the batch waiting for a slot. */
  let slotFreed = Deferred.makeUnsafe<void>()
  const free: Effect.Effect<void> = Effect.suspend(() =>
    inFlight < concurrency ? Effect.void : Effect.andThen(Deferred.await(slotFreed), free)
  )
  const delay = Effect.andThen(Duration.isZero(window) ? Effect.yieldNow : Effect.sleep(window), free)

  const runBatch = (entries: ReadonlyArray<Request.Entry<L2Read>>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => inFlight++),
      () =>
        Effect.map(store.readMany(entries.map((entry) => entry.request.key)), (rows) =>
          entries.forEach((entry, i) => {
            const row = rows[i]
            if (row !== undefined) entry.completeUnsafe(Exit.succeed(row))
          })),
      () =>
        Effect.sync(() => {
          inFlight--
          const freed = slotFreed
          slotFreed = Deferred.makeUnsafe<void>()
          Deferred.doneUnsafe(freed, Exit.void)
        })
    )

  const resolver = RequestResolver.make<L2Read>(runBatch).pipe(
    RequestResolver.setDelayEffect(delay),
    RequestResolver.batchN(options.maxBatch ?? defaults.maxBatch)
  )
  return (key) => Effect.request(L2Read({ key }), resolver)
}
