/**
 * The single-session SqlClient (src/internal/sqlClient.ts) over a fake session: statements
 * reach the session, a transaction holds the permit from BEGIN to COMMIT, and the COMMIT of
 * an aborted transaction (answered `ROLLBACK`) fails with the client's name.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Semaphore, Stream } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import type { SqlConnection } from "effect/sql"
import { SqlError } from "effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { makeSingleSession } from "../src/internal/sqlClient.ts"

/** A session that records every statement and answers `commit` to COMMIT. */
const fakeSession = (commit: "COMMIT" | "ROLLBACK") => {
  const log: Array<string> = []
  const run = (sql: string) =>
    Effect.sync(() => {
      log.push(sql)
      return sql === "COMMIT" ? { command: commit, rows: [] } : { command: "SELECT", rows: [{ n: 1 }] }
    })
  const connection: SqlConnection.Connection = {
    execute: (sql) => Effect.map(run(sql), (result) => result.rows),
    executeUnprepared: (sql) => Effect.map(run(sql), (result) => result.rows),
    executeRaw: (sql) => run(sql),
    executeValues: (sql) => Effect.map(run(sql), () => [[1]]),
    executeValuesUnprepared: (sql) => Effect.map(run(sql), () => [[1]]),
    executeStream: (sql) => Stream.fromIterableEffect(Effect.map(run(sql), (result) => result.rows))
  }
  return { log, connection }
}

const client = (commit: "COMMIT" | "ROLLBACK") =>
  Effect.gen(function*() {
    const session = fakeSession(commit)
    const sql = yield* makeSingleSession({
      driver: "pg",
      name: "Fake",
      compiler: PgClient.makeCompiler(),
      connection: Effect.succeed(session.connection),
      semaphore: yield* Semaphore.make(1),
      spanAttributes: []
    }).pipe(Effect.provide(Reactivity.layer))
    return { sql, log: session.log }
  })

describe("makeSingleSession", () => {
  it.effect("runs statements on the session and commits a transaction", () =>
    Effect.gen(function*() {
      const { log, sql } = yield* client("COMMIT")
      expect(sql.driver).toBe("pg")
      expect(yield* sql`SELECT 1`).toEqual([{ n: 1 }])
      yield* sql.withTransaction(sql`SELECT 2`)
      expect(log).toEqual(["SELECT 1", "BEGIN", "SELECT 2", "COMMIT"])
    }))

  it.effect("a statement of another fiber waits until the open transaction ends", () =>
    Effect.gen(function*() {
      const { log, sql } = yield* client("COMMIT")
      const transaction = yield* Effect.forkChild(
        sql.withTransaction(Effect.andThen(sql`SELECT 1`, Effect.andThen(Effect.yieldNow, sql`SELECT 2`)))
      )
      yield* Effect.yieldNow
      const outside = yield* Effect.forkChild(sql`SELECT 3`)
      yield* Fiber.join(transaction)
      yield* Fiber.join(outside)
      expect(log).toEqual(["BEGIN", "SELECT 1", "SELECT 2", "COMMIT", "SELECT 3"])
    }))

  it.effect("the COMMIT of an aborted transaction fails, naming the client", () =>
    Effect.gen(function*() {
      const { sql } = yield* client("ROLLBACK")
      const exit = yield* Effect.exit(sql.withTransaction(sql`SELECT 1`))
      assert(Exit.isFailure(exit))
      const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
      assert(error instanceof SqlError)
      expect(error.message).toContain("Fake: COMMIT rolled back an aborted transaction")
    }))
})
