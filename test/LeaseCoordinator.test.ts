/**
 * The services of the pooler mode against the real Postgres: lease rows (exclusive, renewed
 * while held, taken over once expired, never deleted by a former owner, woken when gone)
 * and the polled invalidation log (peers hear keys and realms, never their own; a pruned gap
 * flushes).
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Redacted, Scope } from "effect"
import { keyHash, lockKey, moduleKey, realmHash, versionedKey } from "../src/domain/Domain.ts"
import type { InvalidationEvent } from "../src/domain/Invalidations.ts"
import * as LeaseCoordinator from "../src/fleet/LeaseCoordinator.ts"
import * as Migrations from "../src/store/Migrations.ts"
import * as PolledInvalidations from "../src/fleet/PolledInvalidations.ts"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"

let url: string
beforeAll(() => {
  url = freshDatabase("lease")
})
afterAll(() => dropDatabase(url))

const realm = "https://lease.test/"
const key = versionedKey(moduleKey(realm, "a.ts"), "fp-test")

/** One "process": a pool (unprepared statements, as behind a pooler) in its own scope. */
const member = (scope: Scope.Scope, lease: LeaseCoordinator.LeaseOptions = {}) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      PgClient.layer({ url: Redacted.make(url), maxConnections: 2, prepare: false, multiplex: false })
    )
    return yield* Effect.gen(function*() {
      yield* Migrations.run(Migrations.optionsFor("postgres"))
      const coordinator = yield* LeaseCoordinator.make({ ...lease, watchInterval: "20 millis" })
      const invalidations = yield* PolledInvalidations.make({ interval: "20 millis" })
      return { coordinator, invalidations }
    }).pipe(Effect.provideContext(context))
  }).pipe(Scope.provide(scope))

const leases = () => psql("SELECT count(*) FROM module_transpile_cache_lease WHERE expires_at > now()", url)

describe("LeaseCoordinator", () => {
  it.live("a lease is exclusive, also within its own process, and released on unlock", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const a = yield* member(scope)
      const b = yield* member(scope)
      expect(yield* a.coordinator.tryLock(key)).toBe(true)
      expect(yield* b.coordinator.tryLock(key)).toBe(false)
      expect(yield* a.coordinator.tryLock(key)).toBe(false)
      expect(leases()).toBe("1")
      yield* a.coordinator.unlock(key)
      expect(leases()).toBe("0")
      expect(yield* b.coordinator.tryLock(key)).toBe(true)
      // Closing a process deletes the leases it holds.
      yield* Scope.close(scope, Exit.void)
      expect(psql("SELECT count(*) FROM module_transpile_cache_lease", url)).toBe("0")
    }))

  it.live("a held lease is renewed past its TTL; an expired one is taken over; a former owner cannot delete it", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      // A TTL with room for a late heartbeat on a busy machine (renewed every 500 ms); the
      // sleep outlasts it twice over.
      const a = yield* member(scope, { ttl: "1500 millis" })
      const b = yield* member(scope, { ttl: "1500 millis" })
      expect(yield* a.coordinator.tryLock(key)).toBe(true)
      yield* Effect.sleep("3500 millis")
      // Renewed by A's heartbeat: still A's.
      expect(yield* b.coordinator.tryLock(key)).toBe(false)
      // A's lease passes to another owner (as after A stalled past its TTL): A's unlock
      // leaves it alone.
      psql("UPDATE module_transpile_cache_lease SET owner = 'other'", url)
      yield* a.coordinator.unlock(key)
      expect(leases()).toBe("1")
      // The lease of an owner that died: taken over once expired, not before.
      const other = versionedKey(moduleKey(realm, "b.ts"), "fp-test")
      psql(`INSERT INTO module_transpile_cache_lease VALUES (${lockKey(other)}, 'dead', now() + interval '1 minute')`, url)
      expect(yield* b.coordinator.tryLock(other)).toBe(false)
      psql(`UPDATE module_transpile_cache_lease SET expires_at = now() - interval '1 second' WHERE owner = 'dead'`, url)
      expect(yield* b.coordinator.tryLock(other)).toBe(true)
      expect(psql(`SELECT owner FROM module_transpile_cache_lease WHERE lock_key = ${lockKey(other)}`, url)).toContain(
        `:${process.pid}:`
      )
      yield* b.coordinator.unlock(other)
      psql("DELETE FROM module_transpile_cache_lease", url)
      yield* Scope.close(scope, Exit.void)
    }))

  it.live("a waiter is woken when the lease it waits on is released", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const a = yield* member(scope)
      const b = yield* member(scope)
      expect(yield* a.coordinator.tryLock(key)).toBe(true)
      const woken = yield* Effect.scoped(Effect.gen(function*() {
        const waiter = yield* b.coordinator.register(key)
        const fiber = yield* Effect.forkChild(waiter.wake)
        // Not woken while the lease is live.
        yield* Effect.sleep("150 millis")
        const early = fiber.pollUnsafe()
        yield* a.coordinator.unlock(key)
        yield* Fiber.join(fiber).pipe(Effect.timeout("2 seconds"))
        return early
      }))
      expect(woken).toBeUndefined()
      yield* Scope.close(scope, Exit.void)
    }))
})

describe("PolledInvalidations", () => {
  it.live("peers hear a key and a realm, in order, never their own; a pruned gap flushes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const a = yield* member(scope)
      const b = yield* member(scope)
      const heardA: Array<InvalidationEvent> = []
      const heardB: Array<InvalidationEvent> = []
      yield* a.invalidations.subscribe((event) => { heardA.push(event) }).pipe(Scope.provide(scope))
      yield* b.invalidations.subscribe((event) => { heardB.push(event) }).pipe(Scope.provide(scope))
      yield* a.invalidations.publishKey(key)
      yield* a.invalidations.publishRealm(realm)
      for (let i = 0; i < 100 && heardB.length < 2; i++) yield* Effect.sleep("20 millis")
      // The log names the module's place, for the peers' live event streams.
      expect(heardB).toEqual([
        { _tag: "Key", hash: keyHash(key), place: { realmHash: realmHash(key.realmUrl), path: key.path } },
        { _tag: "Realm", hash: realmHash(realm) }
      ])
      expect(heardA).toEqual([])
      // Entries a process never read are gone (pruned after a long outage; here the head
      // jumps past them): it flushes its L1.
      yield* Scope.close(scope, Exit.void)
      const scope2 = yield* Scope.make()
      const c = yield* member(scope2)
      const d = yield* member(scope2)
      const heardD: Array<InvalidationEvent> = []
      yield* d.invalidations.subscribe((event) => { heardD.push(event) }).pipe(Scope.provide(scope2))
      psql("UPDATE module_transpile_cache_log_head SET seq = seq + 5", url)
      yield* c.invalidations.publishKey(key)
      for (let i = 0; i < 100 && heardD.length < 1; i++) yield* Effect.sleep("20 millis")
      expect(heardD).toEqual([{ _tag: "Flush" }])
      yield* Scope.close(scope2, Exit.void)
    }))
})
