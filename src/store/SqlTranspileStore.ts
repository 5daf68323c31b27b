/**
 * The SQL TranspileStore: L2 in the `module_transpile_cache` table, on Postgres
 * (`@effect/sql-pg`) or on embedded PGlite, through the same `SqlClient` and the same
 * migrations.
 *
 * A key has a row per version (fingerprint): `(realm_url, canonical_path, fingerprint)` is the
 * primary key. The key's **generation** is the highest generation over its rows, so an
 * invalidation, which bumps every row of the key, defeats the writes of every version.
 *
 * - **read**: one statement. It reads the row of the requested fingerprint, the key's
 *   generation and the realm epoch, and refreshes `accessed_at` only when it is older than
 *   `touchAfterMillis` (a minute by default), so a hit costs no extra write.
 * - **write** (OCC): in one transaction, takes the realm's lock and the key's lock in shared
 *   mode, then upserts the row of its fingerprint in one statement that applies only if the
 *   realm epoch is still the captured one and every row of the key with a generation above the
 *   captured one names the writer's source hash (a row of that source, or a tombstone awaiting
 *   it), an `INSERT ... SELECT ... WHERE` with `ON CONFLICT ... DO UPDATE ... WHERE
 *   generation`. The row takes the key's generation, at least the captured one. A wipe takes the realm lock
 *   in exclusive mode, so a write and a wipe of one realm never overlap: a write either
 *   commits before the wipe (which then tombstones it) or sees the wipe's epoch and is
 *   rejected, including for keys that had no row. A tombstone takes the key's lock in
 *   exclusive mode, so a write of a version that has no row yet cannot slip in beside it.
 *   The locks are transaction-level advisory locks in the two-int4 key spaces
 *   `(realmLockSpace, realmLockId(realmUrl))` and `(keyLockSpace, keyLockId(key))`, apart from
 *   the coordinator's bigint keys. Advisory locks queue fairly, so writers arriving after a
 *   waiting wipe wait for it (a row lock `FOR SHARE` on the realm row would let a stream of
 *   writers starve the wipe).
 * - **tombstone**: every row of the key, of every version, becomes `body NULL` at the key's
 *   generation + 1 (a row of fingerprint `''` at generation 1 when the key has none); never a
 *   DELETE, which would let a slow writer resurrect stale bytes. An edit's tombstone names the
 *   new source: rows of that source are left, and the tombstones record it in `source_hash`,
 *   so that its write still lands and a second report of the same edit changes nothing.
 * - **wipeRealm**: in one transaction, bumps the realm epoch, then tombstones the realm's live
 *   rows of every version (through a partial index of them: the realm's old tombstones cost nothing, and need
 *   no bump, since the new epoch already defeats every earlier capture).
 * - **prune**: deletes tombstones and recorded failures made more than
 *   `tombstonesOlderThanMillis` ago, and rows not read for `unreadForMillis`. Choose both far
 *   longer than any transpile: a slow writer whose tombstone was pruned could write again.
 *   Then, with `maxBytesPerRealm`, tombstones each realm's least recently read live rows
 *   beyond that many bytes (`accessed_at` is refreshed at most once per `touchAfterMillis`,
 *   so "least recently read" is as fine as that). On PGlite it then runs `VACUUM` and
 *   `CHECKPOINT`: the embedded database has no background checkpointer or autovacuum, and
 *   without them its write-ahead log and table grow with every write.
 *
 * `created_at` is when a row's current content (module, failure or tombstone) was made.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SchemaGetter from "effect/SchemaGetter"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import type * as Statement from "effect/sql/Statement"
import type { SqlError } from "effect/sql/SqlError"
import * as DataDirLock from "./DataDirLock.ts"
import { hash64, keyString, moduleBytes, type ModuleKey, moduleKey, type TranspiledModule, type VersionedKey } from "../domain/Domain.ts"
import { SourceTooLargeError, StoreError, TranspileError } from "../domain/Errors.ts"
import { isRefusal, isRetryable, refusalSchedule } from "../internal/refusal.ts"
import * as Migrations from "./Migrations.ts"
import * as PgConnectError from "./PgConnectError.ts"
import * as PgliteClient from "./PgliteClient.ts"
import { RowCatalog } from "./RowCatalog.ts"
import {
  absent,
  defaultPreloadPageSize,
  emptyCapture,
  type PreloadedRow,
  type PreloadRequest,
  type PruneOptions,
  type StoredRow,
  type StoredVersion,
  TranspileStore,
  type WriteRequest
} from "../domain/TranspileStore.ts"

/** Which database the store runs on. */
export type SqlStoreKind = "postgres" | "pglite"

/** Options of {@link make}. */
export interface SqlStoreOptions {
  readonly kind: SqlStoreKind
  /** A read refreshes `accessed_at` only when it is older than this. Default: one minute. */
  readonly touchAfterMillis?: number | undefined
  /**
   * Whether this store is the only writer of its table (the embedded store: its data directory
   * is locked to this process). A read of a row that is absent, or a tombstone, is then answered
   * from memory (`RowCatalog`), without a statement. Default false.
   */
  readonly ownsTable?: boolean | undefined
  /**
   * Whether the store keeps a `RowCatalog` for solo mode (Postgres): off until
   * `soloCatalog.enter`, which the fleet calls when this process becomes the only fleet
   * session; off again at `soloCatalog.leave`. Default false.
   */
  readonly soloCatalog?: boolean | undefined
}

/** int8 arrives as a bigint (sql-pg, and PGlite with our parsers); the store speaks numbers. */
const Int8 = Schema.Union([Schema.BigInt, Schema.Number]).pipe(
  Schema.decodeTo(Schema.Number, {
    decode: SchemaGetter.transform((value: bigint | number) => Number(value)),
    encode: SchemaGetter.transform((value: number) => value)
  })
)

/** The row `read` selects: always one, with nulls for a missing row. */
const ReadRow = Schema.Struct({
  body: Schema.NullOr(Schema.String),
  body_br: Schema.NullOr(Schema.Uint8Array),
  body_gzip: Schema.NullOr(Schema.Uint8Array),
  source_map: Schema.NullOr(Schema.String),
  headers: Schema.NullOr(Schema.Record(Schema.String, Schema.String)),
  dependency_keys: Schema.NullOr(Schema.Array(Schema.String)),
  failure: Schema.NullOr(Schema.Unknown),
  fingerprint: Schema.NullOr(Schema.String),
  source_hash: Schema.NullOr(Schema.String),
  generation: Int8,
  realm_epoch: Int8,
  stale: Schema.Boolean
})
const decodeReadRows = Schema.decodeUnknownEffect(Schema.Array(ReadRow))

/** A row `writeMany` wrote. */
const WrittenRow = Schema.Struct({
  realm_url: Schema.String,
  canonical_path: Schema.String,
  fingerprint: Schema.String,
  generation: Int8
})
const decodeWrittenRows = Schema.decodeUnknownEffect(Schema.Array(WrittenRow))
const versionedId = (realmUrl: string, path: string, fingerprint: string): string =>
  `${realmUrl}\u0000${path}\u0000${fingerprint}`

/** A row of the catalog's load, and of the realm epochs. */
const CatalogRow = Schema.Struct({
  realm_url: Schema.String,
  canonical_path: Schema.String,
  fingerprint: Schema.String,
  generation: Int8,
  live: Schema.Boolean
})
const decodeCatalogRows = Schema.decodeUnknownEffect(Schema.Array(CatalogRow))
const decodeRealmEpochRows = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ realm_url: Schema.String, epoch: Int8 })))
const decodeEpochRows = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ epoch: Int8 })))

const GenerationRow = Schema.Struct({ generation: Int8 })
const decodeGenerationRows = Schema.decodeUnknownEffect(Schema.Array(GenerationRow))

/** What a tombstone statement returns: the key's next generation and the versions it tombstoned or made. */
const TombstoneRow = Schema.Struct({ generation: Int8, fingerprints: Schema.Array(Schema.String) })
const decodeTombstoneRows = Schema.decodeUnknownEffect(Schema.Array(TombstoneRow))

/** A row of the preload listing: a key, in recency order, within the byte bound. */
const PreloadKeyRow = Schema.Struct({ realm_url: Schema.String, canonical_path: Schema.String })
const decodePreloadKeyRows = Schema.decodeUnknownEffect(Schema.Array(PreloadKeyRow))

/** A row of a preload page. */
const PreloadPageRow = Schema.Struct({
  realm_url: Schema.String,
  canonical_path: Schema.String,
  body: Schema.String,
  body_br: Schema.NullOr(Schema.Uint8Array),
  body_gzip: Schema.NullOr(Schema.Uint8Array),
  source_map: Schema.NullOr(Schema.String),
  headers: Schema.NullOr(Schema.Record(Schema.String, Schema.String)),
  dependency_keys: Schema.NullOr(Schema.Array(Schema.String)),
  source_hash: Schema.String
})
const decodePreloadPageRows = Schema.decodeUnknownEffect(Schema.Array(PreloadPageRow))

/** A row of `versions`. */
const VersionRow = Schema.Struct({ fingerprint: Schema.String, rows: Int8, bytes: Int8, last_read_at: Schema.String })
const decodeVersionRows = Schema.decodeUnknownEffect(Schema.Array(VersionRow))

const CountRow = Schema.Struct({ removed: Int8 })
const decodeCountRows = Schema.decodeUnknownEffect(Schema.Array(CountRow))


/** A recorded failure, as stored in the `failure` column. */
export const RecordedFailure = Schema.Union([TranspileError, SourceTooLargeError])
const decodeFailure = Schema.decodeUnknownOption(RecordedFailure)
const encodeFailure = Schema.encodeSync(RecordedFailure)

/** The first key of the realm advisory locks: "mtc" in ASCII. */
export const realmLockSpace = 0x6d7463

/** The second key of a realm's advisory lock: a signed 32-bit hash of its URL. */
export const realmLockId = (realmUrl: string): number =>
  Number(BigInt.asIntN(32, hash64(`realm-lock|${realmUrl}`)))

/** The first key of the module-key advisory locks: "mtk" in ASCII. */
export const keyLockSpace = 0x6d746b

/** The second key of a module key's advisory lock: a signed 32-bit hash of the key (every version). */
export const keyLockId = (key: ModuleKey): number =>
  Number(BigInt.asIntN(32, hash64(`key-lock|${key.realmUrl}|${key.path}`)))

/** Whether a read row is live and was last read longer than `touchAfterMillis` ago. */
const needsTouch = (row: typeof ReadRow.Type): boolean => row.stale && (row.body !== null || row.failure !== null)

/** The columns of a module row, as `read` and `preload` select them. */
interface ModuleColumns {
  readonly body_br: Uint8Array | null
  readonly body_gzip: Uint8Array | null
  readonly source_map: string | null
  readonly headers: Readonly<Record<string, string>> | null
  readonly dependency_keys: ReadonlyArray<string> | null
}

/** The module a row holds: its body, with the compressed forms and the map it has. */
const moduleOfRow = (row: ModuleColumns, body: string, sourceHash: string): TranspiledModule => {
  const encoded: { br?: Uint8Array; gzip?: Uint8Array } = {}
  if (row.body_br !== null) encoded.br = row.body_br
  if (row.body_gzip !== null) encoded.gzip = row.body_gzip
  return {
    body,
    headers: row.headers ?? {},
    dependencyKeys: row.dependency_keys ?? [],
    sourceHash,
    ...(row.body_br !== null || row.body_gzip !== null ? { encoded } : {}),
    ...(row.source_map !== null ? { sourceMap: row.source_map } : {})
  }
}

/** The bytes of a row, as the cap, `versions` and the preload bound count them (see `moduleBytes`). */
const rowBytes = "COALESCE(octet_length(body), 0) + COALESCE(octet_length(body_br), 0) + " +
  "COALESCE(octet_length(body_gzip), 0) + COALESCE(octet_length(source_map), 0) + COALESCE(octet_length(failure::text), 0)"

/** The {@link StoredRow} of a read row. */
const storedRow = (row: typeof ReadRow.Type): StoredRow => {
  const captured = { generation: row.generation, realmEpoch: row.realm_epoch }
  const fingerprint = row.fingerprint ?? ""
  const sourceHash = row.source_hash ?? ""
  if (row.body !== null) {
    return {
      _tag: "Module",
      captured,
      fingerprint,
      sourceHash,
      module: moduleOfRow(row, row.body, sourceHash)
    }
  }
  // A failure this version cannot decode (another version's error) is a miss.
  if (row.failure !== null) {
    return Option.match(decodeFailure(row.failure), {
      onNone: (): StoredRow => absent(captured),
      onSome: (error): StoredRow => ({ _tag: "Failure", captured, fingerprint, sourceHash, error })
    })
  }
  return absent(captured)
}

/** A `StoreError` of `operation` that keeps its cause and says whether a retry can help. */
const toStoreError = (operation: string) => (error: { readonly message: string }): StoreError =>
  new StoreError({
    operation,
    message: PgConnectError.messageWithCause(error),
    ...(isRefusal(error) ? { refused: true } : {}),
    retryable: isRetryable(error),
    cause: error
  })

/** A client that could not be made: its own message (not {@link toStoreError}'s), its cause kept. */
const connectError = (error: { readonly message: string }): StoreError =>
  new StoreError({ operation: "connect", message: error.message, retryable: isRetryable(error), cause: error })

const jsonText = (value: unknown): string => JSON.stringify(value)

/** The bytes of a batched write's statement at most (one row larger than it goes alone). */
const maxStatementBytes = 8 * 1024 * 1024

/**
 * Requests split into runs of at most {@link maxStatementBytes} of content each, in order: each
 * run is one statement (and transaction) of `writeMany`. Each row keeps its own OCC check, so
 * a batch written as several transactions applies as its rows written one by one would.
 */
const byteChunks = (requests: ReadonlyArray<WriteRequest>): Array<ReadonlyArray<WriteRequest>> => {
  const chunks: Array<Array<WriteRequest>> = []
  let current: Array<WriteRequest> = []
  let bytes = 0
  for (const request of requests) {
    const size = request.content._tag === "Module" ? moduleBytes(request.content.module) : 1024
    if (current.length > 0 && bytes + size > maxStatementBytes) {
      chunks.push(current)
      current = []
      bytes = 0
    }
    current.push(request)
    bytes += size
  }
  if (current.length > 0) chunks.push(current)
  return chunks
}

/** Bytes as base64 text, for a JSON batch (`decode(..., 'base64')` in SQL); null for none. */
const base64 = (bytes: Uint8Array | undefined): string | null =>
  bytes === undefined ? null : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64")

/**
 * Makes the store over the `SqlClient` in context. The schema must exist: run
 * `Migrations.run` first, or use one of the layers, which do.
 */
export const make = (
  options: SqlStoreOptions
): Effect.Effect<TranspileStore["Service"], never, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const kind = options.kind
    const touchAfterMillis = options.touchAfterMillis ?? 60_000
    const catalog = options.ownsTable === true || options.soloCatalog === true ? new RowCatalog() : undefined
    /** Bumped by solo mode's `leave`: a load that began before it must not turn the catalog on. */
    let catalogTurn = 0

    /**
     * Loads the catalog from one snapshot of the table (on PGlite the transaction holds the one
     * session; on Postgres it is REPEATABLE READ), unless solo mode was left meanwhile.
     */
    const loadCatalog = (into: RowCatalog) => {
      const turn = catalogTurn
      return sql.withTransaction(Effect.gen(function*() {
        if (kind === "postgres") yield* sql`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`
        const rows = yield* sql`
          SELECT realm_url, canonical_path, fingerprint, generation,
                 (body IS NOT NULL OR failure IS NOT NULL) AS live
          FROM module_transpile_cache
        `.pipe(Effect.flatMap(decodeCatalogRows))
        const epochs = yield* sql`SELECT realm_url, epoch FROM module_transpile_cache_realm`.pipe(
          Effect.flatMap(decodeRealmEpochRows)
        )
        if (turn !== catalogTurn) return
        into.replace(
          rows.map((row) => ({
            realmUrl: row.realm_url,
            path: row.canonical_path,
            fingerprint: row.fingerprint,
            generation: row.generation,
            live: row.live
          })),
          epochs.map((row) => [row.realm_url, row.epoch] as const)
        )
      })).pipe(Effect.catch(() => Effect.sync(() => into.disable())))
    }

    const annotate = (operation: string, attributes: Record<string, unknown>) =>
      Effect.annotateCurrentSpan({ "mtc.store.kind": kind, "mtc.store.operation": operation, ...attributes })

    /**
     * Selects the rows of the versioned keys `source` lists (as `k(realm_url, canonical_path,
     * fingerprint, ord)`), one per key in `ord` order, with nulls for a missing row, and each
     * key's generation over all its versions. Each key is looked up by the primary key (lateral
     * joins), never by a scan of the table, whatever the planner's statistics (PGlite has no
     * autovacuum to gather them).
     */
    const selectRows = (source: Statement.Fragment) =>
      sql`
        SELECT c.body, c.body_br, c.body_gzip, c.source_map, c.headers, c.dependency_keys, c.failure,
               c.fingerprint, c.source_hash,
               COALESCE(g.generation, 0) AS generation, COALESCE(r.epoch, 0) AS realm_epoch,
               COALESCE(c.accessed_at < now() - ${touchAfterMillis}::float8 * interval '1 millisecond', false) AS stale
        FROM ${source}
        LEFT JOIN LATERAL (
          SELECT * FROM module_transpile_cache
          WHERE realm_url = k.realm_url AND canonical_path = k.canonical_path AND fingerprint = k.fingerprint
        ) AS c ON true
        LEFT JOIN LATERAL (
          SELECT max(generation) AS generation FROM module_transpile_cache
          WHERE realm_url = k.realm_url AND canonical_path = k.canonical_path
        ) AS g ON true
        LEFT JOIN LATERAL (
          SELECT epoch FROM module_transpile_cache_realm WHERE realm_url = k.realm_url
        ) AS r ON true
        ORDER BY k.ord
      `.pipe(Effect.flatMap(decodeReadRows))

    const read = Effect.fn("TranspileStore.read")(
      function*(key: VersionedKey) {
        yield* annotate("read", { "mtc.realm": key.realmUrl, "mtc.path": key.path })
        const rows = yield* selectRows(
          sql`(SELECT ${key.realmUrl}::text AS realm_url, ${key.path}::text AS canonical_path,
                      ${key.fingerprint}::text AS fingerprint, 1 AS ord) AS k`
        )
        const row = rows[0]
        if (row === undefined) return absent(emptyCapture)
        // accessed_at (what prune ages rows by) is refreshed at most once per touchAfterMillis,
        // so a hit costs one SELECT, not a write.
        if (needsTouch(row)) {
          yield* sql`
            UPDATE module_transpile_cache SET accessed_at = now()
            WHERE realm_url = ${key.realmUrl} AND canonical_path = ${key.path} AND fingerprint = ${key.fingerprint}
          `
        }
        const result = storedRow(row)
        const captured = result.captured
        yield* Effect.annotateCurrentSpan({
          "mtc.store.row": result._tag,
          "mtc.generation": captured.generation,
          "mtc.realm_epoch": captured.realmEpoch
        })
        return result
      },
      Effect.mapError(toStoreError("read"))
    )

    /** The versioned keys as three parallel text arrays, for `unnest`. */
    const keyArrays = (keys: ReadonlyArray<VersionedKey>) =>
      [keys.map((key) => key.realmUrl), keys.map((key) => key.path), keys.map((key) => key.fingerprint)] as const

    const readMany = Effect.fn("TranspileStore.readMany")(
      function*(keys: ReadonlyArray<VersionedKey>) {
        yield* annotate("readMany", { "mtc.store.keys": keys.length })
        if (keys.length === 0) return []
        const [realms, paths, fingerprints] = keyArrays(keys)
        const rows = yield* selectRows(
          sql`unnest(${realms}::text[], ${paths}::text[], ${fingerprints}::text[])
              WITH ORDINALITY AS k(realm_url, canonical_path, fingerprint, ord)`
        )
        // As in `read`: the rows last read long enough ago are touched, all in one statement.
        const stale = keys.filter((_, i) => rows[i] !== undefined && needsTouch(rows[i]))
        if (stale.length > 0) {
          const [staleRealms, stalePaths, staleFingerprints] = keyArrays(stale)
          yield* sql`
            UPDATE module_transpile_cache AS c SET accessed_at = now()
            FROM unnest(${staleRealms}::text[], ${stalePaths}::text[], ${staleFingerprints}::text[])
              AS k(realm_url, canonical_path, fingerprint)
            WHERE c.realm_url = k.realm_url AND c.canonical_path = k.canonical_path AND c.fingerprint = k.fingerprint
          `
        }
        const result = keys.map((_, i) => {
          const row = rows[i]
          return row === undefined ? absent(emptyCapture) : storedRow(row)
        })
        yield* Effect.annotateCurrentSpan({
          "mtc.store.hits": result.filter((row) => row._tag !== "Absent").length,
          "mtc.store.touched": stale.length
        })
        return result
      },
      Effect.mapError(toStoreError("readMany"))
    )

    /** Takes the realm's lock for the rest of the transaction: exclusive, for wipes. */
    const lockRealm = (realmUrl: string) =>
      sql`SELECT pg_advisory_xact_lock(${realmLockSpace}, ${realmLockId(realmUrl)})`

    /** Takes the key's lock for the rest of the transaction: exclusive, for tombstones. */
    const lockKey = (key: ModuleKey) => sql`SELECT pg_advisory_xact_lock(${keyLockSpace}, ${keyLockId(key)})`

    /** Takes the realm's and the key's locks, shared, for the rest of a write's transaction. */
    const lockForWrite = (key: ModuleKey) =>
      sql`
        SELECT pg_advisory_xact_lock_shared(${realmLockSpace}, ${realmLockId(key.realmUrl)}),
               pg_advisory_xact_lock_shared(${keyLockSpace}, ${keyLockId(key)})
      `

    const write = Effect.fn("TranspileStore.write")(
      function*(request: WriteRequest) {
        const { captured, key } = request
        yield* annotate("write", {
          "mtc.realm": key.realmUrl,
          "mtc.path": key.path,
          "mtc.content": request.content._tag,
          "mtc.generation": captured.generation,
          "mtc.realm_epoch": captured.realmEpoch
        })
        const content = request.content
        const module = content._tag === "Module" ? content.module : undefined
        const body = module?.body ?? null
        const bodyBr = module?.encoded?.br ?? null
        const bodyGzip = module?.encoded?.gzip ?? null
        const sourceMap = module?.sourceMap ?? null
        const headers = content._tag === "Module" ? jsonText(content.module.headers) : null
        const dependencyKeys = content._tag === "Module" ? jsonText(content.module.dependencyKeys) : null
        const failure = content._tag === "Failure" ? jsonText(encodeFailure(content.error)) : null
        const written = yield* sql.withTransaction(Effect.gen(function*() {
          // The locks come first, in a statement of their own: the upsert's snapshot is taken
          // after them, so it sees the epoch of any wipe and the rows of any tombstone that
          // committed before.
          yield* lockForWrite(key)
          const rows = yield* sql`
            INSERT INTO module_transpile_cache AS c
              (realm_url, canonical_path, body, body_br, body_gzip, source_map, headers, dependency_keys, failure,
               fingerprint, source_hash, generation, created_at, accessed_at)
            SELECT ${key.realmUrl}, ${key.path}, ${body}, ${bodyBr}::bytea, ${bodyGzip}::bytea, ${sourceMap}::text,
                   ${headers}::jsonb, ${dependencyKeys}::jsonb,
                   ${failure}::jsonb, ${request.fingerprint}, ${request.sourceHash},
                   GREATEST(${captured.generation}::int8, COALESCE(
                     (SELECT max(generation) FROM module_transpile_cache
                      WHERE realm_url = ${key.realmUrl} AND canonical_path = ${key.path}), 0
                   )),
                   now(), now()
            WHERE COALESCE(
              (SELECT epoch FROM module_transpile_cache_realm WHERE realm_url = ${key.realmUrl}), 0
            ) = ${captured.realmEpoch}
              AND NOT EXISTS (
                SELECT 1 FROM module_transpile_cache
                WHERE realm_url = ${key.realmUrl} AND canonical_path = ${key.path}
                  AND generation > ${captured.generation} AND source_hash IS DISTINCT FROM ${request.sourceHash}
              )
            ON CONFLICT (realm_url, canonical_path, fingerprint) DO UPDATE SET
              body = EXCLUDED.body, body_br = EXCLUDED.body_br, body_gzip = EXCLUDED.body_gzip,
              source_map = EXCLUDED.source_map, headers = EXCLUDED.headers, dependency_keys = EXCLUDED.dependency_keys,
              failure = EXCLUDED.failure, source_hash = EXCLUDED.source_hash,
              generation = EXCLUDED.generation, created_at = now(), accessed_at = now()
            WHERE c.generation <= EXCLUDED.generation
            RETURNING c.generation
          `.pipe(Effect.flatMap(decodeGenerationRows))
          return rows[0]?.generation
        }))
        if (written !== undefined) catalog?.wrote(key.realmUrl, key.path, request.fingerprint, written)
        else catalog?.rejected(key.realmUrl, key.path, request.fingerprint)
        yield* Effect.annotateCurrentSpan("mtc.store.written", written !== undefined)
        return written !== undefined
      },
      Effect.mapError(toStoreError("write"))
    )

    /**
     * Takes the shared locks of every realm and key of a batch, in one statement, in one
     * global order (realms before keys, each by id): two batches and a tombstone or wipe
     * waiting between them can never wait on each other in a cycle.
     */
    const lockForWriteMany = (requests: ReadonlyArray<WriteRequest>) => {
      const realms = [...new Set(requests.map((request) => realmLockId(request.key.realmUrl)))].sort((a, b) => a - b)
      const keys = [...new Set(requests.map((request) => keyLockId(request.key)))].sort((a, b) => a - b)
      const spaces = [...realms.map(() => realmLockSpace), ...keys.map(() => keyLockSpace)]
      return sql`
        SELECT count(pg_advisory_xact_lock_shared(k.space, k.id)) AS locked
        FROM unnest(${spaces}::int4[], ${[...realms, ...keys]}::int4[]) WITH ORDINALITY AS k(space, id, ord)
      `
    }

    /** One row of a batched write, as `json_to_recordset` reads it (bytea as base64). */
    const batchRow = (request: WriteRequest) => {
      const content = request.content
      const module = content._tag === "Module" ? content.module : undefined
      return {
        body_br: base64(module?.encoded?.br),
        body_gzip: base64(module?.encoded?.gzip),
        source_map: module?.sourceMap ?? null,
        realm_url: request.key.realmUrl,
        canonical_path: request.key.path,
        fingerprint: request.fingerprint,
        source_hash: request.sourceHash,
        body: content._tag === "Module" ? content.module.body : null,
        headers: content._tag === "Module" ? content.module.headers : null,
        dependency_keys: content._tag === "Module" ? content.module.dependencyKeys : null,
        failure: content._tag === "Failure" ? encodeFailure(content.error) : null,
        generation: request.captured.generation,
        realm_epoch: request.captured.realmEpoch
      }
    }

    /**
     * One transaction over requests of distinct versioned keys: the locks first (as in
     * `write`), then one upsert whose rows each carry their own OCC conditions.
     */
    const writeDistinct = (requests: ReadonlyArray<WriteRequest>) =>
      sql.withTransaction(Effect.gen(function*() {
        yield* lockForWriteMany(requests)
        return yield* sql`
          INSERT INTO module_transpile_cache AS c
            (realm_url, canonical_path, body, body_br, body_gzip, source_map, headers, dependency_keys, failure,
             fingerprint, source_hash, generation, created_at, accessed_at)
          SELECT k.realm_url, k.canonical_path, k.body, decode(k.body_br, 'base64'), decode(k.body_gzip, 'base64'),
                 k.source_map, k.headers, k.dependency_keys, k.failure,
                 k.fingerprint, k.source_hash,
                 GREATEST(k.generation, COALESCE(
                   (SELECT max(generation) FROM module_transpile_cache AS g
                    WHERE g.realm_url = k.realm_url AND g.canonical_path = k.canonical_path), 0
                 )),
                 now(), now()
          FROM json_to_recordset(${jsonText(requests.map(batchRow))}::json) AS k(
            realm_url text, canonical_path text, fingerprint text, source_hash text, body text,
            body_br text, body_gzip text, source_map text, headers jsonb, dependency_keys jsonb, failure jsonb, generation int8, realm_epoch int8
          )
          WHERE COALESCE(
            (SELECT epoch FROM module_transpile_cache_realm AS r WHERE r.realm_url = k.realm_url), 0
          ) = k.realm_epoch
            AND NOT EXISTS (
              SELECT 1 FROM module_transpile_cache AS g
              WHERE g.realm_url = k.realm_url AND g.canonical_path = k.canonical_path
                AND g.generation > k.generation AND g.source_hash IS DISTINCT FROM k.source_hash
            )
          ON CONFLICT (realm_url, canonical_path, fingerprint) DO UPDATE SET
            body = EXCLUDED.body, body_br = EXCLUDED.body_br, body_gzip = EXCLUDED.body_gzip,
            source_map = EXCLUDED.source_map, headers = EXCLUDED.headers, dependency_keys = EXCLUDED.dependency_keys,
            failure = EXCLUDED.failure, source_hash = EXCLUDED.source_hash,
            generation = EXCLUDED.generation, created_at = now(), accessed_at = now()
          WHERE c.generation <= EXCLUDED.generation
          RETURNING c.realm_url, c.canonical_path, c.fingerprint, c.generation
        `.pipe(Effect.flatMap(decodeWrittenRows))
      }))

    const writeMany = Effect.fn("TranspileStore.writeMany")(
      function*(requests: ReadonlyArray<WriteRequest>) {
        yield* annotate("writeMany", { "mtc.store.keys": requests.length })
        const written = new Array<boolean>(requests.length).fill(false)
        // An upsert may touch a row once: a versioned key given twice goes in a later
        // transaction, after the first (as two `write`s in that order would).
        let remaining = requests.map((request, index) => ({ request, index }))
        while (remaining.length > 0) {
          const seen = new Set<string>()
          const round: typeof remaining = []
          const later: typeof remaining = []
          for (const entry of remaining) {
            const id = versionedId(entry.request.key.realmUrl, entry.request.key.path, entry.request.fingerprint)
            if (seen.has(id)) later.push(entry)
            else {
              seen.add(id)
              round.push(entry)
            }
          }
          const rows: Array<typeof WrittenRow.Type> = []
          for (const chunk of byteChunks(round.map((entry) => entry.request))) rows.push(...(yield* writeDistinct(chunk)))
          const applied = new Map(
            rows.map((row) => [versionedId(row.realm_url, row.canonical_path, row.fingerprint), row.generation] as const)
          )
          for (const entry of round) {
            const { fingerprint, key } = entry.request
            const generation = applied.get(versionedId(key.realmUrl, key.path, fingerprint))
            written[entry.index] = generation !== undefined
            if (generation !== undefined) catalog?.wrote(key.realmUrl, key.path, fingerprint, generation)
            else catalog?.rejected(key.realmUrl, key.path, fingerprint)
          }
          remaining = later
        }
        yield* Effect.annotateCurrentSpan("mtc.store.written", written.filter(Boolean).length)
        return written
      },
      Effect.mapError(toStoreError("writeMany"))
    )

    const tombstone = Effect.fn("TranspileStore.tombstone")(
      function*(key: ModuleKey, sourceHash?: string) {
        yield* annotate("tombstone", { "mtc.realm": key.realmUrl, "mtc.path": key.path, "mtc.source_hash": sourceHash ?? "" })
        const awaiting = sourceHash ?? null
        const rows = yield* sql.withTransaction(Effect.andThen(
          // The lock first, in a statement of its own: the tombstone's snapshot then holds
          // every row of the key that a write committed before, and no write runs beside it.
          lockKey(key),
          sql`
            WITH next AS (
              SELECT COALESCE(max(generation), 0) + 1 AS generation FROM module_transpile_cache
              WHERE realm_url = ${key.realmUrl} AND canonical_path = ${key.path}
            ), bumped AS (
              UPDATE module_transpile_cache AS c SET
                body = NULL, body_br = NULL, body_gzip = NULL, source_map = NULL, headers = NULL, dependency_keys = NULL,
                failure = NULL, source_hash = ${awaiting}::text,
                generation = next.generation, created_at = now(), accessed_at = now()
              FROM next
              WHERE c.realm_url = ${key.realmUrl} AND c.canonical_path = ${key.path}
                AND (${awaiting}::text IS NULL OR c.source_hash IS DISTINCT FROM ${awaiting}::text)
              RETURNING c.fingerprint
            ), made AS (
              INSERT INTO module_transpile_cache (realm_url, canonical_path, fingerprint, source_hash, generation)
              SELECT ${key.realmUrl}, ${key.path}, '', ${awaiting}::text, next.generation FROM next
              WHERE NOT EXISTS (
                SELECT 1 FROM module_transpile_cache WHERE realm_url = ${key.realmUrl} AND canonical_path = ${key.path}
              )
              RETURNING fingerprint
            )
            SELECT next.generation, COALESCE(
              (SELECT jsonb_agg(f.fingerprint) FROM (SELECT fingerprint FROM bumped UNION ALL SELECT fingerprint FROM made) AS f),
              '[]'::jsonb
            ) AS fingerprints
            FROM next
          `.pipe(Effect.flatMap(decodeTombstoneRows))
        ))
        const fingerprints = rows[0]?.fingerprints ?? []
        const changed = fingerprints.length > 0
        const generation = (rows[0]?.generation ?? 1) - (changed ? 0 : 1)
        catalog?.tombstoned(key.realmUrl, key.path, generation, fingerprints)
        yield* Effect.annotateCurrentSpan({ "mtc.generation": generation, "mtc.store.changed": changed })
        return { generation, changed }
      },
      Effect.mapError(toStoreError("tombstone"))
    )

    const wipeRealm = Effect.fn("TranspileStore.wipeRealm")(
      function*(realmUrl: string) {
        yield* annotate("wipeRealm", { "mtc.realm": realmUrl })
        const epoch = yield* sql.withTransaction(Effect.gen(function*() {
          // Exclusive: waits for the writes in flight, and holds off new ones until the wipe commits.
          yield* lockRealm(realmUrl)
          const epochs = yield* sql`
            INSERT INTO module_transpile_cache_realm AS r (realm_url, epoch) VALUES (${realmUrl}, 1)
            ON CONFLICT (realm_url) DO UPDATE SET epoch = r.epoch + 1
            RETURNING epoch
          `.pipe(Effect.flatMap(decodeEpochRows))
          yield* sql`
            UPDATE module_transpile_cache SET
              body = NULL, body_br = NULL, body_gzip = NULL, source_map = NULL, headers = NULL, dependency_keys = NULL,
                failure = NULL, source_hash = NULL,
              generation = generation + 1, created_at = now(), accessed_at = now()
            WHERE realm_url = ${realmUrl} AND (body IS NOT NULL OR failure IS NOT NULL)
          `
          return epochs[0]?.epoch ?? 0
        }))
        catalog?.wiped(realmUrl, epoch)
      },
      Effect.mapError(toStoreError("wipeRealm"))
    )

    /**
     * Tombstones each realm's least recently read live rows beyond `cap` bytes, every version
     * counted (so an old version's rows go first once nobody reads them). A tombstone, never
     * a DELETE: a writer that captured an evicted row is still rejected.
     */
    const evictOverCap = (cap: number) =>
      sql`
        WITH sized AS (
          SELECT realm_url, canonical_path, fingerprint,
                 sum(${sql.literal(rowBytes)}) OVER (
                   PARTITION BY realm_url ORDER BY accessed_at DESC, canonical_path, fingerprint
                 ) AS running
          FROM module_transpile_cache
          WHERE body IS NOT NULL OR failure IS NOT NULL
        ), evicted AS (
          UPDATE module_transpile_cache AS c SET
            body = NULL, body_br = NULL, body_gzip = NULL, source_map = NULL, headers = NULL, dependency_keys = NULL,
                failure = NULL, source_hash = NULL,
            generation = c.generation + 1, created_at = now(), accessed_at = now()
          FROM sized AS s
          WHERE c.realm_url = s.realm_url AND c.canonical_path = s.canonical_path
            AND c.fingerprint = s.fingerprint AND s.running > ${cap}
          RETURNING 1
        )
        SELECT count(*) AS removed FROM evicted
      `.pipe(Effect.flatMap(decodeCountRows), Effect.map((rows) => rows[0]?.removed ?? 0))

    const prune = Effect.fn("TranspileStore.prune")(
      function*(pruneOptions: PruneOptions) {
        yield* annotate("prune", {
          "mtc.prune.tombstones_older_than_ms": pruneOptions.tombstonesOlderThanMillis,
          "mtc.prune.unread_for_ms": pruneOptions.unreadForMillis,
          "mtc.prune.max_bytes_per_realm": pruneOptions.maxBytesPerRealm ?? -1
        })
        const rows = yield* sql`
          WITH removed AS (
            DELETE FROM module_transpile_cache
            WHERE (body IS NULL
                   AND created_at < now() - ${pruneOptions.tombstonesOlderThanMillis}::float8 * interval '1 millisecond')
               OR accessed_at < now() - ${pruneOptions.unreadForMillis}::float8 * interval '1 millisecond'
            RETURNING 1
          )
          SELECT count(*) AS removed FROM removed
        `.pipe(Effect.flatMap(decodeCountRows))
        const removed = rows[0]?.removed ?? 0
        const cap = pruneOptions.maxBytesPerRealm
        const evicted = cap === undefined ? 0 : yield* evictOverCap(cap)
        // Rows were deleted: the catalog is loaded again.
        if (catalog !== undefined && (options.ownsTable === true || catalog.enabled)) yield* loadCatalog(catalog)
        if (kind === "pglite") {
          yield* sql`VACUUM module_transpile_cache`
          yield* sql`CHECKPOINT`
        }
        yield* Effect.annotateCurrentSpan({ "mtc.prune.removed": removed, "mtc.prune.evicted": evicted })
        return removed + evicted
      },
      Effect.mapError(toStoreError("prune"))
    )

    /**
     * One statement lists the keys within the byte bound, most recently read first over every
     * realm asked for (a running sum over `octet_length(body)`); then each page of keys is read
     * whole by one statement. A row rewritten or tombstoned between the two is read as it is
     * then (or left out): each row comes from a single statement, so it is never half of one
     * write and half of another.
     */
    const preloadKeys = Effect.fn("TranspileStore.preloadKeys")(
      function*(request: PreloadRequest) {
        yield* annotate("preload", {
          "mtc.preload.realms": request.realmUrls.length,
          ...(request.realmUrls.length === 1 ? { "mtc.realm": request.realmUrls[0] } : {}),
          "mtc.preload.max_bytes": request.maxBytes
        })
        const rows = yield* sql`
          SELECT realm_url, canonical_path FROM (
            SELECT realm_url, canonical_path, accessed_at,
                   sum(${sql.literal(rowBytes)}) OVER (ORDER BY accessed_at DESC, realm_url, canonical_path) AS total
            FROM module_transpile_cache
            WHERE realm_url = ANY(${request.realmUrls}::text[]) AND fingerprint = ${request.fingerprint}
              AND body IS NOT NULL
          ) AS listed
          WHERE total <= ${request.maxBytes}::float8
          ORDER BY accessed_at DESC, realm_url, canonical_path
        `.pipe(Effect.flatMap(decodePreloadKeyRows))
        yield* Effect.annotateCurrentSpan("mtc.preload.keys", rows.length)
        return rows.map((row) => moduleKey(row.realm_url, row.canonical_path))
      },
      Effect.mapError(toStoreError("preload"))
    )

    const preloadPage = Effect.fn("TranspileStore.preloadPage")(
      function*(request: PreloadRequest, keys: ReadonlyArray<ModuleKey>) {
        yield* annotate("preload", { "mtc.preload.page": keys.length })
        const rows = yield* sql`
          SELECT c.realm_url, c.canonical_path, c.body, c.body_br, c.body_gzip, c.source_map, c.headers,
                 c.dependency_keys, c.source_hash
          FROM unnest(${keys.map((key) => key.realmUrl)}::text[], ${keys.map((key) => key.path)}::text[])
            AS k(realm_url, canonical_path)
          JOIN module_transpile_cache AS c
            ON c.realm_url = k.realm_url AND c.canonical_path = k.canonical_path
          WHERE c.fingerprint = ${request.fingerprint} AND c.body IS NOT NULL
        `.pipe(Effect.flatMap(decodePreloadPageRows))
        const byKey = new Map(rows.map((row) => [keyString(moduleKey(row.realm_url, row.canonical_path)), row]))
        const page: Array<PreloadedRow> = []
        for (const key of keys) {
          const row = byKey.get(keyString(key))
          if (row === undefined) continue
          page.push({ key, module: moduleOfRow(row, row.body, row.source_hash) })
        }
        return page
      },
      Effect.mapError(toStoreError("preload"))
    )

    const preload = (request: PreloadRequest): Stream.Stream<PreloadedRow, StoreError> =>
      request.maxBytes <= 0 || request.realmUrls.length === 0
        ? Stream.empty
        : Stream.unwrap(Effect.map(preloadKeys(request), (keys) => {
          const size = Math.max(1, request.pageSize ?? defaultPreloadPageSize)
          const pages: Array<ReadonlyArray<ModuleKey>> = []
          for (let at = 0; at < keys.length; at += size) pages.push(keys.slice(at, at + size))
          return Stream.fromIterable(pages).pipe(
            Stream.mapEffect((page) => preloadPage(request, page)),
            Stream.flatMap((page) => Stream.fromIterable(page))
          )
        }))

    const versions = Effect.fn("TranspileStore.versions")(
      function*(realmUrl: string) {
        yield* annotate("versions", { "mtc.realm": realmUrl })
        const rows = yield* sql`
          SELECT fingerprint, count(*) AS rows,
                 sum(${sql.literal(rowBytes)}) AS bytes,
                 to_char(max(accessed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS last_read_at
          FROM module_transpile_cache
          WHERE realm_url = ${realmUrl} AND (body IS NOT NULL OR failure IS NOT NULL)
          GROUP BY fingerprint
          ORDER BY max(accessed_at) DESC, fingerprint
        `.pipe(Effect.flatMap(decodeVersionRows))
        return rows.map((row): StoredVersion => ({
          fingerprint: row.fingerprint,
          rows: row.rows,
          bytes: row.bytes,
          lastReadAt: row.last_read_at
        }))
      },
      Effect.mapError(toStoreError("versions"))
    )

    const service = TranspileStore.of({ kind, read, readMany, write, writeMany, tombstone, wipeRealm, prune, preload, versions })
    if (catalog === undefined) return service
    if (options.ownsTable === true) yield* loadCatalog(catalog)
    /** A change whose outcome is unknown (it failed, or was interrupted) turns the catalog off. */
    const changing = <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.onError(effect, () => Effect.sync(() => catalog.disable()))
    /** A row the catalog knows to be absent (or a tombstone), without a statement. */
    const known = (key: VersionedKey): StoredRow | undefined => {
      const captured = catalog.absent(key.realmUrl, key.path, key.fingerprint)
      return captured === undefined ? undefined : absent(captured)
    }
    return TranspileStore.of({
      ...service,
      read: (key) => Effect.suspend(() => {
        const row = known(key)
        return row === undefined ? read(key) : Effect.succeed(row)
      }),
      readMany: (keys) =>
        Effect.suspend(() => {
          const answers = keys.map(known)
          const unknown = keys.filter((_, i) => answers[i] === undefined)
          if (unknown.length === 0) return Effect.succeed(answers as ReadonlyArray<StoredRow>)
          return Effect.map(readMany(unknown), (rows) => {
            let next = 0
            return answers.map((answer) => answer ?? rows[next++] ?? absent(emptyCapture))
          })
        }),
      write: (request) => changing(write(request)),
      writeMany: (requests) => changing(writeMany(requests)),
      tombstone: (key, sourceHash) => changing(tombstone(key, sourceHash)),
      wipeRealm: (realmUrl) => changing(wipeRealm(realmUrl)),
      prune: (pruneOptions) => changing(prune(pruneOptions)),
      ...(options.soloCatalog === true
        ? {
          soloCatalog: {
            enter: Effect.suspend(() => loadCatalog(catalog)),
            leave: () => {
              catalogTurn++
              catalog.disable()
            }
          }
        }
        : {})
    })
  })

/**
 * How long start-up waits out refused connections ("too many clients") before it fails:
 * a fleet starting at once on a busy server gets its connections as others close.
 */
const startupRefusalBound = "30 seconds"

/** Runs the migrations for `kind` (waiting out refused connections), then makes the store. */
const migrateAndMake = (
  options: SqlStoreOptions
): Effect.Effect<TranspileStore["Service"], StoreError, SqlClient.SqlClient> =>
  Migrations.run(Migrations.optionsFor(options.kind)).pipe(
    Effect.retry({ schedule: refusalSchedule(startupRefusalBound), while: isRefusal }),
    Effect.mapError(toStoreError("migrate")),
    Effect.andThen(make(options))
  )

/**
 * The store over the `SqlClient` in context, migrated at layer build. Use it to share one
 * client (one Postgres pool) with other services.
 */
export const layer = (options: SqlStoreOptions): Layer.Layer<TranspileStore, StoreError, SqlClient.SqlClient> =>
  Layer.effect(TranspileStore, migrateAndMake(options))

/** The Postgres store on a pool of its own (closed with the scope), migrated first. */
export const makePg = (
  config: PgClient.PgPoolConfig,
  options?: Omit<SqlStoreOptions, "kind">
): Effect.Effect<TranspileStore["Service"], StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* PgClient.make(config).pipe(
      Effect.mapError(connectError),
      Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make)
    )
    return yield* migrateAndMake({ ...options, kind: "postgres" }).pipe(
      Effect.provideService(SqlClient.SqlClient, client)
    )
  })

/** The Postgres store on a pool of its own, migrated at layer build. */
export const layerPg = (
  config: PgClient.PgPoolConfig,
  options?: Omit<SqlStoreOptions, "kind">
): Layer.Layer<TranspileStore, StoreError> => Layer.effect(TranspileStore, makePg(config, options))

/** Options of {@link layerPglite}. */
export interface PgliteStoreOptions extends Omit<SqlStoreOptions, "kind"> {
  /** The data directory; `undefined` keeps the store in memory (nothing survives a restart). */
  readonly dataDir: string | undefined
  /**
   * Whether PGlite runs in a worker thread (default true): its statements then never hold up
   * the event loop. Still one instance and one writer per data directory.
   */
  readonly worker?: boolean | undefined
  /** Postgres's `shared_buffers` in PGlite (default 16MB; see `PgliteWorker.defaultSharedBuffers`). */
  readonly sharedBuffers?: string | undefined
}

/**
 * The embedded store: PGlite at `dataDir` (in a worker thread unless `worker: false`),
 * migrated first. The data directory is locked
 * until the scope closes (after PGlite is closed); a second process (or a second store in
 * this one) on the same directory fails with `DataDirLockedError`.
 */
export const makePglite = (
  options: PgliteStoreOptions
): Effect.Effect<
  TranspileStore["Service"],
  StoreError | DataDirLock.DataDirLockedError | DataDirLock.DataDirLockError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    if (options.dataDir !== undefined) yield* DataDirLock.acquire(options.dataDir)
    const client = yield* PgliteClient.make({
      dataDir: options.dataDir,
      worker: options.worker ?? true,
      sharedBuffers: options.sharedBuffers
    }).pipe(
      Effect.mapError(connectError),
      Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make)
    )
    const { dataDir: _, sharedBuffers: ___, worker: __, ...storeOptions } = options
    // The data directory is this process's alone: the store owns its table.
    return yield* migrateAndMake({ ownsTable: true, ...storeOptions, kind: "pglite" }).pipe(
      Effect.provideService(SqlClient.SqlClient, client)
    )
  })

/** {@link makePglite} as a layer. */
export const layerPglite = (
  options: PgliteStoreOptions
): Layer.Layer<TranspileStore, StoreError | DataDirLock.DataDirLockedError | DataDirLock.DataDirLockError> =>
  Layer.effect(TranspileStore, makePglite(options))
