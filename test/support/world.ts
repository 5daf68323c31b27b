/**
 * A small in-process world for ModuleCache tests: memory sources, a gateable transpiler, a
 * shared memory store and a memory fleet, and caches built over them.
 */
import { Deferred, Effect, type Scope } from "effect"
import * as Coordinator from "../../src/domain/Coordinator.ts"
import { type ModuleKey, moduleKey, versionedKey } from "../../src/domain/Domain.ts"
import * as Invalidations from "../../src/domain/Invalidations.ts"
import * as MemoryFleet from "../../src/fleet/MemoryFleet.ts"
import * as MemoryTranspileStore from "../../src/store/MemoryTranspileStore.ts"
import * as ModuleCache from "../../src/cache/ModuleCache.ts"
import * as ModuleSources from "../../src/domain/ModuleSources.ts"
import * as TestTranspiler from "../../src/transpiler/TestTranspiler.ts"
import { Transpiler } from "../../src/domain/Transpiler.ts"
import { type StoredRow, TranspileStore } from "../../src/domain/TranspileStore.ts"

export const realm = "https://realm.test/"
export const keyOf = (path: string): ModuleKey => moduleKey(realm, path)

/** Holds one store operation: `entered` completes when a call arrives, which then waits for `release`. */
export interface StoreGate {
  readonly entered: Deferred.Deferred<void>
  readonly release: Deferred.Deferred<void>
}

export interface World {
  readonly sources: ModuleSources.MemorySources
  readonly transpiler: TestTranspiler.TestTranspiler
  readonly store: TranspileStore["Service"]
  readonly fleet: MemoryFleet.MemoryFleet
  /** Reads a key's L2 row of the world's transpiler's version. */
  readonly readRow: (key: ModuleKey) => Effect.Effect<StoredRow>
  /** Gates the next calls of a store operation. */
  readonly gateStore: (operation: "read" | "write" | "tombstone") => Effect.Effect<StoreGate>
}

export const makeWorld = (files: Record<string, string> = {}): Effect.Effect<World> =>
  Effect.gen(function*() {
    const inner = yield* MemoryTranspileStore.make
    const gates = new Map<string, StoreGate>()
    const held = <A, E>(operation: string, effect: Effect.Effect<A, E>) =>
      Effect.suspend(() => {
        const gate = gates.get(operation)
        if (gate === undefined) return effect
        return Deferred.succeed(gate.entered, undefined).pipe(
          Effect.andThen(Deferred.await(gate.release)),
          Effect.andThen(effect)
        )
      })
    const store = TranspileStore.of({
      ...inner,
      read: (key) => held("read", inner.read(key)),
      write: (request) => held("write", inner.write(request)),
      tombstone: (key, sourceHash) => held("tombstone", inner.tombstone(key, sourceHash))
    })
    const transpiler = TestTranspiler.make()
    return {
      sources: ModuleSources.makeMemory(Object.entries(files).map(([path, content]) => [keyOf(path), content])),
      transpiler,
      store,
      readRow: (key) => Effect.orDie(inner.read(versionedKey(key, transpiler.service.fingerprint))),
      fleet: MemoryFleet.makeFleet(),
      gateStore: (operation) =>
        Effect.gen(function*() {
          const gate = { entered: yield* Deferred.make<void>(), release: yield* Deferred.make<void>() }
          gates.set(operation, gate)
          return gate
        })
    }
  })

/**
 * A cache over the world; `fleet: false` gives it no coordinator and no peers. `transpiler`
 * replaces the world's (another version of the server, with a fingerprint of its own).
 */
export const makeCache = (
  world: World,
  options: ModuleCache.ModuleCacheOptions & {
    readonly fleet?: boolean
    readonly transpiler?: TestTranspiler.TestTranspiler
  } = {}
): Effect.Effect<ModuleCache.ModuleCache["Service"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const fleet = options.fleet ?? true
    const coordinator = fleet ? yield* MemoryFleet.makeCoordinator(world.fleet) : Coordinator.none
    const invalidations = fleet ? yield* MemoryFleet.makeInvalidations(world.fleet) : Invalidations.none
    return yield* ModuleCache.make(options).pipe(
      Effect.provideService(Transpiler, (options.transpiler ?? world.transpiler).service),
      Effect.provideService(ModuleSources.ModuleSources, world.sources.service),
      Effect.provideService(TranspileStore, world.store),
      Effect.provideService(Coordinator.Coordinator, coordinator),
      Effect.provideService(Invalidations.Invalidations, invalidations)
    )
  })

/** Lets forked fibers run until they block. */
export const settle = Effect.forEach(Array.from({ length: 50 }), () => Effect.yieldNow, { discard: true })

/** Waits until a cache has no load in flight (its L2 writes and notices are done). */
export const idle = (cache: ModuleCache.ModuleCache["Service"]) =>
  Effect.andThen(settle, cache.stats).pipe(
    Effect.repeat({ until: (stats) => stats.inFlight === 0, times: 100 })
  )
