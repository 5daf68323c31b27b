/**
 * The schema of L2, shared by Postgres and PGlite: the migrations in `migrations/`, run
 * through Effect's `Migrator` at start-up.
 *
 * Safe when several processes start at once: the whole run is one transaction that first
 * takes a transaction-level advisory lock, so concurrent runs queue and the later ones find
 * every migration applied. (Effect's Migrator also copes on its own, by re-checking after a
 * failed CREATE of its migrations table and by locking that table; the advisory lock makes
 * the queueing explicit instead of relying on that recovery.) Every statement is also
 * idempotent (`IF NOT EXISTS`). test/Migrations.fleet.test.ts starts four processes at once.
 *
 * The one dialect difference is {@link MigrationOptions.unlogged}: pass `true` on Postgres
 * and `false` on PGlite (see {@link optionsFor}).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Migrator from "effect/sql/Migrator"
import * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { migration as createCache } from "../../migrations/0001_create_module_transpile_cache.ts"
import { migration as createRealm } from "../../migrations/0002_create_module_transpile_cache_realm.ts"
import { migration as indexLiveRows } from "../../migrations/0003_index_live_rows_by_realm.ts"
import { migration as createPooler } from "../../migrations/0004_create_module_transpile_cache_pooler.ts"
import { migration as versionRows } from "../../migrations/0005_version_rows_by_fingerprint.ts"
import { migration as nameEditSources } from "../../migrations/0006_name_edit_sources.ts"
import { migration as storeEncodedForms } from "../../migrations/0007_store_encoded_forms_and_maps.ts"
import { migration as nameLogPaths } from "../../migrations/0008_name_log_paths.ts"
import type { MigrationOptions } from "../../migrations/MigrationOptions.ts"
import { hash64 } from "../domain/Domain.ts"

/** The options for a store kind: UNLOGGED on Postgres, logged on PGlite. */
export const optionsFor = (kind: "postgres" | "pglite"): MigrationOptions => ({ unlogged: kind === "postgres" })

/** The table in which the Migrator records applied migrations. */
const migrationsTable = "module_transpile_cache_migrations"

/** The advisory-lock key that serialises concurrent runs. */
const migrationLockKey: bigint = hash64(`migrations|${migrationsTable}`)

/** The migrations, by `<id>_<name>`, up to and including id `through`. */
const loader = (options: MigrationOptions, through: number): Migrator.Loader =>
  Migrator.fromRecord(Object.fromEntries(Object.entries({
    "1_create_module_transpile_cache": createCache(options),
    "2_create_module_transpile_cache_realm": createRealm(options),
    "3_index_live_rows_by_realm": indexLiveRows(options),
    "4_create_module_transpile_cache_pooler": createPooler(options),
    "5_version_rows_by_fingerprint": versionRows(options),
    "6_name_edit_sources": nameEditSources(options),
    "7_store_encoded_forms_and_maps": storeEncodedForms(options),
    "8_name_log_paths": nameLogPaths(options)
  }).filter(([name]) => Number.parseInt(name, 10) <= through)))

/**
 * Runs the pending migrations; returns the ones this call applied. `through` stops after that
 * id (for tests of a migration over a schema of an earlier release); by default all run.
 */
export const run = (
  options: MigrationOptions,
  through: number = Number.POSITIVE_INFINITY
): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, Migrator.MigrationError | SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    return yield* sql.withTransaction(
      Effect.andThen(
        sql`SELECT pg_advisory_xact_lock(${migrationLockKey})`,
        Migrator.make({})({ loader: loader(options, through), table: migrationsTable })
      )
    )
  }).pipe(Effect.withSpan("Migrations.run", { attributes: { "mtc.unlogged": options.unlogged } }))
