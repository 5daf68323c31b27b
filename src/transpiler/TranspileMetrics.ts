/**
 * The transpile time histogram, `module_cache_transpile_seconds{pipeline, engine}`: the time
 * a transpile ran (in a worker: its run time, without the queue wait), success or failure.
 *
 * @since 0.5.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

/** Seconds buckets of transpile times: 1 ms to 30 s. */
export const transpileBoundaries: ReadonlyArray<number> = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
]

/** Transpile times, in seconds, by pipeline and engine. */
export const transpileHistogram = Metric.histogram("module_cache_transpile_seconds", {
  description: "Time a transpile ran, by pipeline and engine (in a worker: its run time, without the queue wait)",
  boundaries: transpileBoundaries
})

/** The series of one pipeline and engine. */
export const transpileTimeOf = (pipeline: string, engine: string): Metric.Histogram<number> =>
  Metric.withAttributes(transpileHistogram, { pipeline, engine })

/** `effect`, its run time (either way) recorded in `histogram`. */
export const timed = <A, E, R>(histogram: Metric.Histogram<number>, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    const started = performance.now()
    return Effect.onExit(effect, () => Metric.update(histogram, (performance.now() - started) / 1000))
  })
