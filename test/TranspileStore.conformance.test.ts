/**
 * One conformance suite, three stores: Postgres (a fresh database on the real server),
 * PGlite (a temporary data directory) and memory. Each must give the same answers.
 */
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { PgClient } from "@effect/sql-pg"
import { afterAll, assert, expect, layer, type Vitest } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import * as L2Writes from "../src/cache/L2Writes.ts"
import { moduleKey, versionedKey } from "../src/domain/Domain.ts"
import { TranspileError } from "../src/domain/Errors.ts"
import * as MemoryTranspileStore from "../src/store/MemoryTranspileStore.ts"
import * as Migrations from "../src/store/Migrations.ts"
import * as PgliteClient from "../src/store/PgliteClient.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import { TranspileStore } from "../src/domain/TranspileStore.ts"
import { dropDatabase, freshDatabase } from "./support/database.ts"
import { type StoreBackend, storeSuite } from "./support/storeSuite.ts"

// Made at collection: an unreachable Postgres fails this file, never skips it.
const databaseUrl = freshDatabase("conformance")
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mtc-conformance-"))
const batchedDatabaseUrl = freshDatabase("conformance_batched")
const batchedDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mtc-conformance-batched-"))
const workerDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mtc-conformance-worker-"))
afterAll(() => {
  dropDatabase(databaseUrl)
  dropDatabase(batchedDatabaseUrl)
  fs.rmSync(dataDir, { recursive: true, force: true })
  fs.rmSync(batchedDataDir, { recursive: true, force: true })
  fs.rmSync(workerDataDir, { recursive: true, force: true })
})

/** Ages a realm's rows by moving their timestamps back. */
const ageRows = (realmUrl: string, millis: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      UPDATE module_transpile_cache
      SET created_at = created_at - ${millis}::float8 * interval '1 millisecond',
          accessed_at = accessed_at - ${millis}::float8 * interval '1 millisecond'
      WHERE realm_url = ${realmUrl}
    `
  })

const migrated = (kind: SqlTranspileStore.SqlStoreKind) =>
  Layer.effectDiscard(Migrations.run(Migrations.optionsFor(kind)))

const sqlBackend = (kind: SqlTranspileStore.SqlStoreKind): StoreBackend<SqlClient.SqlClient> => ({
  name: kind,
  makeStore: SqlTranspileStore.make({ kind }),
  age: ageRows
})

/**
 * The SQL store with every `write` going through the batching writer (`L2Writes` over
 * `writeMany`), as the read path sends them: writes that land together share a transaction.
 */
const batchedBackend = (
  kind: SqlTranspileStore.SqlStoreKind,
  options: { readonly ownsTable?: boolean } = {}
): StoreBackend<SqlClient.SqlClient> => ({
  name: `${kind} (batched writes)`,
  makeStore: Effect.map(SqlTranspileStore.make({ kind, ...options }), (store) => {
    assert(store.writeMany !== undefined, "the SQL store writes in batches")
    return TranspileStore.of({ ...store, write: L2Writes.make(store.writeMany) })
  }),
  age: ageRows
})

/** What only the SQL stores have: the table's persistence and the throttled read touch. */
const sqlOnlySuite = (it: Vitest.MethodsNonLive<SqlClient.SqlClient>, kind: SqlTranspileStore.SqlStoreKind) => {
  it.effect(`the cache table is ${kind === "postgres" ? "UNLOGGED" : "logged"}; the realm table is logged`, () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ relname: string; relpersistence: string }>`
        SELECT relname, relpersistence FROM pg_class
        WHERE relname IN ('module_transpile_cache', 'module_transpile_cache_realm') ORDER BY relname
      `
      expect(rows).toEqual([
        { relname: "module_transpile_cache", relpersistence: kind === "postgres" ? "u" : "p" },
        { relname: "module_transpile_cache_realm", relpersistence: "p" }
      ])
    }))

  it.effect("a read (or readMany) refreshes accessed_at only when it is older than a minute", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* SqlTranspileStore.make({ kind })
      const key = versionedKey(moduleKey(`https://realm.test/${kind}/touch/${randomUUID()}/`, "a.gts"), "fp")
      yield* store.write({
        key,
        captured: { generation: 0, realmEpoch: 0 },
        fingerprint: "fp",
        sourceHash: "h",
        content: { _tag: "Module", module: { body: "x", headers: {}, dependencyKeys: [], sourceHash: "h" } }
      })
      const secondsSinceAccess = Effect.map(
        sql<{ s: number }>`
          SELECT extract(epoch FROM now() - accessed_at)::float8 AS s FROM module_transpile_cache
          WHERE realm_url = ${key.realmUrl} AND canonical_path = ${key.path}
        `,
        (rows) => rows[0]?.s ?? Number.NaN
      )
      const setAccessedSecondsAgo = (seconds: number) =>
        sql`
          UPDATE module_transpile_cache SET accessed_at = now() - ${seconds}::float8 * interval '1 second'
          WHERE realm_url = ${key.realmUrl} AND canonical_path = ${key.path}
        `
      for (const read of [store.read, (k: typeof key) => store.readMany([k, k])]) {
        yield* setAccessedSecondsAgo(30)
        yield* read(key)
        expect(yield* secondsSinceAccess).toBeGreaterThanOrEqual(29)
        yield* setAccessedSecondsAgo(90)
        yield* read(key)
        expect(yield* secondsSinceAccess).toBeLessThan(5)
      }
    }))

  it.effect("writeMany checks each row on its own: fresh, stale, wiped, and a key given twice, in one call", () =>
    Effect.gen(function*() {
      const store = yield* SqlTranspileStore.make({ kind })
      assert(store.writeMany !== undefined)
      const realm = `https://realm.test/${kind}/many/${randomUUID()}/`
      const wiped = `https://realm.test/${kind}/many-wiped/${randomUUID()}/`
      const fresh = versionedKey(moduleKey(realm, "fresh.gts"), "fp")
      const stale = versionedKey(moduleKey(realm, "stale.gts"), "fp")
      const gone = versionedKey(moduleKey(wiped, "gone.gts"), "fp")
      const content = (body: string) =>
        ({ _tag: "Module", module: { body, headers: { h: body }, dependencyKeys: [body], sourceHash: "h" } }) as const
      const request = (key: typeof fresh, generation: number, body: string) => ({
        key,
        captured: { generation, realmEpoch: 0 },
        fingerprint: "fp",
        sourceHash: "h",
        content: content(body)
      })
      // stale.gts is tombstoned (generation 1) and wiped's epoch bumped after their captures at 0.
      expect((yield* store.tombstone(stale)).generation).toBe(1)
      yield* store.wipeRealm(wiped)
      const written = yield* store.writeMany([
        request(fresh, 0, "first"),
        request(stale, 0, "stale"),
        request(gone, 0, "gone"),
        request(fresh, 0, "second"),
        {
          ...request(stale, 0, "failed"),
          captured: { generation: 1, realmEpoch: 0 },
          content: { _tag: "Failure", error: new TranspileError({ path: "stale.gts", message: "boom" }) }
        }
      ])
      expect(written).toEqual([true, false, false, true, true])
      const [freshRow, staleRow, goneRow] = yield* store.readMany([fresh, stale, gone])
      assert(freshRow?._tag === "Module")
      expect(freshRow.module).toEqual({ body: "second", headers: { h: "second" }, dependencyKeys: ["second"], sourceHash: "h" })
      assert(staleRow?._tag === "Failure")
      expect(staleRow.captured.generation).toBe(1)
      expect(staleRow.error.message).toBe("boom")
      expect(goneRow).toEqual({ _tag: "Absent", captured: { generation: 0, realmEpoch: 1 } })
    }))
}

layer(
  migrated("postgres").pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 8 }))),
  { excludeTestServices: true, timeout: "60 seconds" }
)("TranspileStore conformance: postgres", (it) => {
  storeSuite(it, {
    ...sqlBackend("postgres"),
    makePeerStore: SqlTranspileStore.makePg({ url: Redacted.make(databaseUrl), maxConnections: 2 }),
    racingWriters: 96
  })
  sqlOnlySuite(it, "postgres")
})

// The batched runs have a database and a data directory of their own: prune counts every row.
layer(
  migrated("postgres").pipe(
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(batchedDatabaseUrl), maxConnections: 8 }))
  ),
  { excludeTestServices: true, timeout: "60 seconds" }
)("TranspileStore conformance: postgres, batched writes", (it) => {
  storeSuite(it, {
    ...batchedBackend("postgres"),
    makePeerStore: SqlTranspileStore.makePg({ url: Redacted.make(batchedDatabaseUrl), maxConnections: 2 }),
    racingWriters: 160
  })
})

layer(
  migrated("pglite").pipe(Layer.provideMerge(PgliteClient.layer({ dataDir }))),
  { excludeTestServices: true, timeout: "60 seconds" }
)("TranspileStore conformance: pglite", (it) => {
  storeSuite(it, sqlBackend("pglite"))
  sqlOnlySuite(it, "pglite")
})

layer(
  migrated("pglite").pipe(Layer.provideMerge(PgliteClient.layer({ dataDir: batchedDataDir }))),
  { excludeTestServices: true, timeout: "60 seconds" }
)("TranspileStore conformance: pglite, batched writes", (it) => {
  // More writers than a batch holds (64), so that the wipe lands between batches.
  storeSuite(it, { ...batchedBackend("pglite"), racingWriters: 160 })
})

// PGlite in its worker thread (what the embedded store runs by default), batched as served.
layer(
  migrated("pglite").pipe(Layer.provideMerge(PgliteClient.layer({ dataDir: workerDataDir, worker: true }))),
  { excludeTestServices: true, timeout: "60 seconds" }
)("TranspileStore conformance: pglite in a worker thread", (it) => {
  // As the embedded store runs: it owns its table, so reads of absent rows and tombstones
  // are answered by its row catalog.
  storeSuite(it, { ...batchedBackend("pglite", { ownsTable: true }), name: "pglite (worker)", racingWriters: 160 })
  sqlOnlySuite(it, "pglite")
})

layer(Layer.empty)("TranspileStore conformance: memory", (it) => {
  storeSuite(it, {
    name: "memory",
    makeStore: MemoryTranspileStore.make,
    age: (_realmUrl, millis) => TestClock.adjust(millis)
  })
})
