/**
 * The Postgres fleet: the Coordinator (advisory locks on one dedicated session per process)
 * and Invalidations (NOTIFY), both fed by one LISTEN connection per process that reconnects
 * with backoff, sends a heartbeat, and on every reconnect flushes L1 and wakes all waiters.
 *
 * @since 0.1.0
 */
import { PgClient, PgConnection } from "@effect/sql-pg"
import { randomBytes } from "node:crypto"
import { Cause, Context, Duration, Effect, Exit, Layer, Metric, Queue, Schedule, Scope, Semaphore } from "effect"
import { Coordinator, CoordinatorError } from "./Coordinator.ts"
import { lockKey, realmHash } from "./Domain.ts"
import { type InvalidationEvent, Invalidations } from "./Invalidations.ts"
import { WaiterRegistry } from "./internal/signal.ts"

/** The channel of "a row (or failure) for this lock key is committed". Payload: the lock key. */
export const populatedChannel = "module_transpile_cache_populated"
/** The channel of invalidations. Payload: `k|r:<hash>:<origin>`. */
export const invalidatedChannel = "module_transpile_cache_invalidated"

/** Tuning of the fleet connections. */
export interface PgFleetOptions {
  /** Interval of the LISTEN connection's heartbeat (default 5 s). */
  readonly heartbeat?: Duration.Input
  /** Time a heartbeat, a NOTIFY or a connect may take before the session counts as lost (default 2 s). */
  readonly sessionTimeout?: Duration.Input
  /**
   * Time a lock query may take (default 2 s). Lock queries queue on one session; transpiles
   * run in worker threads, so the event loop answers them promptly. A database that is down
   * fails them at once instead.
   */
  readonly lockTimeout?: Duration.Input
}

/** The defaults of {@link PgFleetOptions}. */
export const defaults = {
  heartbeat: Duration.seconds(5),
  sessionTimeout: Duration.seconds(2),
  lockTimeout: Duration.seconds(2)
} as const

/** LISTEN reconnects, by this process. */
export const reconnectCounter = Metric.counter("module_cache_listen_reconnects", {
  description: "Reconnects of the LISTEN connection"
})

/** Builds the Coordinator and Invalidations of one process over the PgClient in context. */
export const make = Effect.fnUntraced(function*(options: PgFleetOptions = {}) {
  const pg = yield* PgClient.PgClient
  const scope = yield* Effect.scope
  const heartbeat = options.heartbeat ?? defaults.heartbeat
  const sessionTimeout = options.sessionTimeout ?? defaults.sessionTimeout
  const lockTimeout = options.lockTimeout ?? defaults.lockTimeout
  const origin = randomBytes(6).toString("hex")
  const waiters = new WaiterRegistry()
  const subscribers = new Set<(event: InvalidationEvent) => void>()
  const connectionConfig = (role: "listen" | "locks"): PgConnection.Config => ({
    ...pg.config,
    connectTimeout: sessionTimeout,
    applicationName: `module-transpile-cache:${role}:${process.pid}`
  })
  const deliver = (event: InvalidationEvent) => {
    for (const subscriber of subscribers) subscriber(event)
  }

  // --- the LISTEN connection -------------------------------------------------------------
  let connections = 0
  const onNotification = (notification: PgConnection.Notification) => {
    if (notification.channel === populatedChannel) {
      const hash = parseHash(notification.payload)
      if (hash !== undefined) waiters.wake(hash)
      return
    }
    const [kind, hashText, from] = notification.payload.split(":")
    const hash = hashText === undefined ? undefined : parseHash(hashText)
    if (hash === undefined || from === origin) return
    if (kind === "k") deliver({ _tag: "Key", hash })
    else if (kind === "r") deliver({ _tag: "Realm", hash })
  }

  const listenSession = Effect.scoped(Effect.gen(function*() {
    const connection = yield* PgConnection.make(connectionConfig("listen"))
    const pinned = yield* connection.pin
    const populated = yield* pinned.listen(populatedChannel)
    const invalidated = yield* pinned.listen(invalidatedChannel)
    // Invalidations may have been missed while no connection listened.
    if (connections++ > 0) yield* Metric.update(reconnectCounter, 1)
    deliver({ _tag: "Flush" })
    waiters.wakeAll()
    const consume = (queue: Queue.Dequeue<PgConnection.Notification, unknown>) =>
      Effect.forever(Effect.map(Queue.take(queue), onNotification))
    const beat = Effect.forever(
      Effect.andThen(
        Effect.sleep(heartbeat),
        pinned.query("SELECT 1", [], false).pipe(Effect.timeout(sessionTimeout))
      )
    )
    return yield* Effect.raceAll([consume(populated), consume(invalidated), beat])
  }))

  const listenLoop = listenSession.pipe(
    Effect.retry(Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")])),
    Effect.catchCause((cause) =>
      Effect.andThen(
        Effect.sync(() => waiters.wakeAll()),
        Effect.logWarning("module-transpile-cache: LISTEN connection lost; reconnecting", Cause.pretty(cause))
      )
    ),
    Effect.forever
  )
  // Wait for the first LISTEN so that no notice sent after start-up is missed; go on
  // regardless after the session timeout (the database may be down; waiters poll).
  yield* Effect.forkIn(listenLoop, scope)
  yield* Effect.sync(() => connections).pipe(
    Effect.repeat({ until: (n) => n > 0, schedule: Schedule.spaced("10 millis") }),
    Effect.timeoutOption(sessionTimeout)
  )

  // --- the lock session ------------------------------------------------------------------
  interface LockSession {
    readonly connection: PgConnection.PgConnection
    readonly scope: Scope.Closeable
  }
  let session: LockSession | undefined
  /**
   * Lock keys this process holds (or is trying to take), with the session that holds them.
   * Advisory locks are re-entrant per session, so a second load of a key in this process
   * (after an invalidation dropped the first one's slot) must not take it again: it waits
   * like any loser.
   */
  const claims = new Map<bigint, LockSession | "pending">()
  const lockSemaphore = yield* Semaphore.make(1)

  const dropSession = (broken: LockSession) =>
    Effect.suspend(() => {
      if (session === broken) session = undefined
      return Scope.close(broken.scope, Exit.void)
    })

  const currentSession = lockSemaphore.withPermits(1)(Effect.suspend(() => {
    if (session !== undefined) return Effect.succeed(session)
    return Effect.gen(function*() {
      const sessionScope = yield* Scope.make()
      const connection = yield* PgConnection.make(connectionConfig("locks")).pipe(
        Scope.provide(sessionScope),
        Effect.onError(() => Scope.close(sessionScope, Exit.void))
      )
      const fresh: LockSession = { connection, scope: sessionScope }
      session = fresh
      return fresh
    })
  }))

  const lockQuery = (sql: string, hash: bigint, owner?: LockSession) => {
    const attempt = Effect.gen(function*() {
      const current = owner ?? (yield* currentSession)
      const result = yield* current.connection.query(sql, [hash.toString()]).pipe(
        Effect.timeout(lockTimeout),
        Effect.tapError(() => dropSession(current))
      )
      return { session: current, value: result.rows[0]?.["value"] }
    })
    // A session that died while idle (a database restart) is found out by its next query:
    // a try-lock tries once more on a fresh one. An unlock has no second chance: the locks
    // of a dead session are gone already.
    return (owner === undefined
      ? attempt.pipe(Effect.catchIf((error) => !Cause.isTimeoutError(error), () => attempt))
      : attempt).pipe(Effect.mapError((error) => new CoordinatorError({ message: String(error) })))
  }

  yield* Effect.addFinalizer(() =>
    Effect.suspend(() => (session === undefined ? Effect.void : dropSession(session)))
  )

  const coordinator = Coordinator.of({
    kind: "postgres",
    register: (key) => waiters.register(lockKey(key)),
    tryLock: (key) => {
      const hash = lockKey(key)
      return Effect.suspend(() => {
        if (claims.has(hash)) return Effect.succeed(false)
        claims.set(hash, "pending")
        return lockQuery("SELECT pg_try_advisory_lock($1::int8) AS value", hash).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (exit._tag === "Success" && exit.value.value === true) claims.set(hash, exit.value.session)
              else claims.delete(hash)
            })
          ),
          Effect.map(({ value }) => value === true)
        )
      }).pipe(Effect.withSpan("Coordinator.tryLock"))
    },
    unlock: (key) => {
      const hash = lockKey(key)
      return Effect.suspend(() => {
        const owner = claims.get(hash)
        if (owner === undefined || owner === "pending") return Effect.void
        // The locks of a dropped session are gone already.
        if (owner !== session) return Effect.sync(() => claims.delete(hash))
        return lockQuery("SELECT pg_advisory_unlock($1::int8) AS value", hash, owner).pipe(
          Effect.ensuring(Effect.sync(() => claims.delete(hash)))
        )
      }).pipe(Effect.ignore, Effect.withSpan("Coordinator.unlock"))
    },
    notifyPopulated: (key) =>
      pg.notify(populatedChannel, lockKey(key).toString()).pipe(
        Effect.timeout(sessionTimeout),
        Effect.ignore,
        Effect.withSpan("Coordinator.notifyPopulated")
      )
  })

  const publish = (kind: "k" | "r", hash: bigint) =>
    pg.notify(invalidatedChannel, `${kind}:${hash}:${origin}`).pipe(
      Effect.timeout(sessionTimeout),
      Effect.tapError((error) => Effect.logWarning("module-transpile-cache: invalidation NOTIFY failed", String(error))),
      Effect.ignore
    )

  const invalidations = Invalidations.of({
    kind: "postgres",
    publishKey: (key) => publish("k", lockKey(key)),
    publishRealm: (realmUrl) => publish("r", realmHash(realmUrl)),
    subscribe: (handler) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const subscriber = (event: InvalidationEvent) => Effect.runSync(handler(event))
          subscribers.add(subscriber)
          return subscriber
        }),
        (subscriber) => Effect.sync(() => subscribers.delete(subscriber))
      ).pipe(Effect.asVoid)
  })

  return { coordinator, invalidations }
})

const parseHash = (text: string): bigint | undefined => {
  try {
    return BigInt(text)
  } catch {
    return undefined
  }
}

/** Only the peer invalidations of {@link make}, for a fleet that does not coalesce. */
export const layerInvalidations = (options?: PgFleetOptions): Layer.Layer<Invalidations, never, PgClient.PgClient> =>
  Layer.effect(Invalidations, Effect.map(make(options), ({ invalidations }) => invalidations))

/** Coordinator and Invalidations over the PgClient in context. */
export const layer = (options?: PgFleetOptions): Layer.Layer<Coordinator | Invalidations, never, PgClient.PgClient> =>
  Layer.effectContext(
    Effect.map(make(options), ({ coordinator, invalidations }) =>
      Context.make(Coordinator, coordinator).pipe(Context.add(Invalidations, invalidations)))
  )
