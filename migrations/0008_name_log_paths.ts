/**
 * The polled invalidation log names the module of a key's entry:
 * `module_transpile_cache_log.path`, its canonical path in the entry's realm (NULL: a realm's
 * entry, or one written by an earlier release). A poller's live event streams name it (see
 * `ChangeFeed`); an entry without one still drops the module, and sends no event.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { MigrationOptions } from "./MigrationOptions.ts"

export const migration = (_options: MigrationOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE module_transpile_cache_log ADD COLUMN IF NOT EXISTS path text`
  })
