/**
 * Batched L2 reads, with gates (Deferreds) around a fake store's `readMany`: no sleeps.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Queue, Redacted } from "effect"
import { TestClock } from "effect/testing"
import { moduleKey, type VersionedKey, versionedKey } from "../src/domain/Domain.ts"
import { StoreError } from "../src/domain/Errors.ts"
import { absent, none, type StoredRow, TranspileStore } from "../src/domain/TranspileStore.ts"
import * as L2Reads from "../src/cache/L2Reads.ts"
import * as ModuleCache from "../src/cache/ModuleCache.ts"
import * as ModuleCacheLive from "../src/live/ModuleCacheLive.ts"
import { idle, makeCache, makeWorld, keyOf as worldKey } from "./support/world.ts"

const keyOf = (path: string): VersionedKey => versionedKey(moduleKey("https://realm.test/", path), "fp-test")
/** The fake row of a key: its path in the generation, so that each caller can check it got its own. */
const rowOf = (key: VersionedKey): StoredRow => absent({ generation: Number(key.path.replace(/\D/g, "")), realmEpoch: 0 })

interface Call {
  readonly keys: ReadonlyArray<string>
  /** Completes the call: with the keys' rows, or with an error. */
  readonly release: Deferred.Deferred<void, StoreError>
}

/** A store whose `readMany` calls queue up and wait until the test releases them. */
const gatedStore = Effect.gen(function*() {
  const calls = yield* Queue.unbounded<Call>()
  const store = TranspileStore.of({
    ...none,
    read: () => Effect.die("read is never called by L2Reads"),
    readMany: (keys) =>
      Effect.gen(function*() {
        const release = yield* Deferred.make<void, StoreError>()
        yield* Queue.offer(calls, { keys: keys.map((key) => key.path), release })
        yield* Deferred.await(release)
        return keys.map(rowOf)
      })
  })
  return { store, next: Queue.take(calls), waiting: Queue.size(calls) }
})

const release = (call: Call) => Deferred.succeed(call.release, undefined)
const keys = (n: number) => Array.from({ length: n }, (_, i) => keyOf(`m${i}.ts`))

describe("L2Reads", () => {
  it.effect("reads that arrive together are read by one readMany; each caller gets its own row", () =>
    Effect.gen(function*() {
      const { next, store } = yield* gatedStore
      const read = L2Reads.make(store)
      const fiber = yield* Effect.forkChild(Effect.forEach(keys(5), read, { concurrency: "unbounded" }))
      const call = yield* next
      expect(call.keys).toEqual(["m0.ts", "m1.ts", "m2.ts", "m3.ts", "m4.ts"])
      yield* release(call)
      expect(yield* Fiber.join(fiber)).toEqual(keys(5).map(rowOf))
    }))

  it.effect("a lone read runs after one yield, without waiting for the clock", () =>
    Effect.gen(function*() {
      const { next, store } = yield* gatedStore
      const fiber = yield* Effect.forkChild(L2Reads.make(store)(keyOf("m7.ts")))
      const call = yield* next
      expect(call.keys).toEqual(["m7.ts"])
      yield* release(call)
      expect(yield* Fiber.join(fiber)).toEqual(rowOf(keyOf("m7.ts")))
    }))

  it.effect("reads that arrive while a batch is in flight wait for it together, as the next batch", () =>
    Effect.gen(function*() {
      const { next, store, waiting } = yield* gatedStore
      const read = L2Reads.make(store)
      const [k0, k1, k2, k3] = keys(4)
      const first = yield* Effect.forkChild(read(k0!))
      const firstCall = yield* next
      const later = yield* Effect.forkChild(Effect.forEach([k1!, k2!, k3!], read, { concurrency: "unbounded" }))
      // Let the later reads run their yields: the store is busy, so they keep collecting.
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow
      expect(yield* waiting).toBe(0)
      yield* release(firstCall)
      const secondCall = yield* next
      expect(secondCall.keys).toEqual(["m1.ts", "m2.ts", "m3.ts"])
      yield* release(secondCall)
      expect(yield* Fiber.join(first)).toEqual(rowOf(k0!))
      expect(yield* Fiber.join(later)).toEqual([k1!, k2!, k3!].map(rowOf))
    }))

  it.effect("a batch holds maxBatch reads at most; a full batch runs at once", () =>
    Effect.gen(function*() {
      const { next, store } = yield* gatedStore
      const read = L2Reads.make(store, { maxBatch: 2, concurrency: 3 })
      const fiber = yield* Effect.forkChild(Effect.forEach(keys(5), read, { concurrency: "unbounded" }))
      const calls = [yield* next, yield* next, yield* next]
      expect(calls.map((call) => call.keys)).toEqual([["m0.ts", "m1.ts"], ["m2.ts", "m3.ts"], ["m4.ts"]])
      yield* Effect.forEach(calls, release)
      expect(yield* Fiber.join(fiber)).toEqual(keys(5).map(rowOf))
    }))

  it.effect("a window holds the batch open until it has passed", () =>
    Effect.gen(function*() {
      const { next, store } = yield* gatedStore
      const read = L2Reads.make(store, { window: "5 millis" })
      const first = yield* Effect.forkChild(read(keyOf("m1.ts")))
      yield* TestClock.adjust("4 millis")
      const second = yield* Effect.forkChild(read(keyOf("m2.ts")))
      yield* TestClock.adjust("1 millis")
      const call = yield* next
      expect(call.keys).toEqual(["m1.ts", "m2.ts"])
      yield* release(call)
      expect(yield* Fiber.join(first)).toEqual(rowOf(keyOf("m1.ts")))
      expect(yield* Fiber.join(second)).toEqual(rowOf(keyOf("m2.ts")))
    }))

  it.effect("a caller interrupted before its batch runs is left out of it; its batch-mates are read", () =>
    Effect.gen(function*() {
      const { next, store } = yield* gatedStore
      const read = L2Reads.make(store)
      const [k0, k1, k2] = keys(3)
      const first = yield* Effect.forkChild(read(k0!))
      const firstCall = yield* next
      // Collected while the first batch is in flight; one of them leaves before it runs.
      const leaving = yield* Effect.forkChild(read(k1!))
      const staying = yield* Effect.forkChild(read(k2!))
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow
      yield* Fiber.interrupt(leaving)
      yield* release(firstCall)
      const secondCall = yield* next
      expect(secondCall.keys).toEqual(["m2.ts"])
      yield* release(secondCall)
      expect(yield* Fiber.join(first)).toEqual(rowOf(k0!))
      expect(yield* Fiber.join(staying)).toEqual(rowOf(k2!))
      expect(Exit.hasInterrupts(yield* Fiber.await(leaving))).toBe(true)
    }))

  it.effect("a caller interrupted while its batch runs leaves the others their rows", () =>
    Effect.gen(function*() {
      const { next, store } = yield* gatedStore
      const read = L2Reads.make(store)
      const [k0, k1] = keys(2)
      const leaving = yield* Effect.forkChild(read(k0!))
      const staying = yield* Effect.forkChild(read(k1!))
      const call = yield* next
      expect(call.keys).toEqual(["m0.ts", "m1.ts"])
      yield* Fiber.interrupt(leaving)
      yield* release(call)
      expect(yield* Fiber.join(staying)).toEqual(rowOf(k1!))
    }))

  it.effect("a failed readMany fails every read of the batch with the same StoreError; the next batch reads again", () =>
    Effect.gen(function*() {
      const { next, store } = yield* gatedStore
      const read = L2Reads.make(store)
      const fiber = yield* Effect.forkChild(
        Effect.forEach(keys(3), (key) => Effect.flip(read(key)), { concurrency: "unbounded" })
      )
      const call = yield* next
      const error = new StoreError({ operation: "readMany", message: "down", refused: true, retryable: true })
      yield* Deferred.fail(call.release, error)
      const errors = yield* Fiber.join(fiber)
      expect(errors).toHaveLength(3)
      for (const failed of errors) assert.strictEqual(failed, error)
      const again = yield* Effect.forkChild(read(keyOf("m9.ts")))
      yield* release(yield* next)
      expect(yield* Fiber.join(again)).toEqual(rowOf(keyOf("m9.ts")))
    }))

  describe("in ModuleCache", () => {
    /** A cache over an L2 that already holds the modules, counting the store's reads by kind. */
    const warmCache = (paths: ReadonlyArray<string>, batchL2Reads: boolean | undefined) =>
      Effect.gen(function*() {
        const world = yield* makeWorld(Object.fromEntries(paths.map((p) => [p, `export const v = ${JSON.stringify(p)}`])))
        const writer = yield* makeCache(world, { fleet: false })
        yield* Effect.forEach(paths, (p) => writer.get(worldKey(p)), { concurrency: "unbounded" })
        yield* idle(writer)
        const reads: Array<string> = []
        const batches: Array<ReadonlyArray<string>> = []
        const store = TranspileStore.of({
          ...world.store,
          read: (key) => Effect.andThen(Effect.sync(() => reads.push(key.path)), world.store.read(key)),
          readMany: (keys) =>
            Effect.andThen(Effect.sync(() => batches.push(keys.map((key) => key.path))), world.store.readMany(keys))
        })
        const cache = yield* makeCache({ ...world, store }, { fleet: false, batchL2Reads })
        return { cache, reads, batches }
      })
    const paths = ["a.ts", "b.ts", "c.ts", "d.ts"]

    it.effect("with batchL2Reads, misses that arrive together are read by one readMany and served from L2", () =>
      Effect.gen(function*() {
        const { batches, cache, reads } = yield* warmCache(paths, true)
        const results = yield* Effect.forEach(paths, (p) => cache.get(worldKey(p)), { concurrency: "unbounded" })
        expect(results.map((r) => r.outcome)).toEqual(["l2", "l2", "l2", "l2"])
        expect(results.map((r) => r.module.body)).toEqual(paths.map((p) => expect.stringContaining(JSON.stringify(p))))
        expect(batches).toEqual([paths])
        expect(reads).toEqual([])
      }))

    it("is on by default for PGlite and Postgres, not behind a transaction pooler nor in memory", () => {
      expect(ModuleCacheLive.storeDefaults({ _tag: "pglite", dataDir: undefined }).batchL2Reads).toBe(true)
      expect(ModuleCacheLive.storeDefaults({ _tag: "memory" }).batchL2Reads).toBeUndefined()
      expect(ModuleCacheLive.storeDefaults({ _tag: "postgres", url: Redacted.make("postgres://x") }).batchL2Reads)
        .toBe(true)
      expect(
        ModuleCacheLive.storeDefaults({ _tag: "postgres", url: Redacted.make("postgres://x"), pooler: "transaction" })
          .batchL2Reads
      ).toBeUndefined()
    })

    it.effect("without it (the default), each miss reads its own row", () =>
      Effect.gen(function*() {
        expect(ModuleCache.defaults.batchL2Reads).toBe(false)
        const { batches, cache, reads } = yield* warmCache(paths, undefined)
        const results = yield* Effect.forEach(paths, (p) => cache.get(worldKey(p)), { concurrency: "unbounded" })
        expect(results.map((r) => r.outcome)).toEqual(["l2", "l2", "l2", "l2"])
        expect(batches).toEqual([])
        expect([...reads].sort()).toEqual(paths)
      }))
  })
})
