/**
 * Preloading L1 from L2 in bulk, so that a restarted process (or a new member of a fleet)
 * starts warm. One preload covers any number of realms under one byte bound.
 *
 * 1. Take an {@link L1Snapshot} of L1's generations (and note the keys and realms whose
 *    tombstone or wipe is not committed yet) **before** anything is read.
 * 2. Stream the realms' live rows of our fingerprint from the store, most recently read
 *    first across the realms, up to the one byte bound, in a few large reads.
 * 3. Check each row's source hash against the file as it is now (a file edited while the
 *    server was down is left out), a bounded number of files at a time. This is the only
 *    file read a preloaded entry ever costs: none happens on the request path.
 * 4. Fill L1, least recently read first (L1 evicts its oldest insertions first), each entry
 *    only if no invalidation of its key or realm, and no flush, happened since the snapshot.
 *    So an invalidation during the preload wins, from the watcher, the API or a peer.
 *
 * A store that cannot be read does not fail the preload: it is logged, and the process
 * starts cold.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { type CachedModule, keyHash, moduleBytes, type ModuleKey, type TranspiledModule } from "../domain/Domain.ts"
import type { L1Cache } from "./L1Cache.ts"
import type { ModuleSources } from "../domain/ModuleSources.ts"
import type { PreloadedRow, TranspileStore } from "../domain/TranspileStore.ts"

/** What one preload put into L1 for one of its realms. */
export interface PreloadedRealm {
  readonly realmUrl: string
  readonly entries: number
  readonly bytes: number
}

/** What one preload did. */
export interface PreloadSummary {
  /** The realms preloaded, as asked. */
  readonly realmUrls: ReadonlyArray<string>
  /** Entries and bytes put into L1 per realm, in the order of `realmUrls` (every realm listed). */
  readonly realms: ReadonlyArray<PreloadedRealm>
  /** Entries put into L1. */
  readonly entries: number
  /** Their body bytes. */
  readonly bytes: number
  /** Rows read from L2. */
  readonly rows: number
  /** Rows left out because their file changed, vanished or could not be read. */
  readonly stale: number
  /** Rows left out because their key or realm was invalidated during the preload. */
  readonly invalidated: number
  readonly millis: number
  /** Why the store could not be read, when it could not. */
  readonly error?: string | undefined
  /** The keys put into L1, most recently read first. */
  readonly keys: ReadonlyArray<ModuleKey>
}

/** What a preload works on. */
export interface PreloadOptions {
  readonly l1: L1Cache
  readonly store: TranspileStore["Service"]
  readonly sources: ModuleSources["Service"]
  readonly fingerprint: string
  /** The realms to preload, under one byte bound. */
  readonly realmUrls: ReadonlyArray<string>
  /** The byte bound over all of them (0 or less: nothing is read). */
  readonly maxBytes: number
  /** Source files checked at a time (default 16). */
  readonly concurrency?: number | undefined
  /** A verified row's module with every compressed form offered (a row of an earlier release may lack them). */
  readonly complete: (row: PreloadedRow) => Effect.Effect<TranspiledModule>
  /**
   * Called once, right after the snapshot: whether a key's tombstone or its realm's wipe is
   * still in flight. Such a key may still have its old row in L2, so it is not preloaded.
   */
  readonly pendingNow: () => (key: ModuleKey) => boolean
}

/** Preloads realms into L1. Never fails. */
export const run = Effect.fn("ModuleCache.preload")(function*(options: PreloadOptions) {
  const { l1 } = options
  const realmUrls = [...new Set(options.realmUrls)]
  const started = yield* Clock.currentTimeMillis
  yield* Effect.annotateCurrentSpan({
    ...(realmUrls.length === 1 ? { "mtc.realm": realmUrls[0] } : {}),
    "mtc.preload.realms": realmUrls.length,
    "mtc.preload.max_bytes": options.maxBytes
  })
  const { snapshot, isPending } = yield* Effect.sync(() => {
    // A peer names a realm it wiped by hash: register ours first, or its wipe would pass us by.
    for (const realmUrl of realmUrls) l1.registerRealm(realmUrl)
    return { snapshot: l1.snapshot(), isPending: options.pendingNow() }
  })
  let rows = 0
  let stale = 0
  const verify = (row: PreloadedRow) =>
    Effect.flatMap(Effect.exit(options.sources.read(row.key)), (exit) => {
      rows++
      if (exit._tag === "Success" && exit.value.hash === row.module.sourceHash) {
        return Effect.map(options.complete(row), (module): PreloadedRow => module === row.module ? row : { key: row.key, module })
      }
      stale++
      return Effect.succeed(undefined)
    })
  const read = options.maxBytes <= 0 || realmUrls.length === 0
    ? Effect.succeed<ReadonlyArray<PreloadedRow | undefined>>([])
    : options.store.preload({ realmUrls, fingerprint: options.fingerprint, maxBytes: options.maxBytes }).pipe(
      Stream.mapEffect(verify, { concurrency: options.concurrency ?? 16 }),
      Stream.runCollect
    )
  const exit = yield* Effect.exit(read)
  let entries = 0
  let bytes = 0
  let invalidated = 0
  let error: string | undefined
  const keys: Array<ModuleKey> = []
  const perRealm = new Map(realmUrls.map((realmUrl) => [realmUrl, { realmUrl, entries: 0, bytes: 0 }]))
  if (exit._tag === "Success") {
    const verified = exit.value
    // Least recently read first: L1 evicts its oldest insertions first.
    for (let at = verified.length - 1; at >= 0; at--) {
      const row = verified[at]
      if (row === undefined) continue
      const module: CachedModule = { ...row.module, key: row.key, fingerprint: options.fingerprint }
      if (!isPending(row.key) && l1.fillSince(module, keyHash(row.key), snapshot)) {
        const size = moduleBytes(module)
        entries++
        bytes += size
        keys.push(row.key)
        const realm = perRealm.get(row.key.realmUrl)
        if (realm !== undefined) {
          realm.entries++
          realm.bytes += size
        }
      } else {
        invalidated++
      }
    }
  } else {
    error = Cause.pretty(exit.cause).split("\n")[0]
    yield* Effect.logWarning(`module-transpile-cache: preload of ${realmUrls.join(", ")} failed; starting cold`, exit.cause)
  }
  const millis = (yield* Clock.currentTimeMillis) - started
  const summary: PreloadSummary = {
    realmUrls,
    realms: [...perRealm.values()],
    entries,
    bytes,
    rows,
    stale,
    invalidated,
    millis,
    error,
    keys: keys.reverse()
  }
  yield* Effect.annotateCurrentSpan({
    "mtc.preload.entries": entries,
    "mtc.preload.bytes": bytes,
    "mtc.preload.rows": rows,
    "mtc.preload.stale": stale,
    "mtc.preload.invalidated": invalidated,
    "mtc.preload.ms": millis
  })
  return summary
})

/** One line for logs and the command line. */
export const formatSummary = (summary: PreloadSummary): string =>
  `preloaded ${summary.entries} module${summary.entries === 1 ? "" : "s"} ` +
  `(${(summary.bytes / 1024).toFixed(1)} KiB) into L1 in ${summary.millis} ms` +
  (summary.stale > 0 ? `, ${summary.stale} stale` : "") +
  (summary.invalidated > 0 ? `, ${summary.invalidated} invalidated meanwhile` : "") +
  (summary.error !== undefined ? ` (store error: ${summary.error})` : "")
