/**
 * The tables of coordination with no session state (behind a transaction pooler):
 *
 * - `module_transpile_cache_lease`: one row per key being transpiled, by lock key. The
 *   owner takes it in one short statement (insert, or take over a row whose `expires_at`
 *   passed) and renews `expires_at` while the transpile runs; it deletes the row when done.
 *   UNLOGGED: a crash loses only leases, whose owners were lost with it.
 * - `module_transpile_cache_log_head`: the last invalidation sequence number of each realm.
 *   Bumping it takes the realm row's lock, so a realm's numbers commit in order: a poller that
 *   sees head `n` can read every entry up to `n`.
 * - `module_transpile_cache_log`: the invalidations, by `(realm_url, seq)`; `kind` is `k`
 *   (one module, `hash` its lock key) or `r` (the whole realm). Pruned by age on publish.
 *
 * Plain statements, no session state: they run through a transaction pooler unchanged.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { MigrationOptions } from "./MigrationOptions.ts"

export const migration = (options: MigrationOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`
      CREATE ${options.unlogged ? "UNLOGGED " : ""}TABLE IF NOT EXISTS module_transpile_cache_lease (
        lock_key bigint PRIMARY KEY,
        owner text NOT NULL,
        expires_at timestamptz NOT NULL
      )
    `)
    yield* sql`
      CREATE TABLE IF NOT EXISTS module_transpile_cache_log_head (
        realm_url text PRIMARY KEY,
        seq bigint NOT NULL DEFAULT 0
      )
    `
    yield* sql`
      CREATE TABLE IF NOT EXISTS module_transpile_cache_log (
        realm_url text NOT NULL,
        seq bigint NOT NULL,
        kind text NOT NULL,
        hash bigint NOT NULL,
        origin text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (realm_url, seq)
      )
    `
  })
