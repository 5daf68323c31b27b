/**
 * Deterministic race tests of the read path, with gates (Deferreds) around the transpiler
 * and the store, on memory layers.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { TranspileError } from "../src/domain/Errors.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { syntaxErrorMarker } from "../src/transpiler/TestTranspiler.ts"
import { hashSource, moduleKey, realmHash } from "../src/domain/Domain.ts"
import type { InvalidationEvent } from "../src/domain/Invalidations.ts"
import { idle, keyOf, makeCache, makeWorld, realm, settle, type World } from "./support/world.ts"

const a = keyOf("a.ts")
const b = keyOf("b.ts")

describe("ModuleCache", () => {
  it.effect("N concurrent gets give one transpile and the same bytes", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1" })
      const cache = yield* makeCache(world)
      const gate = yield* world.transpiler.gate
      const fibers = yield* Effect.forEach(Array.from({ length: 20 }), () => Effect.forkChild(cache.get(a)))
      yield* Deferred.await(gate.started)
      yield* Deferred.succeed(gate.release, undefined)
      const results = yield* Fiber.joinAll(fibers)
      expect(world.transpiler.calls()).toBe(1)
      expect(new Set(results.map((r) => r.module.body)).size).toBe(1)
      expect(results.filter((r) => r.outcome === "transpiled")).toHaveLength(1)
      expect(results.filter((r) => r.outcome === "coalesced")).toHaveLength(19)
      const again = yield* cache.get(a)
      expect(again.outcome).toBe("l1")
      expect((yield* idle(cache)).inFlight).toBe(0)
    }))

  it.effect("an invalidate during a transpile leaves no stale L1 fill and no stale L2 row", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const v = 'old'" })
      const cache = yield* makeCache(world)
      const gate = yield* world.transpiler.gate
      const first = yield* Effect.forkChild(cache.get(a))
      yield* Deferred.await(gate.started)
      world.sources.set(a, "export const v = 'new'")
      yield* cache.invalidate(a)
      world.transpiler.ungate()
      yield* Deferred.succeed(gate.release, undefined)
      const stale = yield* Fiber.join(first)
      expect(stale.module.body).toContain("'old'")
      const fresh = yield* cache.get(a)
      expect(fresh.outcome).toBe("transpiled")
      expect(fresh.module.body).toContain("'new'")
      expect(world.transpiler.calls()).toBe(2)
      yield* idle(cache)
      const row = yield* world.readRow(a)
      assert(row._tag === "Module")
      expect(row.module.body).toContain("'new'")
      expect((yield* cache.get(a)).outcome).toBe("l1")
    }))

  it.effect("an invalidate of an unrelated key has no effect", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1", "b.ts": "export const b = 1" })
      const cache = yield* makeCache(world)
      const gate = yield* world.transpiler.gate
      const first = yield* Effect.forkChild(cache.get(a))
      yield* Deferred.await(gate.started)
      yield* cache.invalidate(b)
      yield* Deferred.succeed(gate.release, undefined)
      expect((yield* Fiber.join(first)).outcome).toBe("transpiled")
      expect((yield* cache.get(a)).outcome).toBe("l1")
      expect(world.transpiler.calls()).toBe(1)
    }))

  it.effect("an interrupted caller does not cancel the shared work", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1" })
      const cache = yield* makeCache(world)
      const gate = yield* world.transpiler.gate
      const leader = yield* Effect.forkChild(cache.get(a))
      yield* Deferred.await(gate.started)
      const joiner = yield* Effect.forkChild(cache.get(a))
      const quitter = yield* Effect.forkChild(cache.get(a))
      yield* settle
      yield* Fiber.interrupt(leader)
      yield* Fiber.interrupt(quitter)
      yield* Deferred.succeed(gate.release, undefined)
      const joined = yield* Fiber.join(joiner)
      expect(joined.module.body).toContain("export const a = 1")
      expect(world.transpiler.calls()).toBe(1)
      expect((yield* cache.get(a)).outcome).toBe("l1")
      expect(Exit.hasInterrupts(yield* Fiber.await(quitter))).toBe(true)
    }))

  it.effect("a failure reaches every joiner once and frees the slot", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": `export const ${syntaxErrorMarker}` })
      const cache = yield* makeCache(world)
      const gate = yield* world.transpiler.gate
      const fibers = yield* Effect.forEach(Array.from({ length: 10 }), () => Effect.forkChild(Effect.flip(cache.get(a))))
      yield* Deferred.await(gate.started)
      yield* Deferred.succeed(gate.release, undefined)
      const errors = yield* Fiber.joinAll(fibers)
      expect(world.transpiler.calls()).toBe(1)
      for (const error of errors) {
        expect(error).toBeInstanceOf(TranspileError)
        expect(error).toMatchObject({ path: "a.ts", line: 1, column: 0 })
      }
      expect((yield* idle(cache)).inFlight).toBe(0)
      // The failure is recorded for this generation: served again without a transpile...
      expect(yield* Effect.flip(cache.get(a))).toBeInstanceOf(TranspileError)
      expect(world.transpiler.calls()).toBe(1)
      // ...until the module is fixed and invalidated.
      world.transpiler.ungate()
      world.sources.set(a, "export const fixed = 1")
      yield* cache.invalidate(a)
      expect((yield* cache.get(a)).outcome).toBe("transpiled")
    }))

  it.effect("a realm invalidation during a transpile defeats its L1 fill and L2 write", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const v = 'old'" })
      const cache = yield* makeCache(world)
      const gate = yield* world.transpiler.gate
      const first = yield* Effect.forkChild(cache.get(a))
      yield* Deferred.await(gate.started)
      world.sources.set(a, "export const v = 'new'")
      yield* cache.invalidateRealm(realm)
      world.transpiler.ungate()
      yield* Deferred.succeed(gate.release, undefined)
      yield* Fiber.join(first)
      expect((yield* world.readRow(a))._tag).toBe("Absent")
      const fresh = yield* cache.get(a)
      expect(fresh.outcome).toBe("transpiled")
      expect(fresh.module.body).toContain("'new'")
      expect(world.transpiler.calls()).toBe(2)
    }))

  it.effect("reads bypass L2 while a tombstone is not committed", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const v = 'old'" })
      const cache = yield* makeCache(world)
      yield* cache.get(a)
      const gate = yield* world.gateStore("tombstone")
      // The edit keeps the same source hash check honest: revert to the old text, so only
      // the pending tombstone keeps the old L2 row from being served.
      const invalidating = yield* Effect.forkChild(cache.invalidate(a))
      yield* Deferred.await(gate.entered)
      const during = yield* cache.get(a)
      expect(during.outcome).toBe("transpiled")
      expect(world.transpiler.calls()).toBe(2)
      yield* Deferred.succeed(gate.release, undefined)
      yield* Fiber.join(invalidating)
      expect((yield* world.readRow(a))._tag).toBe("Absent")
    }))

  it.effect("an L2 row for another source hash is a miss", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const v = 'old'" })
      const first = yield* makeCache(world, { fleet: false })
      yield* first.get(a)
      // Edited while every server was down: a fresh cache must not serve the old row.
      world.sources.set(a, "export const v = 'new'")
      const second = yield* makeCache(world, { fleet: false })
      const result = yield* second.get(a)
      expect(result.outcome).toBe("transpiled")
      expect(result.module.body).toContain("'new'")
      const third = yield* makeCache(world, { fleet: false })
      expect((yield* third.get(a)).outcome).toBe("l2")
    }))

  it.live("three caches on one memory fleet: K concurrent gets each give exactly one transpile", () =>
    Effect.gen(function*() {
      const modules = Array.from({ length: 5 }, (_, i) => `m${i}.ts`)
      const world = yield* makeWorld(Object.fromEntries(modules.map((m) => [m, `export const ${m[0]} = "${m}"`])))
      const caches = yield* Effect.all([makeCache(world), makeCache(world), makeCache(world)])
      const gets = caches.flatMap((cache) =>
        modules.flatMap((m) => Array.from({ length: 10 }, () => cache.get(keyOf(m))))
      )
      const results = yield* Effect.all(gets, { concurrency: "unbounded" })
      expect(world.transpiler.calls()).toBe(modules.length)
      for (const m of modules) {
        const bodies = new Set(results.filter((r) => r.module.key.path === m).map((r) => r.module.body))
        expect(bodies.size).toBe(1)
      }
      const outcomes = new Set(results.map((r) => r.outcome))
      expect([...outcomes].every((o) => o === "transpiled" || o === "coalesced" || o === "l2")).toBe(true)
    }))

  it.effect("a loser whose wake-up is lost finishes within one poll interval", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1" })
      const winner = yield* makeCache(world)
      const loser = yield* makeCache(world)
      world.fleet.dropNotifications = true
      const gate = yield* world.transpiler.gate
      const winning = yield* Effect.forkChild(winner.get(a))
      yield* Deferred.await(gate.started)
      const losing = yield* Effect.forkChild(loser.get(a))
      yield* settle
      expect(world.fleet.waiters.size).toBe(2) // the winner registers before its try-lock too
      yield* Deferred.succeed(gate.release, undefined)
      expect((yield* Fiber.join(winning)).outcome).toBe("transpiled")
      yield* settle
      expect(losing.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust("200 millis")
      yield* settle
      const result = yield* Fiber.join(losing)
      expect(result.outcome).toBe("coalesced")
      expect(world.transpiler.calls()).toBe(1)
    }))

  it.effect("a loser is woken by the winner's notice without any clock movement", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1" })
      const winner = yield* makeCache(world)
      const loser = yield* makeCache(world)
      const gate = yield* world.transpiler.gate
      const winning = yield* Effect.forkChild(winner.get(a))
      yield* Deferred.await(gate.started)
      const losing = yield* Effect.forkChild(loser.get(a))
      yield* settle
      yield* Deferred.succeed(gate.release, undefined)
      yield* Fiber.join(winning)
      expect((yield* Fiber.join(losing)).outcome).toBe("coalesced")
    }))

  it.effect("a winner's failure reaches every loser without waiting out the deadline", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": `export const ${syntaxErrorMarker}` })
      const caches = yield* Effect.all([makeCache(world), makeCache(world), makeCache(world)])
      const gate = yield* world.transpiler.gate
      const winning = yield* Effect.forkChild(Effect.flip(caches[0].get(a)))
      yield* Deferred.await(gate.started)
      const losing = yield* Effect.forEach(caches.slice(1), (cache) => Effect.forkChild(Effect.flip(cache.get(a))))
      yield* settle
      yield* Deferred.succeed(gate.release, undefined)
      const errors = yield* Fiber.joinAll([winning, ...losing])
      for (const error of errors) expect(error).toMatchObject({ _tag: "TranspileError", path: "a.ts", line: 1 })
      expect(world.transpiler.calls()).toBe(1)
    }))

  it.live("after a run of L2 hits (misses read first, then lock), a herd still gives exactly one transpile per module", () =>
    Effect.gen(function*() {
      const warm = Array.from({ length: 24 }, (_, i) => `w${i}.ts`)
      const cold = Array.from({ length: 5 }, (_, i) => `c${i}.ts`)
      const world = yield* makeWorld(Object.fromEntries([...warm, ...cold].map((m) => [m, `export const x = "${m}"`])))
      const [filler, ...caches] = yield* Effect.all([makeCache(world), makeCache(world), makeCache(world)])
      // The filler transpiles the warm modules; the two others find every one in L2.
      yield* Effect.forEach(warm, (m) => filler!.get(keyOf(m)))
      for (const cache of caches) {
        const outcomes = yield* Effect.forEach(warm, (m) => Effect.map(cache.get(keyOf(m)), (r) => r.outcome))
        expect(new Set(outcomes)).toEqual(new Set(["l2"]))
      }
      expect(world.transpiler.calls()).toBe(warm.length)
      // Their misses now read before they lock; a cold herd is still coalesced.
      const results = yield* Effect.all(
        caches.flatMap((cache) => cold.flatMap((m) => Array.from({ length: 8 }, () => cache.get(keyOf(m))))),
        { concurrency: "unbounded" }
      )
      expect(world.transpiler.calls()).toBe(warm.length + cold.length)
      for (const m of cold) {
        expect(new Set(results.filter((r) => r.module.key.path === m).map((r) => r.module.body)).size).toBe(1)
      }
    }))

  it.effect("a loser takes over when the winner gives up its lock", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const a = 1" })
      const winner = yield* makeCache(world)
      const loser = yield* makeCache(world)
      const gate = yield* world.transpiler.gate
      const winning = yield* Effect.forkChild(winner.get(a))
      yield* Deferred.await(gate.started)
      world.transpiler.ungate()
      const losing = yield* Effect.forkChild(loser.get(a))
      yield* settle
      // The winner's process dies: its work is interrupted and its lock released.
      yield* Fiber.interrupt(winning)
      world.fleet.locks.clear()
      yield* TestClock.adjust("200 millis")
      yield* settle
      const result = yield* Fiber.join(losing)
      expect(result.outcome).toBe("transpiled")
      expect(world.transpiler.calls()).toBe(2)
      // Let the first, abandoned transpile end, so that the caches close without waiting for it.
      yield* Deferred.succeed(gate.release, undefined)
    }))

  it.effect("L1 evicts the least recently used entries past its byte bound", () =>
    Effect.gen(function*() {
      const body = (n: string) => `export const x = "${n.repeat(100)}"`
      const world = yield* makeWorld({ "a.ts": body("a"), "b.ts": body("b"), "c.ts": body("c"), "d.ts": body("d") })
      const cache = yield* makeCache(world, { l1MaxBytes: 3 * 160 })
      for (const path of ["a.ts", "b.ts", "c.ts"]) yield* cache.get(keyOf(path))
      expect((yield* cache.get(keyOf("a.ts"))).outcome).toBe("l1")
      yield* cache.get(keyOf("d.ts"))
      const stats = yield* cache.stats
      expect(stats.l1Entries).toBe(3)
      expect(stats.l1Bytes).toBeLessThanOrEqual(3 * 160)
      expect((yield* cache.get(keyOf("a.ts"))).outcome).toBe("l1")
      expect((yield* cache.get(keyOf("b.ts"))).outcome).toBe("l2")
    }))

  it.effect("peers drop their L1 entry when another cache invalidates", () =>
    Effect.gen(function*() {
      const world = yield* makeWorld({ "a.ts": "export const v = 'old'" })
      const [one, two] = yield* Effect.all([makeCache(world), makeCache(world)])
      yield* one.get(a)
      expect((yield* two.get(a)).outcome).toBe("l2")
      expect((yield* two.get(a)).outcome).toBe("l1")
      world.sources.set(a, "export const v = 'new'")
      yield* one.invalidate(a)
      const fresh = yield* two.get(a)
      expect(fresh.outcome).toBe("transpiled")
      expect(fresh.module.body).toContain("'new'")
    }))

  describe("an edit's invalidation names its source", () => {
    const oldSource = "export const v = 'old'"
    const newSource = "export const v = 'new'"

    /** Records what peers are told: a subscriber of the world's fleet that is no cache. */
    const told = (world: World) => {
      const events: Array<InvalidationEvent> = []
      world.fleet.subscribers.add({ member: -1, deliver: (event) => events.push(event) })
      return events
    }

    it.effect("every report of one edit, by each cache's watcher and by peers, costs one transpile; a waiter on it is not woken to a tombstone", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld({ "a.ts": oldSource })
        const caches = yield* Effect.all([makeCache(world), makeCache(world), makeCache(world)])
        const [one, two, three] = caches
        yield* Effect.forEach(caches, (cache) => cache.get(a), { discard: true })
        yield* Effect.forEach(caches, idle, { discard: true })
        expect(world.transpiler.calls()).toBe(1)
        const notices = told(world)

        world.sources.set(a, newSource)
        const edit = hashSource(newSource)
        const gate = yield* world.transpiler.gate
        // The first watcher to see it: its L1 entry and L2 row go, and peers are told (naming the source).
        yield* one.invalidate(a, edit)
        expect(notices).toEqual([{ _tag: "Key", hash: expect.any(BigInt), sourceHash: edit, place: { realmHash: realmHash(a.realmUrl), path: a.path } }])
        const winning = yield* Effect.forkChild(two.get(a))
        yield* Deferred.await(gate.started)
        const waiting = yield* Effect.forkChild(three.get(a))
        yield* settle
        // The other watchers' reports of the same edit, while its transpile runs: nothing changes.
        yield* Effect.forEach(caches, (cache) => cache.invalidate(a, edit), { discard: true })
        expect(notices).toHaveLength(1)
        yield* settle
        expect(waiting.pollUnsafe()).toBeUndefined()
        yield* Deferred.succeed(gate.release, undefined)
        expect((yield* Fiber.join(winning)).outcome).toBe("transpiled")
        const joined = yield* Fiber.join(waiting)
        expect(joined.outcome).toBe("coalesced")
        expect(joined.module.body).toContain("'new'")
        yield* Effect.forEach(caches, idle, { discard: true })
        // A report after the row is written leaves it too.
        yield* three.invalidate(a, edit)
        const row = yield* world.readRow(a)
        assert(row._tag === "Module")
        expect(row.module.body).toContain("'new'")
        const fresh = yield* one.get(a)
        expect(fresh.outcome).toBe("l2")
        expect(fresh.module.body).toContain("'new'")
        expect((yield* two.get(a)).outcome).toBe("l1")
        expect((yield* three.get(a)).outcome).toBe("l1")
        expect(world.transpiler.calls()).toBe(2)
        expect(notices).toHaveLength(1)
      }))

    it.effect("a report of the source L1 and L2 already hold (a save that changed nothing) costs nothing and tells nobody", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld({ "a.ts": oldSource })
        const [one, two] = yield* Effect.all([makeCache(world), makeCache(world)])
        yield* one.get(a)
        yield* idle(one)
        expect((yield* two.get(a)).outcome).toBe("l2")
        const notices = told(world)
        yield* one.invalidate(a, hashSource(oldSource))
        yield* two.invalidate(a, hashSource(oldSource))
        expect(notices).toEqual([])
        expect((yield* one.get(a)).outcome).toBe("l1")
        expect((yield* two.get(a)).outcome).toBe("l1")
        expect(world.transpiler.calls()).toBe(1)
      }))

    it.effect("a slow load of the old source neither fills L1 nor lands in L2 after the edit", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld({ "a.ts": oldSource })
        const cache = yield* makeCache(world)
        const gate = yield* world.transpiler.gate
        const slow = yield* Effect.forkChild(cache.get(a))
        yield* Deferred.await(gate.started)
        world.sources.set(a, newSource)
        yield* cache.invalidate(a, hashSource(newSource))
        world.transpiler.ungate()
        yield* Deferred.succeed(gate.release, undefined)
        expect((yield* Fiber.join(slow)).module.body).toContain("'old'")
        yield* idle(cache)
        expect((yield* world.readRow(a))._tag).toBe("Absent")
        const fresh = yield* cache.get(a)
        expect(fresh.outcome).toBe("transpiled")
        expect(fresh.module.body).toContain("'new'")
        expect(world.transpiler.calls()).toBe(2)
      }))

    it.effect("a load of the edit's source in flight when the edit is reported stays: later gets join it, and it fills L1 and L2", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld({ "a.ts": oldSource })
        const cache = yield* makeCache(world)
        yield* cache.get(a)
        yield* idle(cache)
        world.sources.set(a, newSource)
        // This process's watcher is slower than a get of the new source (the L2 row is the old source's: a miss).
        yield* cache.invalidate(a, hashSource(newSource))
        const gate = yield* world.transpiler.gate
        const first = yield* Effect.forkChild(cache.get(a))
        yield* Deferred.await(gate.started)
        yield* cache.invalidate(a, hashSource(newSource))
        const second = yield* Effect.forkChild(cache.get(a))
        yield* settle
        yield* Deferred.succeed(gate.release, undefined)
        expect((yield* Fiber.join(first)).outcome).toBe("transpiled")
        expect((yield* Fiber.join(second)).outcome).toBe("coalesced")
        yield* idle(cache)
        expect((yield* cache.get(a)).outcome).toBe("l1")
        const row = yield* world.readRow(a)
        assert(row._tag === "Module")
        expect(row.module.body).toContain("'new'")
        expect(world.transpiler.calls()).toBe(2)
      }))

    it.effect("a late report of an older edit does not let a load of that source, dropped by a newer edit, fill L1", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld({ "a.ts": oldSource })
        const cache = yield* makeCache(world)
        world.sources.set(a, newSource)
        yield* cache.invalidate(a, hashSource(newSource))
        const gate = yield* world.transpiler.gate
        const slow = yield* Effect.forkChild(cache.get(a))
        yield* Deferred.await(gate.started)
        const newest = "export const v = 'newest'"
        world.sources.set(a, newest)
        yield* cache.invalidate(a, hashSource(newest))
        // Another watcher's report of the edit before, arriving last.
        yield* cache.invalidate(a, hashSource(newSource))
        world.transpiler.ungate()
        yield* Deferred.succeed(gate.release, undefined)
        expect((yield* Fiber.join(slow)).module.body).toContain("'new'")
        const fresh = yield* cache.get(a)
        expect(fresh.outcome).not.toBe("l1")
        expect(fresh.module.body).toContain("'newest'")
      }))

    it.effect("an invalidation that names no source (the API's) still costs exactly one transpile in the fleet", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld({ "a.ts": oldSource })
        const caches = yield* Effect.all([makeCache(world), makeCache(world), makeCache(world)])
        yield* Effect.forEach(caches, (cache) => cache.get(a), { discard: true })
        yield* Effect.forEach(caches, idle, { discard: true })
        yield* caches[0].invalidate(a)
        const again = yield* Effect.forEach(caches, (cache) => cache.get(a), { concurrency: "unbounded" })
        expect(again.map((result) => result.outcome).sort()).not.toContain("l1")
        expect(world.transpiler.calls()).toBe(2)
      }))
  })

  describe("two versions on one store and fleet", () => {
    it.effect("a version never waits on the other's transpile, and neither overwrites the other's row", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld({ "a.ts": "export const a = 1" })
        const newer = TestTranspiler.make({ fingerprint: "test-transpiler-2" })
        const old = yield* makeCache(world)
        const next = yield* makeCache(world, { transpiler: newer })
        // The old version holds the key's lock while its transpile is gated.
        const gate = yield* world.transpiler.gate
        const oldGet = yield* Effect.forkChild(old.get(a))
        yield* Deferred.await(gate.started)
        // The new version transpiles at once: no lock, no waiter of the old version's.
        const fresh = yield* next.get(a)
        expect(fresh.outcome).toBe("transpiled")
        expect(fresh.module.fingerprint).toBe("test-transpiler-2")
        yield* Deferred.succeed(gate.release, undefined)
        expect((yield* Fiber.join(oldGet)).outcome).toBe("transpiled")
        yield* idle(old)
        yield* idle(next)
        expect(world.transpiler.calls()).toBe(1)
        expect(newer.calls()).toBe(1)
        // Each version's row is there, and a restart of either reads its own.
        expect((yield* makeCache(world).pipe(Effect.flatMap((cache) => cache.get(a)))).outcome).toBe("l2")
        expect((yield* makeCache(world, { transpiler: newer }).pipe(Effect.flatMap((cache) => cache.get(a)))).outcome)
          .toBe("l2")
        expect((yield* world.store.versions(realm)).map((version) => version.fingerprint).sort()).toEqual([
          "test-transpiler-1",
          "test-transpiler-2"
        ])
      }))

    it.effect("an invalidation by either version drops both versions' L1 and L2 entries", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld({ "a.ts": "export const v = 'old'" })
        const newer = TestTranspiler.make({ fingerprint: "test-transpiler-2" })
        const old = yield* makeCache(world)
        const next = yield* makeCache(world, { transpiler: newer })
        yield* old.get(a)
        yield* next.get(a)
        yield* idle(old)
        yield* idle(next)
        expect((yield* next.get(a)).outcome).toBe("l1")
        world.sources.set(a, "export const v = 'new'")
        yield* old.invalidate(a)
        const fresh = yield* next.get(a)
        expect(fresh.outcome).toBe("transpiled")
        expect(fresh.module.body).toContain("'new'")
        const again = yield* old.get(a)
        expect(again.outcome).toBe("transpiled")
        expect(again.module.body).toContain("'new'")
      }))
  })

  describe("many realms on one cache", () => {
    const realmA = "https://a.realm.test/"
    const realmB = "https://b.realm.test/"
    const path = (i: number) => `m${String(i).padStart(3, "0")}.ts`
    // Bodies of about 190 bytes (the test transpiler adds a comment line): at least 10 fit in 2000.
    const source = (i: number) => `export const v = "${String(i).repeat(160).slice(0, 160)}"`

    it.effect("a herd on one realm of 10x the L1 bound leaves another realm's hot modules in L1", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld()
        for (let i = 0; i < 100; i++) world.sources.set(moduleKey(realmA, path(i)), source(i))
        for (let i = 0; i < 3; i++) world.sources.set(moduleKey(realmB, path(i)), source(i))
        const cache = yield* makeCache(world, { l1MaxBytes: 2000 })
        for (let i = 0; i < 3; i++) expect((yield* cache.get(moduleKey(realmB, path(i)))).outcome).toBe("transpiled")
        for (let i = 0; i < 100; i++) yield* cache.get(moduleKey(realmA, path(i)))
        const stats = yield* cache.stats
        expect(stats.l1Bytes).toBeLessThanOrEqual(2000)
        // B's modules were not read during the herd, and are still answered from L1.
        for (let i = 0; i < 3; i++) expect((yield* cache.get(moduleKey(realmB, path(i)))).outcome).toBe("l1")
        // A kept its most recent modules, and lost its oldest.
        expect((yield* cache.get(moduleKey(realmA, path(99)))).outcome).toBe("l1")
        expect((yield* cache.get(moduleKey(realmA, path(0)))).outcome).toBe("l2")
        const b = cache.countsOf(realmB)
        expect(b.l1Entries).toBe(3)
        expect(b.l1Bytes).toBeGreaterThan(0)
        expect(cache.countsOf(realmA).l1Bytes + b.l1Bytes).toBe((yield* cache.stats).l1Bytes)
      }))

    it.effect("counts are kept per realm besides the totals, fast-path hits included when they name their realm", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld()
        for (let i = 0; i < 4; i++) world.sources.set(moduleKey(realmA, path(i)), source(i))
        world.sources.set(moduleKey(realmB, path(0)), source(0))
        const cache = yield* makeCache(world)
        for (let i = 0; i < 4; i++) yield* cache.get(moduleKey(realmA, path(i)))
        yield* cache.get(moduleKey(realmA, path(0)))
        yield* cache.get(moduleKey(realmB, path(0)))
        yield* cache.get(moduleKey(realmB, path(0)))
        yield* cache.get(moduleKey(realmB, path(0)))
        cache.countL1Hit(realmB)
        cache.countL1Hit()
        const a = cache.countsOf(realmA)
        const b = cache.countsOf(realmB)
        expect(a).toMatchObject({ transpiles: 4, l1Hits: 1, l2Hits: 0, errors: 0, l1Entries: 4 })
        expect(a.gets).toMatchObject({ transpiled: 4, l1: 1 })
        expect(b).toMatchObject({ transpiles: 1, l1Hits: 3, l1Entries: 1 })
        expect(b.gets).toMatchObject({ transpiled: 1, l1: 3 })
        const stats = yield* cache.stats
        expect(stats.transpiles).toBe(5)
        // The unattributed fast-path hit counts in the totals only.
        expect(stats.l1Hits).toBe(5)
        expect(cache.countsOf("https://never.test/")).toMatchObject({ transpiles: 0, l1Hits: 0, l1Entries: 0, l1Bytes: 0 })
      }))

    it.effect("forgetRealm drops the realm's L1 entries and counts here only: L2 keeps its rows and peers keep theirs", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld()
        world.sources.set(moduleKey(realmA, path(0)), source(0))
        world.sources.set(moduleKey(realmB, path(0)), source(0))
        const [one, two] = yield* Effect.all([makeCache(world), makeCache(world)])
        yield* one.get(moduleKey(realmA, path(0)))
        yield* one.get(moduleKey(realmB, path(0)))
        yield* idle(one)
        expect((yield* two.get(moduleKey(realmB, path(0)))).outcome).toBe("l2")
        yield* one.forgetRealm(realmB)
        expect(one.countsOf(realmB)).toMatchObject({ transpiles: 0, l1Entries: 0, l1Bytes: 0 })
        expect(one.countsOf(realmA)).toMatchObject({ transpiles: 1, l1Entries: 1 })
        expect((yield* one.stats).transpiles).toBe(2)
        // The peer was not told, and the row is still in L2.
        expect((yield* two.get(moduleKey(realmB, path(0)))).outcome).toBe("l1")
        expect((yield* one.get(moduleKey(realmB, path(0)))).outcome).toBe("l2")
        expect((yield* one.get(moduleKey(realmA, path(0)))).outcome).toBe("l1")
        expect(world.transpiler.calls()).toBe(2)
      }))

    it.effect("a load of a realm running while it is forgotten does not fill L1", () =>
      Effect.gen(function*() {
        const world = yield* makeWorld()
        world.sources.set(moduleKey(realmB, path(0)), source(0))
        const cache = yield* makeCache(world)
        const gate = yield* world.transpiler.gate
        const loading = yield* Effect.forkChild(cache.get(moduleKey(realmB, path(0))))
        yield* Deferred.await(gate.started)
        yield* cache.forgetRealm(realmB)
        yield* Deferred.succeed(gate.release, undefined)
        expect((yield* Fiber.join(loading)).outcome).toBe("transpiled")
        expect(cache.countsOf(realmB).l1Entries).toBe(0)
        yield* idle(cache)
        expect((yield* cache.get(moduleKey(realmB, path(0)))).outcome).toBe("l2")
      }))
  })
})
