/**
 * The Postgres fleet: the Coordinator (advisory locks) and Invalidations (NOTIFY), both on
 * the one fleet session of the process ({@link PgSession}), which also LISTENs, reconnects
 * with backoff, sends a heartbeat, and on every reconnect flushes L1 and wakes all waiters.
 *
 * @since 0.1.0
 */
import { PgClient, type PgConnection } from "@effect/sql-pg"
import { Context, Duration, Effect, Layer } from "effect"
import { Coordinator } from "../domain/Coordinator.ts"
import { keyHash, realmHash } from "../domain/Domain.ts"
import { Invalidations } from "../domain/Invalidations.ts"
import * as Tuning from "../internal/tuning.ts"
import * as AdvisoryLockCoordinator from "./AdvisoryLockCoordinator.ts"
import * as InvalidationNotice from "./InvalidationNotice.ts"
import * as PgSession from "./PgSession.ts"
import * as Subscribers from "./Subscribers.ts"
import { WaiterRegistry } from "./Waiters.ts"

/** The channel of "a row (or failure) for this lock key is committed". Payload: the lock key. */
export const populatedChannel = "module_transpile_cache_populated"
/** The channel of invalidations. Payload: `k|r:<hash>:<origin>`. */
export const invalidatedChannel = InvalidationNotice.channel

/** The defaults of {@link PgFleetOptions}. */
export const defaults = Tuning.defaults({
  /** Interval of the LISTEN connection's heartbeat (default 5 s). */
  heartbeat: Duration.seconds(5),
  /** Time a heartbeat, a NOTIFY or a connect may take before the session counts as lost (default 2 s). */
  sessionTimeout: Duration.seconds(2),
  /**
   * Time a lock query may take (default 2 s). Lock queries queue on one session; transpiles
   * run in worker threads, so the event loop answers them promptly. A database that is down
   * fails them at once instead.
   */
  lockTimeout: Duration.seconds(2)
})

/** Tuning of the fleet connections. */
export type PgFleetOptions = Tuning.Tuning<typeof defaults>

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
  const { lockTimeout, sessionTimeout } = Tuning.resolve(defaults, options)
  const origin = InvalidationNotice.makeOrigin()
  const waiters = new WaiterRegistry()
  const subscribers = Subscribers.make()
  yield* session.subscribe(sessionHooks(origin, waiters, subscribers))

  const notify = (channel: string, payload: string) =>
    session.use(
      (connection) =>
        connection.query("SELECT pg_notify($1, $2)", [channel, payload], false).pipe(Effect.timeout(sessionTimeout)),
      sessionTimeout
    )

  const coordinator = AdvisoryLockCoordinator.make({
    session,
    waiters,
    lockTimeout,
    notifyPopulated: (hash) => Effect.ignore(notify(populatedChannel, hash.toString())),
    populatedChannel
  })

  const publish = (kind: InvalidationNotice.Kind, hash: bigint) =>
    notify(invalidatedChannel, InvalidationNotice.encode(kind, hash, origin)).pipe(
      Effect.tapError((error) => Effect.logWarning("module-transpile-cache: invalidation NOTIFY failed", String(error))),
      Effect.ignore
    )

  const invalidations = Invalidations.of({
    kind: "postgres",
    publishKey: (key) => publish("k", keyHash(key)),
    publishRealm: (realmUrl) => publish("r", realmHash(realmUrl)),
    subscribe: subscribers.subscribe
  })

  return { coordinator, invalidations }
})

/**
 * What the fleet does with the session's events: a "populated" notice wakes the key's
 * waiters; a peer's invalidation reaches the subscribers. A new session flushes L1
 * (invalidations may have been missed while no session listened) and wakes every waiter
 * (the locks of a lost session are gone, so they retry at once), as does a lost one.
 */
const sessionHooks = (
  origin: string,
  waiters: WaiterRegistry,
  subscribers: Subscribers.Subscribers
): PgSession.SessionHooks => ({
  onNotification: (notification: PgConnection.Notification) => {
    if (notification.channel === populatedChannel) {
      const hash = InvalidationNotice.parseHash(notification.payload)
      if (hash !== undefined) waiters.wake(hash)
      return
    }
    const event = InvalidationNotice.decode(notification.payload, origin)
    if (event !== undefined) subscribers.deliver(event)
  },
  onConnected: () => {
    subscribers.deliver({ _tag: "Flush" })
    waiters.wakeAll()
  },
  onLost: () => waiters.wakeAll()
})

/**
 * The fleet session's options: LISTEN on the fleet's channels, with the heartbeat and
 * session timeout of `options`, named `module-transpile-cache:listen:<tag>` on the server.
 */
export const sessionOptions = (
  connection: PgConnection.Config,
  options: PgFleetOptions = {},
  tag: string = String(process.pid)
): PgSession.PgSessionOptions => {
  const { heartbeat, sessionTimeout } = Tuning.resolve(defaults, options)
  return {
    connection: { ...connection, applicationName: `module-transpile-cache:listen:${tag}` },
    channels: [populatedChannel, invalidatedChannel],
    heartbeat,
    sessionTimeout
  }
}

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
