/**
 * A module row carries what is sent besides its body, each made once per version in the
 * transpile worker, so that no process ever makes them again:
 *
 * - `body_br`, `body_gzip` (bytea): the body compressed with br and gzip (NULL: not made, as
 *   for every row written before this migration, a body too small to gain, or a coding the
 *   writer does not offer). A reader that offers a coding a row lacks compresses that body
 *   itself, once per load, and counts it.
 * - `source_map` (text): the module's v3 source map back to its source (NULL: none).
 *
 * Their bytes count against the byte cap and the preload bound with the body's. A tombstone
 * clears them with the body. A process of an earlier release beside this one reads and writes
 * its rows as before: it never names these columns, so its rows have none (NULL).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { MigrationOptions } from "./MigrationOptions.ts"

export const migration = (_options: MigrationOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      ALTER TABLE module_transpile_cache
        ADD COLUMN IF NOT EXISTS body_br bytea,
        ADD COLUMN IF NOT EXISTS body_gzip bytea,
        ADD COLUMN IF NOT EXISTS source_map text
    `
  })
