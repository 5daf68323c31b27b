/**
 * An index of each realm's live rows (a module or a recorded failure), so that a realm-wide
 * wipe, which tombstones only live rows, costs work in proportion to them and never to the
 * realm's tombstones.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { MigrationOptions } from "./MigrationOptions.ts"

export const migration = (_options: MigrationOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      CREATE INDEX IF NOT EXISTS module_transpile_cache_live_realm_idx
      ON module_transpile_cache (realm_url) WHERE body IS NOT NULL OR failure IS NOT NULL
    `
  })
