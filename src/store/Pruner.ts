/**
 * Keeps L2 bounded while a server runs: every `interval`, {@link TranspileStore.prune}
 * removes tombstones and recorded failures older than `tombstoneAge` and rows not read for
 * `unreadAge`, then tombstones each realm's least recently read rows beyond `maxBytesPerRealm`
 * (the embedded store also checkpoints). A failed run is logged and the next one comes on
 * schedule; the pruner never stops the server.
 *
 * Choose `tombstoneAge` far longer than any transpile: a writer that captured a key before
 * its tombstone, and writes after the tombstone is pruned, would not be rejected by OCC
 * (the read path still never serves those bytes for another source, since L2 rows are
 * checked against the source's hash).
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import { TranspileStore } from "../domain/TranspileStore.ts"

/** When and what the pruner prunes. */
export interface PrunerOptions {
  /** Time between runs. Default 5 minutes. */
  readonly interval: Duration.Duration
  /** Tombstones and recorded failures older than this go. Default 1 hour. */
  readonly tombstoneAge: Duration.Duration
  /** Rows not read for this long go. Default 7 days. */
  readonly unreadAge: Duration.Duration
  /** The cap on each realm's live bytes in L2; `undefined` for none. Default 256 MiB. */
  readonly maxBytesPerRealm: number | undefined
}

/** The defaults of {@link PrunerOptions}. */
export const defaults: PrunerOptions = {
  interval: Duration.minutes(5),
  tombstoneAge: Duration.hours(1),
  unreadAge: Duration.days(7),
  maxBytesPerRealm: 256 * 1024 * 1024
}

/**
 * The options from `MTC_PRUNE_INTERVAL`, `MTC_PRUNE_TOMBSTONE_AGE`, `MTC_PRUNE_UNREAD_AGE`
 * and `MTC_L2_MAX_BYTES` (0 turns the cap off).
 */
export const optionsConfig: Config.Config<PrunerOptions> = Config.all({
  interval: Config.withDefault(Config.Duration("MTC_PRUNE_INTERVAL"), defaults.interval),
  tombstoneAge: Config.withDefault(Config.Duration("MTC_PRUNE_TOMBSTONE_AGE"), defaults.tombstoneAge),
  unreadAge: Config.withDefault(Config.Duration("MTC_PRUNE_UNREAD_AGE"), defaults.unreadAge),
  maxBytes: Config.withDefault(Config.Int("MTC_L2_MAX_BYTES"), defaults.maxBytesPerRealm ?? 0)
}).pipe(Config.map(({ maxBytes, ...rest }): PrunerOptions => ({
  ...rest,
  maxBytesPerRealm: maxBytes > 0 ? maxBytes : undefined
})))

/**
 * One prune run with these options; returns the rows removed or evicted. Traced by the
 * store's own `TranspileStore.prune` span.
 */
export const runOnce = (options: PrunerOptions) =>
  Effect.gen(function*() {
    const store = yield* TranspileStore
    return yield* store.prune({
      tombstonesOlderThanMillis: Duration.toMillis(options.tombstoneAge),
      unreadForMillis: Duration.toMillis(options.unreadAge),
      maxBytesPerRealm: options.maxBytesPerRealm
    })
  })

/** Runs {@link runOnce} every `interval` (the first run one interval after start) for the life of the layer. */
export const layer = (options: Partial<PrunerOptions> = {}): Layer.Layer<never, never, TranspileStore> => {
  const resolved: PrunerOptions = { ...defaults, ...options }
  return Layer.effectDiscard(
    runOnce(resolved).pipe(
      Effect.tap((removed) =>
        removed > 0 ? Effect.logDebug(`module-transpile-cache: pruned ${removed} L2 rows`) : Effect.void
      ),
      Effect.catchCause((cause) => Effect.logWarning("module-transpile-cache: L2 prune failed", cause)),
      Effect.delay(resolved.interval),
      Effect.forever,
      Effect.forkScoped
    )
  )
}
