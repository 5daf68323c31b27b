/**
 * The Postgres fleet: the Coordinator (advisory locks) and Invalidations (NOTIFY), both on
 * the one fleet session of the process ({@link PgSession}), which also LISTENs, reconnects
 * with backoff, sends a heartbeat, and on every reconnect flushes L1 and wakes all waiters.
 *
 * @since 0.1.0
 */
import { PgClient, type PgConnection } from "@effect/sql-pg"
import { randomBytes } from "node:crypto"
import { Cause, Context, Duration, Effect, Layer } from "effect"
import { Coordinator, CoordinatorError } from "../domain/Coordinator.ts"
import { lockKey, realmHash } from "../domain/Domain.ts"
import { type InvalidationEvent, Invalidations } from "../domain/Invalidations.ts"
import { WaiterRegistry } from "./Waiters.ts"
import { timeoutLenient } from "../internal/timeout.ts"
import * as PgSession from "./PgSession.ts"

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

/** LISTEN reconnects, by this process (the fleet session's reconnects). */
export const reconnectCounter = PgSession.reconnectCounter

/**
 * Builds the Coordinator and Invalidations of one process over the fleet session in
 * context: advisory locks, NOTIFY and LISTEN all run on that one session (see
 * {@link PgSession} for why that is sound). No pool connection is used, so the pool only
 * serves L2.
 */
export const make = Effect.fnUntraced(function*(options: PgFleetOptions = {}) {
  const session = yield* PgSession.PgSession
  const sessionTimeout = options.sessionTimeout ?? defaults.sessionTimeout
  const lockTimeout = options.lockTimeout ?? defaults.lockTimeout
  const origin = randomBytes(6).toString("hex")
  const waiters = new WaiterRegistry()
  const subscribers = new Set<(event: InvalidationEvent) => void>()
  const deliver = (event: InvalidationEvent) => {
    for (const subscriber of subscribers) subscriber(event)
  }

  // --- notifications -----------------------------------------------------------------------
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
  yield* session.subscribe({
    onNotification,
    // Invalidations may have been missed while no session listened; the locks of a lost
    // session are gone, so waiters retry at once.
    onConnected: () => {
      deliver({ _tag: "Flush" })
      waiters.wakeAll()
    },
    onLost: () => waiters.wakeAll()
  })

  // --- advisory locks ------------------------------------------------------------------------
  /**
   * Lock keys this process holds (or is trying to take), with the generation of the session
   * that holds them. Advisory locks are re-entrant per session, so a second load of a key in
   * this process (after an invalidation dropped the first one's slot) must not take it
   * again: it waits like any loser.
   */
  const claims = new Map<bigint, number | "pending">()

  const lockQuery = (sql: string, hash: bigint) =>
    session.use(
      (connection, generation) =>
        timeoutLenient(connection.query(sql, [hash.toString()]), lockTimeout).pipe(
          // A lock query that fails or hangs leaves the session in doubt: replace it (its
          // locks go with it; waiters are woken and retry).
          Effect.tapError(() => session.reset(generation)),
          Effect.map((result) => ({ generation, value: result.rows[0]?.["value"] }))
        ),
      lockTimeout
    )

  const coordinator = Coordinator.of({
    kind: "postgres",
    register: (key) => waiters.register(lockKey(key)),
    tryLock: (key) => {
      const hash = lockKey(key)
      const attempt = lockQuery("SELECT pg_try_advisory_lock($1::int8) AS value", hash)
      return Effect.suspend(() => {
        if (claims.has(hash)) return Effect.succeed(false)
        claims.set(hash, "pending")
        // A session that died while idle (a database restart) is found out by its next
        // query: a try-lock tries once more on a fresh one.
        return attempt.pipe(
          Effect.catchIf((error) => !Cause.isTimeoutError(error), () => attempt),
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (exit._tag === "Success" && exit.value.value === true) claims.set(hash, exit.value.generation)
              else claims.delete(hash)
            })
          ),
          Effect.map(({ value }) => value === true),
          Effect.mapError((error) => new CoordinatorError({ message: String(error) }))
        )
      }).pipe(Effect.withSpan("Coordinator.tryLock"))
    },
    unlock: (key) => {
      const hash = lockKey(key)
      return Effect.suspend(() => {
        const owner = claims.get(hash)
        if (owner === undefined || owner === "pending") return Effect.void
        // The locks of a lost session are gone already; an unlock has no second chance.
        if (owner !== session.generation()) return Effect.sync(() => claims.delete(hash))
        return lockQuery("SELECT pg_advisory_unlock($1::int8) AS value", hash).pipe(
          Effect.ensuring(Effect.sync(() => claims.delete(hash)))
        )
      }).pipe(Effect.ignore, Effect.withSpan("Coordinator.unlock"))
    },
    notifyPopulated: (key) =>
      notify(populatedChannel, lockKey(key).toString()).pipe(
        Effect.ignore,
        Effect.withSpan("Coordinator.notifyPopulated")
      )
  })

  // --- NOTIFY --------------------------------------------------------------------------------
  const notify = (channel: string, payload: string) =>
    session.use(
      (connection) =>
        connection.query("SELECT pg_notify($1, $2)", [channel, payload], false).pipe(Effect.timeout(sessionTimeout)),
      sessionTimeout
    )

  const publish = (kind: "k" | "r", hash: bigint) =>
    notify(invalidatedChannel, `${kind}:${hash}:${origin}`).pipe(
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

/**
 * The fleet session's options: LISTEN on the fleet's channels, with the heartbeat and
 * session timeout of `options`, named `module-transpile-cache:listen:<tag>` on the server.
 */
export const sessionOptions = (
  connection: PgConnection.Config,
  options: PgFleetOptions = {},
  tag: string = String(process.pid)
): PgSession.PgSessionOptions => ({
  connection: { ...connection, applicationName: `module-transpile-cache:listen:${tag}` },
  channels: [populatedChannel, invalidatedChannel],
  heartbeat: options.heartbeat ?? defaults.heartbeat,
  sessionTimeout: options.sessionTimeout ?? defaults.sessionTimeout
})

/** The fleet session, connected with the settings of the PgClient in context. */
export const layerSession = (options?: PgFleetOptions, tag?: string): Layer.Layer<PgSession.PgSession, never, PgClient.PgClient> =>
  Layer.unwrap(Effect.gen(function*() {
    const pg = yield* PgClient.PgClient
    const { connectTimeout: _, ...connection } = pg.config
    return PgSession.layer(sessionOptions(connection, options, tag))
  }))

/** Only the peer invalidations of {@link make}, for a fleet that does not coalesce. */
export const layerInvalidations = (options?: PgFleetOptions): Layer.Layer<Invalidations, never, PgSession.PgSession> =>
  Layer.effect(Invalidations, Effect.map(make(options), ({ invalidations }) => invalidations))

/** Coordinator and Invalidations over the PgClient in context. */
export const layer = (options?: PgFleetOptions): Layer.Layer<Coordinator | Invalidations, never, PgSession.PgSession> =>
  Layer.effectContext(
    Effect.map(make(options), ({ coordinator, invalidations }) =>
      Context.make(Coordinator, coordinator).pipe(Context.add(Invalidations, invalidations)))
  )
