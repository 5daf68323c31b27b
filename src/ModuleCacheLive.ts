/**
 * The ModuleCache of a deployment, by store: Postgres brings its coordinator and peer
 * invalidations (sharing one pool with the store); PGlite and memory run with none.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Config, Duration, Layer, Option, type Redacted } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import * as Coordinator from "./Coordinator.ts"
import type { DataDirLockedError, DataDirLockError } from "./DataDirLock.ts"
import type { StoreError } from "./Errors.ts"
import * as Invalidations from "./Invalidations.ts"
import * as MemoryTranspileStore from "./MemoryTranspileStore.ts"
import * as ModuleCache from "./ModuleCache.ts"
import type { ModuleSources } from "./ModuleSources.ts"
import * as PgFleet from "./PgFleet.ts"
import * as SqlTranspileStore from "./SqlTranspileStore.ts"
import type { Transpiler } from "./Transpiler.ts"
import { none as noStore, TranspileStore } from "./TranspileStore.ts"

/** Which L2 a deployment uses. */
export type StoreChoice =
  | {
    readonly _tag: "postgres"
    readonly url: Redacted.Redacted<string>
    /** Pool size (default 8). The LISTEN and lock sessions are outside the pool. */
    readonly poolSize?: number
    /**
     * How long a new pool connection may take before the store counts as down (default 5 s:
     * a process busy in Babel answers its sockets late; a database that is down refuses at once).
     */
    readonly connectTimeout?: Duration.Input
    readonly fleet?: PgFleet.PgFleetOptions
    /**
     * Whether processes coalesce transpiles through advisory locks and NOTIFY (default true).
     * Off, they share L2 rows and peer invalidations but each transpiles its own misses.
     */
    readonly coordinate?: boolean
  }
  | { readonly _tag: "pglite"; readonly dataDir: string | undefined }
  | { readonly _tag: "memory" }
  /** No L2 at all: L1 only. */
  | { readonly _tag: "none" }

/** Defaults of the Postgres choice. */
export const defaults = { poolSize: 8, connectTimeout: Duration.seconds(5) } as const

/**
 * Why building the layers of a store choice fails: Postgres cannot be reached
 * (`SqlError`), the schema cannot be migrated or the store cannot start (`StoreError`), or a
 * PGlite data directory is held by another process (`DataDirLockedError`) or cannot be
 * locked (`DataDirLockError`). Every member is a tagged error, for `Effect.catchTag`.
 */
export type LayerError = SqlError | StoreError | DataDirLockedError | DataDirLockError

/** The store, coordinator and invalidations of a choice. */
export const services = (
  store: StoreChoice
): Layer.Layer<TranspileStore | Coordinator.Coordinator | Invalidations.Invalidations, LayerError> => {
  switch (store._tag) {
    case "postgres":
      return Layer.mergeAll(
        SqlTranspileStore.layer({ kind: "postgres" }),
        store.coordinate === false
          ? Layer.merge(Coordinator.layerNone, PgFleet.layerInvalidations(store.fleet))
          : PgFleet.layer(store.fleet)
      ).pipe(Layer.provide(PgClient.layer({
        url: store.url,
        maxConnections: store.poolSize ?? defaults.poolSize,
        connectTimeout: store.connectTimeout ?? defaults.connectTimeout,
        applicationName: `module-transpile-cache:pool:${process.pid}`
      })))
    case "pglite":
      return Layer.mergeAll(
        SqlTranspileStore.layerPglite({ dataDir: store.dataDir }),
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

/** A ModuleCache over the chosen store, with the coordinator and invalidations that fit it. */
export const layer = (
  store: StoreChoice,
  options: ModuleCache.ModuleCacheOptions = {}
): Layer.Layer<ModuleCache.ModuleCache, LayerError, Transpiler | ModuleSources> =>
  ModuleCache.layer(options).pipe(Layer.provide(services(store)))

/**
 * The Postgres choice from the environment when `DATABASE_URL` is set: `MTC_PG_POOL_SIZE`,
 * `MTC_PG_CONNECT_TIMEOUT`, `MTC_HEARTBEAT`, `MTC_SESSION_TIMEOUT`, `MTC_LOCK_TIMEOUT`. `None` otherwise.
 */
export const postgresFromEnv: Config.Config<Option.Option<StoreChoice>> = Config.all({
  url: Config.Redacted("DATABASE_URL").pipe(Config.option),
  poolSize: Config.withDefault(Config.Int("MTC_PG_POOL_SIZE"), defaults.poolSize),
  connectTimeout: Config.withDefault(Config.Duration("MTC_PG_CONNECT_TIMEOUT"), defaults.connectTimeout),
  heartbeat: Config.withDefault(Config.Duration("MTC_HEARTBEAT"), PgFleet.defaults.heartbeat),
  sessionTimeout: Config.withDefault(Config.Duration("MTC_SESSION_TIMEOUT"), PgFleet.defaults.sessionTimeout),
  lockTimeout: Config.withDefault(Config.Duration("MTC_LOCK_TIMEOUT"), PgFleet.defaults.lockTimeout)
}).pipe(Config.map((c) =>
  Option.map(c.url, (url): StoreChoice => ({
    _tag: "postgres",
    url,
    poolSize: c.poolSize,
    connectTimeout: c.connectTimeout,
    fleet: { heartbeat: c.heartbeat, sessionTimeout: c.sessionTimeout, lockTimeout: c.lockTimeout }
  }))
))
