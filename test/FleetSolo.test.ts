/**
 * Solo mode of the Postgres fleet (src/fleet/AdvisoryLockCoordinator.ts): a process alone on
 * the database grants its locks with no round trip, and a peer that joins while it is in the
 * middle of a miss waits for that miss's row instead of transpiling it too. Caches over the
 * real server, each with its own pool and fleet session, and one gated, counting transpiler.
 * The real-process herds of test/Fleet.test.ts run with solo mode on (the deployment default).
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Redacted, Scope } from "effect"
import * as ModuleCache from "../src/cache/ModuleCache.ts"
import { Coordinator } from "../src/domain/Coordinator.ts"
import { Invalidations } from "../src/domain/Invalidations.ts"
import * as ModuleSources from "../src/domain/ModuleSources.ts"
import { Transpiler } from "../src/domain/Transpiler.ts"
import { TranspileStore } from "../src/domain/TranspileStore.ts"
import { presenceKey } from "../src/fleet/AdvisoryLockCoordinator.ts"
import * as PgFleet from "../src/fleet/PgFleet.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"
import { versionedKey } from "../src/domain/Domain.ts"
import { keyOf } from "./support/world.ts"

let url: string
let database: string
beforeAll(() => {
  url = freshDatabase("fleetsolo")
  database = new URL(url).pathname.slice(1)
})
afterAll(() => dropDatabase(url))

const files = ["warm.ts", "a.ts", "b.ts", "c.ts", "d.ts", "e.ts", "held.ts"]
const sources = ModuleSources.makeMemory(files.map((path) => [keyOf(path), `export const x = ${JSON.stringify(path)}\n`]))
/** A check every 200 ms: a member left alone goes solo again soon. */
const fleetOptions = { heartbeat: "200 millis", sessionTimeout: "1 second" } as const

/** One fleet member (a process): its own pool and fleet session; `solo: false` is a version before solo mode. */
const member = (
  scope: Scope.Scope,
  transpiler: TestTranspiler.TestTranspiler,
  solo = true,
  options: ModuleCache.ModuleCacheOptions = {}
) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      Layer.mergeAll(PgFleet.layerSession(fleetOptions), SqlTranspileStore.layer({ kind: "postgres", soloCatalog: solo })).pipe(
        Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), maxConnections: 2 }))
      )
    )
    const store = Context.get(context, TranspileStore)
    const fleet = yield* PgFleet.make({ ...fleetOptions, solo, soloCatalog: store.soloCatalog }).pipe(
      Effect.provideContext(context)
    )
    /** L2 reads of this member: a second read of a miss is a loser's look. */
    let reads = 0
    const cache = yield* ModuleCache.make(options).pipe(
      Effect.provideService(Transpiler, transpiler.service),
      Effect.provideService(ModuleSources.ModuleSources, sources.service),
      Effect.provideService(
        TranspileStore,
        TranspileStore.of({ ...store, read: (key) => Effect.andThen(Effect.sync(() => reads++), store.read(key)) })
      ),
      Effect.provideService(Coordinator, fleet.coordinator),
      Effect.provideService(Invalidations, fleet.invalidations)
    )
    return { cache, store, coordinator: fleet.coordinator, mode: fleet.mode, reads: () => reads }
  }).pipe(Scope.provide(scope))

/**
 * The fleet sessions' advisory locks on the test's database (int8 keys, `objsubid` 1; not a write
 * transaction's passing locks on key pairs), by mode (`ExclusiveLock`, `ShareLock`), presence lock apart.
 */
const locks = () => {
  const high = (presenceKey >> 32n) & 0xffffffffn
  const low = presenceKey & 0xffffffffn
  const rows = psql(
    `SELECT (l.classid::bigint = ${high} AND l.objid::bigint = ${low}) AS presence, l.mode
     FROM pg_locks l JOIN pg_database d ON d.oid = l.database
     WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND d.datname = '${database}' ORDER BY 1, 2`
  )
  const lines = rows.split("\n").map((line) => line.trim()).filter((line) => line.length > 0)
  return {
    presence: lines.filter((line) => line.startsWith("t|")).map((line) => line.slice(2)),
    keys: lines.filter((line) => line.startsWith("f|")).length
  }
}

/** Waits (polling, bounded) for a condition that an asynchronous event brings about: a notice, a check. */
const eventually = (condition: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000 && !condition(); i++) yield* Effect.sleep("10 millis")
    expect(condition()).toBe(true)
  })

describe("FleetSolo", () => {
  it.live("a peer joining while the solo member is mid-miss waits for its row: one transpile; then both coordinate, and the survivor goes solo again", () =>
    Effect.gen(function*() {
      const transpiler = TestTranspiler.make()
      const scopeA = yield* Scope.make()
      const scopeB = yield* Scope.make()
      const a = yield* member(scopeA, transpiler)

      // Alone: the first miss negotiates solo mode; its lock was granted with no key lock.
      expect((yield* a.cache.get(keyOf("warm.ts"))).outcome).toBe("transpiled")
      expect(a.mode()).toBe("solo")
      expect(locks()).toEqual({ presence: ["ExclusiveLock"], keys: 0 })

      // A miss of the solo member, held mid-transpile.
      const gate = yield* transpiler.gate
      const first = yield* Effect.forkChild(a.cache.get(keyOf("a.ts")))
      yield* Deferred.await(gate.started)

      // A peer joins: it finds the presence lock held exclusively, says hello, and the solo
      // member stops granting solo claims but keeps its lock while its claim is held.
      const b = yield* member(scopeB, transpiler)
      yield* eventually(() => b.mode() === "joining" && a.mode() === "leaving")
      const second = yield* Effect.forkChild(b.cache.get(keyOf("a.ts")))
      // Its miss read L2 after its try-lock (not won), then again as a waiting loser.
      yield* eventually(() => b.reads() >= 2)
      // The joiner's try-locks are not won: it waits as a loser, holding no lock.
      expect(yield* b.coordinator.tryLock({ ...keyOf("b.ts"), fingerprint: transpiler.service.fingerprint })).toBe(false)
      expect(b.mode()).toBe("joining")
      expect(a.mode()).toBe("leaving")
      expect(locks()).toEqual({ presence: ["ExclusiveLock"], keys: 0 })
      expect(transpiler.calls()).toBe(2)

      // The solo miss writes its row and releases its claim: the solo member gives way, the
      // peer joins and finds the row.
      transpiler.ungate()
      yield* Deferred.succeed(gate.release, undefined)
      expect((yield* Fiber.join(first)).outcome).toBe("transpiled")
      expect((yield* Fiber.join(second)).outcome).toBe("coalesced")
      expect(transpiler.calls()).toBe(2)
      yield* eventually(() => a.mode() === "fleet" && b.mode() === "fleet")
      expect(locks()).toEqual({ presence: ["ShareLock", "ShareLock"], keys: 0 })

      // In a fleet, key locks coalesce as always: one transpile for a herd of both.
      const [fromA, fromB] = yield* Effect.all([a.cache.get(keyOf("c.ts")), b.cache.get(keyOf("c.ts"))], {
        concurrency: "unbounded"
      })
      const outcomes = [fromA.outcome, fromB.outcome]
      expect(outcomes.filter((outcome) => outcome === "transpiled")).toHaveLength(1)
      expect(outcomes.filter((outcome) => outcome === "coalesced" || outcome === "l2")).toHaveLength(1)
      expect(transpiler.calls()).toBe(3)

      // The peer leaves: at its next check the survivor is alone and goes solo again.
      yield* Scope.close(scopeB, Exit.void)
      yield* eventually(() => a.mode() === "solo")
      expect(locks()).toEqual({ presence: ["ExclusiveLock"], keys: 0 })
      expect((yield* a.cache.get(keyOf("d.ts"))).outcome).toBe("transpiled")
      expect(transpiler.calls()).toBe(4)
      yield* Scope.close(scopeA, Exit.void)
      expect(locks()).toEqual({ presence: [], keys: 0 })
    }), 30_000)

  it.live("a fleet session without a presence lock (a version before solo mode) keeps solo mode off, and ends it", () =>
    Effect.gen(function*() {
      const transpiler = TestTranspiler.make()
      const scopeA = yield* Scope.make()
      const scopeOld = yield* Scope.make()
      const scopeC = yield* Scope.make()
      const a = yield* member(scopeA, transpiler)
      expect((yield* a.cache.get(keyOf("e.ts"))).outcome).toBe("transpiled")
      expect(a.mode()).toBe("solo")

      // An older peer connects: the solo member sees its session at its next check and leaves.
      const old = yield* member(scopeOld, transpiler, false)
      yield* eventually(() => a.mode() === "fleet")
      expect(locks()).toEqual({ presence: ["ShareLock"], keys: 0 })
      const key = { ...keyOf("a.ts"), fingerprint: transpiler.service.fingerprint }
      // Key locks again, exclusive across the two.
      expect(yield* old.coordinator.tryLock(key)).toBe(true)
      expect(yield* a.coordinator.tryLock(key)).toBe(false)
      yield* old.coordinator.unlock(key)

      // A new member that starts beside the older one does not go solo either.
      const c = yield* member(scopeC, transpiler)
      expect(yield* c.coordinator.tryLock(key)).toBe(true)
      expect(c.mode()).toBe("fleet")
      yield* c.coordinator.unlock(key)
      // With the older peer still there, a member left without a presence-holding peer stays
      // in the fleet at its following checks (every 200 ms), until the older peer leaves.
      yield* Scope.close(scopeC, Exit.void)
      yield* Effect.sleep("600 millis")
      expect(a.mode()).toBe("fleet")
      yield* Scope.close(scopeOld, Exit.void)
      yield* eventually(() => a.mode() === "solo")
      yield* Scope.close(scopeA, Exit.void)
    }), 30_000)

  it.live("a solo member's held L2 writes go at a peer's hello: the joiner finds the row instead of waiting out the hold", () =>
    Effect.gen(function*() {
      const transpiler = TestTranspiler.make()
      const scopeA = yield* Scope.make()
      const scopeB = yield* Scope.make()
      // Writes held for an hour while solo; the joiner waits 5 s at most before it transpiles itself.
      const a = yield* member(scopeA, transpiler, true, { l2WriteHold: "1 hour", l2WriteQuiet: "1 hour" })
      expect((yield* a.cache.get(keyOf("held.ts"))).outcome).toBe("transpiled")
      expect(a.mode()).toBe("solo")
      // Answered, its row held back: the load is still in flight and L2 has no row of it.
      const rowsOfHeld = () => Number(psql(`SELECT count(*) FROM module_transpile_cache WHERE canonical_path = 'held.ts'`, url).trim())
      expect(rowsOfHeld()).toBe(0)
      expect((yield* a.cache.stats).inFlight).toBe(1)

      // Solo, its store's catalog is on: a row written behind its back (no peer can, while it
      // is solo) is answered absent from memory.
      const ghost = versionedKey(keyOf("ghost.ts"), transpiler.service.fingerprint)
      const behind = yield* SqlTranspileStore.makePg({ url: Redacted.make(url), maxConnections: 1 })
      expect(
        yield* behind.write({
          key: keyOf("ghost.ts"),
          captured: { generation: 0, realmEpoch: 0 },
          fingerprint: ghost.fingerprint,
          sourceHash: "h",
          content: { _tag: "Module", module: { body: "", headers: {}, dependencyKeys: [], sourceHash: "h" } }
        })
      ).toBe(true)
      const ghostTag = () => Effect.map(a.store.read(ghost), (row) => row._tag)
      // (The catalog loads in the background once the member is solo.)
      for (let i = 0; i < 500 && (yield* ghostTag()) !== "Absent"; i++) yield* Effect.sleep("10 millis")
      expect(yield* ghostTag()).toBe("Absent")

      const b = yield* member(scopeB, transpiler, true, { deadline: "5 seconds" })
      const fromB = yield* b.cache.get(keyOf("held.ts"))
      expect(["coalesced", "l2"]).toContain(fromB.outcome)
      expect(transpiler.calls()).toBe(1)
      expect(rowsOfHeld()).toBe(1)
      yield* eventually(() => a.mode() === "fleet" && b.mode() === "fleet")
      // No longer solo: the catalog is off, and the row is read from the table.
      expect(yield* ghostTag()).toBe("Module")
      yield* Scope.close(scopeB, Exit.void)
      yield* Scope.close(scopeA, Exit.void)
    }), 30_000)
})
