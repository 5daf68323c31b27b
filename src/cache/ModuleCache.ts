/**
 * The ModuleCache service: the facade of the read path.
 *
 * A `get` is answered from L1, or else by one load per key shared by every concurrent get
 * ({@link SingleFlight}), which goes down the read path: L2, then coalescing with the fleet
 * (one process transpiles, the others wait for its row), then a transpile persisted to L2.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { ChangeFeed } from "./ChangeFeed.ts"
import { Coordinator, type CoordinatorError, none as noCoordinator, type Waiter } from "../domain/Coordinator.ts"
import { type ConnectionStats, DatabaseConnections } from "../domain/DatabaseConnections.ts"
import {
  type CachedModule,
  type GetResult,
  keyHash,
  keyString,
  type ModuleKey,
  type ModuleSource,
  type Outcome,
  type ReportedOutcome,
  type TranspiledModule,
  type VersionedKey,
  versionedKey
} from "../domain/Domain.ts"
import {
  type GetError,
  isTranspilePoolError,
  type ModuleBuildError,
  type StoreError,
  type TranspilerError
} from "../domain/Errors.ts"
import { type InvalidationEvent, Invalidations } from "../domain/Invalidations.ts"
import { ModuleSources } from "../domain/ModuleSources.ts"
import { Transpiler } from "../domain/Transpiler.ts"
import {
  type Captured,
  emptyCapture,
  isUsable,
  type StoredRow,
  type StoredVersion,
  TranspileStore,
  type WriteContent
} from "../domain/TranspileStore.ts"
import {
  CacheCounters,
  type Counts,
  type FallbackReason,
  InvalidationSource,
  type RealmCounts,
  type RecentError
} from "./CacheCounters.ts"
import * as Batching from "../internal/batching.ts"
import * as ContentCoding from "../internal/ContentCoding.ts"
import { defaultMaxBytes, type L1Capture, L1Cache } from "./L1Cache.ts"
import { PendingInvalidations } from "./PendingInvalidations.ts"
import * as Preload from "./Preload.ts"
import { SingleFlight } from "./SingleFlight.ts"
import * as StoreAccess from "./StoreAccess.ts"
import { pollSchedule, pollUntil } from "./WaitSchedule.ts"

/** Counters of one ModuleCache instance. */
export interface CacheStats extends Counts {
  readonly l1Bytes: number
  readonly l1Entries: number
  /** The bound on L1's bytes. */
  readonly l1MaxBytes: number
  /** Loads running, including those that answered and are still writing L2. */
  readonly inFlight: number
  /** Entries put into L1 by preloads, their bytes, and the time the preloads took. */
  readonly preloadedEntries: number
  readonly preloadedBytes: number
  readonly preloadMillis: number
  readonly store: string
  readonly coordinator: string
  /** The pipeline fingerprint of this cache: the version of the output it reads and writes. */
  readonly fingerprint: string
  /** Gets by outcome (`l1` includes hits counted by `countL1Hit`). */
  readonly gets: Readonly<Record<ReportedOutcome, number>>
  /** The last transpile errors of this instance, oldest first (bounded). */
  readonly recentErrors: ReadonlyArray<RecentError>
  /** This process's database connections, when it has a database. */
  readonly connections?: ConnectionStats
}

/** What one realm counted in a ModuleCache, and what it holds in its L1 (see `ModuleCache.countsOf`). */
export interface RealmCacheCounts extends RealmCounts {
  readonly l1Entries: number
  readonly l1Bytes: number
}

/** The transpile cache. */
export class ModuleCache extends Context.Service<ModuleCache, {
  /** The transpiled module, from the fastest layer that holds it. */
  readonly get: (key: ModuleKey) => Effect.Effect<GetResult, GetError>
  /**
   * Drops a module here, tombstones its L2 rows and tells peers.
   *
   * An edit names `sourceHash`, the hash of the source that now stands (`hashSource` of the
   * file as read after the change, or `goneSourceHash` for a file that is gone): what already
   * holds that source (an L1 entry, a load of it, an L2 row) satisfies it and stays, and when
   * L2 already held only that source, peers are not told (someone told them). So however many
   * watchers and peers report one edit, it costs one transpile in the fleet, and a save that
   * changes nothing costs none. Without `sourceHash` (the API, the CLI) the module goes
   * whatever it holds, and is transpiled again once in the fleet.
   */
  readonly invalidate: (key: ModuleKey, sourceHash?: string) => Effect.Effect<void>
  /** Drops a whole realm here, wipes it from L2 and tells peers. */
  readonly invalidateRealm: (realmUrl: string) => Effect.Effect<void>
  /** The transpiler's pipeline fingerprint: the version of every module this cache serves (see `Domain.moduleVersion`). */
  readonly fingerprint: string
  readonly stats: Effect.Effect<CacheStats>
  /**
   * Loads the realms' L2 rows of this pipeline into L1 in bulk, most recently read first
   * across all of them, up to one preload bound over all of them, checking each row's source
   * first (see {@link Preload}). Never fails.
   */
  readonly preload: (realmUrls: string | ReadonlyArray<string>) => Effect.Effect<Preload.PreloadSummary>
  /**
   * Synchronous: the key's current L1 entry by its id (`keyString(key)`), marked as used,
   * or undefined. Not counted: a caller that answers with it calls `countL1Hit`.
   * Invalidations drop L1 entries synchronously, so an entry returned here is never older
   * than the last `invalidate` that returned (for the HTTP fast path; see `FastPath`).
   */
  readonly peekL1: (id: string) => CachedModule | undefined
  /**
   * Counts an L1 hit answered outside `get` in the stats counter, and in the realm's counts
   * when it is named (no span, no metric update: the caller folds its hits into
   * `module_cache_gets_total` when metrics are read, as the HTTP fast path does).
   */
  readonly countL1Hit: (realmUrl?: string) => void
  /**
   * Synchronous: what one realm counted since it was last forgotten (the totals of `stats`,
   * for its keys only), and its entries and bytes in L1 now.
   */
  readonly countsOf: (realmUrl: string) => RealmCacheCounts
  /**
   * Drops a realm that is no longer served (unmounted) from this process only: its L1
   * entries, its loads in flight (their L1 fills are refused) and its counts. Peers are not
   * told and L2 is not touched: its rows stay for the next process that serves it.
   */
  readonly forgetRealm: (realmUrl: string) => Effect.Effect<void>
  /**
   * The realm's L2 usage, for stats and metrics: the versions (fingerprints) present in L2 for
   * it, this cache's and others' (a deploy under way, or an old version's rows not yet pruned),
   * with rows, bytes and last read, and their live rows and bytes in total; undefined when L2
   * cannot be read within 2 seconds.
   */
  readonly realmUsage: (realmUrl: string) => Effect.Effect<RealmUsage | undefined>
}>()("module-transpile-cache/ModuleCache") {}

/** What a realm holds in L2, every version counted (see `ModuleCache.realmUsage`). */
export interface RealmUsage {
  readonly rows: number
  readonly bytes: number
  readonly versions: ReadonlyArray<StoredVersion>
}

/** Tuning of a ModuleCache. Every field has a default; see docs/configuration.md for the environment names. */
export interface ModuleCacheOptions {
  /** Bound on L1's total bytes: bodies, their compressed forms and maps (default 64 MiB; 0 disables L1). */
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
   * rather than one `read` each (default false here; `ModuleCacheLive` turns it on for PGlite).
   */
  readonly batchL2Reads?: boolean | undefined
  /**
   * Whether L2 writes that land together go as one batch (one transaction with one multi-row
   * OCC upsert, each row checked on its own) when the store can (default true).
   */
  readonly batchL2Writes?: boolean | undefined
  /**
   * While no peer can be waiting for this process's rows (no fleet, or solo mode: see
   * `Coordinator.solo`), how long a batch of L2 writes may wait for a quiet moment at most, so
   * that a cold load's writes run after its answers rather than among them (default 1 s; 0
   * writes at once). What a crash loses at most; a close writes them first. Needs `batchL2Writes`.
   */
  readonly l2WriteHold?: Duration.Input | undefined
  /** A held batch of L2 writes runs once no write arrived for this long (default 50 ms). */
  readonly l2WriteQuiet?: Duration.Input | undefined
  /**
   * The content codings every module body is kept in, besides identity (default br and gzip;
   * `MTC_CONTENT_ENCODINGS`). A transpile worker makes them with the transpile; a module that
   * still lacks one (an in-process transpile, a row of an earlier release) is compressed here,
   * once per load: in a worker (`Transpiler.compress`), else on libuv's thread pool. They are
   * stored in L2 with the body. While no peer can wait for the row (held writes, see
   * `l2WriteHold`), a transpile makes only the coding its request is sent in
   * (`ContentCoding.RequestedCoding`, which the realm server provides) and the rest at the next
   * quiet moment, before the write; an L1 hit before then makes them at once.
   */
  readonly contentEncodings?: ReadonlyArray<ContentCoding.Coding> | undefined
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
  batchL2Reads: false,
  batchL2Writes: true,
  l2WriteHold: Duration.seconds(1),
  l2WriteQuiet: Duration.millis(50)
} as const

export {
  /** Babel runs. */
  transpileCounter,
  /** L2 writes and tombstones given up after their retries. */
  persistFailureCounter,
  /** How long losers waited for a winner, in seconds. */
  waitHistogram,
  /** Who invalidates (`api` by default; provide `watcher` around a file watcher's calls), for `module_cache_invalidations_total`. */
  InvalidationSource
} from "./CacheCounters.ts"

/**
 * A load in flight: its key and key hash, the source it read (once read), and the L1 state its
 * fill is conditioned on (taken again by an edit's invalidation that names the source it read).
 */
interface Flight {
  readonly key: ModuleKey
  readonly hash: bigint
  sourceHash: string | undefined
  l1Captured: L1Capture | undefined
}

/** A module's answer, or its failure (recorded in L2, shared with every waiter). */
type Loaded = Exit.Exit<GetResult, ModuleBuildError>

/**
 * Answers a load's joiners and fills L1 (once: later calls do nothing); `refill` puts a more
 * complete module of the same version in L1 afterwards (its compressed forms made later).
 */
interface Deliver {
  (loaded: Loaded): Effect.Effect<void>
  readonly refill: (loaded: Loaded) => void
}

/** What one look of a loser found. */
type Look =
  | { readonly _tag: "Answered"; readonly loaded: Loaded }
  | { readonly _tag: "Won"; readonly captured: Captured }
  | {
    readonly _tag: "Failed"
    readonly reason: "store" | "coordinator"
    readonly captured: Captured
    readonly error: StoreError | CoordinatorError
  }

/** Builds a ModuleCache over the services in context. */
export const make = Effect.fnUntraced(function*(options: ModuleCacheOptions = {}) {
  const transpiler = yield* Transpiler
  const sources = yield* ModuleSources
  const store = yield* TranspileStore
  const coordinator = yield* Coordinator
  const invalidations = yield* Invalidations
  const connections = yield* DatabaseConnections
  // The live event streams' feed, when the app has one: every invalidation made or heard is announced.
  const feed = Option.getOrUndefined(yield* Effect.serviceOption(ChangeFeed))
  const fingerprint = transpiler.fingerprint
  const l1MaxBytes = options.l1MaxBytes ?? defaults.l1MaxBytes
  const deadline = options.deadline ?? defaults.deadline
  const offered = options.contentEncodings ?? ContentCoding.codings

  const counters = new CacheCounters(yield* Effect.context<never>())
  const l1 = new L1Cache(l1MaxBytes)
  const pending = new PendingInvalidations()
  /** Set on close: held L2 writes go at once. */
  let closing = false
  const hold = Duration.fromInputUnsafe(options.l2WriteHold ?? defaults.l2WriteHold)
  const soloNow = coordinator.solo
  const l2 = StoreAccess.make(store, counters, {
    refusalBound: deadline,
    retryBase: options.persistRetryBase ?? defaults.persistRetryBase,
    retries: options.persistRetries ?? defaults.persistRetries,
    batchMisses: options.batchL2Reads ?? defaults.batchL2Reads,
    batchWrites: options.batchL2Writes ?? defaults.batchL2Writes,
    holdWrites: Duration.isZero(hold) || soloNow === undefined ? undefined : {
      maxDelay: hold,
      quiet: options.l2WriteQuiet ?? defaults.l2WriteQuiet,
      allowed: () => !closing && soloNow()
    }
  })
  const polls = pollSchedule(options.pollInitial ?? defaults.pollInitial, options.pollMax ?? defaults.pollMax)
  // Loads run in fibers of their own: drained on close (the finalizer below), then interrupted.
  const loads = yield* FiberSet.make()
  const flights = new SingleFlight<GetResult, GetError, Flight>({
    fork: (load) => FiberSet.run(loads, load, { startImmediately: false }),
    joined: (result) => ({ ...result, outcome: "coalesced" })
  })
  const preloadMaxBytes = Math.min(options.preloadBytes ?? l1MaxBytes, l1MaxBytes)
  const preloaded = { preloadedEntries: 0, preloadedBytes: 0, preloadMillis: 0 }

  /** A module's answer from what L2 records of it (a row, or a transpile's outcome). */
  const loadedOf = (key: ModuleKey, recorded: WriteContent, outcome: Outcome): Loaded =>
    recorded._tag === "Module"
      ? Exit.succeed({ module: { ...recorded.module, key, fingerprint }, outcome })
      : Exit.fail(recorded.error)

  /** What a usable L2 row gives, or undefined. */
  const fromRow = (row: StoredRow, source: ModuleSource, outcome: Outcome): Loaded | undefined =>
    row._tag !== "Absent" && isUsable(row, fingerprint, source.hash) ? loadedOf(source.key, row, outcome) : undefined

  /**
   * The module with every compressed form of `codings` (default: all offered): the same object
   * when it lacks none, else one compressed here (off the event loop). Counted when it had no
   * form before: once per version.
   */
  const completed = (
    realmUrl: string,
    module: TranspiledModule,
    codings: ReadonlyArray<ContentCoding.Coding> = offered
  ): Effect.Effect<TranspiledModule> => {
    const missing = ContentCoding.missingCodings(module, codings)
    if (missing.length === 0) return Effect.succeed(module)
    // In a transpile worker when there is one (zlib's synchronous calls), else on libuv's pool.
    const onLibuv = Effect.map(ContentCoding.withForms(module, missing), (made) => made ?? module)
    const made = transpiler.compress === undefined
      ? onLibuv
      : Effect.catch(transpiler.compress(module, missing), () => onLibuv)
    return Effect.map(made, (complete) => {
      if (module.encoded === undefined && complete !== module) counters.compressed(realmUrl)
      return complete
    })
  }

  /**
   * The forms a module in L1 still waits for ({@link withLaterForms}), by key: an L1 hit makes
   * them at once instead (once: the effect is cached), and is answered with them.
   */
  const laterForms = new Map<string, Effect.Effect<TranspiledModule>>()

  // Transpiles running in this cache, and when the last one ended (`Clock` millis): a cold
  // load's quiet moment is when none ran for `l2WriteQuiet`.
  let transpiling = 0
  let lastTranspile = 0

  /**
   * Whether a transpile makes only the coding its request is sent in now, and the others at
   * the next quiet moment (before its L2 write, held anyway): while no peer can be waiting for
   * the row (see `l2WriteHold`), so that a cold load waits for no compression it does not send.
   */
  const defersForms = (): boolean => !closing && !Duration.isZero(hold) && soloNow !== undefined && soloNow()

  /** The codings a transpile compresses with in its own run (see {@link defersForms}). */
  const codingsNow: Effect.Effect<ReadonlyArray<ContentCoding.Coding>> = Effect.map(
    Effect.service(ContentCoding.RequestedCoding),
    (requested) => requested === undefined || !defersForms() ? offered : offered.filter((coding) => coding === requested)
  )

  /** The next quiet moment, shared by every load that waits for one: one watcher looks for them all. */
  let nextQuiet: Deferred.Deferred<void> | undefined

  /**
   * Waits for a quiet moment: no transpile for `l2WriteQuiet`; at most `l2WriteHold`, and no
   * longer once a peer may wait for the rows, or the cache closes.
   */
  const quietMoment: Effect.Effect<void> = Effect.suspend(() => {
    if (nextQuiet !== undefined) return Deferred.await(nextQuiet)
    const latch = nextQuiet = Deferred.makeUnsafe<void>()
    const watch = Batching.quietMoment(
      { maxDelay: hold, quiet: options.l2WriteQuiet ?? defaults.l2WriteQuiet, allowed: defersForms },
      () => transpiling > 0 ? Infinity : lastTranspile
    ).pipe(Effect.ensuring(Effect.sync(() => {
      nextQuiet = undefined
      Deferred.doneUnsafe(latch, Effect.void)
    })))
    return Effect.andThen(FiberSet.run(loads, watch), Deferred.await(latch))
  })

  /**
   * The forms a transpile was made without ({@link defersForms}): registered in
   * {@link laterForms} before its answer goes out; then made at a quiet moment (or at once by an
   * L1 hit), the module put in L1 in its place. The same content when it lacks none.
   */
  const withLaterForms = Effect.fnUntraced(function*(
    key: ModuleKey,
    content: WriteContent,
    outcome: Outcome,
    deliver: Deliver
  ) {
    if (content._tag !== "Module" || ContentCoding.missingCodings(content.module, offered).length === 0) {
      yield* deliver(loadedOf(key, content, outcome))
      return content
    }
    const id = keyString(key)
    const make = yield* Effect.cached(Effect.map(completed(key.realmUrl, content.module), (module) => {
      deliver.refill(loadedOf(key, { _tag: "Module", module }, outcome))
      return module
    }))
    laterForms.set(id, make)
    const module = yield* deliver(loadedOf(key, content, outcome)).pipe(
      Effect.andThen(quietMoment),
      Effect.andThen(make),
      Effect.ensuring(Effect.sync(() => {
        if (laterForms.get(id) === make) laterForms.delete(id)
      }))
    )
    const complete: WriteContent = { _tag: "Module", module }
    return complete
  })

  /** {@link completed} of a loaded module (a row that lacked a form: of an earlier release, say). */
  const completeLoaded = (key: ModuleKey, loaded: Loaded): Effect.Effect<Loaded> =>
    Exit.isSuccess(loaded)
      ? Effect.map(completed(key.realmUrl, loaded.value.module), (module) =>
        module === loaded.value.module ? loaded : Exit.succeed({ ...loaded.value, module: { ...module, key, fingerprint } }))
      : Effect.succeed(loaded)

  /**
   * Transpiles: the module or its failure, as L2 records it. A fault of this attempt (a
   * worker crash, a timeout, a full queue) is not the module's failure: nothing is
   * recorded, the load fails for its joiners, and the next get retries.
   */
  const transpile = (source: ModuleSource): Effect.Effect<WriteContent, TranspilerError> =>
    Effect.flatMap(codingsNow, (now) => transpileWith(source, now))

  /** {@link transpile}, its body compressed with `now` in the same run. */
  const transpileWith = (
    source: ModuleSource,
    now: ReadonlyArray<ContentCoding.Coding>
  ): Effect.Effect<WriteContent, TranspilerError> =>
    Effect.suspend(() => {
      transpiling++
      const codings = now.length === offered.length ? undefined : now
      return transpiler.transpile({ path: source.key.path, source: source.content, codings })
    }).pipe(
      Effect.ensuring(Effect.flatMap(Clock.currentTimeMillis, (at) =>
        Effect.sync(() => {
          transpiling--
          lastTranspile = at
          counters.transpiled(source.key.realmUrl)
        }))),
      Effect.exit,
      Effect.flatMap((exit): Effect.Effect<WriteContent, TranspilerError> => {
        if (exit._tag === "Success") {
          const made = exit.value
          if (transpiler.sourceMaps === true && made.sourceMap === undefined && made.body !== "") {
            counters.unmappedModule(source.key.realmUrl)
          }
          return Effect.map(completed(source.key.realmUrl, made, now), (module) => {
            // Made with this transpile (in its worker, or just now): counted once per version.
            if (module.encoded !== undefined && module === exit.value) counters.compressed(source.key.realmUrl)
            return { _tag: "Module", module }
          })
        }
        const error = Cause.findErrorOption(exit.cause)
        if (error._tag === "None") return Effect.failCause(exit.cause)
        counters.transpileFailed(source.key.realmUrl, source.key.path, error.value)
        if (isTranspilePoolError(error.value)) return Effect.fail(error.value)
        return Effect.succeed({ _tag: "Failure", error: error.value })
      })
    )

  /**
   * Transpiles, delivers, then persists the module or its failure under `captured` (OCC:
   * the write loses against any tombstone or wipe since).
   */
  const transpileAndPersist = Effect.fnUntraced(function*(
    source: ModuleSource,
    captured: Captured,
    outcome: "transpiled" | "fallback",
    deliver: Deliver
  ) {
    const made = yield* transpile(source)
    // Delivered (answered, in L1), then with the forms it was made without, if any.
    const content = yield* withLaterForms(source.key, made, outcome, deliver)
    yield* l2.persist({ key: source.key, captured, fingerprint, sourceHash: source.hash, content })
    return loadedOf(source.key, content, outcome)
  })

  /**
   * Transpiles locally instead of coalescing. Counted, and its reason put on the span and
   * logged (with the error that caused it, if any).
   */
  const fallback = (
    source: ModuleSource,
    captured: Captured,
    reason: FallbackReason,
    error: StoreError | CoordinatorError | undefined,
    deliver: Deliver
  ) =>
    Effect.suspend(() => {
      counters.fallback(reason, source.key.realmUrl)
      return Effect.all([
        Effect.annotateCurrentSpan("mtc.fallback.reason", reason),
        Effect.logDebug(
          `module-transpile-cache: ${source.key.path}: transpiling locally (fallback: ${reason})`,
          ...(error === undefined ? [] : [error.message])
        )
      ])
    }).pipe(Effect.andThen(transpileAndPersist(source, captured, "fallback", deliver)))

  /** The key of this version of a module: what L2 reads and the fleet coalesces by. */
  const ours = (key: ModuleKey): VersionedKey => versionedKey(key, fingerprint)

  /** Takes the key's lock, if free, for the rest of the scope: whether it was taken. */
  const lock = (key: VersionedKey) =>
    Effect.acquireRelease(coordinator.tryLock(key), (won) => (won ? coordinator.unlock(key) : Effect.void))

  /**
   * Holds the lock: re-reads L2 (a peer may have written it between our read and our lock),
   * else transpiles and persists, then tells the waiters.
   */
  const asWinner = Effect.fnUntraced(function*(source: ModuleSource, captured: Captured, deliver: Deliver) {
    const row = yield* l2.read(ours(source.key)).pipe(
      Effect.catch((error) =>
        Effect.as(
          Effect.all([
            Effect.annotateCurrentSpan("mtc.store.error", error.message),
            Effect.logDebug(`module-transpile-cache: ${source.key.path}: L2 re-read failed; transpiling`, error.message)
          ]),
          undefined
        )
      )
    )
    const hit = row === undefined ? undefined : fromRow(row, source, "l2")
    if (hit !== undefined) return hit
    const loaded = yield* transpileAndPersist(source, row?.captured ?? captured, "transpiled", deliver)
    yield* coordinator.notifyPopulated(ours(source.key))
    return loaded
  })

  /** One look of a loser: L2 (the winner's row?), then the lock (did the winner give it up?). */
  const look = (source: ModuleSource): Effect.Effect<Option.Option<Look>, never, Scope.Scope> =>
    l2.read(ours(source.key)).pipe(Effect.matchEffect({
      onFailure: (error) => Effect.succeedSome<Look>({ _tag: "Failed", reason: "store", captured: emptyCapture, error }),
      onSuccess: (row) => {
        const hit = fromRow(row, source, "coalesced")
        if (hit !== undefined) return Effect.succeedSome<Look>({ _tag: "Answered", loaded: hit })
        return lock(ours(source.key)).pipe(Effect.matchEffect({
          onFailure: (error) =>
            Effect.succeedSome<Look>({ _tag: "Failed", reason: "coordinator", captured: row.captured, error }),
          onSuccess: (won) =>
            won ? Effect.succeedSome<Look>({ _tag: "Won", captured: row.captured }) : Effect.succeedNone
        }))
      }
    }))

  /**
   * Waits for the winner: a look after each poll delay (cut short by a wake-up) until one
   * answers; takes over if the lock comes free; falls back at the deadline.
   */
  const asLoser = Effect.fnUntraced(function*(source: ModuleSource, captured: Captured, waiter: Waiter, deliver: Deliver) {
    const started = yield* Clock.currentTimeMillis
    const found = yield* pollUntil(look(source), { schedule: polls, wake: waiter.wake, deadline })
    if (Option.isNone(found)) return yield* fallback(source, captured, "deadline", undefined, deliver)
    const next = found.value
    switch (next._tag) {
      case "Answered": {
        counters.waited((yield* Clock.currentTimeMillis) - started)
        return next.loaded
      }
      case "Won":
        return yield* asWinner(source, next.captured, deliver)
      case "Failed":
        return yield* fallback(source, next.captured, next.reason, next.error, deliver)
    }
  })

  const coalesceSpan = { attributes: { "mtc.coordinator": coordinator.kind }, captureStackTrace: false } as const

  /**
   * What the L1 misses of this cache found in L2 lately: an exponentially weighted share of hits
   * (each miss weighs 1/16). While most were hits (a peer transpiled them, or the preload was
   * off), a miss reads first and takes no lock for a hit; while most were misses (a cold load),
   * it takes the lock first and reads once.
   */
  const l2Hits = {
    share: 0,
    observe(hit: boolean): void {
      this.share += ((hit ? 1 : 0) - this.share) / 16
    },
    likely(): boolean {
      return this.share >= 0.5
    }
  }

  /**
   * A miss with a coordinator: the lock first, then one read of L2. A read made after the lock
   * was taken sees every row a previous holder committed before it unlocked, so the winner
   * needs no second read (read first, a peer could write and unlock between the read and the
   * lock, and the winner would have to read again). An L2 hit is answered as soon as it is
   * read; the lock, if taken, is given back after.
   */
  const lockThenRead = (source: ModuleSource, deliver: Deliver) =>
    Effect.withSpan(
      Effect.scoped(Effect.gen(function*() {
        const key = ours(source.key)
        // Registered before the try-lock, so that a winner finishing in between wakes us.
        const waiter = yield* coordinator.register(key)
        const won = yield* lock(key).pipe(Effect.match({
          onFailure: (error) => ({ _tag: "Failed" as const, error }),
          onSuccess: (taken) => ({ _tag: "Done" as const, taken })
        }))
        return yield* l2.readMiss(key).pipe(Effect.matchEffect({
          onFailure: (error) => fallback(source, emptyCapture, "store", error, deliver),
          onSuccess: (row) => {
            const hit = fromRow(row, source, "l2")
            l2Hits.observe(hit !== undefined)
            if (hit !== undefined) return Effect.as(deliver(hit), hit)
            if (won._tag === "Failed") return fallback(source, row.captured, "coordinator", won.error, deliver)
            if (!won.taken) return asLoser(source, row.captured, waiter, deliver)
            return Effect.tap(
              transpileAndPersist(source, row.captured, "transpiled", deliver),
              () => coordinator.notifyPopulated(key)
            )
          }
        }))
      })),
      "ModuleCache.coalesce",
      coalesceSpan
    )

  /**
   * A miss with a coordinator, read first: a hit costs one read and no lock. A miss then takes
   * the lock, and its winner reads again (a peer may have written and unlocked in between).
   */
  const readThenLock = (source: ModuleSource, deliver: Deliver) =>
    l2.readMiss(ours(source.key)).pipe(Effect.matchEffect({
      onFailure: (error) => fallback(source, emptyCapture, "store", error, deliver),
      onSuccess: (row) => {
        const hit = fromRow(row, source, "l2")
        l2Hits.observe(hit !== undefined)
        if (hit !== undefined) return Effect.succeed(hit)
        return Effect.withSpan(
          Effect.scoped(Effect.gen(function*() {
            // Registered before the try-lock, so that a winner finishing in between wakes us.
            const key = ours(source.key)
            const waiter = yield* coordinator.register(key)
            return yield* lock(key).pipe(Effect.matchEffect({
              onFailure: (error) => fallback(source, row.captured, "coordinator", error, deliver),
              onSuccess: (won) =>
                won ? asWinner(source, row.captured, deliver) : asLoser(source, row.captured, waiter, deliver)
            }))
          })),
          "ModuleCache.coalesce",
          coalesceSpan
        )
      }
    }))

  /**
   * The read path below L1, top to bottom: L2, then coalescing with the fleet, then a
   * transpile persisted to L2. Gives the module's answer or failure; `deliver` hands it to
   * the callers as soon as it is known, before the L2 write.
   */
  const resolve = (source: ModuleSource, deliver: Deliver): Effect.Effect<Loaded, TranspilerError> => {
    // A tombstone is on its way: L2 may still hold the old row, so skip it. The write that
    // follows is conditioned on the empty state and loses against the tombstone.
    if (pending.covers(source.key)) return transpileAndPersist(source, emptyCapture, "transpiled", deliver)
    if (coordinator !== noCoordinator) {
      // Both orders are exact; the cheaper one depends on what misses find in L2 lately.
      return l2Hits.likely() ? readThenLock(source, deliver) : lockThenRead(source, deliver)
    }
    return l2.readMiss(ours(source.key)).pipe(Effect.matchEffect({
      onFailure: (error) => fallback(source, emptyCapture, "store", error, deliver),
      onSuccess: (row) => {
        const hit = fromRow(row, source, "l2")
        // With no coordinator nobody waits and the lock is always free: the caller transpiles at
        // once, on the state its read captured. No lock orders that read after a peer's write, so
        // a second read would only narrow a race the OCC upsert settles anyway.
        return hit !== undefined
          ? Effect.succeed(hit)
          : Effect.withSpan(transpileAndPersist(source, row.captured, "transpiled", deliver), "ModuleCache.coalesce", coalesceSpan)
      }
    }))
  }

  /** One load of a key (run once at a time per key by single-flight): its source, then {@link resolve}; L1 is filled on delivery. */
  const load = (
    key: ModuleKey,
    flight: Flight,
    answer: (exit: Exit.Exit<GetResult, GetError>) => Effect.Effect<void>
  ) =>
    Effect.gen(function*() {
      const l1Captured = l1.capture(key, flight.hash)
      flight.l1Captured = l1Captured
      const source = yield* sources.read(key)
      flight.sourceHash = source.hash
      let delivered = false
      const fill = (loaded: Loaded) => {
        if (Exit.isSuccess(loaded)) l1.fill(loaded.value.module, flight.hash, flight.l1Captured ?? l1Captured)
      }
      const deliver: Deliver = Object.assign(
        (loaded: Loaded) =>
          Effect.suspend(() => {
            if (delivered) return Effect.void
            delivered = true
            fill(loaded)
            return answer(loaded)
          }),
        { refill: fill }
      )
      const loaded = yield* Effect.flatMap(resolve(source, deliver), (resolved) => completeLoaded(key, resolved))
      yield* deliver(loaded)
      return yield* loaded
    })

  const report = (outcome: ReportedOutcome, realmUrl: string) =>
    Effect.suspend(() => {
      counters.outcome(outcome, realmUrl)
      return Effect.annotateCurrentSpan("mtc.outcome", outcome)
    })

  // Data-first withSpan: its pipeable form captures a stack trace on every call (about 5 µs),
  // whatever `captureStackTrace` says.
  const get = (key: ModuleKey): Effect.Effect<GetResult, GetError> =>
    Effect.withSpan(
      Effect.suspend(() => {
        const id = keyString(key)
        const module = l1.get(id)
        if (module !== undefined) {
          const later = laterForms.size === 0 ? undefined : laterForms.get(id)
          if (later === undefined) return Effect.as(report("l1", key.realmUrl), { module, outcome: "l1" as const })
          // Its forms are still to come: made now, for this answer.
          return Effect.flatMap(later, () =>
            Effect.as(report("l1", key.realmUrl), { module: l1.get(id) ?? module, outcome: "l1" as const }))
        }
        const flight: Flight = { key, hash: keyHash(key), sourceHash: undefined, l1Captured: undefined }
        return flights.run(id, flight, (answer) => load(key, flight, answer)).pipe(
          Effect.tap((result) => report(result.outcome, key.realmUrl)),
          Effect.tapError(() => report("error", key.realmUrl))
        )
      }),
      "ModuleCache.get",
      { attributes: { "mtc.realm": key.realmUrl, "mtc.path": key.path }, captureStackTrace: false }
    )

  /**
   * Drops the key's L1 entries and loads in flight by its hash, but those of `sourceHash` when
   * one is named: later gets join a load that read that source, and its fill still counts (only
   * a load still in flight now: one an earlier invalidation dropped stays dropped).
   */
  const dropKey = (hash: bigint, sourceHash: string | undefined): void => {
    l1.invalidateHash(hash, sourceHash)
    flights.forget((flight) => flight.hash === hash && (sourceHash === undefined || flight.sourceHash !== sourceHash))
    if (sourceHash === undefined) return
    for (const flight of flights.tags()) {
      if (flight.hash === hash && flight.sourceHash === sourceHash) flight.l1Captured = l1.capture(flight.key, hash)
    }
  }

  const invalidate = (key: ModuleKey, sourceHash?: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      counters.invalidated(yield* InvalidationSource)
      dropKey(keyHash(key), sourceHash)
      // Only a forced invalidation makes reads bypass L2 until its tombstone commits: an edit's
      // leaves rows of its source, and a read never serves a row of another source.
      const changed = sourceHash === undefined
        ? yield* pending.tombstoning(key, l2.tombstone(key))
        : yield* l2.tombstone(key, sourceHash)
      yield* Effect.annotateCurrentSpan("mtc.invalidation.changed", changed)
      feed?.changed(key.realmUrl, key.path, sourceHash)
      // Rows already all of the edit's source: whoever changed them told the peers.
      if (changed) yield* invalidations.publishKey(key, sourceHash)
    }).pipe(Effect.withSpan("ModuleCache.invalidate", {
      attributes: { "mtc.realm": key.realmUrl, "mtc.path": key.path, "mtc.source_hash": sourceHash ?? "" }
    }))

  const invalidateRealm = (realmUrl: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      counters.invalidated(yield* InvalidationSource)
      l1.invalidateRealm(realmUrl)
      flights.forget((flight) => flight.key.realmUrl === realmUrl)
      yield* pending.wiping(realmUrl, l2.wipeRealm(realmUrl))
      feed?.everything(realmUrl, "wipe")
      yield* invalidations.publishRealm(realmUrl)
    }).pipe(Effect.withSpan("ModuleCache.invalidateRealm", { attributes: { "mtc.realm": realmUrl } }))

  /** A peer's invalidation (by hash) drops the L1 entries and in-flight loads it names here. */
  const onPeerInvalidation = (event: InvalidationEvent): void => {
    if (event._tag !== "Flush") counters.invalidated("peer")
    switch (event._tag) {
      case "Key": {
        dropKey(event.hash, event.sourceHash)
        if (event.place !== undefined) feed?.changedAt(event.place.realmHash, event.place.path, event.sourceHash)
        return
      }
      case "Realm": {
        const realmUrl = l1.realmOfHash(event.hash)
        if (realmUrl !== undefined) {
          l1.invalidateRealm(realmUrl)
          flights.forget((flight) => flight.key.realmUrl === realmUrl)
        }
        feed?.everythingAt(event.hash, "wipe")
        return
      }
      case "Flush": {
        l1.flush()
        flights.forget(() => true)
        feed?.everywhere("missed")
        return
      }
    }
  }

  // On close, loads still running (a load answers before it writes L2) get some time to commit,
  // their held writes at once.
  yield* Effect.addFinalizer(() =>
    Effect.andThen(Effect.sync(() => (closing = true)), FiberSet.awaitEmpty(loads)).pipe(
      Effect.timeoutOption(options.drainTimeout ?? defaults.drainTimeout)
    )
  )

  yield* invalidations.subscribe(onPeerInvalidation)

  const preload = (realmUrls: string | ReadonlyArray<string>): Effect.Effect<Preload.PreloadSummary> =>
    Effect.tap(
      Preload.run({
        l1,
        store,
        sources,
        fingerprint,
        realmUrls: typeof realmUrls === "string" ? [realmUrls] : realmUrls,
        maxBytes: preloadMaxBytes,
        complete: (row) => completed(row.key.realmUrl, row.module),
        pendingNow: () => pending.snapshot()
      }),
      (summary) =>
        Effect.sync(() => {
          preloaded.preloadedEntries += summary.entries
          preloaded.preloadedBytes += summary.bytes
          preloaded.preloadMillis += summary.millis
        })
    )

  return ModuleCache.of({
    fingerprint,
    get,
    peekL1: (id) => l1.get(id),
    countL1Hit: (realmUrl) => counters.l1HitUnmetered(realmUrl),
    countsOf: (realmUrl) => ({ ...counters.countsOf(realmUrl), l1Entries: l1.sizeOf(realmUrl), l1Bytes: l1.bytesOf(realmUrl) }),
    forgetRealm: (realmUrl) =>
      Effect.sync(() => {
        l1.forgetRealm(realmUrl)
        flights.forget((flight) => flight.key.realmUrl === realmUrl)
        counters.forget(realmUrl)
      }),
    realmUsage: (realmUrl) =>
      store.versions(realmUrl).pipe(
        Effect.timeoutOption("2 seconds"),
        Effect.map(Option.map((versions): RealmUsage => ({
          rows: versions.reduce((sum, version) => sum + version.rows, 0),
          bytes: versions.reduce((sum, version) => sum + version.bytes, 0),
          versions
        }))),
        Effect.map(Option.getOrUndefined),
        Effect.orElseSucceed(() => undefined)
      ),
    invalidate,
    invalidateRealm,
    preload,
    stats: Effect.map(Effect.all([connections.stats, FiberSet.size(loads)]), ([connected, inFlight]) => ({
      ...counters.snapshot(),
      ...preloaded,
      recentErrors: counters.recentErrors(),
      gets: counters.getsByOutcome(),
      l1Bytes: l1.bytes,
      l1Entries: l1.size,
      l1MaxBytes,
      inFlight,
      store: store.kind,
      coordinator: coordinator.kind,
      fingerprint,
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

/** Reads {@link ModuleCacheOptions} from the environment (see docs/configuration.md for the names). */
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
  batchL2Reads: Config.option(Config.Boolean("MTC_L2_BATCH_READS")),
  batchL2Writes: Config.withDefault(Config.Boolean("MTC_L2_BATCH_WRITES"), defaults.batchL2Writes),
  l2WriteHold: Config.withDefault(Config.Duration("MTC_L2_WRITE_HOLD"), defaults.l2WriteHold),
  l2WriteQuiet: Config.withDefault(Config.Duration("MTC_L2_WRITE_QUIET"), defaults.l2WriteQuiet),
  contentEncodings: ContentCoding.encodingsConfig
}).pipe(Config.map(({ batchL2Reads, pollInitial, pollMax, ...rest }): ModuleCacheOptions => ({
  ...rest,
  ...(batchL2Reads._tag === "Some" ? { batchL2Reads: batchL2Reads.value } : {}),
  ...(pollInitial._tag === "Some" ? { pollInitial: pollInitial.value } : {}),
  ...(pollMax._tag === "Some" ? { pollMax: pollMax.value } : {})
})))

/** {@link layer} with options read by {@link optionsConfig}. */
export const layerConfig = Layer.unwrap(Effect.gen(function*() {
  return layer(yield* optionsConfig)
}))
