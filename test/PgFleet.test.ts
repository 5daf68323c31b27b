/**
 * The Postgres coordinator and invalidations against the real server: locks, wake-ups,
 * peer invalidations, LISTEN reconnects, and no lock or connection left behind.
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { moduleKey, versionedKey } from "../src/domain/Domain.ts"
import type { InvalidationEvent } from "../src/domain/Invalidations.ts"
import * as PgFleet from "../src/fleet/PgFleet.ts"
import * as PgSession from "../src/fleet/PgSession.ts"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"

let url: string
let database: string
beforeAll(() => {
  url = freshDatabase("pgfleet")
  database = new URL(url).pathname.slice(1)
})
afterAll(() => dropDatabase(url))

const key = versionedKey(moduleKey("https://realm.test/", "a.ts"), "fp-test")

const member = (scope: Scope.Scope) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      PgFleet.layerSession({ heartbeat: "200 millis", sessionTimeout: "1 second" }).pipe(
        Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 2 }))
      )
    )
    return yield* PgFleet.make({ heartbeat: "200 millis", sessionTimeout: "1 second" }).pipe(
      Effect.provideContext(context)
    )
  }).pipe(Scope.provide(scope))

const advisoryLocks = () => Number(psql(`SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = '${database}'`))
const sessions = () => Number(psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = '${database}'`))

describe("PgFleet", () => {
  it.live("lock operations that arrive together run as one statement, each with its own answer; a populated notice rides with its unlock", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const a = yield* member(scope)
      const b = yield* member(scope)
      const keys = Array.from({ length: 12 }, (_, i) => versionedKey(moduleKey("https://realm.test/", `batch/${i}.ts`), "fp-test"))
      // One of them is b's already: a's try-lock of it fails, the others succeed.
      expect(yield* b.coordinator.tryLock(keys[0]!)).toBe(true)
      const won = yield* Effect.forEach(keys, (k) => a.coordinator.tryLock(k), { concurrency: "unbounded" })
      expect(won).toEqual(keys.map((_, i) => i !== 0))
      expect(advisoryLocks()).toBe(12)
      // b waits on the others; a announces them populated and unlocks them, all at once.
      const waiters = yield* Effect.forEach(keys.slice(1), (k) => b.coordinator.register(k).pipe(Scope.provide(scope)))
      const woken = yield* Effect.forkChild(Effect.forEach(waiters, (w) => w.wake, { concurrency: "unbounded" }))
      yield* Effect.forEach(
        keys.slice(1),
        (k) => Effect.andThen(a.coordinator.notifyPopulated(k), a.coordinator.unlock(k)),
        { concurrency: "unbounded" }
      )
      yield* Fiber.join(woken).pipe(Effect.timeout("2 seconds"))
      expect(advisoryLocks()).toBe(1)
      expect(yield* Effect.forEach(keys.slice(1), (k) => b.coordinator.tryLock(k), { concurrency: "unbounded" }))
        .toEqual(keys.slice(1).map(() => true))
      yield* Effect.forEach(keys, (k) => b.coordinator.unlock(k), { concurrency: "unbounded" })
      expect(advisoryLocks()).toBe(0)
      yield* Scope.close(scope, Exit.void)
    }))

  it.live("locks are exclusive across processes' sessions and released on unlock and on close", () =>
    Effect.gen(function*() {
      const scopeA = yield* Scope.make()
      const scopeB = yield* Scope.make()
      const a = yield* member(scopeA)
      const b = yield* member(scopeB)
      expect(yield* a.coordinator.tryLock(key)).toBe(true)
      expect(yield* b.coordinator.tryLock(key)).toBe(false)
      // Advisory locks are re-entrant per session: a second load in the same process must
      // not take it again (one unlock would then leave it held for good).
      expect(yield* a.coordinator.tryLock(key)).toBe(false)
      expect(advisoryLocks()).toBe(1)
      yield* a.coordinator.unlock(key)
      expect(yield* b.coordinator.tryLock(key)).toBe(true)
      // A crashed holder's lock goes with its session.
      yield* Scope.close(scopeB, Exit.void)
      expect(yield* a.coordinator.tryLock(key)).toBe(true)
      yield* Scope.close(scopeA, Exit.void)
      expect(advisoryLocks()).toBe(0)
      expect(sessions()).toBe(0)
    }))

  it.live("a populated notice wakes a peer's waiter, and invalidations reach peers only", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const a = yield* member(scope)
      const b = yield* member(scope)
      const heardA: Array<InvalidationEvent> = []
      const heardB: Array<InvalidationEvent> = []
      yield* a.invalidations.subscribe((e) => { heardA.push(e) }).pipe(Scope.provide(scope))
      yield* b.invalidations.subscribe((e) => { heardB.push(e) }).pipe(Scope.provide(scope))
      const waiter = yield* b.coordinator.register(key).pipe(Scope.provide(scope))
      const waiting = yield* Effect.forkChild(waiter.wake)
      yield* a.coordinator.notifyPopulated(key)
      yield* Fiber.join(waiting).pipe(Effect.timeout("2 seconds"))
      yield* a.invalidations.publishKey(key)
      yield* Effect.sleep("100 millis").pipe(Effect.repeat({ until: () => heardB.some((e) => e._tag === "Key") }))
        .pipe(Effect.timeout("2 seconds"))
      expect(heardA.filter((e) => e._tag === "Key")).toHaveLength(0)
      yield* Scope.close(scope, Exit.void)
      expect(sessions()).toBe(0)
    }))

  it.live("a terminated LISTEN backend reconnects, flushes L1 and wakes every waiter", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const a = yield* member(scope)
      const heard: Array<InvalidationEvent> = []
      yield* a.invalidations.subscribe((e) => { heard.push(e) }).pipe(Scope.provide(scope))
      const waiter = yield* a.coordinator.register(key).pipe(Scope.provide(scope))
      const waiting = yield* Effect.forkChild(waiter.wake)
      const killed = psql(
        `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '${database}' AND application_name LIKE 'module-transpile-cache:listen:%'`
      )
      expect(killed).toBe("1")
      yield* Fiber.join(waiting).pipe(Effect.timeout("3 seconds"))
      yield* Effect.sleep("50 millis").pipe(Effect.repeat({ until: () => heard.some((e) => e._tag === "Flush") }))
        .pipe(Effect.timeout("3 seconds"))
      // And it listens again: a peer's notice still arrives.
      const b = yield* member(scope)
      const before = heard.length
      yield* b.invalidations.publishKey(key)
      yield* Effect.sleep("50 millis").pipe(Effect.repeat({ until: () => heard.length > before }))
        .pipe(Effect.timeout("3 seconds"))
      yield* Scope.close(scope, Exit.void)
      expect(sessions()).toBe(0)
    }))

  it.live("at a budget of one, a lock query waits for an open L2 transaction on the same session instead of running inside it", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.build(
        Layer.provideMerge(
          PgSession.layerSqlClient("1 second"),
          PgFleet.layerSession({ heartbeat: "200 millis", sessionTimeout: "1 second" }).pipe(
            Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))
          )
        )
      ).pipe(Scope.provide(scope))
      const sql = Context.get(context, SqlClient.SqlClient)
      const fleet = yield* PgFleet.make().pipe(Effect.provideContext(context), Scope.provide(scope))
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const transaction = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
        yield* sql`SELECT 1`
        yield* Deferred.succeed(inside, undefined)
        yield* Deferred.await(release)
        // Still this transaction's own session: no lock was taken inside it.
        const held = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()`
        return held[0]?.n
      })))
      yield* Deferred.await(inside)
      const locking = yield* Effect.forkChild(fleet.coordinator.tryLock(key))
      yield* Effect.sleep("200 millis")
      expect(locking.pollUnsafe()).toBeUndefined()
      yield* Deferred.succeed(release, undefined)
      expect(yield* Fiber.join(transaction)).toBe(0)
      expect(yield* Fiber.join(locking)).toBe(true)
      expect(advisoryLocks()).toBe(1)
      yield* Scope.close(scope, Exit.void)
      expect(advisoryLocks()).toBe(0)
      expect(sessions()).toBe(0)
    }))
})
