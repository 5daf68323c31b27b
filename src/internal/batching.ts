/**
 * Calls that arrive together run as one: a batch opens with its first call and collects the
 * calls of the same tick (or of `window`), and, while `concurrency` batches are in flight, every
 * call that arrives meanwhile; at `maxBatch` calls it runs at once. One `run` answers the whole batch,
 * one answer per call in order; a failed `run` fails every call of its batch with its error.
 * A caller interrupted before its batch runs is left out of it.
 *
 * With `hold`, a batch may also wait for a quiet moment: while `hold.allowed()`, it runs only
 * once no call arrived for `hold.quiet`, or `hold.maxDelay` after it opened, or at `maxBatch`
 * calls; `allowed()` turning false ends the wait within {@link holdRecheck}.
 *
 * Built on Effect's `RequestResolver` (as `cache/L2Reads.ts` is).
 *
 * @since 0.3.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Request from "effect/Request"
import * as RequestResolver from "effect/RequestResolver"

/** Options of {@link make}. */
export interface BatchingOptions {
  /** How long a batch collects calls at least (default 0: one scheduler yield, the calls of the same tick). */
  readonly window?: Duration.Input | undefined
  /** Calls per batch at most (default 64). */
  readonly maxBatch?: number | undefined
  /** Batches in flight at most; a batch waits for a free slot, collecting calls (default 1). */
  readonly concurrency?: number | undefined
  /** Lets a batch wait for a quiet moment (see the module's comment). */
  readonly hold?: Hold | undefined
}

/** How a batch may wait for a quiet moment (see the module's comment). */
export interface Hold {
  /** A held batch runs once no call arrived for this long. */
  readonly quiet: Duration.Input
  /** A held batch runs this long after it opened at the latest. */
  readonly maxDelay: Duration.Input
  /** Whether batches may be held now; checked again at least every {@link holdRecheck}. */
  readonly allowed: () => boolean
}

/** How often a held batch checks `Hold.allowed` again. */
export const holdRecheck: Duration.Duration = Duration.millis(25)

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
  const collect = Duration.isZero(window) ? Effect.yieldNow : Effect.sleep(window)
  /** When the last call arrived (`Clock` millis), for `hold`. */
  let lastCall = 0
  const delay = Effect.andThen(options.hold === undefined ? collect : held(options.hold, collect, () => lastCall), free)

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
  if (options.hold === undefined) return (input) => Effect.request(call({ input }), resolver)
  return (input) =>
    Clock.clockWith((clock) => {
      lastCall = clock.currentTimeMillisUnsafe()
      return Effect.request(call({ input }), resolver)
    })
}

/**
 * While `hold.allowed()`, waits for a quiet moment: `hold.quiet` after `lastCall()` (`Clock`
 * millis; `Infinity` while something is still going on), or `hold.maxDelay` after it began.
 */
export const quietMoment = (hold: Hold, lastCall: () => number): Effect.Effect<void> => {
  const quiet = Duration.toMillis(Duration.fromInputUnsafe(hold.quiet))
  const maxDelay = Duration.toMillis(Duration.fromInputUnsafe(hold.maxDelay))
  const recheck = Duration.toMillis(holdRecheck)
  return Clock.clockWith((clock) => {
    const opened = clock.currentTimeMillisUnsafe()
    const wait: Effect.Effect<void> = Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe()
      const untilQuiet = quiet - (now - lastCall())
      const untilLatest = maxDelay - (now - opened)
      if (!hold.allowed() || untilQuiet <= 0 || untilLatest <= 0) return Effect.void
      return Effect.andThen(Effect.sleep(Duration.millis(Math.min(untilQuiet, untilLatest, recheck))), wait)
    })
    return wait
  })
}

/** `collect`, then {@link quietMoment} (see the module's comment). */
const held = (hold: Hold, collect: Effect.Effect<void>, lastCall: () => number): Effect.Effect<void> =>
  Effect.andThen(collect, quietMoment(hold, lastCall))
