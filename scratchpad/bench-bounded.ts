/**
 * The cost of a realm-wide wipe over 50 live rows, without and with a history of 5000
 * tombstones in the same realm (made by invalidations of other keys), on Postgres and
 * PGlite: with the partial index of live rows the two should cost about the same.
 * Run: npx node scratchpad/bench-bounded.ts   (DATABASE_URL as for the tests)
 */
import { PgClient } from "@effect/sql-pg"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, type Layer, Redacted } from "effect"
import type { SqlClient } from "effect/sql"
import { moduleKey, versionedKey } from "../src/domain/Domain.ts"
import * as Migrations from "../src/store/Migrations.ts"
import * as PgliteClient from "../src/store/PgliteClient.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import { dropDatabase, freshDatabase } from "../test/support/database.ts"
import { type BenchRow, median } from "./bench-l1.ts"

const body = "export const a = 1;\n".repeat(50)

/** Median ms of a wipe of `realm` after its 50 modules were written again, over `rounds`. */
const wipeMillis = (store: SqlTranspileStore.SqlStoreKind, realm: string, rounds: number) =>
  Effect.gen(function*() {
    const s = yield* SqlTranspileStore.make({ kind: store })
    const samples: Array<number> = []
    for (let r = 0; r < rounds; r++) {
      yield* Effect.forEach(Array.from({ length: 50 }, (_, i) => versionedKey(moduleKey(realm, `m${i}.ts`), "fp")), (key) =>
        Effect.flatMap(s.read(key), (row) =>
          s.write({
            key,
            captured: row.captured,
            fingerprint: "fp",
            sourceHash: "h",
            content: { _tag: "Module", module: { body, headers: {}, dependencyKeys: [], sourceHash: "h" } }
          })), { discard: true })
      const started = performance.now()
      yield* s.wipeRealm(realm)
      samples.push(performance.now() - started)
    }
    return median(samples)
  })

const measure = (name: string, kind: SqlTranspileStore.SqlStoreKind, sqlLayer: Layer.Layer<SqlClient.SqlClient, unknown>) =>
  Effect.gen(function*() {
    yield* Migrations.run(Migrations.optionsFor(kind))
    const store = yield* SqlTranspileStore.make({ kind })
    const fresh = "https://bench.test/fresh/"
    const old = "https://bench.test/old/"
    // History: 5000 tombstones of keys that were invalidated once, in the realm measured.
    yield* Effect.forEach(Array.from({ length: 5000 }, (_, i) => moduleKey(old, `gone/${i}.ts`)), (key) => store.tombstone(key), {
      discard: true,
      concurrency: 4
    })
    const without = yield* wipeMillis(kind, fresh, 15)
    const withHistory = yield* wipeMillis(kind, old, 15)
    return [
      { name: `${name}: realm wipe, 50 live rows (ms, median)`, value: without.toFixed(2) },
      { name: `${name}: same, plus 5000 tombstones in the realm (ms, median)`, value: withHistory.toFixed(2) },
      { name: `${name}: with history / without`, value: `${(withHistory / without).toFixed(2)}x` }
    ] satisfies Array<BenchRow>
  }).pipe(Effect.provide(sqlLayer))

export const benchBounded = async (): Promise<Array<BenchRow>> => {
  const url = freshDatabase("bench_bounded")
  const dataDir = mkdtempSync(join(tmpdir(), "mtc-bench-bounded-"))
  try {
    const pg = await Effect.runPromise(
      measure("Postgres", "postgres", PgClient.layer({ url: Redacted.make(url), maxConnections: 4 }))
    )
    const pglite = await Effect.runPromise(measure("PGlite", "pglite", PgliteClient.layer({ dataDir })))
    return [...pg, ...pglite]
  } finally {
    dropDatabase(url)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

if (import.meta.main) {
  console.table(await benchBounded())
}
