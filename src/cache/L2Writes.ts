/**
 * Batched L2 writes: OCC writes that land together go to the store as one
 * {@link TranspileStore} `writeMany` (one transaction: one lock statement, one multi-row
 * upsert) instead of one transaction each. Each write keeps its own OCC check (its key's
 * generation, its realm's epoch) and learns whether it applied.
 *
 * Batches form as in {@link L2Reads} (see `internal/batching.ts`): the writes of one tick,
 * and every write that arrives while the previous batch is in flight, up to 64. A failed
 * `writeMany` fails every write of its batch with its error (each is then retried on its own
 * by its caller).
 *
 * Held (`options.hold`), a batch waits for a quiet moment and takes up to {@link heldMaxBatch}
 * writes: while nobody waits for the rows, a cold load's writes run after its answers.
 *
 * @since 0.3.0
 */
import type * as Effect from "effect/Effect"
import type { StoreError } from "../domain/Errors.ts"
import type { TranspileStore, WriteRequest } from "../domain/TranspileStore.ts"
import * as Batching from "../internal/batching.ts"

/** A batching writer over `writeMany`: call it as `store.write`. */
export const make = (
  writeMany: NonNullable<TranspileStore["Service"]["writeMany"]>,
  options: Batching.BatchingOptions = {}
): (request: WriteRequest) => Effect.Effect<boolean, StoreError> => Batching.make(writeMany, options)

/**
 * Writes per batch at most when batches are held: enough that a cold load of a large realm
 * (Ember's runtime alone is about 280 modules) is written after its answers, not in the middle
 * of them. The store splits a batch into statements of bounded bytes (`SqlTranspileStore`).
 */
export const heldMaxBatch = 1024
