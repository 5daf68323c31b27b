/**
 * The database going away in the middle of a run: gets still return bytes, a warning is
 * logged, the failure counter moves, and nothing hangs past the retry schedule.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, Redacted, Schedule } from "effect"
import { moduleKey } from "../src/domain/Domain.ts"
import { ModuleCache } from "../src/cache/ModuleCache.ts"
import * as ModuleCacheLive from "../src/live/ModuleCacheLive.ts"
import * as ModuleSources from "../src/domain/ModuleSources.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"
import { type Proxy, startProxy } from "./support/proxy.ts"

let url: string
let proxy: Proxy
beforeAll(async () => {
  url = freshDatabase("outage")
  proxy = await startProxy({ host: "127.0.0.1", port: Number(new URL(url).port || 5432) })
})
afterAll(async () => {
  await proxy.close()
  dropDatabase(url)
})

const realm = "https://outage.test/"
const paths = ["a.ts", "b.ts", "c.ts", "d.ts"]

const cacheLayer = (databaseUrl: string, transpiler: TestTranspiler.TestTranspiler) =>
  ModuleCacheLive.layer(
    {
      _tag: "postgres",
      url: Redacted.make(databaseUrl),
      poolSize: 2,
      connectTimeout: "500 millis",
      fleet: { heartbeat: "200 millis", sessionTimeout: "500 millis" }
    },
    { persistRetries: 3, persistRetryBase: "50 millis" }
  ).pipe(Layer.provide(Layer.merge(
    TestTranspiler.layer(transpiler),
    ModuleSources.layerMemory(ModuleSources.makeMemory(paths.map((p) => [moduleKey(realm, p), `export const x = "${p}"`])))
  )))

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const started = performance.now()
    const value = yield* effect
    return { value, ms: performance.now() - started }
  })

describe("the database going away", () => {
  it.live("a cut connection: warm keys answer from L1, cold keys through a local transpile, failures are counted", () => {
    const warnings: Array<string> = []
    const collector = Logger.make((options) => {
      if (options.logLevel === "Warn") warnings.push(String(options.message))
    })
    const transpiler = TestTranspiler.make()
    return Effect.gen(function*() {
      const cache = yield* ModuleCache
      expect((yield* cache.get(moduleKey(realm, "a.ts"))).outcome).toBe("transpiled")
      proxy.cut()
      const warm = yield* timed(cache.get(moduleKey(realm, "a.ts")))
      expect(warm.value.outcome).toBe("l1")
      const cold = yield* timed(cache.get(moduleKey(realm, "b.ts")))
      expect(cold.value.module.body).toContain('"b.ts"')
      // A local transpile: a fallback when its L2 read failed; "transpiled" when this process,
      // alone on the database (solo mode), answered the read from its row catalog and granted
      // its own lock, needing no statement before the write.
      expect(["fallback", "transpiled"]).toContain(cold.value.outcome)
      // Bounded by connect timeouts and the retry schedule, never the coalescing deadline.
      expect(cold.ms).toBeLessThan(3000)
      // The write behind it is retried, then given up: counted and logged.
      const stats = yield* cache.stats.pipe(
        Effect.repeat({ until: (s) => s.persistFailures > 0 && s.inFlight === 0, schedule: Schedule.spaced("50 millis") }),
        Effect.timeout("10 seconds")
      )
      expect(stats.persistFailures).toBeGreaterThan(0)
      expect(warnings.some((w) => w.includes("given up"))).toBe(true)
      const invalidated = yield* timed(cache.invalidate(moduleKey(realm, "a.ts")))
      expect(invalidated.ms).toBeLessThan(5000)
      // Postgres comes back: the cache uses it again.
      proxy.restore()
      const back = yield* cache.get(moduleKey(realm, "c.ts")).pipe(
        Effect.repeat({ until: (r) => r.outcome === "transpiled", schedule: Schedule.spaced("200 millis"), times: 50 })
      )
      expect(back.outcome).toBe("transpiled")
      const rows = yield* Effect.sync(() =>
        psql(`SELECT count(*) FROM module_transpile_cache WHERE canonical_path = 'c.ts' AND body IS NOT NULL`, url)
      ).pipe(Effect.repeat({ until: (n) => n === "1", schedule: Schedule.spaced("100 millis"), times: 50 }))
      expect(rows).toBe("1")
    }).pipe(
      Effect.provide(cacheLayer(proxy.urlFor(url), transpiler)),
      Effect.provide(Logger.layer([collector]))
    )
  })

  it.live("terminated backends mid-run: gets still return bytes", () => {
    const transpiler = TestTranspiler.make()
    return Effect.gen(function*() {
      const cache = yield* ModuleCache
      yield* cache.get(moduleKey(realm, "a.ts"))
      const database = new URL(url).pathname.slice(1)
      psql(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '${database}' AND pid <> pg_backend_pid()`)
      const cold = yield* timed(cache.get(moduleKey(realm, "d.ts")))
      expect(cold.value.module.body).toContain('"d.ts"')
      expect(cold.ms).toBeLessThan(3000)
    }).pipe(Effect.provide(cacheLayer(url, transpiler)))
  })
})
