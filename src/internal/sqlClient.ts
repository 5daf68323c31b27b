/**
 * A `SqlClient` over one database session shared behind one permit: every statement (or
 * whole transaction) holds the permit from start to end, so a statement from another fiber
 * never runs inside an open transaction. Nested transactions use savepoints. The PGlite
 * client and the fleet session's client are both built this way.
 */
import * as Effect from "effect/Effect"
import type * as Semaphore from "effect/Semaphore"
import type * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlConnection from "effect/sql/SqlConnection"
import type * as Statement from "effect/sql/Statement"
import { SqlError, UnknownError } from "effect/sql/SqlError"

/** The row transform a `SqlConnection` method is given. */
export type Transform = (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined

/** Options of {@link makeSingleSession}. */
interface SingleSessionOptions {
  /** The driver's name (`SqlClient.make`'s `driver`). */
  readonly driver: string
  /** Names the client in the error of a COMMIT that rolled back. */
  readonly name: string
  readonly compiler: Statement.Compiler
  /** The session (waiting for one as the owner decides). */
  readonly connection: Effect.Effect<SqlConnection.Connection, SqlError>
  /** The permit every statement on the session holds. */
  readonly semaphore: Semaphore.Semaphore
  readonly spanAttributes: ReadonlyArray<readonly [string, unknown]>
}

/**
 * Builds the client. Postgres answers `ROLLBACK`, with no error, to the COMMIT of an
 * aborted transaction: the COMMIT fails then, as on `@effect/sql-pg`.
 */
export const makeSingleSession = (options: SingleSessionOptions): Effect.Effect<SqlClient.SqlClient, never, Reactivity.Reactivity> => {
  const acquirers = SqlClient.makeSqliteAcquirers({ connection: options.connection, semaphore: options.semaphore })
  return SqlClient.make({
    driver: options.driver,
    compiler: options.compiler,
    acquirer: acquirers.acquirer,
    borrower: acquirers.borrower,
    transactionAcquirer: acquirers.transactionAcquirer,
    onCommitFailure: acquirers.onCommitFailure,
    commit: (conn) =>
      Effect.flatMap(conn.executeRaw("COMMIT", []), (result) =>
        isRolledBack(result) ? Effect.fail(commitRolledBack(options.name)) : Effect.void),
    releaseSavepoint: (name) => `RELEASE SAVEPOINT ${name}`,
    spanAttributes: options.spanAttributes
  })
}

/** Whether a raw result is the `ROLLBACK` a COMMIT of an aborted transaction answers. */
const isRolledBack = (result: unknown): boolean =>
  typeof result === "object" && result !== null && "command" in result && result.command === "ROLLBACK"

const commitRolledBack = (name: string) =>
  new SqlError({
    reason: new UnknownError({
      cause: new Error("COMMIT rolled back an aborted transaction"),
      message: `${name}: COMMIT rolled back an aborted transaction`,
      operation: "commit"
    })
  })
