/**
 * The counters of one ModuleCache, and the process-wide metrics they feed: each event is
 * counted in one place, which updates both the instance's count (for `stats`) and its metric.
 *
 * @since 0.1.0
 */
import { type Context, Metric } from "effect"
import type { ReportedOutcome } from "../domain/Domain.ts"
import { refusalCounter } from "../internal/refusal.ts"

/** The counts of one ModuleCache instance. */
export interface Counts {
  /** Babel runs in this process. */
  readonly transpiles: number
  readonly l1Hits: number
  readonly l2Hits: number
  readonly coalesced: number
  readonly fallbacks: number
  readonly errors: number
  readonly persistFailures: number
  /** L2 operations the database refused a connection for ("too many clients"), each waited out. */
  readonly refusals: number
}

/** Why a loser, or a caller with no usable coordinator or store, transpiled locally. */
export type FallbackReason = "deadline" | "coordinator" | "store"

const getCounter = Metric.counter("module_cache_gets", { description: "ModuleCache.get calls by outcome" })
const outcomeCounters: Record<ReportedOutcome, Metric.Counter<number>> = {
  l1: Metric.withAttributes(getCounter, { outcome: "l1" }),
  l2: Metric.withAttributes(getCounter, { outcome: "l2" }),
  transpiled: Metric.withAttributes(getCounter, { outcome: "transpiled" }),
  coalesced: Metric.withAttributes(getCounter, { outcome: "coalesced" }),
  fallback: Metric.withAttributes(getCounter, { outcome: "fallback" }),
  error: Metric.withAttributes(getCounter, { outcome: "error" })
}
/** The instance count each outcome adds to, when it has one. */
const outcomeCounts: Partial<Record<ReportedOutcome, "l1Hits" | "l2Hits" | "coalesced" | "errors">> = {
  l1: "l1Hits",
  l2: "l2Hits",
  coalesced: "coalesced",
  error: "errors"
}
/** Babel runs. */
export const transpileCounter = Metric.counter("module_cache_transpiles", { description: "Transpiles run" })
/** L2 writes and tombstones given up after their retries. */
export const persistFailureCounter = Metric.counter("module_cache_persist_failures", {
  description: "L2 writes given up after retries"
})
const fallbackCounter = Metric.counter("module_cache_fallbacks", { description: "Local transpiles by reason" })
const fallbackCounters: Record<FallbackReason, Metric.Counter<number>> = {
  deadline: Metric.withAttributes(fallbackCounter, { reason: "deadline" }),
  coordinator: Metric.withAttributes(fallbackCounter, { reason: "coordinator" }),
  store: Metric.withAttributes(fallbackCounter, { reason: "store" })
}
/** How long losers waited for a winner, in milliseconds. */
export const waitHistogram = Metric.histogram("module_cache_wait_ms", {
  description: "Time a loser waited for the winner",
  boundaries: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
})

/**
 * The counters of one instance. Synchronous: the metrics are updated in the context the
 * instance was made in.
 */
export class CacheCounters {
  private readonly counts = {
    transpiles: 0,
    l1Hits: 0,
    l2Hits: 0,
    coalesced: 0,
    fallbacks: 0,
    errors: 0,
    persistFailures: 0,
    refusals: 0
  }
  private readonly context: Context.Context<never>

  constructor(context: Context.Context<never>) {
    this.context = context
  }

  /** A `get` answered (or failed) this way. */
  outcome(outcome: ReportedOutcome): void {
    const count = outcomeCounts[outcome]
    if (count !== undefined) this.counts[count]++
    outcomeCounters[outcome].updateUnsafe(1, this.context)
  }

  /** A transpile ran (and ended, either way). */
  transpiled(): void {
    this.counts.transpiles++
    transpileCounter.updateUnsafe(1, this.context)
  }

  /** A load transpiles locally instead of coalescing. */
  fallback(reason: FallbackReason): void {
    this.counts.fallbacks++
    fallbackCounters[reason].updateUnsafe(1, this.context)
  }

  /** An L2 write or tombstone was given up. */
  persistFailed(): void {
    this.counts.persistFailures++
    persistFailureCounter.updateUnsafe(1, this.context)
  }

  /** The database refused an L2 operation a connection. */
  refused(): void {
    this.counts.refusals++
    refusalCounter.updateUnsafe(1, this.context)
  }

  /** A loser got the winner's answer after `millis`. */
  waited(millis: number): void {
    waitHistogram.updateUnsafe(millis, this.context)
  }

  /** The counts now. */
  snapshot(): Counts {
    return { ...this.counts }
  }
}
