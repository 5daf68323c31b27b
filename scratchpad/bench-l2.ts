/**
 * An L2 hit through ModuleCache.get (L1 disabled) against a bare single-row SELECT on the
 * same client setup, in the same run, for Postgres and for PGlite.
 * Run: npx node scratchpad/bench-l2.ts   (DATABASE_URL as for the tests)
 */
import { PgClient } from "@effect/sql-pg"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as Coordinator from "../src/domain/Coordinator.ts"
import { moduleKey } from "../src/domain/Domain.ts"
import * as Invalidations from "../src/domain/Invalidations.ts"
import * as ModuleCache from "../src/cache/ModuleCache.ts"
import * as ModuleSources from "../src/domain/ModuleSources.ts"
import * as PgliteClient from "../src/store/PgliteClient.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { dropDatabase, freshDatabase } from "../test/support/database.ts"
import { type BenchRow, median } from "./bench-l1.ts"

const key = moduleKey("https://bench.test/", "a.ts")
const source = "export const a: number = 1\n".repeat(40)

/** Median µs per sequential call of `effect`, over rounds of `n`. */
const microsPerOp = <E, R>(effect: Effect.Effect<unknown, E, R>, n: number, rounds: number) =>
  Effect.gen(function*() {
    const samples: Array<number> = []
    for (let r = 0; r <= rounds; r++) {
      const started = performance.now()
      for (let i = 0; i < n; i++) yield* effect
      if (r > 0) samples.push(((performance.now() - started) * 1000) / n)
    }
    return median(samples)
  })

const measure = (name: string, sqlLayer: Layer.Layer<SqlClient.SqlClient, unknown>, kind: "postgres" | "pglite") =>
  Effect.gen(function*() {
    const sources = ModuleSources.makeMemory([[key, source]])
    const layer = ModuleCache.layer({ l1MaxBytes: 0 }).pipe(
      Layer.provideMerge(Layer.mergeAll(
        SqlTranspileStore.layer({ kind }),
        Coordinator.layerNone,
        Invalidations.layerNone,
        ModuleSources.layerMemory(sources),
        TestTranspiler.layer(TestTranspiler.make())
      )),
      Layer.provideMerge(sqlLayer)
    )
    return yield* Effect.gen(function*() {
      const cache = yield* ModuleCache.ModuleCache
      const sql = yield* SqlClient.SqlClient
      yield* cache.get(key)
      yield* Effect.sleep("200 millis") // the L2 write follows the answer
      const l2 = cache.get(key)
      if ((yield* l2).outcome !== "l2") throw new Error("expected an L2 hit")
      const select = sql`SELECT body FROM module_transpile_cache WHERE realm_url = ${key.realmUrl} AND canonical_path = ${key.path}`
      const n = 500
      const bare = yield* microsPerOp(select, n, 5)
      const hit = yield* microsPerOp(l2, n, 5)
      return [
        { name: `${name}: L2 hit via ModuleCache.get, L1 off (µs/op, median)`, value: hit.toFixed(0) },
        { name: `${name}: bare single-row SELECT (µs/op, median)`, value: bare.toFixed(0) },
        { name: `${name}: L2 hit / SELECT ratio`, value: (hit / bare).toFixed(2) + "x" }
      ] satisfies Array<BenchRow>
    }).pipe(Effect.provide(layer))
  })

export const benchL2 = async (): Promise<Array<BenchRow>> => {
  const url = freshDatabase("bench_l2")
  const dataDir = mkdtempSync(join(tmpdir(), "mtc-bench-pglite-"))
  try {
    const pg = await Effect.runPromise(
      measure("Postgres", PgClient.layer({ url: Redacted.make(url), maxConnections: 4 }), "postgres")
    )
    const pglite = await Effect.runPromise(measure("PGlite", PgliteClient.layer({ dataDir }), "pglite"))
    return [...pg, ...pglite]
  } finally {
    dropDatabase(url)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

if (import.meta.main) {
  console.table(await benchL2())
}
