/**
 * The ModuleCache of a deployment, by store: Postgres brings its coordinator and peer
 * invalidations on one fleet session, and the store on a small pool (or on that session);
 * PGlite and memory run with none.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Redacted from "effect/Redacted"
import type { SqlError } from "effect/sql/SqlError"
import * as Coordinator from "../domain/Coordinator.ts"
import * as DatabaseConnections from "../domain/DatabaseConnections.ts"
import type { DataDirLockedError, DataDirLockError } from "../store/DataDirLock.ts"
import type { StoreError } from "../domain/Errors.ts"
import * as Invalidations from "../domain/Invalidations.ts"
import * as LeaseCoordinator from "../fleet/LeaseCoordinator.ts"
import * as MemoryTranspileStore from "../store/MemoryTranspileStore.ts"
import * as ModuleCache from "../cache/ModuleCache.ts"
import type { ModuleSources } from "../domain/ModuleSources.ts"
import * as PgFleet from "../fleet/PgFleet.ts"
import * as PgSession from "../fleet/PgSession.ts"
import * as PgliteWorker from "../store/PgliteWorker.ts"
import * as PgTls from "../store/PgTls.ts"
import * as PolledInvalidations from "../fleet/PolledInvalidations.ts"
import * as SqlTranspileStore from "../store/SqlTranspileStore.ts"
import type { Transpiler } from "../domain/Transpiler.ts"
import { none as noStore, TranspileStore } from "../domain/TranspileStore.ts"

/** Which L2 a deployment uses. */
export type StoreChoice =
  | {
    readonly _tag: "postgres"
    readonly url: Redacted.Redacted<string>
    /**
     * TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) under those of `url` and
     * `directUrl`, which win: {@link postgresFromEnv} takes them from `PGSSLMODE`,
     * `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`. See {@link PgTls} for their meaning.
     */
    readonly ssl?: PgTls.SslParams
    /**
     * The connection budget of the process (default 2): the fleet session (LISTEN, advisory
     * locks, NOTIFY) plus a pool of `budget - 1` connections for L2, opened on demand and
     * closed when idle. A budget of 1 runs L2 on the fleet session too. Choose it so that
     * "fleet size x budget <= max_connections - headroom".
     */
    readonly maxConnections?: number
    /** The pool's part of the budget, overriding `maxConnections - 1` (the budget is then `poolSize + 1`). */
    readonly poolSize?: number
    /** How long an idle pool connection stays open (default 10 s). */
    readonly poolIdleTimeout?: Duration.Input
    /** The number of processes of the fleet, if known: a budget that cannot fit is warned about at start. */
    readonly fleetSize?: number
    /** Connections left to other clients of the server in that check (default 10). */
    readonly headroom?: number
    /** Suffix of the connections' `application_name` (default the process id). */
    readonly applicationTag?: string
    /**
     * How long a new pool connection may take before the store counts as down (default 2 s:
     * transpiles run in worker threads, so sockets are answered promptly; a database that is
     * down refuses at once).
     */
    readonly connectTimeout?: Duration.Input
    readonly fleet?: PgFleet.PgFleetOptions
    /**
     * Whether processes coalesce transpiles through advisory locks and NOTIFY (default true).
     * Off, they share L2 rows and peer invalidations but each transpiles its own misses.
     */
    readonly coordinate?: boolean
    /**
     * `"transaction"` when `url` points at a transaction pooler (PgBouncer in transaction
     * mode, RDS Proxy, ...): statements go unprepared and unpipelined, and, with no
     * `directUrl`, nothing relies on session state: coordination takes lease rows
     * (`LeaseCoordinator`) and peers learn of invalidations from a polled log
     * (`PolledInvalidations`). Migrations run through the pooler unchanged.
     */
    readonly pooler?: "transaction"
    /**
     * A direct URL (not through the pooler) for the one fleet session of the process:
     * LISTEN, advisory locks and NOTIFY run there, the store on the pool through `url`.
     */
    readonly directUrl?: Redacted.Redacted<string>
    /** Leases behind a pooler with no `directUrl`. */
    readonly lease?: LeaseCoordinator.LeaseOptions
    /** The polled invalidation log behind a pooler with no `directUrl`. */
    readonly invalidationLog?: PolledInvalidations.PolledInvalidationsOptions
  }
  | {
    readonly _tag: "pglite"
    readonly dataDir: string | undefined
    /** Whether PGlite runs in a worker thread (default: `MTC_PGLITE_WORKER`, else true). */
    readonly worker?: boolean
    /** Postgres's `shared_buffers` in PGlite (default: `MTC_PGLITE_SHARED_BUFFERS`, else 16MB). */
    readonly sharedBuffers?: string
  }
  | { readonly _tag: "memory" }
  /** No L2 at all: L1 only. */
  | { readonly _tag: "none" }

/** Defaults of the Postgres choice. */
export const defaults = { connectTimeout: Duration.seconds(2) } as const

/** Defaults of the Postgres connection budget. */
export const budgetDefaults = {
  maxConnections: 2,
  poolIdleTimeout: Duration.seconds(10),
  headroom: 10,
  /** Solo mode of the fleet (`PgFleetOptions.solo`): on unless `fleet.solo` (`MTC_FLEET_SOLO`) says otherwise. */
  solo: true
} as const

/** The connections of a Postgres choice: the budget and the pool's part of it. */
export const budgetOf = (store: { readonly maxConnections?: number; readonly poolSize?: number }) => {
  const poolSize = Math.max(0, Math.floor(store.poolSize ?? (store.maxConnections ?? budgetDefaults.maxConnections) - 1))
  return { budget: poolSize + 1, poolSize }
}

/** How long stats wait for a fleet session that is down, and for their query. */
const statsWait = Duration.millis(100)
const statsTimeout = Duration.seconds(5)

type PostgresChoice = Extract<StoreChoice, { readonly _tag: "postgres" }>

/**
 * The Postgres services with the TLS settings of each URL resolved first (a file that cannot
 * be read fails here). A connection that fails for a TLS reason fails the layer with a
 * {@link PgTls.PgTlsError} naming it: the store's (its first connection runs the
 * migrations), and the fleet session's on a direct URL.
 */
const postgresServices = (store: PostgresChoice) =>
  Layer.unwrap(Effect.gen(function*() {
    const timeout = store.connectTimeout ?? defaults.connectTimeout
    const main = yield* PgTls.resolve(store.url, store.ssl, { timeout })
    const direct = store.directUrl === undefined ? undefined : yield* PgTls.resolve(store.directUrl, store.ssl, { timeout })
    if (store.pooler === "transaction" && direct === undefined) {
      return poolerServices(store, main).pipe(Layer.tapError((error) => failOnTls(error, main)))
    }
    const { poolSize } = budgetOf(store)
    // With no pool, the store runs on the fleet session.
    const storeTls = poolSize > 0 ? main : direct ?? main
    return sessionServices(store, main, direct).pipe(Layer.tapError((error) => failOnTls(error, storeTls)))
  }))

/** Fails with the {@link PgTls.PgTlsError} of `error` when its cause is a TLS one. */
const failOnTls = (error: unknown, tls: PgTls.ClientTls): Effect.Effect<void, PgTls.PgTlsError> =>
  Effect.flatMap(PgTls.explain(error, tls), (named) => (named === undefined ? Effect.void : Effect.fail(named)))

/**
 * The fleet session on a direct URL must come up at start when it fails for a TLS reason
 * (a setting, not an outage): the store's pool goes elsewhere and would not notice.
 */
const checkDirectSession = (direct: PgTls.ClientTls, wait: Duration.Input) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const session = yield* PgSession.PgSession
    yield* session.use(() => Effect.void, wait).pipe(
      Effect.catch((error) => failOnTls(error, direct))
    )
  }))

/** The Postgres services: fleet session, store on the pool (or on the session), fleet, connection stats. */
const sessionServices = (store: PostgresChoice, main: PgTls.ClientTls, direct: PgTls.ClientTls | undefined) => {
  const { budget, poolSize } = budgetOf(store)
  const tag = store.applicationTag ?? String(process.pid)
  const session = PgSession.layer(PgFleet.sessionOptions(PgTls.clientOptions(direct ?? main), store.fleet, tag))
  const poolName = `module-transpile-cache:pool:${tag}`
  const sql = poolSize > 0
    ? PgClient.layer({
      ...PgTls.clientOptions(main),
      maxConnections: poolSize,
      minConnections: 0,
      idleTimeout: store.poolIdleTimeout ?? budgetDefaults.poolIdleTimeout,
      connectTimeout: store.connectTimeout ?? defaults.connectTimeout,
      applicationName: poolName,
      ...(store.pooler === "transaction" ? poolerStatements : { multiplex: true })
    })
    : PgSession.layerSqlClient(store.connectTimeout ?? defaults.connectTimeout)
  const connections = Layer.effect(
    DatabaseConnections.DatabaseConnections,
    Effect.gen(function*() {
      const pg = yield* PgSession.PgSession
      const headroom = store.headroom ?? budgetDefaults.headroom
      const serverMax = pg.serverMax()
      if (store.fleetSize !== undefined && serverMax !== undefined) {
        if (!DatabaseConnections.fits(store.fleetSize, budget, serverMax, headroom)) {
          yield* Effect.logWarning(
            `module-transpile-cache: a fleet of ${store.fleetSize} processes x ${budget} connections = ${
              store.fleetSize * budget
            } does not fit max_connections ${serverMax} minus a headroom of ${headroom}; lower MTC_PG_MAX_CONNECTIONS (1 is the least) or raise max_connections`
          )
        }
      }
      // Stats never wait on an outage: with no session up (or a slow answer) they report no
      // connections rather than hold up the caller.
      const stats = pg.use(
        (connection) =>
          connection.query(
            `SELECT current_setting('max_connections')::int AS max,
                    (SELECT count(*)::int FROM pg_stat_activity) AS total,
                    (SELECT count(*)::int FROM pg_stat_activity WHERE application_name IN ($1, $2)) AS mine`,
            [pg.applicationName, poolName],
            false
          ),
        statsWait
      ).pipe(
        Effect.timeout(statsTimeout),
        Effect.map((result): DatabaseConnections.ConnectionStats | undefined => {
          const row = result.rows[0]
          const number = (value: unknown) => (typeof value === "number" ? value : 0)
          return {
            budget,
            poolSize,
            open: number(row?.["mine"]),
            serverMax: number(row?.["max"]),
            serverOpen: number(row?.["total"]),
            refusals: pg.refusals(),
            ...(store.fleetSize === undefined ? {} : { fleetSize: store.fleetSize })
          }
        }),
        Effect.orElseSucceed(() => undefined)
      )
      return { stats }
    })
  )
  const solo = store.coordinate !== false && (store.fleet?.solo ?? budgetDefaults.solo)
  const storeLayer = SqlTranspileStore.layer({ kind: "postgres", soloCatalog: solo }).pipe(Layer.provide(sql))
  return Layer.mergeAll(
    store.coordinate === false
      ? Layer.mergeAll(storeLayer, Coordinator.layerNone, PgFleet.layerInvalidations(store.fleet))
      // The fleet turns the store's solo catalog on and off with solo mode.
      : PgFleet.layer({ ...store.fleet, solo }).pipe(Layer.provideMerge(storeLayer)),
    connections,
    direct === undefined ? Layer.empty : checkDirectSession(direct, store.connectTimeout ?? defaults.connectTimeout)
  ).pipe(Layer.provide(session))
}

/**
 * Through a transaction pooler, statements are unnamed (PgBouncer before 1.21, and later
 * ones without `max_prepared_statements`, lose named ones between transactions) and sent
 * one at a time per connection.
 */
const poolerStatements = { prepare: false, multiplex: false } as const

/**
 * Behind a transaction pooler with no direct URL: no session state at all. The store, the
 * lease coordinator and the polled invalidation log share one pool of `budget` connections
 * through the pooler; none is held between statements.
 */
const poolerServices = (store: PostgresChoice, main: PgTls.ClientTls) => {
  const { budget } = budgetOf(store)
  const tag = store.applicationTag ?? String(process.pid)
  const sql = PgClient.layer({
    ...PgTls.clientOptions(main),
    maxConnections: budget,
    minConnections: 0,
    idleTimeout: store.poolIdleTimeout ?? budgetDefaults.poolIdleTimeout,
    connectTimeout: store.connectTimeout ?? defaults.connectTimeout,
    applicationName: `module-transpile-cache:pool:${tag}`,
    ...poolerStatements
  })
  // Built after the store, whose layer runs the migrations that create their tables.
  return Layer.merge(
    store.coordinate === false ? Coordinator.layerNone : LeaseCoordinator.layer(store.lease),
    PolledInvalidations.layer(store.invalidationLog)
  ).pipe(Layer.provideMerge(SqlTranspileStore.layer({ kind: "postgres" })), Layer.provide(sql))
}

/**
 * Why building the layers of a store choice fails: Postgres cannot be reached
 * (`SqlError`), the schema cannot be migrated or the store cannot start (`StoreError`), a
 * TLS setting or handshake fails (`PgTlsError`, naming the cause), or a PGlite data
 * directory is held by another process (`DataDirLockedError`) or cannot be locked
 * (`DataDirLockError`). Every member is a tagged error, for `Effect.catchTag`.
 */
export type LayerError = SqlError | StoreError | PgTls.PgTlsError | DataDirLockedError | DataDirLockError

/** A `shared_buffers` setting, such as `16MB`. */
const SharedBuffers = Schema.String.check(Schema.isPattern(PgliteWorker.sharedBuffersPattern, { expected: "a size such as 16MB" }))

/** PGlite's settings from `MTC_PGLITE_WORKER` (default true) and `MTC_PGLITE_SHARED_BUFFERS` (default 16MB). */
const pgliteConfig = Config.all({
  worker: Config.withDefault(Config.Boolean("MTC_PGLITE_WORKER"), true),
  sharedBuffers: Config.withDefault(Config.schema(SharedBuffers, "MTC_PGLITE_SHARED_BUFFERS"), PgliteWorker.defaultSharedBuffers)
})

/** The store, coordinator and invalidations of a choice. */
export const services = (
  store: StoreChoice
): Layer.Layer<TranspileStore | Coordinator.Coordinator | Invalidations.Invalidations, LayerError> => {
  switch (store._tag) {
    case "postgres":
      return postgresServices(store)
    case "pglite":
      return Layer.mergeAll(
        Layer.unwrap(Effect.map(
          Effect.orDie(pgliteConfig),
          (config) =>
            SqlTranspileStore.layerPglite({
              dataDir: store.dataDir,
              worker: store.worker ?? config.worker,
              sharedBuffers: store.sharedBuffers ?? config.sharedBuffers
            })
        )),
        Coordinator.layerNone,
        Invalidations.layerNone
      )
    case "memory":
      return Layer.mergeAll(MemoryTranspileStore.layer, Coordinator.layerNone, Invalidations.layerNone)
    case "none":
      return Layer.mergeAll(
        Layer.succeed(TranspileStore, noStore),
        Coordinator.layerNone,
        Invalidations.layerNone
      )
  }
}

/**
 * A ModuleCache over the chosen store, with the coordinator and invalidations that fit it.
 *
 * @example
 * ```ts
 * import { Effect, Layer, Redacted } from "effect"
 * import { Domain, ModuleCache, ModuleCacheLive, ModuleSources, TranspilerPool } from "module-transpile-cache"
 *
 * const key = Domain.moduleKey("https://my.realm/", "components/card.ts")
 * const sources = ModuleSources.makeMemory([[key, "export const title: string = \"card\"\n"]])
 *
 * // A fleet on Postgres when DATABASE_URL is set; otherwise one process with L2 in memory.
 * const databaseUrl = process.env.DATABASE_URL
 * const store: ModuleCacheLive.StoreChoice = databaseUrl === undefined
 *   ? { _tag: "memory" }
 *   : { _tag: "postgres", url: Redacted.make(databaseUrl), maxConnections: 2 }
 *
 * const CacheLive = ModuleCacheLive.layer(store, { l1MaxBytes: 128 * 1024 * 1024 }).pipe(
 *   Layer.provide(Layer.merge(TranspilerPool.layer(), ModuleSources.layerMemory(sources)))
 * )
 *
 * const program = Effect.gen(function*() {
 *   const cache = yield* ModuleCache.ModuleCache
 *   const first = yield* cache.get(key) // "transpiled"
 *   const second = yield* cache.get(key) // "l1"
 *   return [first.outcome, second.outcome, second.module.body]
 * })
 *
 * await Effect.runPromise(program.pipe(Effect.provide(CacheLive)))
 * ```
 */
export const layer = (
  store: StoreChoice,
  options: ModuleCache.ModuleCacheOptions = {}
): Layer.Layer<ModuleCache.ModuleCache, LayerError, Transpiler | ModuleSources> =>
  cacheLayer(store, options).pipe(Layer.provide(services(store)))

/**
 * The ModuleCache of {@link layer} with the store's defaults under `options`, still needing the
 * store's {@link services}: for an app that builds those once for the cache and more (a pruner).
 */
export const cacheLayer = (store: StoreChoice, options: ModuleCache.ModuleCacheOptions = {}) =>
  ModuleCache.layer({ ...storeDefaults(store), ...options })

/** The cache options that depend on the store; the caller's options override them. */
export const storeDefaults = (store: StoreChoice): ModuleCache.ModuleCacheOptions => ({
  ...(behindPooler(store)
    ? { pollInitial: LeaseCoordinator.pollDefaults.pollInitial, pollMax: LeaseCoordinator.pollDefaults.pollMax }
    : {}),
  // PGlite runs one statement at a time: a restart's misses loaded 1.5 to 1.7x faster read in
  // batches there (scratchpad/bench-preload.ts). On Postgres (direct), a cold load's misses
  // read in batches took half the pool's statements, for a server CPU level or up to 7% lower
  // (scratchpad/bench-cold-stores.ts, RESULTS.md issue 28).
  ...(store._tag === "pglite" || (store._tag === "postgres" && !behindPooler(store)) ? { batchL2Reads: true } : {})
})

/**
 * Whether L2 goes through a transaction pooler. Statements there run one at a time per
 * connection (no pipelining), so waiters poll L2 less often: the lease watcher (or, with a
 * direct URL, the "populated" NOTIFY) wakes them promptly; their polls are a backstop.
 */
const behindPooler = (store: StoreChoice): boolean => store._tag === "postgres" && store.pooler === "transaction"

/**
 * The Postgres choice from the environment when `DATABASE_URL` is set: `MTC_PG_MAX_CONNECTIONS`,
 * `MTC_PG_POOL_SIZE`, `MTC_PG_IDLE_TIMEOUT`, `MTC_FLEET_SIZE`, `MTC_PG_HEADROOM`,
 * `MTC_PG_CONNECT_TIMEOUT`, `MTC_HEARTBEAT`, `MTC_SESSION_TIMEOUT`, `MTC_LOCK_TIMEOUT`, `MTC_FLEET_SOLO`, `MTC_PG_POOLER`
 * (`transaction`), `DATABASE_DIRECT_URL`, `MTC_LEASE_TTL`, `MTC_INVALIDATION_POLL`, and the TLS
 * defaults `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`. `None` otherwise.
 */
export const postgresFromEnv: Config.Config<Option.Option<StoreChoice>> = Config.all({
  url: Config.Redacted("DATABASE_URL").pipe(Config.option),
  maxConnections: Config.withDefault(Config.Int("MTC_PG_MAX_CONNECTIONS"), budgetDefaults.maxConnections),
  poolSize: Config.Int("MTC_PG_POOL_SIZE").pipe(Config.option),
  poolIdleTimeout: Config.withDefault(Config.Duration("MTC_PG_IDLE_TIMEOUT"), budgetDefaults.poolIdleTimeout),
  fleetSize: Config.Int("MTC_FLEET_SIZE").pipe(Config.option),
  headroom: Config.withDefault(Config.Int("MTC_PG_HEADROOM"), budgetDefaults.headroom),
  connectTimeout: Config.withDefault(Config.Duration("MTC_PG_CONNECT_TIMEOUT"), defaults.connectTimeout),
  heartbeat: Config.withDefault(Config.Duration("MTC_HEARTBEAT"), PgFleet.defaults.heartbeat),
  sessionTimeout: Config.withDefault(Config.Duration("MTC_SESSION_TIMEOUT"), PgFleet.defaults.sessionTimeout),
  lockTimeout: Config.withDefault(Config.Duration("MTC_LOCK_TIMEOUT"), PgFleet.defaults.lockTimeout),
  solo: Config.withDefault(Config.Boolean("MTC_FLEET_SOLO"), budgetDefaults.solo),
  pooler: Config.Literal("transaction", "MTC_PG_POOLER").pipe(Config.option),
  directUrl: Config.Redacted("DATABASE_DIRECT_URL").pipe(Config.option),
  leaseTtl: Config.withDefault(Config.Duration("MTC_LEASE_TTL"), LeaseCoordinator.defaults.ttl),
  pollInterval: Config.withDefault(Config.Duration("MTC_INVALIDATION_POLL"), PolledInvalidations.defaults.interval),
  ssl: PgTls.envConfig
}).pipe(Config.map((c) =>
  Option.map(c.url, (url): StoreChoice => ({
    _tag: "postgres",
    url,
    ...(Object.keys(c.ssl).length === 0 ? {} : { ssl: c.ssl }),
    maxConnections: c.maxConnections,
    ...Option.match(c.poolSize, { onNone: () => ({}), onSome: (poolSize) => ({ poolSize }) }),
    poolIdleTimeout: c.poolIdleTimeout,
    ...Option.match(c.fleetSize, { onNone: () => ({}), onSome: (fleetSize) => ({ fleetSize }) }),
    headroom: c.headroom,
    connectTimeout: c.connectTimeout,
    fleet: { heartbeat: c.heartbeat, sessionTimeout: c.sessionTimeout, lockTimeout: c.lockTimeout, solo: c.solo },
    ...Option.match(c.pooler, { onNone: () => ({}), onSome: (pooler) => ({ pooler }) }),
    ...Option.match(c.directUrl, { onNone: () => ({}), onSome: (directUrl) => ({ directUrl }) }),
    lease: { ttl: c.leaseTtl },
    invalidationLog: { interval: c.pollInterval }
  }))
))
