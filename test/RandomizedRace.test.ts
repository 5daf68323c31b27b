/**
 * Randomized interleavings of get / invalidate (forced, or an edit's, named by its source and
 * reported again by every cache, some reports late) / invalidateRealm / stale L2 writes across 3
 * caches on one Postgres database. The claim, checked on every get: a get that starts after
 * an invalidate has returned never serves bytes older than that invalidate. On the cache that
 * invalidated, that holds from the moment `invalidate` returns; peers learn of it by NOTIFY,
 * so for them it holds once the notice can have arrived (PEER_GRACE_MS later: an L1 hit does
 * no I/O, so nothing stricter is possible without one).
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Random, Redacted } from "effect"
import { hashSource, type ModuleKey, moduleKey, versionedKey } from "../src/domain/Domain.ts"
import { ModuleCache } from "../src/cache/ModuleCache.ts"
import * as ModuleCacheLive from "../src/live/ModuleCacheLive.ts"
import * as ModuleSources from "../src/domain/ModuleSources.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { Transpiler } from "../src/domain/Transpiler.ts"
import { type Captured, TranspileStore } from "../src/domain/TranspileStore.ts"
import { dropDatabase, freshDatabase } from "./support/database.ts"

let url: string
beforeAll(() => {
  url = freshDatabase("race")
})
afterAll(() => dropDatabase(url))

const realm = "https://race.test/"
const keys = ["a.ts", "b.ts", "c.ts", "d.ts"].map((p) => moduleKey(realm, p))
const OPERATIONS = 2000
const PEER_GRACE_MS = 1000
const content = (key: ModuleKey, version: number) => `export const version = ${version} // ${key.path}\n`
const versionOf = (body: string) => Number(/version = (\d+)/.exec(body)?.[1] ?? "-1")

describe("randomized races on Postgres", () => {
  it.live(`${OPERATIONS} random operations across 3 caches never serve bytes older than a finished invalidate`, () =>
    Effect.gen(function*() {
      const sources = ModuleSources.makeMemory(keys.map((k) => [k, content(k, 0)]))
      const version = new Map(keys.map((k) => [k.path, 0]))
      /** Finished invalidations: which cache, which key, the version it made current, and when. */
      const finished: Array<{ cache: number; path: string; version: number; at: number }> = []
      const floorFor = (cache: number, path: string) => {
        const now = performance.now()
        let floor = 0
        for (const f of finished) {
          if (f.path === path && (f.cache === cache || now - f.at > PEER_GRACE_MS)) floor = Math.max(floor, f.version)
        }
        return floor
      }
      const inner = TestTranspiler.make()
      // A transpiler that takes a random 0-3 ms, to widen the windows between steps.
      const jittery = Layer.succeed(Transpiler, Transpiler.of({
        fingerprint: inner.service.fingerprint,
        transpile: (input) =>
          Effect.andThen(Effect.flatMap(Random.nextIntBetween(0, 3), (ms) => Effect.sleep(ms)), inner.service.transpile(input))
      }))
      const cacheLayer = ModuleCacheLive.layer(
        { _tag: "postgres", url: Redacted.make(url), poolSize: 4 },
        { pollMax: "50 millis" }
      ).pipe(Layer.provide(Layer.merge(jittery, ModuleSources.layerMemory(sources))))
      const caches = yield* Effect.all(
        Array.from({ length: 3 }, () => Effect.map(Layer.build(cacheLayer), (ctx) => ctx.mapUnsafe.get(ModuleCache.key) as ModuleCache["Service"]))
      )
      const storeContext = yield* Layer.build(SqlTranspileStore.layerPg({ url: Redacted.make(url), maxConnections: 2 }))
      const store = storeContext.mapUnsafe.get(TranspileStore.key) as TranspileStore["Service"]

      let checkedGets = 0
      let staleWritesApplied = 0
      const pick = <A>(items: ReadonlyArray<A>) => Effect.map(Random.nextIntBetween(0, items.length - 1), (i) => items[i]!)

      const edit = (key: ModuleKey) => {
        const next = (version.get(key.path) ?? 0) + 1
        version.set(key.path, next)
        sources.set(key, content(key, next))
        return next
      }
      const raise = (cache: number, key: ModuleKey, version: number) =>
        finished.push({ cache, path: key.path, version, at: performance.now() })

      const operation = Effect.gen(function*() {
        const roll = yield* Random.nextIntBetween(0, 99)
        const index = yield* Random.nextIntBetween(0, caches.length - 1)
        const cache = caches[index]!
        const key = yield* pick(keys)
        if (roll < 60) {
          const atStart = floorFor(index, key.path)
          const result = yield* cache.get(key)
          const served = versionOf(result.module.body)
          if (served < atStart) {
            return yield* Effect.die(new Error(
              `stale: ${key.path} served version ${served} (${result.outcome}) on cache ${index} after an invalidate to ${atStart} finished`
            ))
          }
          checkedGets++
        } else if (roll < 85) {
          const edited = edit(key)
          if (roll < 72) yield* cache.invalidate(key)
          else {
            // An edit as watchers report it: named by its source, then reported again by every
            // cache, some of them late (after a newer edit, even).
            const named = hashSource(content(key, edited))
            yield* cache.invalidate(key, named)
            yield* Effect.forkScoped(Effect.forEach(caches, (other) =>
              Effect.andThen(Effect.flatMap(Random.nextIntBetween(0, 5), (ms) => Effect.sleep(ms)), other.invalidate(key, named)), {
              concurrency: "unbounded",
              discard: true
            }))
          }
          raise(index, key, edited)
        } else if (roll < 90) {
          const edited = keys.map((k) => [k, edit(k)] as const)
          yield* cache.invalidateRealm(realm)
          for (const [k, v] of edited) raise(index, k, v)
        } else {
          // A slow writer: captures the row state, sleeps, then writes the bytes it had.
          const row = yield* store.read(versionedKey(key, inner.service.fingerprint))
          const captured: Captured = row.captured
          const text = content(key, version.get(key.path) ?? 0)
          yield* Effect.flatMap(Random.nextIntBetween(0, 5), (ms) => Effect.sleep(ms))
          const applied = yield* store.write({
            key,
            captured,
            fingerprint: inner.service.fingerprint,
            sourceHash: hashSource(text),
            content: {
              _tag: "Module",
              module: { body: `// transpiled ${key.path}\n${text}`, headers: {}, dependencyKeys: [], sourceHash: hashSource(text) }
            }
          })
          if (applied) staleWritesApplied++
        }
      })

      yield* Effect.all(Array.from({ length: OPERATIONS }, () => operation), { concurrency: 12, discard: true })
      const stats = yield* Effect.forEach(caches, (c) => c.stats)
      console.log(
        `randomized: ${OPERATIONS} operations, ${checkedGets} gets checked, ${staleWritesApplied} slow writes applied, ` +
          `transpiles=${inner.calls()}, outcomes l1=${stats.reduce((n, s) => n + s.l1Hits, 0)} l2=${stats.reduce((n, s) => n + s.l2Hits, 0)} ` +
          `coalesced=${stats.reduce((n, s) => n + s.coalesced, 0)} fallbacks=${stats.reduce((n, s) => n + s.fallbacks, 0)}`
      )
      expect(checkedGets).toBeGreaterThan(OPERATIONS / 2)
    }))
})
