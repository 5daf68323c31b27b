/**
 * An invalidation names the source that now stands (see `ModuleCache.invalidate`):
 *
 * - `module_transpile_cache_log.source_hash`: the source hash an edit's entry names (NULL: the
 *   entry drops the module whatever it holds, as every entry did before). A poller keeps what
 *   already holds that source.
 * - `module_transpile_cache.source_hash` needs no change: on a tombstone it now records the
 *   source the tombstone awaits (NULL: none), so that a second report of the same edit finds
 *   the key satisfied and a write of that source still lands.
 *
 * A process of an earlier release beside this one keeps working: its log entries and
 * tombstones name no source (they drop everything, as before), and its writes follow the
 * stricter rule of its release.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { MigrationOptions } from "./MigrationOptions.ts"

export const migration = (_options: MigrationOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE module_transpile_cache_log ADD COLUMN IF NOT EXISTS source_hash text`
  })
