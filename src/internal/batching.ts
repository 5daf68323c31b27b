/**
 * Calls that arrive together run as one: a batch opens with its first call and collects the
 * calls of the same tick (or of `window`), and, while `concurrency` batches are in flight, every
 * call that arrives meanwhile; at `maxBatch` calls it runs at once. One `run` answers the whole batch,
 * one answer per call in order; a failed `run` fails every call of its batch with its error.
 * A caller interrupted before its batch runs is left out of it.
 *
 * Built on Effect's `RequestResolver` (as `cache/L2Reads.ts` is).
 *
 * @since 0.3.0
 */
import { Deferred, Duration, Effect, Exit, Request, RequestResolver } from "effect"

/** Options of {@link make}. */
export interface BatchingOptions {
  /** How long a batch collects calls at least (default 0: one scheduler yield, the calls of the same tick). */
  readonly window?: Duration.Input | undefined
  /** Calls per batch at most (default 64). */
  readonly maxBatch?: number | undefined
  /** Batches in flight at most; a batch waits for a free slot, collecting calls (default 1). */
  readonly concurrency?: number | undefined
}

interface Call<In, A, E> extends Request.Request<A, E> {
  readonly input: In
}

/** A batching caller over `run`. */
export const make = <In, A, E>(
  run: (inputs: ReadonlyArray<In>) => Effect.Effect<ReadonlyArray<A>, E>,
  options: BatchingOptions = {}
): (input: In) => Effect.Effect<A, E> => {
  const concurrency = Math.max(1, options.concurrency ?? 1)
  const call = Request.of<Call<In, A, E>>()
  let inFlight = 0
  /** Completed (and replaced) whenever a batch ends, waking the batch waiting for a slot. */
  let slotFreed = Deferred.makeUnsafe<void>()
  const free: Effect.Effect<void> = Effect.suspend(() =>
    inFlight < concurrency ? Effect.void : Effect.andThen(Deferred.await(slotFreed), free)
  )

  const window = Duration.fromInputUnsafe(options.window ?? Duration.zero)
  const delay = Effect.andThen(Duration.isZero(window) ? Effect.yieldNow : Effect.sleep(window), free)

  const runBatch = (entries: ReadonlyArray<Request.Entry<Call<In, A, E>>>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => inFlight++),
      () =>
        Effect.map(run(entries.map((entry) => entry.request.input)), (answers) =>
          entries.forEach((entry, i) => {
            // `run` answers every call; one it left out must not hang its caller.
            entry.completeUnsafe(
              i < answers.length ? Exit.succeed(answers[i] as A) : Exit.die(new Error("batching: a call got no answer"))
            )
          })),
      () =>
        Effect.sync(() => {
          inFlight--
          const freed = slotFreed
          slotFreed = Deferred.makeUnsafe<void>()
          Deferred.doneUnsafe(freed, Exit.void)
        })
    )

  const resolver = RequestResolver.make<Call<In, A, E>>(runBatch).pipe(
    RequestResolver.setDelayEffect(delay),
    RequestResolver.batchN(options.maxBatch ?? 64)
  )
  return (input) => Effect.request(call({ input }), resolver)
}
