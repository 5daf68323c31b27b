/**
 * The Postgres fleet: the Coordinator (advisory locks) and Invalidations (NOTIFY), both on
 * the one fleet session of the process ({@link PgSession}), which also LISTENs, reconnects
 * with backoff, sends a heartbeat, and on every reconnect flushes L1 and wakes all waiters.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { Coordinator } from "../domain/Coordinator.ts"
import { keyHash, realmHash } from "../domain/Domain.ts"
import { Invalidations, type ModulePlace } from "../domain/Invalidations.ts"
import { type SoloCatalog, TranspileStore } from "../domain/TranspileStore.ts"
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
/** The channel of presence notices (solo mode): `hello` from a joining process, `fleet` from a solo one that left. */
export const presenceChannel = "module_transpile_cache_presence"
/** The `application_name` of the fleet sessions (`module-transpile-cache:listen:<tag>`), as a `LIKE` pattern. */
const sessionNames = "module-transpile-cache:listen:%"
/** How often a joining process retries the shared presence lock (a solo peer's "fleet" notice cuts it short). */
const joinRetry = Duration.millis(50)

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
  lockTimeout: Duration.seconds(2),
  /**
   * How long a lock operation waits for the fleet session while the server refuses its
   * connects (default 10 s, the coalescing deadline's default): waited out, not fallen back from.
   */
  refusalWait: Duration.seconds(10)
})

/** Tuning of the fleet connections. */
export type PgFleetOptions = Tuning.Tuning<typeof defaults> & {
  /**
   * Solo mode (default false here; `ModuleCacheLive` turns it on, `MTC_FLEET_SOLO`): while no
   * other fleet session is on the database, locks are granted with no round trip, and a peer
   * that joins waits until every transpile granted that way has written its row (see
   * `AdvisoryLockCoordinator`). Checked for peers at each heartbeat.
   */
  readonly solo?: boolean | undefined
  /**
   * The store's row catalog for solo mode: loaded when this process goes solo, off when it
   * stops being solo. {@link layer} takes it from the `TranspileStore` in context, if any.
   */
  readonly soloCatalog?: SoloCatalog | undefined
}

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
  const { heartbeat, lockTimeout, refusalWait, sessionTimeout } = Tuning.resolve(defaults, options)
  const origin = InvalidationNotice.makeOrigin()
  const waiters = new WaiterRegistry()
  const subscribers = Subscribers.make()

  const notify = (channel: string, payload: string) =>
    session.use(
      (connection) =>
        connection.query("SELECT pg_notify($1, $2)", [channel, payload], false).pipe(Effect.timeout(sessionTimeout)),
      sessionTimeout
    )

  const soloCatalog = options.soloCatalog
  const runFork = yield* FiberSet.makeRuntime()
  const onSolo = soloCatalog === undefined
    ? undefined
    : (solo: boolean) => (solo ? runFork(soloCatalog.enter) : soloCatalog.leave())
  const fleet = AdvisoryLockCoordinator.makeFleet({
    session,
    waiters,
    lockTimeout,
    refusalWait,
    notifyPopulated: (hash) => Effect.ignore(notify(populatedChannel, hash.toString())),
    populatedChannel,
    ...(options.solo === true
      ? { presence: { channel: presenceChannel, sessions: sessionNames, check: heartbeat, joinRetry, onSolo } }
      : {})
  })
  const coordinator = fleet.coordinator
  yield* session.subscribe(sessionHooks(origin, waiters, subscribers, fleet))
  if (options.solo === true) yield* Effect.forkIn(fleet.presence, yield* Effect.scope)

  const publish = (kind: InvalidationNotice.Kind, hash: bigint, sourceHash?: string, place?: ModulePlace) =>
    notify(invalidatedChannel, InvalidationNotice.encode(kind, hash, origin, sourceHash, place)).pipe(
      Effect.tapError((error) => Effect.logWarning("module-transpile-cache: invalidation NOTIFY failed", String(error))),
      Effect.ignore
    )

  const invalidations = Invalidations.of({
    kind: "postgres",
    publishKey: (key, sourceHash) =>
      publish("k", keyHash(key), sourceHash, InvalidationNotice.placeOf(key.realmUrl, key.path)),
    publishRealm: (realmUrl) => publish("r", realmHash(realmUrl)),
    subscribe: subscribers.subscribe
  })

  return { coordinator, invalidations, mode: fleet.mode }
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
  subscribers: Subscribers.Subscribers,
  fleet: Pick<AdvisoryLockCoordinator.FleetCoordinator, "onPresenceNotice" | "onSessionChange">
): PgSession.SessionHooks => ({
  onNotification: (notification: PgConnection.Notification) => {
    if (notification.channel === populatedChannel) {
      const hash = InvalidationNotice.parseHash(notification.payload)
      if (hash !== undefined) waiters.wake(hash)
      return
    }
    if (notification.channel === presenceChannel) return fleet.onPresenceNotice(notification.payload)
    const event = InvalidationNotice.decode(notification.payload, origin)
    if (event !== undefined) subscribers.deliver(event)
  },
  onConnected: () => {
    subscribers.deliver({ _tag: "Flush" })
    waiters.wakeAll()
    fleet.onSessionChange()
  },
  onLost: () => {
    waiters.wakeAll()
    fleet.onSessionChange()
  }
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
    channels: [populatedChannel, invalidatedChannel, presenceChannel],
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
  // No coordinator, so no solo mode: its session still keeps peers out of solo mode (it is a
  // fleet session they see), which suits a process that transpiles its own misses.
  Layer.effect(Invalidations, Effect.map(make({ ...options, solo: false }), ({ invalidations }) => invalidations))

/** Coordinator and Invalidations over the PgClient in context. */
export const layer = (options?: PgFleetOptions): Layer.Layer<Coordinator | Invalidations, never, PgSession.PgSession> =>
  Layer.effectContext(Effect.gen(function*() {
    const store = yield* Effect.serviceOption(TranspileStore)
    const soloCatalog = options?.soloCatalog ?? Option.getOrUndefined(store)?.soloCatalog
    const { coordinator, invalidations } = yield* make({ ...options, soloCatalog })
    return Context.make(Coordinator, coordinator).pipe(Context.add(Invalidations, invalidations))
  }))
