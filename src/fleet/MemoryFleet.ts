/**
 * A fleet in one process: Coordinator and Invalidations layers over a shared in-memory hub,
 * so that several ModuleCache instances behave like processes sharing one Postgres.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { keyHash, lockKey, realmHash } from "../domain/Domain.ts"
import { Coordinator } from "../domain/Coordinator.ts"
import { type InvalidationEvent, Invalidations } from "../domain/Invalidations.ts"
import * as InvalidationNotice from "./InvalidationNotice.ts"
import { WaiterRegistry } from "./Waiters.ts"

/** The shared state of a memory fleet. */
export interface MemoryFleet {
  /** Lock key to the id of the member holding it. */
  readonly locks: Map<bigint, number>
  readonly waiters: WaiterRegistry
  readonly subscribers: Set<{ readonly member: number; readonly deliver: (event: InvalidationEvent) => void }>
  /** When true, "populated" notices are dropped, as a lost NOTIFY would be. For tests. */
  dropNotifications: boolean
  nextMember: number
}

/** Makes an empty fleet hub. */
export const makeFleet = (): MemoryFleet => ({
  locks: new Map(),
  waiters: new WaiterRegistry(),
  subscribers: new Set(),
  dropNotifications: false,
  nextMember: 0
})

/** A member's coordinator: locks are fleet-wide, waiters are woken by any member's notice. */
export const makeCoordinator = (fleet: MemoryFleet): Effect.Effect<Coordinator["Service"]> =>
  Effect.sync(() => {
    const member = fleet.nextMember++
    return Coordinator.of({
      kind: "memory",
      register: (key) => fleet.waiters.register(lockKey(key)),
      tryLock: (key) =>
        Effect.sync(() => {
          const id = lockKey(key)
          if (fleet.locks.has(id)) return false
          fleet.locks.set(id, member)
          return true
        }),
      unlock: (key) =>
        Effect.sync(() => {
          const id = lockKey(key)
          if (fleet.locks.get(id) === member) fleet.locks.delete(id)
        }),
      notifyPopulated: (key) =>
        Effect.sync(() => {
          if (!fleet.dropNotifications) fleet.waiters.wake(lockKey(key))
        })
    })
  })

/** A member's invalidations: published events reach every other member. */
export const makeInvalidations = (fleet: MemoryFleet): Effect.Effect<Invalidations["Service"]> =>
  Effect.sync(() => {
    const member = fleet.nextMember++
    const publish = (event: InvalidationEvent) =>
      Effect.sync(() => {
        for (const subscriber of fleet.subscribers) {
          if (subscriber.member !== member) subscriber.deliver(event)
        }
      })
    return Invalidations.of({
      kind: "memory",
      publishKey: (key, sourceHash) =>
        publish({ _tag: "Key", hash: keyHash(key), sourceHash, place: InvalidationNotice.placeOf(key.realmUrl, key.path) }),
      publishRealm: (realmUrl) => publish({ _tag: "Realm", hash: realmHash(realmUrl) }),
      subscribe: (handler) =>
        // Delivered synchronously, so that a peer's L1 is clean when `publish` returns.
        Effect.acquireRelease(
          Effect.sync(() => {
            const subscriber = { member, deliver: handler }
            fleet.subscribers.add(subscriber)
            return subscriber
          }),
          (subscriber) => Effect.sync(() => fleet.subscribers.delete(subscriber))
        ).pipe(Effect.asVoid)
    })
  })

/** Coordinator and Invalidations of one member of the fleet. */
/**
 * A member's Coordinator and Invalidations on the fleet: give each cache of a test its own
 * `layer(fleet)` over one {@link makeFleet}, and they coalesce and invalidate like processes
 * sharing one Postgres.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Domain, ModuleCache, ModuleSources, TranspileStore } from "module-transpile-cache"
 * import { MemoryFleet, MemoryTranspileStore, TestTranspiler } from "module-transpile-cache/testing"
 *
 * const key = Domain.moduleKey("memory://realm/", "a.ts")
 * const fleet = MemoryFleet.makeFleet()
 * const transpiler = TestTranspiler.make()
 * const sources = ModuleSources.makeMemory([[key, "export const a = 1\n"]])
 *
 * // Two "processes": one shared L2 and one fleet, a cache each.
 * const program = Effect.gen(function*() {
 *   const store = yield* MemoryTranspileStore.make
 *   const member = ModuleCache.layer().pipe(
 *     Layer.provide(Layer.mergeAll(
 *       Layer.succeed(TranspileStore.TranspileStore, store),
 *       MemoryFleet.layer(fleet),
 *       TestTranspiler.layer(transpiler),
 *       ModuleSources.layerMemory(sources)
 *     ))
 *   )
 *   const get = ModuleCache.ModuleCache.use((cache) => cache.get(key))
 *   const [a, b] = yield* Effect.all([
 *     get.pipe(Effect.provide(member)),
 *     get.pipe(Effect.provide(member))
 *   ], { concurrency: "unbounded" })
 *   return { outcomes: [a.outcome, b.outcome], transpiles: transpiler.calls() } // transpiles: 1
 * })
 * ```
 */
export const layer = (fleet: MemoryFleet): Layer.Layer<Coordinator | Invalidations> =>
  Layer.merge(
    Layer.effect(Coordinator, makeCoordinator(fleet)),
    Layer.effect(Invalidations, makeInvalidations(fleet))
  )
