/**
 * `module_transpile_cache_realm`: each realm's epoch, bumped by every realm wipe. OCC
 * writes are conditioned on it, so a wipe defeats every earlier capture, including those
 * of keys that had no row yet.
 *
 * Always LOGGED, even where the cache table is UNLOGGED: if a crash reset the epochs to 0,
 * a later wipe would bring a realm back to an epoch that writers captured before the
 * crash, and their stale writes would pass. The table has one small row per realm. Prune
 * never deletes from it.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { MigrationOptions } from "./MigrationOptions.ts"

export const migration = (_options: MigrationOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      CREATE TABLE IF NOT EXISTS module_transpile_cache_realm (
        realm_url text PRIMARY KEY,
        epoch bigint NOT NULL DEFAULT 0
      )
    `
  })
