/**
 * Answer times of the realm server, `module_cache_answer_seconds{path, outcome, realm}`:
 * `path` is `router` (a request the Effect router answered) or `fast_path` (one the
 * {@link FastPath} answered before it); `outcome` is the `x-module-cache` of a module
 * (`l1 | l2 | transpiled | coalesced | fallback`), `raw` for a raw file and `error` for an
 * error answer.
 *
 * The router's series are Effect histograms updated per request. The fast path pays no
 * Effect call per request: it keeps {@link PlainHistogram}s, plain arrays, which the metrics
 * route registers into the Metric registry only while it renders (see `MetricsRoutes`).
 *
 * @since 0.5.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import type * as HttpServerResponse from "effect/http/HttpServerResponse"
import { realmLabel } from "../internal/realmLabel.ts"

/** Seconds buckets of answer times: 25 µs (a fast-path hit) to 30 s (a cold transpile). */
export const answerBoundaries: ReadonlyArray<number> = [
  0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
]

/** Answer times by path (`router`, `fast_path`), outcome and realm, in seconds. */
export const answerHistogram = Metric.histogram("module_cache_answer_seconds", {
  description: "Time to answer a module or file request, by path (router or fast_path) and outcome",
  boundaries: answerBoundaries
})

/** A histogram kept in plain numbers, read as an Effect histogram's state. */
export class PlainHistogram {
  private readonly counts: Float64Array
  private count = 0
  private sum = 0
  private min = Number.MAX_VALUE
  private max = -Number.MAX_VALUE
  readonly boundaries: ReadonlyArray<number>

  constructor(boundaries: ReadonlyArray<number>) {
    this.boundaries = boundaries
    this.counts = new Float64Array(boundaries.length + 1)
  }

  /** Records one value. */
  observe(value: number): void {
    const boundaries = this.boundaries
    let i = 0
    while (i < boundaries.length && value > boundaries[i]!) i++
    this.counts[i]!++
    this.count++
    this.sum += value
    if (value < this.min) this.min = value
    if (value > this.max) this.max = value
  }

  /** The state as `Metric.histogram` reports it (cumulative buckets). */
  state(): Metric.HistogramState {
    let cumulated = 0
    const buckets: Array<[number, number]> = this.boundaries.map((boundary, i) => {
      cumulated += this.counts[i]!
      return [boundary, cumulated]
    })
    return { buckets, count: this.count, min: this.min, max: this.max, sum: this.sum }
  }
}

/** The series of the router's answers of one realm and outcome. */
const routerSeries = new Map<string, Metric.Histogram<number>>()
const routerSeriesOf = (realm: string, outcome: string): Metric.Histogram<number> => {
  const id = `${realm}|${outcome}`
  let series = routerSeries.get(id)
  if (series === undefined) {
    series = Metric.withAttributes(answerHistogram, { path: "router", outcome, realm })
    routerSeries.set(id, series)
  }
  return series
}

/** The series of the fast path's answers of one realm and outcome (registered while metrics render). */
export const fastPathSeriesOf = (realmUrl: string, outcome: "l1" | "raw"): Metric.Histogram<number> =>
  Metric.withAttributes(answerHistogram, { path: "fast_path", outcome, realm: realmLabel(realmUrl) })

/** The outcome label of an answer: its `x-module-cache`, else `error` (4xx, 5xx) or `raw`. */
const outcomeOf = (response: HttpServerResponse.HttpServerResponse): string => {
  const cache = response.headers["x-module-cache"]
  if (cache !== undefined) return cache
  return response.status >= 400 ? "error" : "raw"
}

/** A realm's answer, its time recorded by outcome. */
export const timed = <E, R>(
  realmUrl: string,
  answer: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R> =>
  Effect.suspend(() => {
    const started = performance.now()
    return Effect.tap(
      answer,
      (response) => Metric.update(routerSeriesOf(realmLabel(realmUrl), outcomeOf(response)), (performance.now() - started) / 1000)
    )
  })
