/**
 * L2 as the read path uses it: refused connections waited out, writes and tombstones
 * retried while a retry can help, then given up (logged and counted, never failed: the
 * caller already holds its bytes).
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type { ModuleKey, VersionedKey } from "../domain/Domain.ts"
import type { StoreError } from "../domain/Errors.ts"
import type { StoredRow, TranspileStore, WriteRequest } from "../domain/TranspileStore.ts"
import { refusalSchedule } from "../internal/refusal.ts"
import type * as Batching from "../internal/batching.ts"
import type { CacheCounters } from "./CacheCounters.ts"
import * as L2Reads from "./L2Reads.ts"
import * as L2Writes from "./L2Writes.ts"

/**
 * `Effect.retry(options)`, with the retry's machinery (its schedule's driver) set up only
 * once the effect failed with an error `while` accepts: an operation that succeeds at once,
 * as nearly all do, pays for one `catch`. The first failure is replayed into the retry, so
 * the schedule, `times` and `while` see the same errors as `Effect.retry`'s.
 */
const retryFailed = (options: {
  readonly schedule: Schedule.Schedule<unknown, StoreError>
  readonly times?: number
  readonly while: (error: StoreError) => boolean
}) =>
<A>(effect: Effect.Effect<A, StoreError>): Effect.Effect<A, StoreError> =>
  Effect.catch(effect, (first) => {
    if (!options.while(first)) return Effect.fail(first)
    let replayed = false
    return Effect.retry(
      Effect.suspend(() => {
        if (replayed) return effect
        replayed = true
        return Effect.fail(first)
      }),
      options
    )
  })

/** The read path's access to `store`, counting refusals and given-up writes in `counters`. */
export const make = (
  store: TranspileStore["Service"],
  counters: CacheCounters,
  options: {
    /** The longest wait for a refused connection. */
    readonly refusalBound: Duration.Input
    /** First delay of the (jittered, doubling) retry schedule of writes and tombstones. */
    readonly retryBase: Duration.Input
    /** Retries of a write or tombstone before it is given up. */
    readonly retries: number
    /** Whether misses that arrive together read L2 with one `readMany` (see {@link L2Reads}). */
    readonly batchMisses: boolean
    /** Whether writes that land together go as one `writeMany`, when the store has it (see {@link L2Writes}). */
    readonly batchWrites: boolean
    /** Whether (and how) batched writes may wait for a quiet moment (see `internal/batching.ts`). */
    readonly holdWrites?: Batching.Hold | undefined
  }
) => {
  const readMissed = options.batchMisses ? L2Reads.make(store) : store.read
  const writeMany = store.writeMany
  const write = options.batchWrites && writeMany !== undefined
    ? L2Writes.make(writeMany, options.holdWrites === undefined ? {} : { hold: options.holdWrites, maxBatch: L2Writes.heldMaxBatch })
    : store.write
  const refusals = refusalSchedule(options.refusalBound)
  const retries = Schedule.exponential(options.retryBase).pipe(Schedule.jittered)

  /**
   * A connection the database refused while up ("too many clients") is waited for, on a
   * bounded jittered backoff, instead of counting as an outage: falling back at once would
   * transpile again exactly when a fleet grows. Each refusal is counted and logged. Other
   * errors, and a refusal that outlasts the bound, pass through.
   */
  const waitOutRefusals = <A>(operation: string, realmUrl: string, effect: Effect.Effect<A, StoreError>) =>
    effect.pipe(
      Effect.tapError((error) =>
        error.refused === true
          ? Effect.andThen(
            Effect.sync(() => counters.refused(realmUrl)),
            Effect.logWarning(`module-transpile-cache: L2 ${operation} refused a connection; waiting`, error.message)
          )
          : Effect.void
      ),
      retryFailed({ schedule: refusals, while: (error) => error.refused === true })
    )

  /**
   * Refusals waited out, then retried while retryable, then logged as a warning and counted;
   * `orElse` is the answer of one given up.
   */
  const bestEffort = <A>(
    operation: string,
    realmUrl: string,
    effect: Effect.Effect<A, StoreError>,
    orElse: A
  ): Effect.Effect<A> =>
    waitOutRefusals(operation, realmUrl, effect).pipe(
      // A refusal already had its wait; this schedule is for the other transient failures.
      retryFailed({ schedule: retries, times: options.retries, while: (error) => error.retryable && error.refused !== true }),
      Effect.catch((error) =>
        Effect.as(
          Effect.andThen(
            Effect.logWarning(`module-transpile-cache: L2 ${operation} given up`, error.message),
            Effect.sync(() => counters.persistFailed(realmUrl))
          ),
          orElse
        )
      )
    )

  /** `effect`, its time (either way) handed to `record` in seconds. */
  const timed = <A, E>(effect: Effect.Effect<A, E>, record: (seconds: number) => void): Effect.Effect<A, E> =>
    Effect.suspend(() => {
      const started = performance.now()
      return Effect.onExit(effect, () => Effect.sync(() => record((performance.now() - started) / 1000)))
    })
  const readTime = (seconds: number) => counters.l2Read(seconds)
  const writeTime = (seconds: number) => counters.l2Written(seconds)

  return {
    /** Reads a key's row, waiting out refusals. */
    read: (key: VersionedKey): Effect.Effect<StoredRow, StoreError> => timed(waitOutRefusals("read", key.realmUrl, store.read(key)), readTime),
    /** Reads the row of a key missed in L1, batched with other misses if so configured, waiting out refusals. */
    readMiss: (key: VersionedKey): Effect.Effect<StoredRow, StoreError> =>
      timed(waitOutRefusals("read", key.realmUrl, readMissed(key)), readTime),
    /** Writes a row, best effort. */
    persist: (request: WriteRequest): Effect.Effect<void> =>
      // Data-first: the pipeable withSpan captures a stack trace on every call.
      Effect.withSpan(timed(bestEffort("write", request.key.realmUrl, Effect.asVoid(write(request)), undefined), writeTime), "ModuleCache.persist", {
        attributes: { "mtc.path": request.key.path },
        captureStackTrace: false
      }),
    /**
     * Tombstones a key (see `TranspileStore.tombstone`), best effort: whether L2 changed (true
     * when it is not known, the tombstone given up).
     */
    tombstone: (key: ModuleKey, sourceHash?: string): Effect.Effect<boolean> =>
      bestEffort("tombstone", key.realmUrl, Effect.map(store.tombstone(key, sourceHash), (done) => done.changed), true),
    /** Wipes a realm, best effort. */
    wipeRealm: (realmUrl: string): Effect.Effect<void> => bestEffort("realm wipe", realmUrl, store.wipeRealm(realmUrl), undefined)
  }
}
