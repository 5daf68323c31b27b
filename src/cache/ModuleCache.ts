/**
 * The ModuleCache service: the facade of the read path (L1, single-flight, L2, coalescing).
 *
 * @since 0.1.0
 */
import { Cause, Clock, Config, Context, Deferred, Duration, Effect, Exit, Layer, Metric, Option, Schedule, Scope } from "effect"
import { Coordinator, type Waiter } from "../domain/Coordinator.ts"
import { type ConnectionStats, DatabaseConnections } from "../domain/DatabaseConnections.ts"
import {
  type CachedModule,
  type GetResult,
  keyString,
  lockKey,
  type ModuleKey,
  type ModuleSource,
  type Outcome,
  type ReportedOutcome,
  type TranspiledModule
} from "../domain/Domain.ts"
import { type GetError, isTranspilePoolError, type ModuleBuildError, type StoreError } from "../domain/Errors.ts"
import { refusalCounter, refusalSchedule } from "../internal/refusal.ts"
import { Invalidations } from "../domain/Invalidations.ts"
import { defaultMaxBytes, L1Cache } from "./L1Cache.ts"
import * as L2Reads from "./L2Reads.ts"
import { ModuleSources } from "../domain/ModuleSources.ts"
import * as Preload from "./Preload.ts"
import { Transpiler } from "../domain/Transpiler.ts"
import {
  type Captured,
  emptyCapture,
  isUsable,
  type StoredRow,
  TranspileStore,
  type WriteContent,
  type WriteRequest
} from "../domain/TranspileStore.ts"

/** Counters of one ModuleCache instance. */
export interface CacheStats {
  /** Babel runs in this process. */
  readonly transpiles: number
  readonly l1Hits: number
  readonly l2Hits: number
  readonly coalesced: number
  readonly fallbacks: number
  readonly errors: number
  readonly persistFailures: number
  readonly l1Bytes: number
  readonly l1Entries: number
  /** Loads running, including those that answered and are still writing L2. */
  readonly inFlight: number
  /** Entries put into L1 by preloads, their bytes, and the time the preloads took. */
  readonly preloadedEntries: number
  readonly preloadedBytes: number
  readonly preloadMillis: number
  readonly store: string
  readonly coordinator: string
  /** L2 operations the database refused a connection for ("too many clients"), each waited out. */
  readonly refusals: number
  /** This process's database connections, when it has a database. */
  readonly connections?: ConnectionStats
}

/** The transpile cache. */
export class ModuleCache extends Context.Service<ModuleCache, {
  /** The transpiled module, from the fastest layer that holds it. */
  readonly get: (key: ModuleKey) => Effect.Effect<GetResult, GetError>
  /** Drops a module here, tombstones its L2 row and tells peers. */
  readonly invalidate: (key: ModuleKey) => Effect.Effect<void>
  /** Drops a whole realm here, wipes it from L2 and tells peers. */
  readonly invalidateRealm: (realmUrl: string) => Effect.Effect<void>
  readonly stats: Effect.Effect<CacheStats>
  /**
   * Loads the realm's L2 rows of this pipeline into L1 in bulk, most recently read first, up
   * to the preload bound, checking each row's source first (see {@link Preload}). Never fails.
   */
  readonly preload: (realmUrl: string) => Effect.Effect<Preload.PreloadSummary>
  /**
   * Synchronous: the key's current L1 entry by its id (`keyString(key)`), marked as used,
   * or undefined. Not counted: a caller that answers with it calls {@link countL1Hit}.
   * Invalidations drop L1 entries synchronously, so an entry returned here is never older
   * than the last `invalidate` that returned (for the HTTP fast path; see `FastPath`).
   */
  readonly peekL1: (id: string) => CachedModule | undefined
  /** Counts an L1 hit answered outside `get` (the stats counter and the outcome metric; no span). */
  readonly countL1Hit: () => void
}>()("module-transpile-cache/ModuleCache") {}

/** Tuning of a ModuleCache. Every field has a default; see the README for the environment names. */
export interface ModuleCacheOptions {
  /** Bound on L1's total body bytes (default 64 MiB; 0 disables L1). */
  readonly l1MaxBytes?: number
  /** First delay between a waiter's re-reads of L2 (default 20 ms). */
  readonly pollInitial?: Duration.Input
  /** Largest delay between re-reads: what a lost NOTIFY costs at most (default 200 ms). */
  readonly pollMax?: Duration.Input
  /** How long a waiter waits for a winner before it transpiles itself (default 10 s). */
  readonly deadline?: Duration.Input
  /** Retries of an L2 write or tombstone before it is given up and counted (default 3). */
  readonly persistRetries?: number
  /** First delay of the persist retry schedule, which doubles (default 50 ms). */
  readonly persistRetryBase?: Duration.Input
  /**
   * On close, how long to wait for loads still running (a load answers before it writes L2),
   * so that their writes commit (default 5 s). Loads still running after that are interrupted.
   */
  readonly drainTimeout?: Duration.Input
  /** Bound on the bytes a preload puts into L1 (default: the L1 bound, which also caps it; 0 turns preloading off). */
  readonly preloadBytes?: number | undefined
  /**
   * Whether misses that arrive together read L2 in batches (one `readMany` for many keys)
   * rather than one `read` each (default false).
   */
  readonly batchL2Reads?: boolean | undefined
}

/** The defaults of {@link ModuleCacheOptions}. */
export const defaults = {
  l1MaxBytes: defaultMaxBytes,
  pollInitial: Duration.millis(20),
  pollMax: Duration.millis(200),
  deadline: Duration.seconds(10),
  persistRetries: 3,
  persistRetryBase: Duration.millis(50),
  drainTimeout: Duration.seconds(5),
  // Off: on neither SQL store did it measurably shorten a restart's load (scratchpad/bench-preload.ts).
  batchL2Reads: false
} as const

const getCounter = Metric.counter("module_cache_gets", { description: "ModuleCache.get calls by outcome" })
const outcomeCounters: Record<ReportedOutcome, Metric.Counter<number>> = {
  l1: Metric.withAttributes(getCounter, { outcome: "l1" }),
  l2: Metric.withAttributes(getCounter, { outcome: "l2" }),
  transpiled: Metric.withAttributes(getCounter, { outcome: "transpiled" }),
  coalesced: Metric.withAttributes(getCounter, { outcome: "coalesced" }),
  fallback: Metric.withAttributes(getCounter, { outcome: "fallback" }),
  error: Metric.withAttributes(getCounter, { outcome: "error" })
}
/** Babel runs. */
export const transpileCounter = Metric.counter("module_cache_transpiles", { description: "Transpiles run" })
/** L2 writes and tombstones given up after their retries. */
export const persistFailureCounter = Metric.counter("module_cache_persist_failures", {
  description: "L2 writes given up after retries"
})
const fallbackCounter = Metric.counter("module_cache_fallbacks", { description: "Local transpiles by reason" })
/** How long losers waited for a winner, in milliseconds. */
export const waitHistogram = Metric.histogram("module_cache_wait_ms", {
  description: "Time a loser waited for the winner",
  boundaries: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
})

/** Why a loser, or a caller with no usable coordinator or store, transpiled locally. */
type FallbackReason = "deadline" | "coordinator" | "store"

type Loaded = { readonly result: GetResult; readonly error?: never } | {
  readonly result?: never
  readonly error: ModuleBuildError
}

/** A load in flight in this process, joined by every concurrent get of its key. */
interface Slot {
  readonly deferred: Deferred.Deferred<GetResult, GetError>
  readonly realmUrl: string
  /** The key's lock key: peers name invalidated modules by it. */
  readonly hash: bigint
}

/** Builds a ModuleCache over the services in context. */
export const make = Effect.fnUntraced(function*(options: ModuleCacheOptions = {}) {
  const transpiler = yield* Transpiler
  const sources = yield* ModuleSources
  const store = yield* TranspileStore
  const coordinator = yield* Coordinator
  const invalidations = yield* Invalidations
  const connections = yield* DatabaseConnections
  // Loads run in a scope of their own, closed after the drain below (finalizers run in reverse).
  const scope = yield* Scope.fork(yield* Effect.scope)

  const l1MaxBytes = options.l1MaxBytes ?? defaults.l1MaxBytes
  const pollInitial = Duration.toMillis(Duration.fromInputUnsafe(options.pollInitial ?? defaults.pollInitial))
  const pollMax = Duration.toMillis(Duration.fromInputUnsafe(options.pollMax ?? defaults.pollMax))
  const deadline = Duration.toMillis(Duration.fromInputUnsafe(options.deadline ?? defaults.deadline))
  const persistSchedule = Schedule.exponential(options.persistRetryBase ?? defaults.persistRetryBase)
  const persistRetries = options.persistRetries ?? defaults.persistRetries
  const fingerprint = transpiler.fingerprint

  const l1 = new L1Cache(l1MaxBytes)
  const slots = new Map<string, Slot>()
  /** Loads running, including those that answered and are still writing L2. */
  let running = 0
  /** Completed when `running` drops to 0 while the cache closes. */
  let drained: Deferred.Deferred<void> | undefined
  /** Keys (by id) and realms whose tombstone or wipe is not committed yet: their reads bypass L2. */
  const pendingKeys = new Map<string, number>()
  const pendingRealms = new Map<string, number>()
  const preloadMaxBytes = Math.min(options.preloadBytes ?? l1MaxBytes, l1MaxBytes)
  const preloaded = { preloadedEntries: 0, preloadedBytes: 0, preloadMillis: 0 }
  const counters = {
    transpiles: 0,
    l1Hits: 0,
    l2Hits: 0,
    coalesced: 0,
    fallbacks: 0,
    errors: 0,
    persistFailures: 0,
    refusals: 0
  }

  const bump = (map: Map<string, number>, id: string, by: number) => {
    const next = (map.get(id) ?? 0) + by
    if (next === 0) map.delete(id)
    else map.set(id, next)
  }
  const whilePending = <A, E, R>(map: Map<string, number>, id: string, effect: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => bump(map, id, 1)),
      () => effect,
      () => Effect.sync(() => bump(map, id, -1))
    )

  const dropSlots = (predicate: (slot: Slot) => boolean) => {
    for (const [id, slot] of [...slots]) if (predicate(slot)) slots.delete(id)
  }

  const toCached = (key: ModuleKey, module: TranspiledModule): CachedModule => ({ ...module, key, fingerprint })

  const transpile = (source: ModuleSource) =>
    transpiler.transpile({ path: source.key.path, source: source.content }).pipe(
      Effect.ensuring(Effect.andThen(Effect.sync(() => counters.transpiles++), Metric.update(transpileCounter, 1)))
    )

  /**
   * A connection the database refused while up ("too many clients") is waited for, on a
   * bounded jittered backoff (at most `bound`), instead of counting as an outage: falling
   * back at once would transpile again exactly when a fleet grows. Each refusal is counted
   * and logged. Other errors, and a refusal that outlasts the bound, pass through.
   */
  const waitOutRefusals = <A>(operation: string, effect: Effect.Effect<A, StoreError>, bound: number) =>
    effect.pipe(
      Effect.tapError((error) =>
        error.refused === true
          ? Effect.all([
            Effect.sync(() => counters.refusals++),
            Metric.update(refusalCounter, 1),
            Effect.logWarning(`module-transpile-cache: L2 ${operation} refused a connection; waiting`, error.message)
          ], { discard: true })
          : Effect.void
      ),
      Effect.retry({ schedule: refusalSchedule(Duration.millis(Math.max(0, bound))), while: (error) => error.refused === true })
    )

  /** An L2 read, waiting out refusals for at most `bound` (default the coalesce deadline). */
  const readL2 = (key: ModuleKey, bound = deadline, read = store.read) => waitOutRefusals("read", read(key), bound)
  /** The miss read: batched with the misses that arrive together (see {@link L2Reads}), or one `read` each. */
  const readMiss = (options.batchL2Reads ?? defaults.batchL2Reads) ? L2Reads.make(store) : store.read

  /**
   * Best effort for an L2 operation: refusals waited out, then retried on the persist
   * schedule, then logged as a warning and counted. Never fails: the caller already holds
   * its bytes.
   */
  const bestEffort = <A>(operation: string, effect: Effect.Effect<A, StoreError>): Effect.Effect<void> =>
    waitOutRefusals(operation, effect, deadline).pipe(
      // A refusal already had its wait; the persist schedule is for other failures.
      Effect.retry({ schedule: persistSchedule, times: persistRetries, while: (error) => error.refused !== true }),
      Effect.asVoid,
      Effect.catch((error) =>
        Effect.all([
          Effect.logWarning(`module-transpile-cache: L2 ${operation} given up`, error.message),
          Effect.sync(() => counters.persistFailures++),
          Metric.update(persistFailureCounter, 1)
        ], { discard: true })
      )
    )

  const persist = (request: WriteRequest) =>
    bestEffort("write", store.write(request)).pipe(
      Effect.withSpan("ModuleCache.persist", { attributes: { path: request.key.path } })
    )

  /**
   * One load of a key. `deliver` hands the result to the callers (and L1) as soon as it is
   * known, so that nobody waits for the L2 write and the NOTIFY that follow it.
   */
  interface Job {
    readonly source: ModuleSource
    readonly deliver: (loaded: Loaded) => Effect.Effect<void>
  }

  /**
   * Transpiles, delivers, then persists the module or its failure under `captured` (when the
   * store could not be read, under the empty state: OCC rejects it if anything happened since).
   */
  const transpileAndPersist = Effect.fnUntraced(function*(
    job: Job,
    captured: Captured | undefined,
    outcome: "transpiled" | "fallback"
  ) {
    const { source } = job
    const exit = yield* Effect.exit(transpile(source))
    let loaded: Loaded
    let content: WriteContent
    if (exit._tag === "Success") {
      loaded = { result: { module: toCached(source.key, exit.value), outcome } }
      content = { _tag: "Module", module: exit.value }
    } else {
      const error = Cause.findErrorOption(exit.cause)
      if (error._tag === "None") return yield* Effect.failCause(exit.cause)
      // A fault of this attempt (a worker crash, a timeout, a full queue) is not the module's
      // failure: nothing is recorded, the load fails for its joiners, and the next get retries.
      if (isTranspilePoolError(error.value)) return yield* Effect.fail(error.value)
      loaded = { error: error.value }
      content = { _tag: "Failure", error: error.value }
    }
    yield* job.deliver(loaded)
    yield* persist({
      key: source.key,
      captured: captured ?? emptyCapture,
      fingerprint,
      sourceHash: source.hash,
      content
    })
    return loaded
  })

  /** What a usable L2 row gives, or undefined. */
  const fromRow = (row: StoredRow, source: ModuleSource, outcome: Outcome): Loaded | undefined => {
    if (!isUsable(row, fingerprint, source.hash)) return undefined
    if (row._tag === "Module") return { result: { module: toCached(source.key, row.module), outcome } }
    if (row._tag === "Failure") return { error: row.error }
    return undefined
  }

  const fallback = (job: Job, captured: Captured | undefined, reason: FallbackReason) =>
    Effect.andThen(
      Effect.all([
        Effect.sync(() => counters.fallbacks++),
        Metric.update(Metric.withAttributes(fallbackCounter, { reason }), 1),
        Effect.annotateCurrentSpan("fallback.reason", reason)
      ]),
      transpileAndPersist(job, captured, "fallback")
    )

  /** Holds the lock: re-reads L2, then transpiles and persists on a miss, then notifies. */
  const asWinner = Effect.fnUntraced(function*(job: Job, captured: Captured) {
    const row = yield* Effect.option(readL2(job.source.key))
    if (row._tag === "Some") {
      const hit = fromRow(row.value, job.source, "l2")
      if (hit !== undefined) return hit
    }
    const loaded = yield* transpileAndPersist(job, row._tag === "Some" ? row.value.captured : captured, "transpiled")
    yield* coordinator.notifyPopulated(job.source.key)
    return loaded
  }, (effect, job) => Effect.ensuring(effect, coordinator.unlock(job.source.key)))

  /** Waits for the winner: wake-up, poll, lock coming free, or the deadline. */
  const asLoser = Effect.fnUntraced(function*(job: Job, captured: Captured, waiter: Waiter) {
    const started = yield* Clock.currentTimeMillis
    let delay = pollInitial
    while (true) {
      const now = yield* Clock.currentTimeMillis
      const left = started + deadline - now
      if (left <= 0) return yield* fallback(job, captured, "deadline")
      yield* Effect.raceFirst(waiter.wake, Effect.sleep(Math.min(delay, left)))
      delay = Math.min(delay * 1.5, pollMax)
      const row = yield* Effect.option(readL2(job.source.key, left))
      if (row._tag === "None") return yield* fallback(job, undefined, "store")
      const hit = fromRow(row.value, job.source, "coalesced")
      if (hit !== undefined) {
        yield* Metric.update(waitHistogram, (yield* Clock.currentTimeMillis) - started)
        return hit
      }
      const won = yield* Effect.option(coordinator.tryLock(job.source.key))
      if (won._tag === "None") return yield* fallback(job, row.value.captured, "coordinator")
      if (won.value) return yield* asWinner(job, row.value.captured)
    }
  })

  const coalesce = (job: Job, captured: Captured) =>
    Effect.scoped(Effect.gen(function*() {
      const waiter = yield* coordinator.register(job.source.key)
      const won = yield* Effect.option(coordinator.tryLock(job.source.key))
      if (won._tag === "None") return yield* fallback(job, captured, "coordinator")
      return won.value ? yield* asWinner(job, captured) : yield* asLoser(job, captured, waiter)
    })).pipe(Effect.withSpan("ModuleCache.coalesce", { attributes: { coordinator: coordinator.kind } }))

  /** Steps 3 to 6 of the read path, run once per key by single-flight. */
  const load = Effect.fnUntraced(function*(key: ModuleKey, slot: Slot) {
    const hash = slot.hash
    const id = keyString(key)
    const l1Captured = l1.capture(key, hash)
    const source = yield* sources.read(key)
    let delivered = false
    const job: Job = {
      source,
      deliver: (loaded) =>
        Effect.suspend(() => {
          if (delivered) return Effect.void
          delivered = true
          // Later gets start afresh (from L1, or L2 once written) instead of joining a finished load.
          if (slots.get(id) === slot) slots.delete(id)
          if (loaded.error !== undefined) return Deferred.fail(slot.deferred, loaded.error)
          l1.fill(loaded.result.module, hash, l1Captured)
          return Deferred.succeed(slot.deferred, loaded.result)
        })
    }
    if (pendingKeys.has(id) || pendingRealms.has(key.realmUrl)) {
      // A tombstone is on its way: L2 may still hold the old row, so skip it. The write that
      // follows is conditioned on the empty state and loses against the tombstone.
      return yield* Effect.asVoid(transpileAndPersist(job, undefined, "transpiled"))
    }
    const row = yield* Effect.option(readL2(key, deadline, readMiss).pipe(Effect.withSpan("ModuleCache.readL2")))
    const loaded = row._tag === "None"
      ? yield* fallback(job, undefined, "store")
      : fromRow(row.value, source, "l2") ?? (yield* coalesce(job, row.value.captured))
    yield* job.deliver(loaded)
  })

  /** Single-flight: the first caller starts the load in the cache's scope; the others join it. */
  const loadShared = (key: ModuleKey): Effect.Effect<GetResult, GetError> =>
    Effect.suspend(() => {
      const id = keyString(key)
      const existing = slots.get(id)
      if (existing !== undefined) {
        return Effect.map(Deferred.await(existing.deferred), (result): GetResult => ({ ...result, outcome: "coalesced" }))
      }
      const slot: Slot = {
        deferred: Deferred.makeUnsafe<GetResult, GetError>(),
        realmUrl: key.realmUrl,
        hash: lockKey(key)
      }
      slots.set(id, slot)
      running++
      const work = load(key, slot).pipe(
        Effect.onExit((exit) => {
          if (--running === 0 && drained !== undefined) Deferred.doneUnsafe(drained, Exit.void)
          if (slots.get(id) === slot) slots.delete(id)
          // Completes the callers if the load ended before delivering (a read error, an interrupt).
          return exit._tag === "Failure" ? Deferred.failCause(slot.deferred, exit.cause) : Effect.void
        })
      )
      return Effect.andThen(Effect.forkIn(work, scope), Deferred.await(slot.deferred))
    })

  const report = (outcome: ReportedOutcome) =>
    Effect.andThen(Effect.annotateCurrentSpan("outcome", outcome), Metric.update(outcomeCounters[outcome], 1))

  // Data-first withSpan: its pipeable form captures a stack trace on every call (about 5 µs),
  // whatever `captureStackTrace` says.
  const get = (key: ModuleKey): Effect.Effect<GetResult, GetError> =>
    Effect.withSpan(Effect.suspend(() => {
      const module = l1.get(keyString(key))
      if (module !== undefined) {
        counters.l1Hits++
        return Effect.as(report("l1"), { module, outcome: "l1" as const })
      }
      return loadShared(key).pipe(
        Effect.tap((result) => {
          if (result.outcome === "l2") counters.l2Hits++
          else if (result.outcome === "coalesced") counters.coalesced++
          return report(result.outcome)
        }),
        Effect.tapError(() => Effect.andThen(Effect.sync(() => counters.errors++), report("error")))
      )
    }), "ModuleCache.get", { attributes: { realm: key.realmUrl, path: key.path }, captureStackTrace: false })

  const invalidate = (key: ModuleKey): Effect.Effect<void> =>
    Effect.gen(function*() {
      const id = keyString(key)
      l1.invalidateKey(key)
      slots.delete(id)
      yield* whilePending(pendingKeys, id, bestEffort("tombstone", store.tombstone(key)))
      yield* invalidations.publishKey(key)
    }).pipe(Effect.withSpan("ModuleCache.invalidate", { attributes: { realm: key.realmUrl, path: key.path } }))

  const invalidateRealm = (realmUrl: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      l1.invalidateRealm(realmUrl)
      dropSlots((slot) => slot.realmUrl === realmUrl)
      yield* whilePending(pendingRealms, realmUrl, bestEffort("realm wipe", store.wipeRealm(realmUrl)))
      yield* invalidations.publishRealm(realmUrl)
    }).pipe(Effect.withSpan("ModuleCache.invalidateRealm", { attributes: { realm: realmUrl } }))

  yield* Effect.addFinalizer(() =>
    Effect.suspend(() => {
      if (running === 0) return Effect.void
      drained ??= Deferred.makeUnsafe<void>()
      return Deferred.await(drained).pipe(Effect.timeoutOption(options.drainTimeout ?? defaults.drainTimeout))
    })
  )

  yield* invalidations.subscribe((event) =>
    Effect.sync(() => {
      switch (event._tag) {
        case "Key": {
          l1.invalidateHash(event.hash)
          dropSlots((slot) => slot.hash === event.hash)
          return
        }
        case "Realm": {
          const realmUrl = l1.realmOfHash(event.hash)
          if (realmUrl !== undefined) {
            l1.invalidateRealm(realmUrl)
            dropSlots((slot) => slot.realmUrl === realmUrl)
          }
          return
        }
        case "Flush": {
          l1.flush()
          slots.clear()
          return
        }
      }
    })
  )

  const preload = (realmUrl: string): Effect.Effect<Preload.PreloadSummary> =>
    Effect.tap(
      Preload.run({
        l1,
        store,
        sources,
        fingerprint,
        realmUrl,
        maxBytes: preloadMaxBytes,
        pendingNow: () => {
          const keys = new Set(pendingKeys.keys())
          const realms = new Set(pendingRealms.keys())
          return (key) => keys.has(keyString(key)) || realms.has(key.realmUrl)
        }
      }),
      (summary) =>
        Effect.sync(() => {
          preloaded.preloadedEntries += summary.entries
          preloaded.preloadedBytes += summary.bytes
          preloaded.preloadMillis += summary.millis
        })
    )

  // Hits answered outside `get` update the outcome metric synchronously, in this context.
  const context = yield* Effect.context<never>()
  const l1Counter = outcomeCounters.l1

  return ModuleCache.of({
    get,
    peekL1: (id) => l1.get(id),
    countL1Hit: () => {
      counters.l1Hits++
      l1Counter.updateUnsafe(1, context)
    },
    invalidate,
    invalidateRealm,
    preload,
    stats: Effect.map(connections.stats, (connected) => ({
      ...counters,
      ...preloaded,
      l1Bytes: l1.bytes,
      l1Entries: l1.size,
      inFlight: running,
      store: store.kind,
      coordinator: coordinator.kind,
      ...(connected === undefined ? {} : { connections: connected })
    }))
  })
})

/** A ModuleCache layer over the services it needs. */
export const layer = (options?: ModuleCacheOptions): Layer.Layer<
  ModuleCache,
  never,
  Transpiler | ModuleSources | TranspileStore | Coordinator | Invalidations
> => Layer.effect(ModuleCache, make(options))

/** Reads {@link ModuleCacheOptions} from the environment (see the README for the names). */
export const optionsConfig: Config.Config<ModuleCacheOptions> = Config.all({
  l1MaxBytes: Config.withDefault(Config.Int("MTC_L1_MAX_BYTES"), defaults.l1MaxBytes),
  // Left unset when absent: the store's layer may pick other defaults (behind a pooler).
  pollInitial: Config.option(Config.Duration("MTC_POLL_INITIAL")),
  pollMax: Config.option(Config.Duration("MTC_POLL_MAX")),
  deadline: Config.withDefault(Config.Duration("MTC_COALESCE_DEADLINE"), defaults.deadline),
  persistRetries: Config.withDefault(Config.Int("MTC_PERSIST_RETRIES"), defaults.persistRetries),
  persistRetryBase: Config.withDefault(Config.Duration("MTC_PERSIST_RETRY_BASE"), defaults.persistRetryBase),
  drainTimeout: Config.withDefault(Config.Duration("MTC_DRAIN_TIMEOUT"), defaults.drainTimeout),
  preloadBytes: Config.Int("MTC_L1_PRELOAD_BYTES").pipe(Config.option, Config.map(Option.getOrUndefined)),
  batchL2Reads: Config.withDefault(Config.Boolean("MTC_L2_BATCH_READS"), defaults.batchL2Reads)
}).pipe(Config.map(({ pollInitial, pollMax, ...rest }): ModuleCacheOptions => ({
  ...rest,
  ...(pollInitial._tag === "Some" ? { pollInitial: pollInitial.value } : {}),
  ...(pollMax._tag === "Some" ? { pollMax: pollMax.value } : {})
})))

/** {@link layer} with options read by {@link optionsConfig}. */
export const layerConfig = Layer.unwrap(Effect.gen(function*() {
  return layer(yield* optionsConfig)
}))
