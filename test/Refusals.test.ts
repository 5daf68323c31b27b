/**
 * The fallback decision under refused connections, deterministically on memory layers:
 * an L2 operation the database refused ("too many clients") is waited out on a bounded
 * backoff and counted; any other store failure, or a refusal that outlasts the deadline,
 * falls back to a local transpile.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { ConnectionError, SqlError, UnknownError } from "effect/sql/SqlError"
import * as Coordinator from "../src/domain/Coordinator.ts"
import { StoreError } from "../src/domain/Errors.ts"
import * as Invalidations from "../src/domain/Invalidations.ts"
import { isRefusal } from "../src/internal/refusal.ts"
import * as ModuleCache from "../src/cache/ModuleCache.ts"
import * as ModuleSources from "../src/domain/ModuleSources.ts"
import { Transpiler } from "../src/domain/Transpiler.ts"
import { TranspileStore } from "../src/domain/TranspileStore.ts"
import { keyOf, makeWorld, type World } from "./support/world.ts"

const a = keyOf("a.ts")
const refused = new StoreError({
  operation: "read",
  message: "sorry, too many clients already",
  refused: true,
  retryable: true
})
const down = new StoreError({ operation: "read", message: "connect ECONNREFUSED", retryable: true })

/** A cache whose L2 reads fail with `failure` while `failing()` holds, counting the failed reads. */
const cacheFailingReads = (
  world: World,
  failure: StoreError,
  failing: () => boolean,
  onFailed: (count: number) => Effect.Effect<void>,
  options: ModuleCache.ModuleCacheOptions = {}
) => {
  let failed = 0
  const store = TranspileStore.of({
    ...world.store,
    read: (key) =>
      Effect.suspend(() =>
        failing() ? Effect.andThen(onFailed(++failed), Effect.fail(failure)) : world.store.read(key)
      )
  })
  return ModuleCache.make(options).pipe(
    Effect.provideService(Transpiler, world.transpiler.service),
    Effect.provideService(ModuleSources.ModuleSources, world.sources.service),
    Effect.provideService(TranspileStore, store),
    Effect.provideService(Coordinator.Coordinator, Coordinator.none),
    Effect.provideService(Invalidations.Invalidations, Invalidations.none)
  )
}

describe("refused connections", () => {
  it.live("a refused L2 read is waited out, counted, and the load goes on without a fallback", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1" })
      const thrice = yield* Deferred.make<void>()
      let refusing = true
      const cache = yield* cacheFailingReads(world, refused, () => refusing, (n) =>
        n === 3 ? Deferred.succeed(thrice, undefined) : Effect.void)
      const getting = yield* Effect.forkChild(cache.get(a))
      // The server frees a connection only after three refusals.
      yield* Deferred.await(thrice)
      refusing = false
      const result = yield* Fiber.join(getting)
      const stats = yield* cache.stats
      expect(result.outcome).toBe("transpiled")
      expect(stats.fallbacks).toBe(0)
      expect(stats.refusals).toBeGreaterThanOrEqual(3)
      expect(world.transpiler.calls()).toBe(1)
    }))

  it.live("an unreachable store falls back at once, with no refusal counted", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1" })
      const cache = yield* cacheFailingReads(world, down, () => true, () => Effect.void)
      const result = yield* cache.get(a)
      const stats = yield* cache.stats
      expect(result.outcome).toBe("fallback")
      expect(stats.refusals).toBe(0)
    }))

  it.live("a refusal that outlasts the deadline falls back", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1" })
      const cache = yield* cacheFailingReads(world, refused, () => true, () => Effect.void, { deadline: "200 millis" })
      const result = yield* cache.get(a)
      const stats = yield* cache.stats
      expect(result.outcome).toBe("fallback")
      expect(stats.refusals).toBeGreaterThan(1)
    }))

  it("refusals are told from outages by SQLSTATE", () => {
    const withCode = (code: string) =>
      new SqlError({ reason: new UnknownError({ message: "PgConnection: Failed to connect", operation: "connect", cause: { code } }) })
    expect(isRefusal(withCode("53300"))).toBe(true) // too many clients / connection limits
    expect(isRefusal(withCode("57P03"))).toBe(true) // the database system is starting up
    expect(isRefusal(withCode("3D000"))).toBe(false) // unknown database
    expect(isRefusal(withCode("28P01"))).toBe(false) // authentication
    const refusedSocket = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })
    expect(isRefusal(new SqlError({ reason: new ConnectionError({ message: "down", operation: "connect", cause: refusedSocket }) })))
      .toBe(false)
    expect(isRefusal(new StoreError({ operation: "read", message: "x", retryable: false }))).toBe(false)
  })
})
