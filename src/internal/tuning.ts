/**
 * Tuning options made of durations, declared once by their defaults: a service declares
 * its `defaults` (each documented) with {@link defaults}, takes `Tuning<typeof defaults>` as
 * its options, and reads them through {@link resolve}.
 */
import * as Duration from "effect/Duration"

/** Defaults of a service's durations, by option name. */
type TuningDefaults = Readonly<Record<string, Duration.Duration>>

/** Declares a service's defaults (frozen: shared by every instance, never changed). */
export const defaults = <D extends TuningDefaults>(values: D): Readonly<D> => Object.freeze(values)

/** Options over `D`: every duration optional, in any form `Duration` accepts. */
export type Tuning<D extends TuningDefaults> = { readonly [K in keyof D]?: Duration.Input | undefined }

/** The options with every missing one taken from `defaults`, as durations. */
type Resolved<D extends TuningDefaults> = { readonly [K in keyof D]: Duration.Duration }

/** Fills in `options` from `defaults`. */
export const resolve = <D extends TuningDefaults>(defaults: D, options: Tuning<D> = {}): Resolved<D> => {
  const resolved: Record<string, Duration.Duration> = {}
  for (const [name, fallback] of Object.entries(defaults)) {
    const input = options[name]
    resolved[name] = input === undefined ? fallback : Duration.fromInputUnsafe(input)
  }
  return resolved as Resolved<D>
}
