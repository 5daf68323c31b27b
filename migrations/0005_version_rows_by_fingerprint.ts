/**
 * One row per module key **and fingerprint**: the primary key of `module_transpile_cache`
 * becomes `(realm_url, canonical_path, fingerprint)`, so that two versions of the server on
 * one database (a deploy under way, a new version pre-warmed) keep a row each and never
 * overwrite each other.
 *
 * In place, keeping every row: a live row keeps its fingerprint (and is served as before
 * by the version that wrote it); a tombstone, whose fingerprint was NULL, gets `''`, which no
 * version reads but whose generation still defeats earlier captures. A tombstone made from
 * now on keeps the fingerprint of its row; one made for a key with no row has `''`.
 *
 * Processes of an older release, which upsert on `(realm_url, canonical_path)`, can no
 * longer write L2 after this migration (they keep serving from L1 and by transpiling): roll
 * the whole fleet onto this release before relying on L2 again.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { MigrationOptions } from "./MigrationOptions.ts"

export const migration = (_options: MigrationOptions) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`UPDATE module_transpile_cache SET fingerprint = '' WHERE fingerprint IS NULL`
    yield* sql`
      ALTER TABLE module_transpile_cache
        ALTER COLUMN fingerprint SET DEFAULT '',
        ALTER COLUMN fingerprint SET NOT NULL
    `
    yield* sql`
      ALTER TABLE module_transpile_cache
        DROP CONSTRAINT IF EXISTS module_transpile_cache_pkey,
        ADD CONSTRAINT module_transpile_cache_pkey PRIMARY KEY (realm_url, canonical_path, fingerprint)
    `
  })
