/**
 * The L2 table, `module_transpile_cache`: one row per module key.
 *
 * - A row with `body` is a transpiled module; a row with `failure` (the encoded
 *   `TranspileError` / `SourceTooLargeError`) is the recorded failure of its generation;
 *   a row with neither is a tombstone. Rows are never deleted by invalidations, only by prune.
 * - `generation` is the OCC counter. `created_at` is when the row's current content (module,
 *   failure or tombstone) was made; `accessed_at` when it was last read or written.
 * - UNLOGGED on Postgres: a crash truncates it, which costs only a cold start. Logged on
 *   PGlite, where the embedded store exists to survive restarts, crashes included.
 *
 * Indexes: the primary key `(realm_url, canonical_path)` also serves realm-wide operations
 * (`WHERE realm_url = $1` scans its leading column). Prune scans tombstones and failures by
 * `created_at` (a partial index over `body IS NULL`) and every row by `accessed_at`.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { MigrationOptions } from "./MigrationOptions.ts"

export const migration = (options: MigrationOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`
      CREATE ${options.unlogged ? "UNLOGGED " : ""}TABLE IF NOT EXISTS module_transpile_cache (
        realm_url text NOT NULL,
        canonical_path text NOT NULL,
        body text,
        headers jsonb,
        dependency_keys jsonb,
        failure jsonb,
        fingerprint text,
        source_hash text,
        generation bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        accessed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (realm_url, canonical_path),
        CONSTRAINT module_transpile_cache_body_or_failure CHECK (body IS NULL OR failure IS NULL)
      )
    `)
    yield* sql`
      CREATE INDEX IF NOT EXISTS module_transpile_cache_dead_created_at_idx
      ON module_transpile_cache (created_at) WHERE body IS NULL
    `
    yield* sql`
      CREATE INDEX IF NOT EXISTS module_transpile_cache_accessed_at_idx
      ON module_transpile_cache (accessed_at)
    `
  })
