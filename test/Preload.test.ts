/**
 * Preloading L1 from L2 at start: a restart on PGlite answers from L1 without a transpile
 * or an L2 read, a file edited while the process was down is not preloaded, an invalidation
 * during the preload wins (deterministic, with a gate around the store's preload), and the
 * byte bound keeps the most recently read rows.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as Coordinator from "../src/domain/Coordinator.ts"
import { moduleKey } from "../src/domain/Domain.ts"
import * as FileSystemSources from "../src/realm/FileSystemSources.ts"
import * as Invalidations from "../src/domain/Invalidations.ts"
import * as ModuleCache from "../src/cache/ModuleCache.ts"
import { ModuleSources } from "../src/domain/ModuleSources.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { Transpiler } from "../src/domain/Transpiler.ts"
import { TranspileStore } from "../src/domain/TranspileStore.ts"
import { idle, keyOf, makeCache, makeWorld, realm, settle, type World } from "./support/world.ts"

const tempDirs: Array<string> = []
const tempDir = (prefix: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  tempDirs.push(dir)
  return dir
}
afterAll(() => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true })
})

describe("preload on PGlite", () => {
  const moduleCount = 30
  const paths = Array.from({ length: moduleCount }, (_, i) => `dir${i % 3}/m${i}.ts`)

  /**
   * One "process": a ModuleCache over the realm directory and PGlite at `dataDir`, with a
   * counting transpiler and a store that counts its reads. Closed (and its writes drained)
   * when `use` ends.
   */
  const lifetime = <A>(
    realmDir: string,
    dataDir: string,
    use: (
      cache: ModuleCache.ModuleCache["Service"],
      realmUrl: string,
      counts: { readonly reads: () => ReadonlyArray<string>; readonly transpiles: () => number },
      files: FileSystemSources.RealmFiles["Service"]
    ) => Effect.Effect<A, unknown>,
    options: ModuleCache.ModuleCacheOptions = {}
  ) =>
    Effect.scoped(Effect.gen(function*() {
      const store = yield* SqlTranspileStore.makePglite({ dataDir })
      const reads: Array<string> = []
      const counted = TranspileStore.of({
        ...store,
        read: (key) => Effect.andThen(Effect.sync(() => reads.push(key.path)), store.read(key)),
        readMany: (keys) =>
          Effect.andThen(Effect.sync(() => reads.push(...keys.map((key) => key.path))), store.readMany(keys))
      })
      const files = yield* FileSystemSources.make({ realmDir })
      const transpiler = TestTranspiler.make()
      const cache = yield* ModuleCache.make(options).pipe(
        Effect.provideService(Transpiler, transpiler.service),
        Effect.provideService(ModuleSources, ModuleSources.of({ read: files.read })),
        Effect.provideService(TranspileStore, counted),
        Effect.provideService(Coordinator.Coordinator, Coordinator.none),
        Effect.provideService(Invalidations.Invalidations, Invalidations.none)
      )
      // As under `serve`, whose watcher is running before the preload.
      files.watched(true)
      return yield* use(cache, files.realmUrl, { reads: () => reads, transpiles: transpiler.calls }, files)
    }))

  /** A realm directory holding `paths`, and an empty data directory. */
  const writeRealm = () => {
    const realmDir = tempDir("mtc-preload-realm-")
    const dataDir = tempDir("mtc-preload-data-")
    for (const p of paths) {
      fs.mkdirSync(path.join(realmDir, path.dirname(p)), { recursive: true })
      // Large enough to be compressed (256 bytes and more).
      const fields = Array.from({ length: 8 }, (_, i) => `export const field${i}: number = ${i}`).join("\n")
      fs.writeFileSync(path.join(realmDir, p), `export const id: string = ${JSON.stringify(p)}\n${fields}\n`)
    }
    return { realmDir, dataDir }
  }

  const getAll = (cache: ModuleCache.ModuleCache["Service"], realmUrl: string) =>
    Effect.forEach(paths, (p) => cache.get(moduleKey(realmUrl, p)), { concurrency: 16 })

  it.live("L2 writes held while no peer can wait for them go to PGlite when the cache closes", () =>
    Effect.gen(function*() {
      const { dataDir, realmDir } = writeRealm()
      // Held for an hour (longer than the close's drain of 5 s): answered, nothing written yet.
      yield* lifetime(realmDir, dataDir, (cache, realmUrl) =>
        Effect.gen(function*() {
          const results = yield* getAll(cache, realmUrl)
          expect(results.every((r) => r.outcome === "transpiled")).toBe(true)
          expect((yield* cache.stats).inFlight).toBe(moduleCount)
        }), { l2WriteHold: "1 hour", l2WriteQuiet: "1 hour" })
      // The close wrote them: a restart preloads every row.
      yield* lifetime(realmDir, dataDir, (cache, realmUrl, counts) =>
        Effect.gen(function*() {
          expect(yield* cache.preload(realmUrl)).toMatchObject({ entries: moduleCount, rows: moduleCount })
          const results = yield* getAll(cache, realmUrl)
          expect(results.map((r) => r.outcome)).toEqual(paths.map(() => "l1"))
          expect(counts.transpiles()).toBe(0)
        }))
    }))

  it.live("a restart serves every module as an L1 hit, with 0 transpiles and 0 L2 reads; an edit made while down is not preloaded", () =>
    Effect.gen(function*() {
      const { dataDir, realmDir } = writeRealm()

      // First start: everything is transpiled and written to L2.
      yield* lifetime(realmDir, dataDir, (cache, realmUrl, counts) =>
        Effect.gen(function*() {
          const summary = yield* cache.preload(realmUrl)
          expect(summary).toMatchObject({ entries: 0, rows: 0 })
          const results = yield* getAll(cache, realmUrl)
          expect(results.every((r) => r.outcome === "transpiled")).toBe(true)
          expect(counts.transpiles()).toBe(moduleCount)
          // Each body was compressed once, with its transpile, and went to L2 with it.
          expect((yield* cache.stats).compressions).toBe(moduleCount)
        }))

      // A restart: preloaded, then every get is an L1 hit, without a transpile or an L2 read.
      yield* lifetime(realmDir, dataDir, (cache, realmUrl, counts) =>
        Effect.gen(function*() {
          const summary = yield* cache.preload(realmUrl)
          expect(summary).toMatchObject({ entries: moduleCount, rows: moduleCount, stale: 0, invalidated: 0 })
          expect(counts.reads()).toEqual([])
          const results = yield* getAll(cache, realmUrl)
          expect(results.map((r) => r.outcome)).toEqual(paths.map(() => "l1"))
          expect(results[0]!.module.body).toContain(JSON.stringify(paths[0]))
          // The compressed forms came from L2 with the bodies: no compression ran.
          for (const { module } of results) {
            expect(brotliDecompressSync(module.encoded!.br!).toString("utf8")).toBe(module.body)
            expect(gunzipSync(module.encoded!.gzip!).toString("utf8")).toBe(module.body)
          }
          expect((yield* cache.stats).compressions).toBe(0)
          expect(counts.transpiles()).toBe(0)
          expect(counts.reads()).toEqual([])
          const stats = yield* cache.stats
          expect(stats).toMatchObject({
            l1Hits: moduleCount,
            l2Hits: 0,
            transpiles: 0,
            preloadedEntries: moduleCount,
            preloadedBytes: summary.bytes
          })
          expect(summary.bytes).toBeGreaterThan(0)
        }))

      // The preload also remembered each module's path resolution: resolving needs no file.
      yield* lifetime(realmDir, dataDir, (cache, realmUrl, _counts, files) =>
        Effect.gen(function*() {
          yield* cache.preload(realmUrl)
          const moved = path.join(realmDir, "moved-away.ts")
          fs.renameSync(path.join(realmDir, paths[0]!), moved)
          try {
            expect(yield* files.resolve(`/${paths[0]}`)).toMatchObject({ path: paths[0], executable: true })
            expect(yield* Effect.exit(files.resolve(`/${paths[1]!.replace("m1", "m-none")}`))).toMatchObject({ _tag: "Failure" })
          } finally {
            fs.renameSync(moved, path.join(realmDir, paths[0]!))
          }
        }))

      // Edited while no process ran: its row is not preloaded, and the edit is what is served.
      const edited = paths[4]!
      fs.writeFileSync(path.join(realmDir, edited), `export const id: string = "edited while down"\n`)
      yield* lifetime(realmDir, dataDir, (cache, realmUrl, counts) =>
        Effect.gen(function*() {
          const summary = yield* cache.preload(realmUrl)
          expect(summary).toMatchObject({ entries: moduleCount - 1, rows: moduleCount, stale: 1 })
          const results = yield* getAll(cache, realmUrl)
          const outcomes = new Map(results.map((r) => [r.module.key.path, r.outcome]))
          expect(outcomes.get(edited)).toBe("transpiled")
          expect([...outcomes.values()].filter((o) => o === "l1")).toHaveLength(moduleCount - 1)
          expect(results.find((r) => r.module.key.path === edited)!.module.body).toContain("edited while down")
          expect(counts.transpiles()).toBe(1)
          // L2 is read only for the edited module's miss (twice: before and under its lock).
          expect(counts.reads().length).toBeGreaterThan(0)
          expect(new Set(counts.reads())).toEqual(new Set([edited]))
        }))
    }), 180_000)
})

/** The world's store, with the preload held after it read its rows and before it hands them over. */
const gatedPreload = (world: World) =>
  Effect.gen(function*() {
    const entered = yield* Deferred.make<void>()
    const release = yield* Deferred.make<void>()
    const store = TranspileStore.of({
      ...world.store,
      preload: (request) =>
        Stream.unwrap(Effect.gen(function*() {
          const rows = yield* Stream.runCollect(world.store.preload(request))
          yield* Deferred.succeed(entered, undefined)
          yield* Deferred.await(release)
          return Stream.fromIterable(rows)
        }))
    })
    return { world: { ...world, store }, entered, release }
  })

const files = { "a.ts": "export const a = 1", "b.ts": "export const b = 1", "c.ts": "export const c = 1", "d.ts": "export const d = 1" }
const [a, b, c, d] = ["a.ts", "b.ts", "c.ts", "d.ts"].map(keyOf) as [ReturnType<typeof keyOf>, ReturnType<typeof keyOf>, ReturnType<typeof keyOf>, ReturnType<typeof keyOf>]

/** A world whose L2 holds a, b, c and d, written by a first cache. */
const warmWorld = Effect.gen(function*() {
  const world = yield* makeWorld(files)
  const first = yield* makeCache(world)
  yield* Effect.forEach([a, b, c, d], (key) => first.get(key), { discard: true })
  yield* idle(first)
  return { world, first }
})

describe("preload races", () => {
  it.effect("an invalidation during the preload wins: local, from a peer, and of a key mid-tombstone", () =>
    Effect.gen(function*() {
      const { world, first } = yield* warmWorld
      const gated = yield* gatedPreload(world)
      const joining = yield* makeCache(gated.world)
      const preloading = yield* Effect.forkChild(joining.preload(realm))
      yield* Deferred.await(gated.entered)
      // The preload holds the rows of a, b, c and d. Now: a is invalidated here, b by a peer.
      yield* joining.invalidate(a)
      yield* first.invalidate(b)
      yield* settle
      yield* Deferred.succeed(gated.release, undefined)
      const summary = yield* Fiber.join(preloading)
      expect(summary).toMatchObject({ rows: 4, entries: 2, invalidated: 2, stale: 0 })
      expect((yield* joining.get(c)).outcome).toBe("l1")
      expect((yield* joining.get(d)).outcome).toBe("l1")
      expect((yield* joining.get(a)).outcome).not.toBe("l1")
      expect((yield* joining.get(b)).outcome).not.toBe("l1")
    }))

  it.effect("a peer's realm invalidation during the preload wins, though this process never loaded the realm", () =>
    Effect.gen(function*() {
      const { world, first } = yield* warmWorld
      const gated = yield* gatedPreload(world)
      const joining = yield* makeCache(gated.world)
      const preloading = yield* Effect.forkChild(joining.preload(realm))
      yield* Deferred.await(gated.entered)
      yield* first.invalidateRealm(realm)
      yield* settle
      yield* Deferred.succeed(gated.release, undefined)
      expect(yield* Fiber.join(preloading)).toMatchObject({ rows: 4, entries: 0, invalidated: 4 })
      expect((yield* joining.stats).l1Entries).toBe(0)
      expect((yield* joining.get(a)).outcome).toBe("transpiled")
    }))

  it.effect("a key whose tombstone is still in flight when the preload starts is not preloaded", () =>
    Effect.gen(function*() {
      const { world } = yield* warmWorld
      const joining = yield* makeCache(world)
      const tombstone = yield* world.gateStore("tombstone")
      const invalidating = yield* Effect.forkChild(joining.invalidate(a))
      yield* Deferred.await(tombstone.entered)
      // L2 still holds a's old row; the invalidation already happened here.
      const summary = yield* joining.preload(realm)
      expect(summary).toMatchObject({ rows: 4, entries: 3, invalidated: 1 })
      yield* Deferred.succeed(tombstone.release, undefined)
      yield* Fiber.join(invalidating)
      expect((yield* joining.get(a)).outcome).toBe("transpiled")
    }))

  it.effect("a file changed before the preload checks it is left out", () =>
    Effect.gen(function*() {
      const { world } = yield* warmWorld
      world.sources.set(c, "export const c = 2")
      const joining = yield* makeCache(world)
      expect(yield* joining.preload(realm)).toMatchObject({ rows: 4, entries: 3, stale: 1 })
      const result = yield* joining.get(c)
      expect(result.outcome).toBe("transpiled")
      expect(result.module.body).toContain("c = 2")
    }))
})

describe("preload bound", () => {
  it.effect("a preload larger than the L1 bound keeps the most recently read rows", () =>
    Effect.gen(function*() {
      const names = Array.from({ length: 10 }, (_, i) => `k${i}.ts`)
      const world = yield* makeWorld(Object.fromEntries(names.map((n) => [n, "x".repeat(200)])))
      const first = yield* makeCache(world, { fleet: false })
      // k0 is read first, k9 last: each a second after the previous one.
      for (const name of names) {
        yield* first.get(keyOf(name))
        yield* idle(first)
        yield* TestClock.adjust("1 second")
      }
      const bodyBytes = Buffer.byteLength((yield* first.get(keyOf("k0.ts"))).module.body, "utf8")

      const small = yield* makeCache(world, { fleet: false, l1MaxBytes: Math.floor(bodyBytes * 3.5) })
      expect(yield* small.preload(realm)).toMatchObject({ rows: 3, entries: 3, bytes: bodyBytes * 3 })
      for (const name of ["k9.ts", "k8.ts", "k7.ts"]) expect((yield* small.get(keyOf(name))).outcome).toBe("l1")
      expect((yield* small.get(keyOf("k6.ts"))).outcome).toBe("l2")

      // k6 was just read from L2: it is now the most recently read row.
      yield* TestClock.adjust("1 second")
      const bounded = yield* makeCache(world, { fleet: false, preloadBytes: bodyBytes * 2 })
      expect(yield* bounded.preload(realm)).toMatchObject({ entries: 2 })
      expect((yield* bounded.get(keyOf("k6.ts"))).outcome).toBe("l1")
      expect((yield* bounded.get(keyOf("k9.ts"))).outcome).toBe("l1")
      expect((yield* bounded.get(keyOf("k8.ts"))).outcome).toBe("l2")

      const off = yield* makeCache(world, { fleet: false, preloadBytes: 0 })
      expect(yield* off.preload(realm)).toMatchObject({ rows: 0, entries: 0 })
      expect((yield* off.stats).l1Entries).toBe(0)
    }))

  it.effect("one preload over many realms keeps the most recently read rows across them, under one bound", () =>
    Effect.gen(function*() {
      const realmA = "https://a.realm.test/"
      const realmB = "https://b.realm.test/"
      const empty = "https://empty.realm.test/"
      const world = yield* makeWorld()
      const inA = (i: number) => moduleKey(realmA, `k${i}.ts`)
      const inB = (i: number) => moduleKey(realmB, `k${i}.ts`)
      const keys = Array.from({ length: 5 }, (_, i) => [inA(i), inB(i)] as const)
      for (const pair of keys) for (const key of pair) world.sources.set(key, "x".repeat(200))
      const first = yield* makeCache(world)
      // Read A0, B0, A1, B1, ... B4: each a second after the previous one.
      for (const pair of keys) {
        for (const key of pair) {
          yield* first.get(key)
          yield* idle(first)
          yield* TestClock.adjust("1 second")
        }
      }
      const bodyBytes = Buffer.byteLength((yield* first.get(inA(0))).module.body, "utf8")

      const joining = yield* makeCache(world, { preloadBytes: Math.floor(bodyBytes * 4.5) })
      const summary = yield* joining.preload([realmA, realmB, empty])
      expect(summary).toMatchObject({ rows: 4, entries: 4, bytes: bodyBytes * 4, realmUrls: [realmA, realmB, empty] })
      expect(summary.realms).toEqual([
        { realmUrl: realmA, entries: 2, bytes: bodyBytes * 2 },
        { realmUrl: realmB, entries: 2, bytes: bodyBytes * 2 },
        { realmUrl: empty, entries: 0, bytes: 0 }
      ])
      expect(summary.keys).toEqual([inB(4), inA(4), inB(3), inA(3)])
      expect((yield* joining.get(inA(3))).outcome).toBe("l1")
      expect((yield* joining.get(inB(2))).outcome).toBe("l2")

      // A peer's wipe of one realm during a preload of both wins for that realm only.
      const gated = yield* gatedPreload(world)
      const another = yield* makeCache(gated.world, { preloadBytes: Math.floor(bodyBytes * 4.5) })
      const preloading = yield* Effect.forkChild(another.preload([realmA, realmB]))
      yield* Deferred.await(gated.entered)
      yield* first.invalidateRealm(realmB)
      yield* settle
      yield* Deferred.succeed(gated.release, undefined)
      // B2 was just read from L2: the rows are B2, B4, A4 and B3, and only A4 is left.
      const raced = yield* Fiber.join(preloading)
      expect(raced).toMatchObject({ rows: 4, entries: 1, invalidated: 3 })
      expect(raced.realms.map((each) => each.entries)).toEqual([1, 0])
      expect(raced.keys).toEqual([inA(4)])
    }))
})
