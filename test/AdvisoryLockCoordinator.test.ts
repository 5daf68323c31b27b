/**
 * The advisory-lock coordinator (src/fleet/AdvisoryLockCoordinator.ts) over a fake fleet
 * session: claims per process, unlock only on the session that holds the lock, a failed
 * lock query resets the session and is tried once more, and errors keep their cause.
 * test/PgFleet.test.ts runs it against the real server.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import type { PgConnection } from "@effect/sql-pg"
import { Duration, Effect, Exit } from "effect"
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
})
