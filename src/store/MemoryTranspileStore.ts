/**
 * An in-memory TranspileStore with the same OCC semantics as the SQL stores. Several
 * ModuleCache instances sharing one of these behave like processes sharing a database.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { keyString, moduleBytes, type ModuleKey, moduleKey, type VersionedKey } from "../domain/Domain.ts"
import {
  absent,
  type PreloadedRow,
  type StoredRow,
  type StoredVersion,
  TranspileStore,
  type WriteContent
} from "../domain/TranspileStore.ts"

interface Row {
  readonly key: ModuleKey
  readonly generation: number
  readonly content: WriteContent | undefined
  readonly fingerprint: string
  /** The source the row holds, or the one a tombstone awaits (null: none). */
  readonly sourceHash: string | null
  readonly updatedAt: number
  readonly accessedAt: number
}

/** The map key of a row: its module key and its fingerprint. */
const rowId = (key: ModuleKey, fingerprint: string): string => `${keyString(key)}|${fingerprint}`

/** Makes an empty in-memory store. */
export const make: Effect.Effect<TranspileStore["Service"]> = Effect.sync(() => {
  const rows = new Map<string, Row>()
  /** The fingerprints of each module key's rows, by `keyString`. */
  const versionsOfKey = new Map<string, Set<string>>()
  const epochs = new Map<string, number>()
  const epochOf = (realmUrl: string) => epochs.get(realmUrl) ?? 0

  const rowsOfKey = (key: ModuleKey): Array<Row> => {
    const fingerprints = versionsOfKey.get(keyString(key))
    if (fingerprints === undefined) return []
    const found: Array<Row> = []
    for (const fingerprint of fingerprints) {
      const row = rows.get(rowId(key, fingerprint))
      if (row !== undefined) found.push(row)
    }
    return found
  }
  /** The key's generation: the highest over the rows of every version. */
  const generationOf = (key: ModuleKey): number =>
    rowsOfKey(key).reduce((highest, row) => Math.max(highest, row.generation), 0)

  const put = (row: Row): void => {
    rows.set(rowId(row.key, row.fingerprint), row)
    const id = keyString(row.key)
    let fingerprints = versionsOfKey.get(id)
    if (fingerprints === undefined) versionsOfKey.set(id, fingerprints = new Set())
    fingerprints.add(row.fingerprint)
  }
  const remove = (row: Row): void => {
    rows.delete(rowId(row.key, row.fingerprint))
    const fingerprints = versionsOfKey.get(keyString(row.key))
    fingerprints?.delete(row.fingerprint)
    if (fingerprints?.size === 0) versionsOfKey.delete(keyString(row.key))
  }

  const tombstoneOf = (row: Row, generation: number, now: number, awaiting: string | null = null): Row => ({
    ...row,
    generation,
    content: undefined,
    sourceHash: awaiting,
    updatedAt: now,
    accessedAt: now
  })

  /** The bytes a live row counts for against the cap: its body, or its encoded failure. */
  const sizeOf = (content: WriteContent): number =>
    content._tag === "Module"
      ? moduleBytes(content.module)
      : Buffer.byteLength(JSON.stringify(content.error), "utf8")

  /** Tombstones each realm's least recently read live rows beyond `cap` bytes; returns how many. */
  const evictOverCap = (cap: number, now: number): number => {
    const byRealm = new Map<string, Array<Row>>()
    for (const row of rows.values()) {
      if (row.content === undefined) continue
      const list = byRealm.get(row.key.realmUrl) ?? []
      list.push(row)
      byRealm.set(row.key.realmUrl, list)
    }
    let evicted = 0
    for (const list of byRealm.values()) {
      list.sort((a, b) => b.accessedAt - a.accessedAt || (a.key.path < b.key.path ? -1 : a.key.path > b.key.path ? 1 : 0))
      let running = 0
      for (const row of list) {
        running += row.content === undefined ? 0 : sizeOf(row.content)
        if (running > cap) {
          put(tombstoneOf(row, row.generation + 1, now))
          evicted++
        }
      }
    }
    return evicted
  }

  /** A versioned key's row as read at `now`, which counts as a read of it. */
  const readAt = (key: VersionedKey, now: number): StoredRow => {
    const row = rows.get(rowId(key, key.fingerprint))
    const captured = { generation: generationOf(key), realmEpoch: epochOf(key.realmUrl) }
    if (row === undefined || row.content === undefined) return absent(captured)
    put({ ...row, accessedAt: now })
    const common = { captured, fingerprint: row.fingerprint, sourceHash: row.sourceHash ?? "" }
    return row.content._tag === "Module"
      ? { _tag: "Module", ...common, module: row.content.module }
      : { _tag: "Failure", ...common, error: row.content.error }
  }

  return TranspileStore.of({
    kind: "memory",
    read: (key) => Effect.map(Clock.currentTimeMillis, (now) => readAt(key, now)),
    readMany: (keys) => Effect.map(Clock.currentTimeMillis, (now) => keys.map((key) => readAt(key, now))),
    write: (request) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (epochOf(request.key.realmUrl) !== request.captured.realmEpoch) return false
        const newer = rowsOfKey(request.key).filter((row) => row.generation > request.captured.generation)
        if (newer.some((row) => row.sourceHash !== request.sourceHash)) return false
        put({
          key: moduleKey(request.key.realmUrl, request.key.path),
          generation: Math.max(request.captured.generation, generationOf(request.key)),
          content: request.content,
          fingerprint: request.fingerprint,
          sourceHash: request.sourceHash,
          updatedAt: now,
          accessedAt: now
        })
        return true
      }),
    tombstone: (key, sourceHash) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const generation = generationOf(key) + 1
        const existing = rowsOfKey(key)
        const awaiting = sourceHash ?? null
        const replaced = sourceHash === undefined ? existing : existing.filter((row) => row.sourceHash !== sourceHash)
        for (const row of replaced) put(tombstoneOf(row, generation, now, awaiting))
        if (existing.length === 0) {
          put({ key: moduleKey(key.realmUrl, key.path), generation, content: undefined, fingerprint: "", sourceHash: awaiting, updatedAt: now, accessedAt: now })
        }
        const changed = replaced.length > 0 || existing.length === 0
        return { generation: changed ? generation : generation - 1, changed }
      }),
    wipeRealm: (realmUrl) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        epochs.set(realmUrl, epochOf(realmUrl) + 1)
        for (const row of rows.values()) {
          if (row.key.realmUrl === realmUrl && row.content !== undefined) put(tombstoneOf(row, row.generation + 1, now))
        }
      }),
    prune: (options) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        let removed = 0
        for (const row of [...rows.values()]) {
          const isTombstone = row.content === undefined || row.content._tag === "Failure"
          if (
            (isTombstone && now - row.updatedAt > options.tombstonesOlderThanMillis) ||
            now - row.accessedAt > options.unreadForMillis
          ) {
            remove(row)
            removed++
          }
        }
        const cap = options.maxBytesPerRealm
        if (cap !== undefined) removed += evictOverCap(cap, now)
        return removed
      }),
    preload: (request) =>
      Stream.suspend(() => {
        const live: Array<{ readonly row: Row; readonly preloaded: PreloadedRow }> = []
        const realms = new Set(request.realmUrls)
        for (const row of rows.values()) {
          const content = row.content
          if (!realms.has(row.key.realmUrl) || row.fingerprint !== request.fingerprint) continue
          if (content?._tag !== "Module") continue
          live.push({ row, preloaded: { key: row.key, module: { ...content.module, sourceHash: row.sourceHash ?? "" } } })
        }
        const order = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0)
        // As the SQL store: most recently read first, then by realm and path.
        live.sort((a, b) =>
          b.row.accessedAt - a.row.accessedAt || order(a.row.key.realmUrl, b.row.key.realmUrl) ||
          order(a.row.key.path, b.row.key.path)
        )
        const taken: Array<PreloadedRow> = []
        let total = 0
        for (const { preloaded } of live) {
          total += moduleBytes(preloaded.module)
          if (total > request.maxBytes) break
          taken.push(preloaded)
        }
        return Stream.fromIterable(taken)
      }),
    versions: (realmUrl) =>
      Effect.sync(() => {
        const byFingerprint = new Map<string, { rows: number; bytes: number; lastRead: number }>()
        for (const row of rows.values()) {
          if (row.key.realmUrl !== realmUrl || row.content === undefined) continue
          const version = byFingerprint.get(row.fingerprint) ?? { rows: 0, bytes: 0, lastRead: 0 }
          version.rows++
          version.bytes += sizeOf(row.content)
          version.lastRead = Math.max(version.lastRead, row.accessedAt)
          byFingerprint.set(row.fingerprint, version)
        }
        return [...byFingerprint]
          .sort(([a, x], [b, y]) => y.lastRead - x.lastRead || (a < b ? -1 : a > b ? 1 : 0))
          .map(([fingerprint, version]): StoredVersion => ({
            fingerprint,
            rows: version.rows,
            bytes: version.bytes,
            lastReadAt: new Date(version.lastRead).toISOString()
          }))
      })
  })
})

/**
 * A layer with a fresh in-memory store.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Coordinator, Domain, Invalidations, ModuleCache, ModuleSources } from "module-transpile-cache"
 * import { MemoryTranspileStore, TestTranspiler } from "module-transpile-cache/testing"
 *
 * // One cache, everything in memory: a unit test's setup.
 * const key = Domain.moduleKey("memory://realm/", "a.ts")
 * const transpiler = TestTranspiler.make()
 * const CacheTest = ModuleCache.layer().pipe(
 *   Layer.provide(Layer.mergeAll(
 *     MemoryTranspileStore.layer,
 *     Coordinator.layerNone,
 *     Invalidations.layerNone,
 *     TestTranspiler.layer(transpiler),
 *     ModuleSources.layerMemory(ModuleSources.makeMemory([[key, "export const a = 1\n"]]))
 *   ))
 * )
 *
 * const outcome = await Effect.runPromise(
 *   Effect.gen(function*() {
 *     const cache = yield* ModuleCache.ModuleCache
 *     return (yield* cache.get(key)).outcome // "transpiled"
 *   }).pipe(Effect.provide(CacheTest))
 * )
 * ```
 */
export const layer: Layer.Layer<TranspileStore> = Layer.effect(TranspileStore, make)
