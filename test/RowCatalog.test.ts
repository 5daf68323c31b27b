/**
 * The embedded store's row catalog: the captures it answers for absent rows and tombstones
 * are those the table gives, and changes applied out of order never make it capture more
 * than the table holds. The SQL behaviour with it on is covered by the conformance suite
 * ("pglite in a worker thread"); here, the catalog's own rules.
 */
import { describe, expect, it } from "@effect/vitest"
import { RowCatalog } from "../src/store/RowCatalog.ts"

const realm = "https://realm.test/"

const loaded = () => {
  const catalog = new RowCatalog()
  catalog.replace([], [])
  return catalog
}

describe("RowCatalog", () => {
  it("answers absent rows and tombstones, and sends live rows to the table", () => {
    const catalog = loaded()
    expect(catalog.absent(realm, "a.ts", "fp")).toEqual({ generation: 0, realmEpoch: 0 })
    catalog.wrote(realm, "a.ts", "fp", 0)
    expect(catalog.absent(realm, "a.ts", "fp")).toBeUndefined()
    // Another version's row is absent, at the key's generation.
    expect(catalog.absent(realm, "a.ts", "fp-2")).toEqual({ generation: 0, realmEpoch: 0 })
    catalog.tombstoned(realm, "a.ts", 1, ["fp"])
    expect(catalog.absent(realm, "a.ts", "fp")).toEqual({ generation: 1, realmEpoch: 0 })
    expect(catalog.absent(realm, "a.ts", "fp-2")).toEqual({ generation: 1, realmEpoch: 0 })
    // A tombstone of a key with no row leaves the key at that generation.
    catalog.tombstoned(realm, "b.ts", 1, [""])
    expect(catalog.absent(realm, "b.ts", "fp")).toEqual({ generation: 1, realmEpoch: 0 })
  })

  it("a wipe sets the epoch and makes the realm's live rows dead one generation up", () => {
    const catalog = loaded()
    catalog.wrote(realm, "a.ts", "fp", 2)
    catalog.wiped(realm, 1)
    expect(catalog.absent(realm, "a.ts", "fp")).toEqual({ generation: 3, realmEpoch: 1 })
    expect(catalog.absent(realm, "new.ts", "fp")).toEqual({ generation: 0, realmEpoch: 1 })
    expect(catalog.absent("https://other.test/", "a.ts", "fp")).toEqual({ generation: 0, realmEpoch: 0 })
    // Applied twice (a reload saw it already), the epoch stays.
    catalog.wiped(realm, 1)
    expect(catalog.absent(realm, "new.ts", "fp")?.realmEpoch).toBe(1)
  })

  it("changes applied out of order only move rows forward", () => {
    const catalog = loaded()
    // A write that captured a tombstone (generation 1) landed after it; their updates arrive swapped.
    catalog.wrote(realm, "a.ts", "fp", 1)
    catalog.tombstoned(realm, "a.ts", 1, ["fp"])
    expect(catalog.absent(realm, "a.ts", "fp")).toBeUndefined()
    // A stale write below the row's generation does not bring it back.
    catalog.tombstoned(realm, "a.ts", 2, ["fp"])
    catalog.wrote(realm, "a.ts", "fp", 1)
    expect(catalog.absent(realm, "a.ts", "fp")).toEqual({ generation: 2, realmEpoch: 0 })
  })

  it("is off until loaded, when disabled, and above its row bound", () => {
    const catalog = new RowCatalog()
    expect(catalog.absent(realm, "a.ts", "fp")).toBeUndefined()
    catalog.replace([{ realmUrl: realm, path: "a.ts", fingerprint: "fp", generation: 4, live: false }], [[realm, 2]])
    expect(catalog.absent(realm, "a.ts", "fp")).toEqual({ generation: 4, realmEpoch: 2 })
    catalog.disable()
    expect(catalog.absent(realm, "a.ts", "fp")).toBeUndefined()
    catalog.wrote(realm, "b.ts", "fp", 0)
    expect(catalog.enabled).toBe(false)
  })
})
