/**
 * The counters of one ModuleCache, and the process-wide metrics they feed: each event is
 * counted in one place, which updates both the instance's count (for `stats`) and its metric.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"
import type { ReportedOutcome } from "../domain/Domain.ts"
import { realmLabel } from "../internal/realmLabel.ts"
import { refusalCounter } from "../internal/refusal.ts"

/** The counts of one ModuleCache instance. */
export interface Counts {
  /** Babel runs in this process. */
  readonly transpiles: number
  /**
   * Module versions whose body this process compressed (every coding offered at once): in its
   * transpile workers with the transpile, or here for a row that lacked its forms.
   */
  readonly compressions: number
  /**
   * Module versions transpiled here without a source map although the transpiler makes them
   * (a step could not carry one, or the map failed its check): served without one.
   */
  readonly unmapped: number
  readonly l1Hits: number
  readonly l2Hits: number
  readonly coalesced: number
  readonly fallbacks: number
  readonly errors: number
  readonly persistFailures: number
  /** L2 operations the database refused a connection for ("too many clients"), each waited out. */
  readonly refusals: number
}

/** The counts and the gets by outcome of one realm (see {@link CacheCounters.countsOf}). */
export interface RealmCounts extends Counts {
  /** Gets of the realm's keys by outcome (`l1` includes the fast path's hits attributed to it). */
  readonly gets: Readonly<Record<ReportedOutcome, number>>
}

type MutableCounts = { -readonly [K in keyof Counts]: number }
const zeroCounts = (): MutableCounts => ({
  transpiles: 0,
  compressions: 0,
  unmapped: 0,
  l1Hits: 0,
  l2Hits: 0,
  coalesced: 0,
  fallbacks: 0,
  errors: 0,
  persistFailures: 0,
  refusals: 0
})
const zeroGets = (): Record<ReportedOutcome, number> => ({ l1: 0, l2: 0, transpiled: 0, coalesced: 0, fallback: 0, error: 0 })

/** Why a loser, or a caller with no usable coordinator or store, transpiled locally. */
export type FallbackReason = "deadline" | "coordinator" | "store"

/** Seconds buckets of the library's duration histograms: 0.5 ms to 30 s. */
export const secondsBoundaries: ReadonlyArray<number> = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
]

/** Gets by outcome and realm (`l1` includes the HTTP fast path's hits, folded in when metrics are read). */
export const getCounter = Metric.counter("module_cache_gets_total", {
  description: "ModuleCache gets by outcome (l1 includes the HTTP fast path's hits)",
  incremental: true
})
const outcomes: ReadonlyArray<ReportedOutcome> = ["l1", "l2", "transpiled", "coalesced", "fallback", "error"]
type OutcomeCounters = Record<ReportedOutcome, Metric.Counter<number>>
const outcomeCountersByRealm = new Map<string, OutcomeCounters>()
/** The `module_cache_gets_total` series of a realm (bounded, see `realmLabel`) and outcome. */
export const getsOf = (realmUrl: string, outcome: ReportedOutcome): Metric.Counter<number> => {
  const realm = realmLabel(realmUrl)
  let counters = outcomeCountersByRealm.get(realm)
  if (counters === undefined) {
    const made: Partial<OutcomeCounters> = {}
    for (const each of outcomes) made[each] = Metric.withAttributes(getCounter, { outcome: each, realm })
    counters = made as OutcomeCounters
    outcomeCountersByRealm.set(realm, counters)
  }
  return counters[outcome]
}
/** The instance count each outcome adds to, when it has one. */
const outcomeCounts: Partial<Record<ReportedOutcome, "l1Hits" | "l2Hits" | "coalesced" | "errors">> = {
  l1: "l1Hits",
  l2: "l2Hits",
  coalesced: "coalesced",
  error: "errors"
}
/** Transpiles run. */
export const transpileCounter = Metric.counter("module_cache_transpiles_total", { description: "Transpiles run in this process" })
/** Module versions compressed. */
export const compressionCounter = Metric.counter("module_cache_compressions_total", {
  description: "Module versions whose body this process compressed (br and gzip at once), in its transpile workers or in-process"
})
/** Module versions transpiled without a source map although maps are on. */
export const unmappedCounter = Metric.counter("module_cache_unmapped_total", {
  description: "Module versions transpiled without a source map although the transpiler makes them (served without one)"
})
/** L2 writes and tombstones given up after their retries. */
export const persistFailureCounter = Metric.counter("module_cache_persist_failures_total", {
  description: "L2 writes and tombstones given up after their retries"
})
const fallbackCounter = Metric.counter("module_cache_fallbacks_total", { description: "Local transpiles instead of coalescing, by reason" })
const fallbackCounters: Record<FallbackReason, Metric.Counter<number>> = {
  deadline: Metric.withAttributes(fallbackCounter, { reason: "deadline" }),
  coordinator: Metric.withAttributes(fallbackCounter, { reason: "coordinator" }),
  store: Metric.withAttributes(fallbackCounter, { reason: "store" })
}
/** How long losers waited for the winner, in seconds. */
export const waitHistogram = Metric.histogram("module_cache_wait_seconds", {
  description: "Time a loser waited for the winner's row",
  boundaries: secondsBoundaries
})
/** L2 reads (one key), in seconds. */
export const l2ReadHistogram = Metric.histogram("module_cache_l2_read_seconds", {
  description: "Time of an L2 read, refusals waited out included",
  boundaries: secondsBoundaries
})
/** L2 writes (retries included), in seconds. */
export const l2WriteHistogram = Metric.histogram("module_cache_l2_write_seconds", {
  description: "Time of an L2 write, retries included",
  boundaries: secondsBoundaries
})

/** Where an invalidation came from. */
export type InvalidationSourceName = "api" | "watcher" | "peer"

/**
 * Who asks `ModuleCache.invalidate` (for the invalidations metric): `api` unless the caller
 * says otherwise (the realm server's watcher provides `watcher`).
 */
export const InvalidationSource = Context.Reference<"api" | "watcher">("module-transpile-cache/InvalidationSource", {
  defaultValue: () => "api"
})
const invalidationCounter = Metric.counter("module_cache_invalidations_total", {
  description: "Invalidations of a module or a realm, by source (api, watcher, peer)"
})
const invalidationCounters: Record<InvalidationSourceName, Metric.Counter<number>> = {
  api: Metric.withAttributes(invalidationCounter, { source: "api" }),
  watcher: Metric.withAttributes(invalidationCounter, { source: "watcher" }),
  peer: Metric.withAttributes(invalidationCounter, { source: "peer" })
}

/** What went wrong in a transpile, as the `kind` label of the transpile errors metric. */
export type TranspileErrorKind = "syntax" | "too_large" | "worker_crash" | "memory" | "timeout" | "queue_full"
const errorKinds: Record<string, TranspileErrorKind> = {
  TranspileError: "syntax",
  SourceTooLargeError: "too_large",
  TranspileWorkerCrashError: "worker_crash",
  TranspileMemoryLimitError: "memory",
  TranspileTimeoutError: "timeout",
  TranspileQueueFullError: "queue_full"
}
const transpileErrorCounter = Metric.counter("module_cache_transpile_errors_total", {
  description: "Transpiles that failed, by kind (syntax: the module's own error; others: the attempt's)"
})
const transpileErrorCounters = new Map<string, Metric.Counter<number>>()
const transpileErrorsOf = (kind: TranspileErrorKind, realmUrl: string) => {
  const realm = realmLabel(realmUrl)
  const id = `${kind}|${realm}`
  let counter = transpileErrorCounters.get(id)
  if (counter === undefined) {
    counter = Metric.withAttributes(transpileErrorCounter, { kind, realm })
    transpileErrorCounters.set(id, counter)
  }
  return counter
}

/**
 * Registers every counter series of a realm (and the cache's histograms) at its current value (0 when new), so that a
 * scrape shows them before their first event: Prometheus' `rate()` and `increase()` need the
 * zero to see the first increase.
 */
export const touchCounters = (realmUrl: string, context: Context.Context<never>): void => {
  for (const outcome of outcomes) getsOf(realmUrl, outcome).updateUnsafe(0, context)
  for (const kind of Object.values(errorKinds)) transpileErrorsOf(kind, realmUrl).updateUnsafe(0, context)
  for (const counter of Object.values(fallbackCounters)) counter.updateUnsafe(0, context)
  for (const counter of Object.values(invalidationCounters)) counter.updateUnsafe(0, context)
  transpileCounter.updateUnsafe(0, context)
  persistFailureCounter.updateUnsafe(0, context)
  refusalCounter.updateUnsafe(0, context)
  // Reading a histogram registers it, with every bucket at zero.
  for (const histogram of [waitHistogram, l2ReadHistogram, l2WriteHistogram]) histogram.valueUnsafe(context)
}

/** One of the last transpile errors, for `stats` (a realm-relative path, never a file-system one). */
export interface RecentError {
  readonly realmUrl: string
  readonly path: string
  readonly kind: TranspileErrorKind
  readonly message: string
  readonly line?: number | undefined
  readonly column?: number | undefined
  /** When it happened, in milliseconds since the epoch. */
  readonly at: number
}

/** How many recent errors an instance keeps. */
export const maxRecentErrors = 20

/**
 * The counters of one instance: totals, and the same per realm. Synchronous: the metrics are
 * updated in the context the instance was made in.
 */
export class CacheCounters {
  private readonly counts = zeroCounts()
  private readonly context: Context.Context<never>

  constructor(context: Context.Context<never>) {
    this.context = context
  }

  private readonly recent: Array<RecentError> = []
  private readonly gets = zeroGets()
  private readonly realms = new Map<string, { readonly counts: MutableCounts; readonly gets: Record<ReportedOutcome, number> }>()

  /** A realm's own counts, made at its first event. */
  private realm(realmUrl: string) {
    let realm = this.realms.get(realmUrl)
    if (realm === undefined) this.realms.set(realmUrl, realm = { counts: zeroCounts(), gets: zeroGets() })
    return realm
  }

  /** A `get` of a key of `realmUrl` answered (or failed) this way. */
  outcome(outcome: ReportedOutcome, realmUrl: string): void {
    const count = outcomeCounts[outcome]
    const realm = this.realm(realmUrl)
    if (count !== undefined) {
      this.counts[count]++
      realm.counts[count]++
    }
    this.gets[outcome]++
    realm.gets[outcome]++
    getsOf(realmUrl, outcome).updateUnsafe(1, this.context)
  }

  /**
   * An L1 hit answered outside `get` (the HTTP fast path): counted here for `stats` only (and
   * for the realm's counts, when it is named). Its caller counts it too and folds it into
   * `module_cache_gets_total` when metrics are read, so that the hot path does no metric update
   * per request.
   */
  l1HitUnmetered(realmUrl?: string): void {
    this.counts.l1Hits++
    this.gets.l1++
    if (realmUrl !== undefined) {
      const realm = this.realm(realmUrl)
      realm.counts.l1Hits++
      realm.gets.l1++
    }
  }

  /** The counts of one realm (zeros for a realm with no event since it was last forgotten). */
  countsOf(realmUrl: string): RealmCounts {
    const realm = this.realms.get(realmUrl)
    return realm === undefined ? { ...zeroCounts(), gets: zeroGets() } : { ...realm.counts, gets: { ...realm.gets } }
  }

  /** The realms that have counts, with them. */
  realmCounts(): ReadonlyMap<string, RealmCounts> {
    const all = new Map<string, RealmCounts>()
    for (const [realmUrl, realm] of this.realms) all.set(realmUrl, { ...realm.counts, gets: { ...realm.gets } })
    return all
  }

  /** Drops a realm's counts (the totals keep what it added). */
  forget(realmUrl: string): void {
    this.realms.delete(realmUrl)
  }

  /** Gets by outcome so far, fast-path hits included. */
  getsByOutcome(): Record<ReportedOutcome, number> {
    return { ...this.gets }
  }

  /** A transpile of `path` failed with an error tagged `tag`. */
  transpileFailed(
    realmUrl: string,
    path: string,
    error: { readonly _tag: string; readonly message: string; readonly line?: number | undefined; readonly column?: number | undefined }
  ): void {
    const kind = errorKinds[error._tag] ?? "syntax"
    transpileErrorsOf(kind, realmUrl).updateUnsafe(1, this.context)
    if (this.recent.length >= maxRecentErrors) this.recent.shift()
    this.recent.push({ realmUrl, path, kind, message: error.message, line: error.line, column: error.column, at: Date.now() })
  }

  /** The last transpile errors, oldest first (at most {@link maxRecentErrors}). */
  recentErrors(): ReadonlyArray<RecentError> {
    return this.recent.slice()
  }

  /** An invalidation from `source`. */
  invalidated(source: InvalidationSourceName): void {
    invalidationCounters[source].updateUnsafe(1, this.context)
  }

  /** An L2 read took `seconds`. */
  l2Read(seconds: number): void {
    l2ReadHistogram.updateUnsafe(seconds, this.context)
  }

  /** An L2 write took `seconds`. */
  l2Written(seconds: number): void {
    l2WriteHistogram.updateUnsafe(seconds, this.context)
  }

  /** A transpile (of a module of `realmUrl`, when named) ran, and ended either way. */
  transpiled(realmUrl?: string): void {
    this.counts.transpiles++
    if (realmUrl !== undefined) this.realm(realmUrl).counts.transpiles++
    transpileCounter.updateUnsafe(1, this.context)
  }

  /** A module version of `realmUrl` was compressed (its compressed forms were made). */
  compressed(realmUrl: string): void {
    this.counts.compressions++
    this.realm(realmUrl).counts.compressions++
    compressionCounter.updateUnsafe(1, this.context)
  }

  /** A module version of `realmUrl` was transpiled without the source map the transpiler makes. */
  unmappedModule(realmUrl: string): void {
    this.counts.unmapped++
    this.realm(realmUrl).counts.unmapped++
    unmappedCounter.updateUnsafe(1, this.context)
  }

  /** A load (of a module of `realmUrl`, when named) transpiles locally instead of coalescing. */
  fallback(reason: FallbackReason, realmUrl?: string): void {
    this.counts.fallbacks++
    if (realmUrl !== undefined) this.realm(realmUrl).counts.fallbacks++
    fallbackCounters[reason].updateUnsafe(1, this.context)
  }

  /** An L2 write or tombstone (of `realmUrl`, when named) was given up. */
  persistFailed(realmUrl?: string): void {
    this.counts.persistFailures++
    if (realmUrl !== undefined) this.realm(realmUrl).counts.persistFailures++
    persistFailureCounter.updateUnsafe(1, this.context)
  }

  /** The database refused an L2 operation (on `realmUrl`, when named) a connection. */
  refused(realmUrl?: string): void {
    this.counts.refusals++
    if (realmUrl !== undefined) this.realm(realmUrl).counts.refusals++
    refusalCounter.updateUnsafe(1, this.context)
  }

  /** A loser got the winner's answer after `millis`. */
  waited(millis: number): void {
    waitHistogram.updateUnsafe(millis / 1000, this.context)
  }

  /** The counts now. */
  snapshot(): Counts {
    return { ...this.counts }
  }
}
