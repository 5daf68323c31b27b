/**
 * An in-memory TranspileStore with the same OCC semantics as the SQL stores. Several
 * ModuleCache instances sharing one of these behave like processes sharing a database.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Layer, Stream } from "effect"
import { keyString, type ModuleKey } from "../domain/Domain.ts"
import {
  absent,
  type PreloadedRow,
  type StoredRow,
  TranspileStore,
  type WriteContent
} from "../domain/TranspileStore.ts"

interface Row {
  readonly key: ModuleKey
  readonly generation: number
  readonly content: WriteContent | undefined
  readonly fingerprint: string
  readonly sourceHash: string
  readonly updatedAt: number
  readonly accessedAt: number
}

/** Makes an empty in-memory store. */
export const make: Effect.Effect<TranspileStore["Service"]> = Effect.sync(() => {
  const rows = new Map<string, Row>()
  const epochs = new Map<string, number>()
  const epochOf = (realmUrl: string) => epochs.get(realmUrl) ?? 0

  const tombstoneRow = (key: ModuleKey, now: number): Row => ({
    key,
    generation: (rows.get(keyString(key))?.generation ?? 0) + 1,
    content: undefined,
    fingerprint: "",
    sourceHash: "",
    updatedAt: now,
    accessedAt: now
  })

  /** The bytes a live row counts for against the cap: its body, or its encoded failure. */
  const sizeOf = (content: WriteContent): number =>
    content._tag === "Module"
      ? Buffer.byteLength(content.module.body, "utf8")
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
          rows.set(keyString(row.key), tombstoneRow(row.key, now))
          evicted++
        }
      }
    }
    return evicted
  }

  /** A key's row as read at `now`, which counts as a read of it. */
  const readAt = (key: ModuleKey, now: number): StoredRow => {
    const row = rows.get(keyString(key))
    const captured = { generation: row?.generation ?? 0, realmEpoch: epochOf(key.realmUrl) }
    if (row === undefined || row.content === undefined) return absent(captured)
    rows.set(keyString(key), { ...row, accessedAt: now })
    const common = { captured, fingerprint: row.fingerprint, sourceHash: row.sourceHash }
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
        const id = keyString(request.key)
        const existing = rows.get(id)
        if (epochOf(request.key.realmUrl) !== request.captured.realmEpoch) return false
        if (existing !== undefined && existing.generation > request.captured.generation) return false
        rows.set(id, {
          key: request.key,
          generation: request.captured.generation,
          content: request.content,
          fingerprint: request.fingerprint,
          sourceHash: request.sourceHash,
          updatedAt: now,
          accessedAt: now
        })
        return true
      }),
    tombstone: (key) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const row = tombstoneRow(key, now)
        rows.set(keyString(key), row)
        return row.generation
      }),
    wipeRealm: (realmUrl) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        epochs.set(realmUrl, epochOf(realmUrl) + 1)
        for (const row of rows.values()) {
          if (row.key.realmUrl === realmUrl && row.content !== undefined) {
            rows.set(keyString(row.key), tombstoneRow(row.key, now))
          }
        }
      }),
    prune: (options) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        let removed = 0
        for (const [id, row] of rows) {
          const isTombstone = row.content === undefined || row.content._tag === "Failure"
          if (
            (isTombstone && now - row.updatedAt > options.tombstonesOlderThanMillis) ||
            now - row.accessedAt > options.unreadForMillis
          ) {
            rows.delete(id)
            removed++
          }
        }
        const cap = options.maxBytesPerRealm
        if (cap !== undefined) removed += evictOverCap(cap, now)
        return removed
      }),
    usage: (realmUrl) =>
      Effect.sync(() => {
        let count = 0
        let bytes = 0
        for (const row of rows.values()) {
          if (row.key.realmUrl !== realmUrl || row.content === undefined) continue
          count++
          bytes += sizeOf(row.content)
        }
        return { rows: count, bytes }
      }),
    preload: (request) =>
      Stream.suspend(() => {
        const live: Array<{ readonly row: Row; readonly preloaded: PreloadedRow }> = []
        for (const row of rows.values()) {
          const content = row.content
          if (row.key.realmUrl !== request.realmUrl || row.fingerprint !== request.fingerprint) continue
          if (content?._tag !== "Module") continue
          live.push({ row, preloaded: { key: row.key, module: { ...content.module, sourceHash: row.sourceHash } } })
        }
        live.sort((a, b) =>
          b.row.accessedAt - a.row.accessedAt || (a.row.key.path < b.row.key.path ? -1 : a.row.key.path > b.row.key.path ? 1 : 0)
        )
        const taken: Array<PreloadedRow> = []
        let total = 0
        for (const { preloaded } of live) {
          total += Buffer.byteLength(preloaded.module.body, "utf8")
          if (total > request.maxBytes) break
          taken.push(preloaded)
        }
        return Stream.fromIterable(taken)
      })
  })
})

/** A layer with a fresh in-memory store. */
export const layer: Layer.Layer<TranspileStore> = Layer.effect(TranspileStore, make)
