/**
 * A fleet simulated in one process: N members, each a ModuleCache with its own Postgres
 * sessions and pool (exactly what separate processes would open: its own fleet session,
 * its own pool of `budget - 1`), a counting transpiler, and one shared realm of in-memory
 * sources. A sampler counts the database's connections while the fleet runs.
 */
import { PgConnection } from "@effect/sql-pg"
import { Context, Effect, Exit, Fiber, Layer, Redacted, Scope } from "effect"
import { type GetResult, moduleKey, type ModuleKey } from "../../src/domain/Domain.ts"
import { type CacheStats, ModuleCache, type ModuleCacheOptions } from "../../src/cache/ModuleCache.ts"
import * as ModuleCacheLive from "../../src/live/ModuleCacheLive.ts"
import { layerMemory, makeMemory, type MemorySources } from "../../src/domain/ModuleSources.ts"
import * as TestTranspiler from "../../src/transpiler/TestTranspiler.ts"
import { Transpiler } from "../../src/domain/Transpiler.ts"

/** One member of the simulated fleet. */
export interface Member {
  readonly index: number
  readonly cache: ModuleCache["Service"]
  readonly transpiler: TestTranspiler.TestTranspiler
}

/** Options of {@link startFleet}. */
export interface SimulationOptions {
  readonly url: string
  readonly members: number
  /** Connections per member (`MTC_PG_MAX_CONNECTIONS`). */
  readonly budget: number
  readonly realmUrl: string
  /** Module paths and their sources. */
  readonly modules: ReadonlyArray<readonly [string, string]>
  /** Time each transpile takes (default 20 ms), as a stand-in for Babel. */
  readonly transpileMs?: number
  /** Idle time after which a pool connection closes (default the library's). */
  readonly poolIdleTimeout?: string
  /** Start the members one after the other instead of all at once. */
  readonly sequential?: boolean
  /** Options of every member's cache. */
  readonly cache?: ModuleCacheOptions
}

/** A running simulated fleet. */
export interface SimulatedFleet {
  readonly members: ReadonlyArray<Member>
  readonly sources: MemorySources
  readonly key: (path: string) => ModuleKey
  readonly transpiles: () => number
  readonly close: () => Promise<void>
}

const slow = (inner: TestTranspiler.TestTranspiler, ms: number): Transpiler["Service"] =>
  Transpiler.of({
    fingerprint: inner.service.fingerprint,
    transpile: (input) => Effect.andThen(Effect.sleep(ms), inner.service.transpile(input))
  })

/** Starts the members (each with its own connections) and returns when all are up. */
export const startFleet = async (options: SimulationOptions): Promise<SimulatedFleet> => {
  const key = (path: string) => moduleKey(options.realmUrl, path)
  const sources = makeMemory(options.modules.map(([path, source]) => [key(path), source] as const))
  const scopes: Array<Scope.Closeable> = []
  const start = async (index: number): Promise<Member> => {
    const scope = Effect.runSync(Scope.make())
    scopes.push(scope)
    const transpiler = TestTranspiler.make()
    const store: ModuleCacheLive.StoreChoice = {
      _tag: "postgres",
      url: Redacted.make(options.url),
      maxConnections: options.budget,
      applicationTag: `sim-${index}`,
      fleetSize: options.members,
      ...(options.poolIdleTimeout === undefined ? {} : { poolIdleTimeout: options.poolIdleTimeout as `${number} millis` })
    }
    const layer = ModuleCacheLive.layer(store, options.cache).pipe(
      Layer.provide(Layer.merge(layerMemory(sources), Layer.succeed(Transpiler, slow(transpiler, options.transpileMs ?? 20))))
    )
    const context = await Effect.runPromise(Layer.buildWithScope(layer, scope).pipe(
      Effect.tapCause((cause) => Effect.sync(() => console.error(`member ${index} failed to start`, cause)))
    ))
    return { index, cache: Context.get(context, ModuleCache), transpiler }
  }
  const members: Array<Member> = []
  const closeAll = () => Promise.all(scopes.map((scope) => Effect.runPromise(Scope.close(scope, Exit.void))))
  try {
    if (options.sequential === true) {
      for (let i = 0; i < options.members; i++) members.push(await start(i))
    } else {
      members.push(...await Promise.all(Array.from({ length: options.members }, (_, i) => start(i))))
    }
  } catch (error) {
    // Members that did start must not keep their connections.
    await Promise.allSettled(scopes.map((scope) => Effect.runPromise(Scope.close(scope, Exit.void))))
    throw error
  }
  return {
    members,
    sources,
    key,
    transpiles: () => members.reduce((sum, m) => sum + m.transpiler.calls(), 0),
    close: async () => {
      await closeAll()
    }
  }
}

/** One get as the herd saw it. */
export interface HerdSample {
  readonly member: number
  readonly path: string
  readonly ok: boolean
  readonly outcome?: GetResult["outcome"]
  readonly error?: string
  readonly ms: number
}

/** `k` concurrent gets of every path on every member, all at once. */
export const herd = (
  fleet: SimulatedFleet,
  paths: ReadonlyArray<string>,
  k: number
): Promise<Array<HerdSample>> =>
  Effect.runPromise(Effect.all(
    fleet.members.flatMap((member) =>
      paths.flatMap((path) =>
        Array.from({ length: k }, () =>
          Effect.suspend(() => {
            const started = performance.now()
            return Effect.match(member.cache.get(fleet.key(path)), {
              onSuccess: (result): HerdSample => ({
                member: member.index,
                path,
                ok: true,
                outcome: result.outcome,
                ms: performance.now() - started
              }),
              onFailure: (error): HerdSample => ({
                member: member.index,
                path,
                ok: false,
                error: `${error._tag}: ${error.message}`,
                ms: performance.now() - started
              })
            })
          }))
      )
    ),
    { concurrency: "unbounded" }
  ))

/**
 * Invalidates `path` on member 0 and returns how long it took until every other member's
 * get of it stopped answering from L1 (the peer heard the invalidation), or undefined if
 * some peer had not within `timeoutMs`.
 */
export const invalidationSpread = async (
  fleet: SimulatedFleet,
  path: string,
  timeoutMs: number
): Promise<number | undefined> => {
  const key = fleet.key(path)
  const [first, ...peers] = fleet.members
  const started = performance.now()
  await Effect.runPromise(first!.cache.invalidate(key))
  const waiting = new Set(peers)
  while (waiting.size > 0) {
    if (performance.now() - started > timeoutMs) return undefined
    for (const member of [...waiting]) {
      const result = await Effect.runPromise(Effect.result(member.cache.get(key)))
      if (result._tag === "Failure" || result.success.outcome !== "l1") waiting.delete(member)
    }
    if (waiting.size > 0) await new Promise((resolve) => setTimeout(resolve, 5))
  }
  return performance.now() - started
}

/** Sums the counters of every member. */
export const totals = async (fleet: SimulatedFleet): Promise<Array<CacheStats>> =>
  Effect.runPromise(Effect.all(fleet.members.map((m) => m.cache.stats), { concurrency: 8 }))

/** Samples the connections to `database` every `everyMs` on a connection of its own, until stopped. */
export interface ConnectionSampler {
  /** Stops sampling; resolves to the highest count seen (the sampler's own connection included) and the samples taken. */
  readonly stop: () => Promise<{ readonly peak: number; readonly samples: number }>
}

/** Starts a {@link ConnectionSampler} (admin URL of the same server, database name to count). */
export const sampleConnections = async (adminUrl: string, database: string, everyMs = 25): Promise<ConnectionSampler> => {
  let peak = 0
  let samples = 0
  const scope = Effect.runSync(Scope.make())
  const connection = await Effect.runPromise(
    PgConnection.make({ url: Redacted.make(adminUrl), applicationName: "mtc-test-sampler" }).pipe(Scope.provide(scope))
  )
  const loop = Effect.forever(Effect.andThen(
    Effect.map(
      connection.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", [database]),
      (result) => {
        const n = result.rows[0]?.["n"]
        if (typeof n === "number") peak = Math.max(peak, n)
        samples++
      }
    ),
    Effect.sleep(`${everyMs} millis`)
  ))
  const fiber = Effect.runFork(loop)
  let stopped: Promise<void> | undefined
  return {
    stop: async () => {
      stopped ??= Effect.runPromise(Effect.andThen(Fiber.interrupt(fiber), Scope.close(scope, Exit.void)))
      await stopped
      return { peak, samples }
    }
  }
}
