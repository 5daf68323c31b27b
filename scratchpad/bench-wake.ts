/**
 * How long waiters take to wake after the winner commits: two caches, each with its own pool,
 * lock session and LISTEN connection on one Postgres database; B waits while A transpiles.
 * With NOTIFY, against the same run with B deaf to notices (polling alone).
 * Run: npx node scratchpad/bench-wake.ts   (DATABASE_URL as for the tests)
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Effect, Fiber, Layer, Redacted } from "effect"
import { Coordinator } from "../src/domain/Coordinator.ts"
import { moduleKey } from "../src/domain/Domain.ts"
import { Invalidations } from "../src/domain/Invalidations.ts"
import * as ModuleCache from "../src/cache/ModuleCache.ts"
import * as ModuleSources from "../src/domain/ModuleSources.ts"
import * as PgFleet from "../src/fleet/PgFleet.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { Transpiler } from "../src/domain/Transpiler.ts"
import { TranspileStore } from "../src/domain/TranspileStore.ts"
import { dropDatabase, freshDatabase } from "../test/support/database.ts"
import { percentile } from "../test/support/fleet.ts"
import type { BenchRow } from "./bench-l1.ts"

const ROUNDS = 30

export const benchWake = async (): Promise<Array<BenchRow>> => {
  const url = freshDatabase("bench_wake")
  const realm = "https://wake.test/"
  const keys = Array.from({ length: ROUNDS * 2 }, (_, i) => moduleKey(realm, `m${i}.ts`))
  const sources = ModuleSources.makeMemory(keys.map((k) => [k, `export const x = "${k.path}"`]))
  const transpiler = TestTranspiler.make()
  let committedAt = 0

  /** One member: its own pool and fleet sessions, and a store that stamps each commit. */
  const member = (deafToNotices: boolean) =>
    Effect.gen(function*() {
      const context = yield* Layer.build(
        Layer.mergeAll(SqlTranspileStore.layer({ kind: "postgres" }), PgFleet.layer()).pipe(
          Layer.provide(Layer.provideMerge(PgFleet.layerSession(), PgClient.layer({ url: Redacted.make(url), maxConnections: 4 })))
        )
      )
      const store = Context.get(context, TranspileStore)
      const coordinator = Context.get(context, Coordinator)
      return yield* ModuleCache.make({}).pipe(
        Effect.provideService(TranspileStore, TranspileStore.of({
          ...store,
          write: (request) =>
            Effect.tap(store.write(request), () =>
              Effect.sync(() => {
                committedAt = performance.now()
              }))
        })),
        Effect.provideService(Coordinator, Coordinator.of({
          ...coordinator,
          register: deafToNotices
            ? (key) => Effect.map(coordinator.register(key), () => ({ wake: Effect.never }))
            : coordinator.register
        })),
        Effect.provideService(Invalidations, Context.get(context, Invalidations)),
        Effect.provideService(Transpiler, transpiler.service),
        Effect.provideService(ModuleSources.ModuleSources, sources.service)
      )
    })

  const measure = (deaf: boolean, offset: number) =>
    Effect.scoped(Effect.gen(function*() {
      const a = yield* member(false)
      const b = yield* member(deaf)
      const delays: Array<number> = []
      for (let round = 0; round < ROUNDS; round++) {
        const key = keys[offset + round]!
        const gate = yield* transpiler.gate
        const winning = yield* Effect.forkChild(a.get(key))
        yield* Deferred.await(gate.started)
        const losing = yield* Effect.forkChild(Effect.tap(b.get(key), () => Effect.sync(() => performance.now())))
        yield* Effect.sleep("30 millis") // B is waiting
        transpiler.ungate()
        yield* Deferred.succeed(gate.release, undefined)
        yield* Fiber.join(winning)
        const result = yield* Fiber.join(losing)
        const wokeAt = performance.now()
        if (result.outcome !== "coalesced") throw new Error(`expected a coalesced loser, got ${result.outcome}`)
        delays.push(wokeAt - committedAt)
      }
      return delays
    }))

  try {
    const notified = await Effect.runPromise(measure(false, 0))
    const polled = await Effect.runPromise(measure(true, ROUNDS))
    const show = (values: Array<number>) =>
      `p50=${percentile(values, 50).toFixed(1)}ms p99=${percentile(values, 99).toFixed(1)}ms`
    return [
      { name: `waiter wake after winner commit, NOTIFY (${ROUNDS} rounds)`, value: show(notified) },
      { name: `waiter wake after winner commit, polling only (${ROUNDS} rounds)`, value: show(polled) }
    ]
  } finally {
    dropDatabase(url)
  }
}

if (import.meta.main) {
  console.table(await benchWake())
}
