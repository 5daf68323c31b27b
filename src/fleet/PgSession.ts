/**
 * The fleet session: one dedicated Postgres session per process. It carries LISTEN (on
 * every fleet channel), the coordinator's advisory locks, NOTIFY and a heartbeat; with a
 * budget of one connection ({@link layerSqlClient}), the store's statements too.
 *
 * Why LISTEN and session-level advisory locks can share one session:
 * - Postgres delivers a notification to a listening session between statements, and when
 *   the session is idle, at once. A lock query on the same session only delays delivery by
 *   its own length (well under a millisecond); nothing is lost.
 * - Session-level advisory locks ignore transaction boundaries, and they live exactly as
 *   long as the session: the same life as its LISTEN. When the session dies, the locks and
 *   the LISTEN go together, and one reconnect restores LISTEN while the waiters (woken by
 *   the loss) find the locks free and retry. Before the merge a process could lose its
 *   locks but keep listening, or the reverse; now there is one failure mode.
 * - The session is dedicated (no pool hands it out) and statements on it run one at a time
 *   behind one permit. Without a store on it, it is never inside a transaction. With the
 *   store on it (a budget of one), a transaction holds the permit from BEGIN to COMMIT, so
 *   no lock query, NOTIFY or heartbeat ever runs inside it (an aborted transaction cannot
 *   fail them); notifications that arrive meanwhile are delivered at its end.
 *
 * Connecting: a connect the server refuses (53300 "too many clients", 57P03) is counted
 * and logged, and retried on a jittered backoff; callers meanwhile wait for the session up
 * to their own bound. A database that is unreachable fails callers at once.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as PgConnection from "@effect/sql-pg/PgConnection"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlConnection from "effect/sql/SqlConnection"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import * as refusal from "../internal/refusal.ts"
import { isRefusal } from "../internal/refusal.ts"
import { makeSingleSession, type Transform } from "../internal/sqlClient.ts"
import { timeoutLenient } from "../internal/timeout.ts"

/** Options of {@link make}. */
export interface PgSessionOptions {
  /** How to connect (`url`, `applicationName`, ...); `connectTimeout` defaults to `sessionTimeout`. */
  readonly connection: PgConnection.Config
  /** The channels to LISTEN on, on every connect. */
  readonly channels: ReadonlyArray<string>
  /** Interval of the heartbeat. */
  readonly heartbeat: Duration.Input
  /** Time a heartbeat or a connect may take before the session counts as lost. */
  readonly sessionTimeout: Duration.Input
}

/** Callbacks of a session's user (the fleet). */
export interface SessionHooks {
  /** A notification arrived on one of the channels. */
  readonly onNotification: (notification: PgConnection.Notification) => void
  /** A session is up, for the `generation`-th time (notifications may have been missed before). */
  readonly onConnected: (generation: number) => void
  /** The session was lost: its locks are gone and notifications may be missed until the next connect. */
  readonly onLost: () => void
}

/** The fleet session of a process. */
export class PgSession extends Context.Service<PgSession, {
  readonly applicationName: string
  /**
   * Runs `f` on the session, one statement sequence at a time with every other user. When
   * no session is up, waits for one up to `wait` if the last connect was refused (or none
   * was tried yet); fails at once if the database is unreachable.
   */
  readonly use: <A, E>(
    f: (connection: PgConnection.PgConnection, generation: number) => Effect.Effect<A, E>,
    wait: Duration.Input
  ) => Effect.Effect<A, E | SqlError>
  /** Closes the session of `generation` if it is still the current one; a new one replaces it. */
  readonly reset: (generation: number) => Effect.Effect<void>
  /** The generation of the session up now, or undefined. */
  readonly generation: () => number | undefined
  /** Registers hooks for the life of the scope. */
  readonly subscribe: (hooks: SessionHooks) => Effect.Effect<void, never, Scope.Scope>
  /** Connects the server refused so far. */
  readonly refusals: () => number
  /** The server's `max_connections`, once a session was up. */
  readonly serverMax: () => number | undefined
  /** @internal The permit every statement on the session holds. */
  readonly semaphore: Semaphore.Semaphore
  /** @internal The connection of the session up now, waiting as `use` does. */
  readonly acquire: (wait: Duration.Input) => Effect.Effect<PgConnection.PgConnection, SqlError>
}>()("module-transpile-cache/PgSession") {}

/** Connects refused by the server, by this process. */
export const refusalCounter = refusal.refusalCounter
/** Reconnects of the fleet session. */
export const reconnectCounter = Metric.counter("module_cache_listen_reconnects_total", {
  description: "Reconnects of the LISTEN connection"
})

interface Current {
  readonly connection: PgConnection.PgConnection
  readonly generation: number
  readonly kill: Deferred.Deferred<never, SqlError>
}

const unavailable = (message: string, cause: unknown) =>
  new SqlError({ reason: new ConnectionError({ message, operation: "connect", cause }) })

/** Connects the fleet session and keeps it up (reconnecting with backoff) for the life of the scope. */
export const make = Effect.fnUntraced(function*(options: PgSessionOptions) {
  const scope = yield* Effect.scope
  const semaphore = yield* Semaphore.make(1)
  const sessionTimeout = Duration.fromInputUnsafe(options.sessionTimeout)
  const config: PgConnection.Config = { connectTimeout: sessionTimeout, ...options.connection }
  const applicationName = config.applicationName ?? "module-transpile-cache"
  const hooks = new Set<SessionHooks>()

  let current: Current | undefined
  let generation = 0
  /** Completed by the next session that comes up. */
  let ready = Deferred.makeUnsafe<Current>()
  /** Completed by the outcome of the next connect attempt (replaced when a session is lost). */
  let outcome = Deferred.makeUnsafe<Current, SqlError>()
  /** Completed by a caller that needs a session now: the next attempt starts without its backoff. */
  let kick = Deferred.makeUnsafe<void>()
  /** The last connect failure while no session is up: a refusal is waited out, the rest is not. */
  let lastFailure: { readonly refused: boolean; readonly error: SqlError } | undefined
  let refusals = 0
  let serverMax: number | undefined

  const lost = (session: Current) =>
    Effect.sync(() => {
      if (current !== session) return
      current = undefined
      if (Deferred.isDoneUnsafe(ready)) ready = Deferred.makeUnsafe<Current>()
      if (Deferred.isDoneUnsafe(outcome)) outcome = Deferred.makeUnsafe<Current, SqlError>()
      for (const hook of hooks) hook.onLost()
    })

  /** One session from connect to loss. Succeeds when a session that was up is lost. */
  const connectOnce = Effect.scoped(Effect.gen(function*() {
    const connection = yield* PgConnection.make(config)
    const pinned = yield* connection.pin
    const queues = yield* Effect.forEach(options.channels, (channel) => pinned.listen(channel))
    if (serverMax === undefined) {
      const result = yield* pinned.query("SELECT current_setting('max_connections')::int AS max", [], false)
      const max = result.rows[0]?.["max"]
      if (typeof max === "number") serverMax = max
    }
    const session: Current = { connection: pinned, generation: ++generation, kill: Deferred.makeUnsafe() }
    current = session
    lastFailure = undefined
    if (session.generation > 1) yield* Metric.update(reconnectCounter, 1)
    Deferred.doneUnsafe(ready, Exit.succeed(session))
    Deferred.doneUnsafe(outcome, Exit.succeed(session))
    for (const hook of hooks) hook.onConnected(session.generation)
    const consume = (queue: Queue.Dequeue<PgConnection.Notification, SqlError>) =>
      Effect.forever(Effect.map(Queue.take(queue), (notification) => {
        for (const hook of hooks) hook.onNotification(notification)
      }))
    const beat = Effect.forever(Effect.andThen(
      Effect.sleep(options.heartbeat),
      semaphore.withPermits(1)(timeoutLenient(pinned.query("SELECT 1", [], false), sessionTimeout))
    ))
    const exit = yield* Effect.exit(Effect.raceAllFirst([...queues.map(consume), beat, Deferred.await(session.kill)]))
    yield* lost(session)
    yield* Effect.logWarning(
      "module-transpile-cache: fleet session lost; reconnecting",
      exit._tag === "Failure" ? Cause.pretty(exit.cause) : "ended"
    )
  }))

  const recordFailure = (error: SqlError) =>
    Effect.suspend(() => {
      const refused = isRefusal(error)
      lastFailure = { refused, error }
      if (!refused) return Effect.void
      refusals++
      return Effect.andThen(
        Metric.update(refusalCounter, 1),
        Effect.logWarning("module-transpile-cache: Postgres refused the fleet session (too many clients?); waiting to retry", error.message)
      )
    })

  // A connect that fails is retried on a jittered backoff (fresh after every session that
  // was up): 50 ms growing by 1.5x to 1 s. A caller that needs the session cuts the wait
  // short (to 20 ms), as a lock session opened on demand would.
  const reconnectSchedule = Schedule.min([Schedule.exponential("50 millis", 1.5), Schedule.spaced("1 second")]).pipe(
    Schedule.jittered
  )
  const supervise = Effect.gen(function*() {
    let step = yield* Schedule.toStep(reconnectSchedule)
    while (true) {
      const attempt = outcome
      const exit = yield* Effect.exit(connectOnce)
      if (exit._tag === "Success") {
        // A session was up and is lost: reconnect at once, on a fresh backoff.
        step = yield* Schedule.toStep(reconnectSchedule)
        continue
      }
      const found = Cause.findErrorOption(exit.cause)
      const error = found._tag === "Some" ? found.value : unavailable("module-transpile-cache: fleet session failed", exit.cause)
      yield* recordFailure(error)
      outcome = Deferred.makeUnsafe<Current, SqlError>()
      Deferred.doneUnsafe(attempt, Exit.fail(error))
      const delay = yield* step(Date.now(), undefined).pipe(
        Effect.map(([, duration]) => duration),
        Effect.orElseSucceed(() => Duration.seconds(1))
      )
      yield* Effect.raceFirst(Effect.sleep(delay), Effect.andThen(Deferred.await(kick), Effect.sleep("20 millis")))
      if (Deferred.isDoneUnsafe(kick)) kick = Deferred.makeUnsafe<void>()
    }
  })
  yield* Effect.forkIn(supervise, scope)
  yield* Effect.addFinalizer(() => Effect.sync(() => hooks.clear()))
  // Wait for the first session, so that no notice sent after start-up is missed; go on
  // regardless after the session timeout (the database may be down; callers fall back).
  yield* Effect.timeoutOption(Deferred.await(ready), sessionTimeout)

  /**
   * The session up now; else the outcome of the next connect attempt (started at once). A
   * refused attempt is waited out until a session is up; any other failure fails the caller.
   */
  const acquireCurrent = (wait: Duration.Input): Effect.Effect<Current, SqlError> =>
    Effect.suspend(() => {
      if (current !== undefined) return Effect.succeed(current)
      const attempt = outcome
      Deferred.doneUnsafe(kick, Exit.void)
      return Deferred.await(attempt).pipe(
        Effect.catch((error) => (isRefusal(error) ? Effect.suspend(() => Deferred.await(ready)) : Effect.fail(error))),
        Effect.timeoutOrElse({
          duration: wait,
          orElse: () =>
            Effect.fail(lastFailure?.error ?? unavailable("module-transpile-cache: no fleet session yet", undefined))
        })
      )
    })

  return PgSession.of({
    applicationName,
    use: (f, wait) =>
      Effect.flatMap(acquireCurrent(wait), (session) =>
        semaphore.withPermits(1)(f(session.connection, session.generation))),
    reset: (target) =>
      Effect.suspend(() => {
        const session = current
        if (session === undefined || session.generation !== target) return Effect.void
        return Effect.andThen(
          lost(session),
          Deferred.fail(session.kill, unavailable("module-transpile-cache: fleet session reset", undefined))
        )
      }),
    generation: () => current?.generation,
    subscribe: (subscriber) =>
      Effect.acquireRelease(
        Effect.sync(() => hooks.add(subscriber)),
        () => Effect.sync(() => hooks.delete(subscriber))
      ).pipe(Effect.asVoid),
    refusals: () => refusals,
    serverMax: () => serverMax,
    semaphore,
    acquire: (wait) => Effect.map(acquireCurrent(wait), (session) => session.connection)
  })
})

/** The layer of {@link make}. */
export const layer = (options: PgSessionOptions): Layer.Layer<PgSession> => Layer.effect(PgSession, make(options))

// -----------------------------------------------------------------------------
// A SqlClient on the fleet session (a budget of one connection)
// -----------------------------------------------------------------------------

/** The session as a `SqlConnection`. */
const makeConnection = (connection: PgConnection.PgConnection): SqlConnection.Connection => {
  const rows = (sql: string, params: ReadonlyArray<unknown>, transformRows: Transform, prepare = true) =>
    Effect.map(connection.query(sql, params, prepare), (result): ReadonlyArray<object> =>
      transformRows === undefined ? result.rows : transformRows(result.rows))
  return {
    execute: (sql, params, transformRows) => rows(sql, params, transformRows),
    executeUnprepared: (sql, params, transformRows) => rows(sql, params, transformRows, false),
    executeRaw: (sql, params) => connection.query(sql, params),
    executeValues: (sql, params) => connection.queryValues(sql, params),
    executeValuesUnprepared: (sql, params) => connection.queryValues(sql, params, false),
    executeStream: (sql, params, transformRows) => Stream.fromIterableEffect(rows(sql, params, transformRows))
  }
}

/**
 * A `SqlClient` whose statements run on the fleet session, behind its permit: a statement,
 * or a whole transaction, never interleaves with a lock query, a NOTIFY or the heartbeat.
 * While the session is down, a statement waits for it up to `wait` (when refused) as
 * {@link PgSession} `use` does.
 */
export const makeSqlClient = (session: PgSession["Service"], wait: Duration.Input) =>
  makeSingleSession({
    driver: "pg",
    name: "PgSession",
    compiler: PgClient.makeCompiler(),
    connection: Effect.map(session.acquire(wait), makeConnection),
    semaphore: session.semaphore,
    spanAttributes: [["db.system.name", "postgresql"], ["mtc.pg.session", session.applicationName]]
  })

/** {@link makeSqlClient} over the {@link PgSession} in context. */
export const layerSqlClient = (wait: Duration.Input): Layer.Layer<SqlClient.SqlClient, never, PgSession> =>
  Layer.effect(
    SqlClient.SqlClient,
    Effect.gen(function*() {
      return yield* makeSqlClient(yield* PgSession, wait)
    })
  ).pipe(Layer.provide(Reactivity.layer))
