/**
 * Batched L2 writes: OCC writes that land together go to the store as one
 * {@link TranspileStore} `writeMany` (one transaction: one lock statement, one multi-row
 * upsert) instead of one transaction each. Each write keeps its own OCC check (its key's
 * generation, its realm's epoch) and learns whether it applied.
 *
 * Batches form as in {@link L2Reads}: a batch opens with its first write and collects the
 * writes of the same tick, and, while `concurrency` batches are in flight, every write that
 * arrives meanwhile; at `maxBatch` writes it runs at once. A failed `writeMany` fails every
 * write of its batch with its error (each is then retried on its own by its caller).
 *
 * @since 0.1.0
 */
import { Deferred, Effect, Exit, Request, RequestResolver } from "effect"
import type { StoreError } from "../domain/Errors.ts"
import type { TranspileStore, WriteRequest } from "../domain/TranspileStore.ts"

/** Options of {@link make}. */
export interface L2WritesOptions {
  /** Writes per batch at most (default 64). */
  readonly maxBatch?: number | undefined
  /** Batches in flight at most; a batch waits for a free slot, collecting writes (default 1). */
  readonly concurrency?: number | undefined
}

const defaults = { maxBatch: 64, concurrency: 1 } as const

interface L2Write extends Request.Request<boolean, StoreError> {
  readonly write: WriteRequest
}
const L2Write = Request.of<L2Write>()

/** A batching writer over `writeMany`: call it as `store.write`. */
export const make = (
  writeMany: NonNullable<TranspileStore["Service"]["writeMany"]>,
  options: L2WritesOptions = {}
): (request: WriteRequest) => Effect.Effect<boolean, StoreError> => {
  const concurrency = Math.max(1, options.concurrency ?? defaults.concurrency)
  let inFlight = 0
  /** Completed (and replaced) whenever a batch ends, waking the batch waiting for a slot. */
  let slotFreed = Deferred.makeUnsafe<void>()
  const free: Effect.Effect<void> = Effect.suspend(() =>
    inFlight < concurrency ? Effect.void : Effect.andThen(Deferred.await(slotFreed), free)
  )

  const runBatch = (entries: ReadonlyArray<Request.Entry<L2Write>>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => inFlight++),
      () =>
        Effect.map(writeMany(entries.map((entry) => entry.request.write)), (written) =>
          entries.forEach((entry, i) => entry.completeUnsafe(Exit.succeed(written[i] === true)))),
      () =>
        Effect.sync(() => {
          inFlight--
          const freed = slotFreed
          slotFreed = Deferred.makeUnsafe<void>()
          Deferred.doneUnsafe(freed, Exit.void)
        })
    )

  const resolver = RequestResolver.make<L2Write>(runBatch).pipe(
    RequestResolver.setDelayEffect(Effect.andThen(Effect.yieldNow, free)),
    RequestResolver.batchN(options.maxBatch ?? defaults.maxBatch)
  )
  return (write) => Effect.request(L2Write({ write }), resolver)
}
