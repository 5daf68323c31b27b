/**
 * The advisory-lock coordinator (src/fleet/AdvisoryLockCoordinator.ts) over a fake fleet
 * session: claims per process, unlock only on the session that holds the lock, a failed
 * lock query resets the session and is tried once more, and errors keep their cause; in solo
 * mode, locks granted with no statement and the exclusive presence lock kept until every solo
 * claim is released.
 * test/PgFleet.test.ts runs it against the real server.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import type { PgConnection } from "@effect/sql-pg"
import { Duration, Effect, Exit, Fiber } from "effect"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import { CoordinatorError } from "../src/domain/Coordinator.ts"
import { moduleKey, versionedKey } from "../src/domain/Domain.ts"
import * as AdvisoryLockCoordinator from "../src/fleet/AdvisoryLockCoordinator.ts"
import { WaiterRegistry } from "../src/fleet/Waiters.ts"

const key = versionedKey(moduleKey("https://realm.test/", "a.ts"), "fp-test")

/** A session whose lock queries answer from `answers` (true, false or a failure), logging each. */
const fakeSession = (answers: Array<boolean | "fail">) => {
  const state: { generation: number | undefined; queries: Array<string>; resets: Array<number> } = {
    generation: 1,
    queries: [],
    resets: []
  }
  const connection = {
    query: (sql: string) =>
      Effect.suspend(() => {
        state.queries.push(sql.includes("unlock") ? "unlock" : "try")
        const answer = answers.shift() ?? true
        return answer === "fail"
          ? Effect.fail(new SqlError({ reason: new ConnectionError({ message: "gone", operation: "execute", cause: undefined }) }))
          : Effect.succeed({ command: "SELECT", rowCount: 1, oid: null, rows: [{ value: answer }], fields: [] })
      })
  } as unknown as PgConnection.PgConnection
  const session = {
    use: <A, E>(f: (connection: PgConnection.PgConnection, generation: number) => Effect.Effect<A, E>) =>
      Effect.suspend(() => f(connection, state.generation ?? 0)),
    reset: (generation: number) => Effect.sync(() => { state.resets.push(generation) }),
    generation: () => state.generation
  }
  return { state, session }
}

const make = (answers: Array<boolean | "fail">) => {
  const fake = fakeSession(answers)
  const coordinator = AdvisoryLockCoordinator.make({
    session: fake.session,
    waiters: new WaiterRegistry(),
    lockTimeout: Duration.seconds(1),
    notifyPopulated: () => Effect.void
  })
  return { coordinator, state: fake.state }
}

describe("AdvisoryLockCoordinator", () => {
  it.effect("a key is claimed once per process, and unlocked on the session that holds it", () =>
    Effect.gen(function*() {
      const { coordinator, state } = make([true])
      expect(yield* coordinator.tryLock(key)).toBe(true)
      // Advisory locks are re-entrant per session: a second claim must not reach the server.
      expect(yield* coordinator.tryLock(key)).toBe(false)
      yield* coordinator.unlock(key)
      expect(state.queries).toEqual(["try", "unlock"])
      // Unlocked: nothing held, nothing to unlock.
      yield* coordinator.unlock(key)
      expect(state.queries).toEqual(["try", "unlock"])
    }))

  it.effect("a lock of a lost session is dropped without a query", () =>
    Effect.gen(function*() {
      const { coordinator, state } = make([true, true])
      expect(yield* coordinator.tryLock(key)).toBe(true)
      state.generation = 2
      yield* coordinator.unlock(key)
      expect(state.queries).toEqual(["try"])
      expect(yield* coordinator.tryLock(key)).toBe(true)
    }))

  it.effect("a failed lock query resets the session and is tried once more", () =>
    Effect.gen(function*() {
      const { coordinator, state } = make(["fail", true])
      expect(yield* coordinator.tryLock(key)).toBe(true)
      expect(state.resets).toEqual([1])
      expect(state.queries).toEqual(["try", "try"])
    }))

  it.effect("a lock query that fails twice fails with a CoordinatorError that keeps its cause, and claims nothing", () =>
    Effect.gen(function*() {
      const { coordinator } = make(["fail", "fail", false])
      const exit = yield* Effect.exit(coordinator.tryLock(key))
      assert(Exit.isFailure(exit))
      const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
      assert(error instanceof CoordinatorError)
      expect(error.cause).toBeInstanceOf(SqlError)
      expect(yield* coordinator.tryLock(key)).toBe(false)
    }))

  describe("solo mode", () => {
    const other = versionedKey(moduleKey("https://realm.test/", "b.ts"), "fp-test")

    /** A session whose presence statements answer as a database where this process is alone; logs each statement by kind. */
    const soloSession = () => {
      const queries: Array<string> = []
      const kindOf = (sql: string) =>
        sql.includes("pg_stat_activity") && sql.includes("CASE WHEN")
          ? "negotiate"
          : sql.startsWith("SELECT pg_advisory_lock_shared")
          ? "take shared"
          : sql.includes("pg_advisory_unlock($1::int8), pg_notify")
          ? "give exclusive up"
          : sql.includes("unlock")
          ? "unlock"
          : "try"
      const connection = {
        query: (sql: string) =>
          Effect.sync(() => {
            const kind = kindOf(sql)
            queries.push(kind)
            const row = kind === "negotiate" ? { mode: "solo" } : { value: true }
            return { command: "SELECT", rowCount: 1, oid: null, rows: [row], fields: [] }
          })
      } as unknown as PgConnection.PgConnection
      const session = {
        use: <A, E>(f: (connection: PgConnection.PgConnection, generation: number) => Effect.Effect<A, E>) =>
          Effect.suspend(() => f(connection, 1)),
        reset: () => Effect.void,
        generation: () => 1
      }
      const fleet = AdvisoryLockCoordinator.makeFleet({
        session,
        waiters: new WaiterRegistry(),
        lockTimeout: Duration.seconds(1),
        notifyPopulated: () => Effect.void,
        presence: { channel: "presence", sessions: "mtc:%", check: Duration.hours(1), joinRetry: Duration.hours(1) }
      })
      return { fleet, queries }
    }

    /** Lets the upkeep fiber run until it waits again. */
    const settle = Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow, { discard: true })

    it.effect("alone, a lock is granted with no key-lock statement; on a hello the exclusive presence lock is given up only once every solo claim is released", () =>
      Effect.gen(function*() {
        const { fleet, queries } = soloSession()
        const { coordinator } = fleet
        // The first lock operation negotiates the mode (solo) and is granted in the same batch.
        expect(yield* coordinator.tryLock(key)).toBe(true)
        expect(fleet.mode()).toBe("solo")
        expect(queries).toEqual(["negotiate"])
        const upkeep = yield* Effect.forkChild(fleet.presence)
        yield* settle

        // A peer says hello: no more solo claims (the next try-lock is a key-lock statement), and
        // the exclusive lock is kept while the first claim is held.
        fleet.onPresenceNotice("hello")
        expect(fleet.mode()).toBe("leaving")
        yield* settle
        expect(queries).toEqual(["negotiate"])
        expect(yield* coordinator.tryLock(other)).toBe(true)
        expect(queries).toEqual(["negotiate", "try"])
        yield* settle
        expect(fleet.mode()).toBe("leaving")

        // The solo claim is released (no statement): now the shared lock is taken and the
        // exclusive one given up, in that order.
        yield* coordinator.unlock(key)
        yield* settle
        expect(queries).toEqual(["negotiate", "try", "take shared", "give exclusive up"])
        expect(fleet.mode()).toBe("fleet")
        // The key lock taken while leaving is a real one, unlocked by a statement.
        yield* coordinator.unlock(other)
        expect(queries).toEqual(["negotiate", "try", "take shared", "give exclusive up", "unlock"])
        yield* Fiber.interrupt(upkeep)
      }))

    it.effect("a solo claim's holder joins its own second load of the key as a loser, and wakes it locally", () =>
      Effect.gen(function*() {
        const { fleet, queries } = soloSession()
        const { coordinator } = fleet
        const waiter = yield* coordinator.register(key)
        expect(yield* coordinator.tryLock(key)).toBe(true)
        expect(yield* coordinator.tryLock(key)).toBe(false)
        yield* coordinator.notifyPopulated(key)
        // Woken with no NOTIFY (it would hang here otherwise).
        yield* waiter.wake
        yield* coordinator.unlock(key)
        expect(queries).toEqual(["negotiate"])
        expect(yield* coordinator.tryLock(key)).toBe(true)
        expect(queries).toEqual(["negotiate"])
      }))
  })
})
