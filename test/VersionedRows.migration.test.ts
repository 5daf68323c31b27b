/**
 * Migration 5 (one row per module key and fingerprint) runs in place over an L2 written by the
 * release before it, on Postgres and on PGlite: the rows are kept and served after it, a
 * tombstone keeps defeating earlier captures, and a second version then writes beside them.
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { moduleKey, versionedKey } from "../src/domain/Domain.ts"
import * as Migrations from "../src/store/Migrations.ts"
import * as PgliteClient from "../src/store/PgliteClient.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import { dropDatabase, freshDatabase } from "./support/database.ts"

// Made at collection: an unreachable Postgres fails this file, never skips it.
const databaseUrl = freshDatabase("versioned_rows")
afterAll(() => dropDatabase(databaseUrl))

const realm = "https://realm.test/migrated/"
const today = "fp-today"

/** What the release before migration 5 wrote, with its own statements (its upserts name the old primary key). */
const writeAsBefore = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    INSERT INTO module_transpile_cache AS c
      (realm_url, canonical_path, body, headers, dependency_keys, fingerprint, source_hash, generation)
    VALUES (${realm}, 'a.ts', 'export const a = 1', '{"content-type":"text/javascript; charset=utf-8"}'::jsonb,
            '[]'::jsonb, ${today}, 'hash-a', 2)
    ON CONFLICT (realm_url, canonical_path) DO UPDATE SET body = EXCLUDED.body
  `
  // A tombstone, as the release before made them: no fingerprint.
  yield* sql`
    INSERT INTO module_transpile_cache AS c (realm_url, canonical_path, generation) VALUES (${realm}, 'b.ts', 3)
    ON CONFLICT (realm_url, canonical_path) DO UPDATE SET body = NULL, fingerprint = NULL, generation = c.generation + 1
  `
})

const migrateInPlace = (kind: SqlTranspileStore.SqlStoreKind) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const options = Migrations.optionsFor(kind)
    expect((yield* Migrations.run(options, 4)).map(([id]) => id)).toEqual([1, 2, 3, 4])
    yield* writeAsBefore
    expect((yield* Migrations.run(options)).map(([id]) => id)).toEqual([5, 6, 7, 8])
    // Idempotent: a second start applies nothing.
    expect(yield* Migrations.run(options)).toEqual([])
    const primaryKey = yield* sql<{ column: string }>`
      SELECT a.attname AS column FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
      WHERE i.indrelid = 'module_transpile_cache'::regclass AND i.indisprimary ORDER BY a.attname
    `
    expect(primaryKey.map((row) => row.column)).toEqual(["canonical_path", "fingerprint", "realm_url"])

    const store = yield* SqlTranspileStore.make({ kind })
    const a = versionedKey(moduleKey(realm, "a.ts"), today)
    const b = versionedKey(moduleKey(realm, "b.ts"), today)
    // The live row is served to the version that wrote it.
    const row = yield* store.read(a)
    expect(row).toMatchObject({
      _tag: "Module",
      fingerprint: today,
      sourceHash: "hash-a",
      captured: { generation: 2, realmEpoch: 0 },
      module: { body: "export const a = 1" }
    })
    // The tombstone still defeats a capture from before it.
    expect(yield* store.read(b)).toEqual({ _tag: "Absent", captured: { generation: 3, realmEpoch: 0 } })
    const content = { _tag: "Module", module: { body: "b", headers: {}, dependencyKeys: [], sourceHash: "h" } } as const
    const writeB = (generation: number, fingerprint: string) =>
      store.write({ key: b, captured: { generation, realmEpoch: 0 }, fingerprint, sourceHash: "h", content })
    expect(yield* writeB(2, today)).toBe(false)
    expect(yield* writeB(3, today)).toBe(true)
    // A new version writes beside the migrated rows, and neither overwrites the other.
    expect(
      yield* store.write({
        key: a,
        captured: row.captured,
        fingerprint: "fp-next",
        sourceHash: "hash-a",
        content: { _tag: "Module", module: { body: "next", headers: {}, dependencyKeys: [], sourceHash: "hash-a" } }
      })
    ).toBe(true)
    expect(yield* store.read(a)).toMatchObject({ _tag: "Module", module: { body: "export const a = 1" } })
    expect(yield* store.read(versionedKey(a, "fp-next"))).toMatchObject({ _tag: "Module", module: { body: "next" } })
  })

describe("migration 5 over an L2 of the release before", () => {
  it.live("postgres: rows kept and served", () =>
    migrateInPlace("postgres").pipe(
      Effect.provide(Layer.fresh(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 })))
    ), 60_000)

  it.live("pglite: rows kept and served", () =>
    migrateInPlace("pglite").pipe(Effect.provide(Layer.fresh(PgliteClient.layer({ dataDir: undefined })))), 60_000)
})
