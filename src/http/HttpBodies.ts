/**
 * The JSON bodies the realm server answers with: errors, and the admin routes' answers.
 *
 * @since 0.3.0
 */
import * as Schema from "effect/Schema"
import { ConnectionStats } from "../domain/DatabaseConnections.ts"

/** The JSON body of every error response. */
export const ErrorBody = Schema.Struct({
  error: Schema.String,
  message: Schema.String,
  path: Schema.String,
  reason: Schema.optional(Schema.String),
  line: Schema.optional(Schema.NullOr(Schema.Number)),
  column: Schema.optional(Schema.NullOr(Schema.Number)),
  size: Schema.optional(Schema.Number),
  limit: Schema.optional(Schema.Number)
})
export type ErrorBody = typeof ErrorBody.Type

/** A version of the output present in L2 for the realm (see `TranspileStore.versions`). */
export const StoredVersionBody = Schema.Struct({
  fingerprint: Schema.String,
  /** Whether it is this process's version. */
  current: Schema.Boolean,
  rows: Schema.Number,
  bytes: Schema.Number,
  lastReadAt: Schema.String
})
export type StoredVersionBody = typeof StoredVersionBody.Type
/** One of the last transpile errors in `stats` (a realm-relative path). */
export const RecentErrorBody = Schema.Struct({
  realmUrl: Schema.String,
  path: Schema.String,
  kind: Schema.String,
  message: Schema.String,
  line: Schema.optional(Schema.UndefinedOr(Schema.Number)),
  column: Schema.optional(Schema.UndefinedOr(Schema.Number)),
  /** Milliseconds since the epoch. */
  at: Schema.Number
})
export type RecentErrorBody = typeof RecentErrorBody.Type

/**
 * A mounted realm in `stats` and `GET /_cache/realms`: its URL, whether it is private, its
 * modules in L1, its raw files in memory, its counts, and its L2 rows and bytes when the
 * store reports them.
 */
export const RealmStatsBody = Schema.Struct({
  mount: Schema.String,
  realmUrl: Schema.String,
  private: Schema.Boolean,
  modules: Schema.Number,
  errors: Schema.Number,
  transpiles: Schema.optional(Schema.Number),
  compressions: Schema.optional(Schema.Number),
  unmapped: Schema.optional(Schema.Number),
  l1Hits: Schema.optional(Schema.Number),
  l2Hits: Schema.optional(Schema.Number),
  coalesced: Schema.optional(Schema.Number),
  fallbacks: Schema.optional(Schema.Number),
  rawFileBytes: Schema.optional(Schema.Number),
  l2Rows: Schema.optional(Schema.Number),
  l2Bytes: Schema.optional(Schema.Number)
})
export type RealmStatsBody = typeof RealmStatsBody.Type

/** The body of `GET /_cache/stats`: the process's counters in total, and each realm's by its mount. */
export const StatsBody = Schema.Struct({
  /** The realm's URL when one realm is mounted. */
  realmUrl: Schema.optional(Schema.String),
  transpiles: Schema.Number,
  /** Module versions compressed by this process (see `module_cache_compressions_total`). */
  compressions: Schema.optional(Schema.Number),
  /** Module versions transpiled without a source map although maps are on (see `module_cache_unmapped_total`). */
  unmapped: Schema.optional(Schema.Number),
  l1Hits: Schema.Number,
  l2Hits: Schema.Number,
  coalesced: Schema.Number,
  fallbacks: Schema.Number,
  errors: Schema.Number,
  persistFailures: Schema.Number,
  l1Bytes: Schema.Number,
  l1Entries: Schema.Number,
  l1MaxBytes: Schema.optional(Schema.Number),
  inFlight: Schema.Number,
  preloadedEntries: Schema.Number,
  preloadedBytes: Schema.Number,
  preloadMillis: Schema.Number,
  /** Requests of the start's JIT warm-up answered by the fast path (absent without `RealmServer.layer`'s fast path). */
  warmupRequests: Schema.optional(Schema.Number),
  warmupMillis: Schema.optional(Schema.Number),
  store: Schema.String,
  coordinator: Schema.String,
  /** This process's pipeline fingerprint. */
  fingerprint: Schema.String,
  /** The versions present in L2 for the realm, most recently read first (absent when L2 could not be read). */
  versions: Schema.optional(Schema.Array(StoredVersionBody)),
  refusals: Schema.Number,
  connections: Schema.optional(ConnectionStats),
  /** Raw files kept in memory by the server, their bytes. */
  rawFileBytes: Schema.optional(Schema.Number),
  /** The realms served, by mount. */
  realms: Schema.optional(Schema.Record(Schema.String, RealmStatsBody)),
  /** Gets by outcome (l1 includes the fast path's hits). */
  gets: Schema.optional(Schema.Struct({
    l1: Schema.Number,
    l2: Schema.Number,
    transpiled: Schema.Number,
    coalesced: Schema.Number,
    fallback: Schema.Number,
    error: Schema.Number
  })),
  /** The last transpile errors of this process, oldest first (at most 20). */
  recentErrors: Schema.optional(Schema.Array(RecentErrorBody))
})
export type StatsBody = typeof StatsBody.Type

/** The body of `POST /_cache/invalidate`. */
export const InvalidateBody = Schema.Struct({
  invalidated: Schema.Literals(["module", "realm"]),
  mount: Schema.optional(Schema.String),
  realmUrl: Schema.String,
  /** The canonical paths invalidated (empty for a realm). */
  paths: Schema.Array(Schema.String)
})
export type InvalidateBody = typeof InvalidateBody.Type

/** The body of `GET /_cache/health`. */
export const HealthBody = Schema.Struct({
  status: Schema.Literals(["ok", "unavailable"]),
  /** Omitted when it is a `file:` URL (it would show a file-system path to anyone), and when several realms are mounted. */
  realmUrl: Schema.optional(Schema.String),
  /** The realms mounted. */
  realms: Schema.optional(Schema.Number),
  message: Schema.optional(Schema.String)
})
export type HealthBody = typeof HealthBody.Type

/** The query of `POST /_cache/invalidate`: the realm by its mount (needed when several are mounted), and a path in it. */
export const InvalidateQuery = Schema.Struct({ path: Schema.optional(Schema.String), realm: Schema.optional(Schema.String) })

/** The body of `POST /_cache/realms`: a realm to mount. */
export const MountRequestBody = Schema.Struct({
  mount: Schema.String,
  /** An absolute directory. */
  dir: Schema.String,
  private: Schema.optional(Schema.Boolean),
  /** Default: the server's realm URL base + the mount, else the directory's `file://` URL. */
  realmUrl: Schema.optional(Schema.String)
})
export type MountRequestBody = typeof MountRequestBody.Type

/** The body of `GET /_cache/realms`. */
export const RealmsBody = Schema.Struct({ realms: Schema.Array(RealmStatsBody) })
export type RealmsBody = typeof RealmsBody.Type
