/**
 * PGlite (embedded Postgres compiled to WASM) behind Effect's `SqlClient`, so that the
 * embedded store runs the same SQL and the same migrations as the Postgres one.
 *
 * PGlite is a single session. The client shares it through one semaphore permit, and the
 * permit is held for the **whole** statement (or the whole transaction), so a statement
 * from another fiber never runs inside an open transaction. Nested transactions use
 * savepoints.
 *
 * Differences from `@effect/sql-pg` that matter:
 * - int8 always decodes to `bigint` (as on sql-pg) and `date` to its string.
 * - `json(value)` binds a parameter typed `jsonb` (OID 3802).
 * - Committing an aborted transaction fails, as on sql-pg (PGlite answers `ROLLBACK`
 *   without an error).
 * - Inside a transaction, `sql.reserve` deadlocks on the single session; do not use it.
 * - With `worker: true`, the instance lives in a worker thread ({@link PgliteWorker}) and
 *   `withPglite` hands over that thread's session (`query` and `close` only).
 * - One process per data directory: two processes on one directory corrupt it. Take
 *   {@link DataDirLock} first (`SqlTranspileStore.layerPglite` does).
 *
 * @since 0.1.0
 */
import type { Results } from "@electric-sql/pglite"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlConnection from "effect/sql/SqlConnection"
import * as Statement from "effect/sql/Statement"
import {
  AuthenticationError,
  AuthorizationError,
  ConnectionError,
  ConstraintError,
  DeadlockError,
  LockTimeoutError,
  SerializationError,
  SqlError,
  type SqlErrorReason,
  SqlSyntaxError,
  StatementTimeoutError,
  UniqueViolation,
  UnknownError
} from "effect/sql/SqlError"
import { makeSingleSession, type Transform } from "../internal/sqlClient.ts"
import * as PgliteWorker from "./PgliteWorker.ts"

/** Options of a PGlite client. */
export interface PgliteClientConfig {
  /** The data directory; `undefined` keeps the database in memory (gone on close). */
  readonly dataDir?: string | undefined
  /** Extra span attributes of every statement. */
  readonly spanAttributes?: Readonly<Record<string, unknown>> | undefined
  /**
   * Whether PGlite runs in a worker thread of its own (see `PgliteWorker`), so that its
   * statements never hold up the event loop (default false here; the embedded store turns it
   * on unless `MTC_PGLITE_WORKER=0`).
   */
  readonly worker?: boolean | undefined
  /** Postgres's `shared_buffers` (default `PgliteWorker.defaultSharedBuffers`, 16MB). */
  readonly sharedBuffers?: string | undefined
}

/** A `SqlClient` on PGlite, with a jsonb helper and raw access to the session. */
export interface PgliteClient extends SqlClient.SqlClient {
  readonly config: PgliteClientConfig
  /** A fragment binding `value` as a `jsonb` parameter. */
  readonly json: (value: unknown) => Statement.Fragment
  /**
   * Runs a raw call on the PGlite instance under the session permit (or on the current
   * transaction's session when called inside one). Never call PGlite directly: it would
   * run inside another fiber's open transaction.
   */
  readonly withPglite: <A>(f: (db: PgliteWorker.PgliteSession) => Promise<A>) => Effect.Effect<A, SqlError>
}

/** The service tag of the PGlite client. */
export const PgliteClient = Context.Service<PgliteClient>("module-transpile-cache/PgliteClient")

/** OIDs used by the client. */
const OID = { jsonb: 3802 } as const

/** A parameter bound with an explicit type: what the compiler emits for {@link PgliteClient.json}. */
class TypedParam {
  readonly oid: number
  readonly value: string
  constructor(oid: number, value: string) {
    this.oid = oid
    this.value = value
  }
}

/**
 * jsonb fragments. The kind is the one `@effect/sql-pg` uses, so a fragment built with
 * `PgClient.json` compiles here too.
 */
interface PgJson extends Statement.Custom<"PgJson", unknown> {}
const PgJson = Statement.custom<PgJson>("PgJson")

const escape = Statement.defaultEscape("\"")

/** The Postgres compiler of `@effect/sql-pg`, binding jsonb as a typed PGlite parameter. */
export const makeCompiler = (): Statement.Compiler =>
  Statement.makeCompiler<PgJson>({
    dialect: "pg",
    placeholder(index) {
      return `$${index}`
    },
    onIdentifier: escape,
    onRecordUpdate(placeholders, valueAlias, valueColumns, values, returning) {
      return [
        `(values ${placeholders}) AS ${valueAlias}${valueColumns}${returning ? ` RETURNING ${returning[0]}` : ""}`,
        returning ? values.flat().concat(returning[1]) : values.flat()
      ]
    },
    onCustom(type, placeholder) {
      switch (type.kind) {
        case "PgJson": {
          // PGlite's json serializer passes strings through unchanged, so stringify here:
          // a JSON string value must not be sent as raw text.
          const text = JSON.stringify(type.paramA, (_, v: unknown) => typeof v === "bigint" ? v.toString() : v)
          return [placeholder(undefined), [new TypedParam(OID.jsonb, text)]]
        }
      }
    }
  })

/** Splits compiled params into PGlite values and, when any is typed, their `paramTypes`. */
const prepareParams = (
  params: ReadonlyArray<unknown>
): { readonly values: Array<unknown>; readonly paramTypes: Array<number> | undefined } => {
  let paramTypes: Array<number> | undefined
  const values = new Array<unknown>(params.length)
  for (let i = 0; i < params.length; i++) {
    const param = params[i]
    if (param instanceof TypedParam) {
      paramTypes ??= new Array<number>(params.length).fill(0)
      paramTypes[i] = param.oid
      values[i] = param.value
    } else {
      values[i] = param === undefined ? null : param
    }
  }
  return { values, paramTypes }
}

const hasStringProperty = <K extends string>(u: unknown, key: K): u is { readonly [k in K]: string } =>
  typeof u === "object" && u !== null && key in u && typeof (u as Record<K, unknown>)[key] === "string"

/** Classifies a PGlite failure by its SQLSTATE, as `@effect/sql-pg` does. */
const classify = (cause: unknown, operation: string): SqlErrorReason => {
  const message = cause instanceof Error ? cause.message : String(cause)
  const props = { cause, message, operation }
  const code = hasStringProperty(cause, "code") ? cause.code : undefined
  if (code === undefined) {
    // Not a server error: PGlite is closed, or the WASM runtime failed.
    return new ConnectionError(props)
  }
  if (code.startsWith("08")) return new ConnectionError(props)
  if (code.startsWith("28")) return new AuthenticationError(props)
  if (code === "42501") return new AuthorizationError(props)
  if (code.startsWith("42")) return new SqlSyntaxError(props)
  if (code === "23505") {
    const constraint = hasStringProperty(cause, "constraint") && cause.constraint.trim() !== ""
      ? cause.constraint.trim()
      : "unknown"
    return new UniqueViolation({ ...props, constraint })
  }
  if (code.startsWith("23")) return new ConstraintError(props)
  if (code === "40P01") return new DeadlockError(props)
  if (code === "40001") return new SerializationError(props)
  if (code === "55P03") return new LockTimeoutError(props)
  if (code === "57014") return new StatementTimeoutError(props)
  return new UnknownError(props)
}

const toSqlError = (operation: string) => (cause: unknown): SqlError =>
  new SqlError({ reason: classify(cause, operation) })

/**
 * The single session. Every call runs uninterruptibly: PGlite cannot cancel a statement,
 * so the permit stays held until the statement has really finished.
 */
const makeConnection = (db: PgliteWorker.PgliteSession): SqlConnection.Connection => {
  const query = (
    sql: string,
    params: ReadonlyArray<unknown>,
    rowMode: "object" | "array"
  ): Effect.Effect<Results<unknown>, SqlError> => {
    const { paramTypes, values } = prepareParams(params)
    return Effect.uninterruptible(Effect.tryPromise({
      try: () =>
        db.query<unknown>(sql, values, paramTypes === undefined ? { rowMode } : { rowMode, paramTypes }),
      catch: toSqlError("execute")
    }))
  }
  const rows = (sql: string, params: ReadonlyArray<unknown>, transformRows: Transform) =>
    Effect.map(query(sql, params, "object"), (result): ReadonlyArray<object> => {
      const rows = result.rows as ReadonlyArray<object>
      return transformRows === undefined ? rows : transformRows(rows)
    })
  const valueRows = (sql: string, params: ReadonlyArray<unknown>) =>
    Effect.map(query(sql, params, "array"), (result) => result.rows as ReadonlyArray<ReadonlyArray<unknown>>)
  return {
    execute: rows,
    executeUnprepared: rows,
    executeRaw: (sql, params) => query(sql, params, "object"),
    executeValues: valueRows,
    executeValuesUnprepared: valueRows,
    executeStream: (sql, params, transformRows) => Stream.fromIterableEffect(rows(sql, params, transformRows))
  }
}

/**
 * Opens PGlite at `dataDir` (in memory when undefined) as a `SqlClient`. The database is
 * closed when the scope closes, after the statement that holds the session finishes.
 */
export const make = (
  config: PgliteClientConfig
): Effect.Effect<PgliteClient, SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    const semaphore = yield* Semaphore.make(1)
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: (): Promise<PgliteWorker.PgliteSession> =>
          config.worker === true
            ? PgliteWorker.open(config.dataDir, { sharedBuffers: config.sharedBuffers })
            : PgliteWorker.openHere(config.dataDir, config.sharedBuffers).then((db) => ({
              query: (sql, params, options) => db.query(sql, params, options),
              close: () => db.close()
            })),
        catch: toSqlError("connect")
      }),
      (db) => semaphore.withPermit(Effect.promise(() => db.close()))
    )
    const client = yield* makeSingleSession({
      driver: "pglite",
      name: "PgliteClient",
      compiler: makeCompiler(),
      connection: Effect.succeed(makeConnection(db)),
      semaphore,
      spanAttributes: [
        ...(config.spanAttributes ? Object.entries(config.spanAttributes) : []),
        ["db.system.name", "postgresql"],
        ["db.namespace", config.dataDir ?? "memory"]
      ]
    })
    const transactionService = client.transactionService
    const withPglite = <A>(f: (db: PgliteWorker.PgliteSession) => Promise<A>): Effect.Effect<A, SqlError> => {
      const call = Effect.uninterruptible(Effect.tryPromise({ try: () => f(db), catch: toSqlError("raw") }))
      // Inside a transaction this fiber's lease already holds the permit.
      return Effect.flatMap(
        Effect.serviceOption(transactionService),
        (tx) => Option.isSome(tx) ? call : semaphore.withPermit(call)
      )
    }
    return Object.assign(client, {
      config,
      json: (value: unknown) => Statement.fragment([PgJson(value, undefined, undefined)]),
      withPglite
    })
  })

/** Provides both {@link PgliteClient} and `SqlClient`. */
export const layer = (config: PgliteClientConfig): Layer.Layer<PgliteClient | SqlClient.SqlClient, SqlError> =>
  Layer.effectContext(
    Effect.map(make(config), (client) =>
      Context.make(PgliteClient, client).pipe(Context.add(SqlClient.SqlClient, client)))
  ).pipe(Layer.provide(Reactivity.layer))
