/**
 * The Postgres store's row catalog for solo mode (`SqlTranspileStore` with `soloCatalog`), on
 * the real server: off until `enter`, then a read of an absent row is answered from memory (a
 * row a second store wrote behind its back is not seen: that is how one can tell); `leave`
 * turns it off at once; a write that OCC rejects sends its key back to the table; a `leave`
 * while the catalog loads keeps it off (gated with a table lock held by another connection).
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, assert, beforeAll, describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { SqlClient } from "effect/sql"
import { moduleKey, type VersionedKey, versionedKey } from "../src/domain/Domain.ts"
import type { TranspileStore, WriteRequest } from "../src/domain/TranspileStore.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"
import { dropDatabase, freshDatabase } from "./support/database.ts"

let url: string
beforeAll(() => {
  url = freshDatabase("solocatalog")
})
afterAll(() => dropDatabase(url))

const realmUrl = "https://realm.test/"
const fingerprint = "fp-solo"
const keyOf = (path: string): VersionedKey => versionedKey(moduleKey(realmUrl, path), fingerprint)
const writeOf = (path: string, generation = 0): WriteRequest => ({
  key: moduleKey(realmUrl, path),
  captured: { generation, realmEpoch: 0 },
  fingerprint,
  sourceHash: "h",
  content: { _tag: "Module", module: { body: `// ${path}`, headers: {}, dependencyKeys: [], sourceHash: "h" } }
})

/** This process's store (with the solo catalog) and a peer's store (a second pool, no catalog). */
const stores = Effect.gen(function*() {
  const config = { url: Redacted.make(url), maxConnections: 2 }
  const ours = yield* SqlTranspileStore.makePg(config, { soloCatalog: true })
  const peer = yield* SqlTranspileStore.makePg(config)
  const catalog = ours.soloCatalog
  assert(catalog !== undefined)
  return { ours, peer, catalog }
})

const tagOf = (store: TranspileStore["Service"], path: string) => Effect.map(store.read(keyOf(path)), (row) => row._tag)

describe("the solo catalog of the Postgres store", () => {
  it.live("off until enter; on, absent rows are answered from memory and live ones read; leave turns it off at once", () =>
    Effect.scoped(Effect.gen(function*() {
      const { catalog, ours, peer } = yield* stores
      expect(yield* ours.write(writeOf("before.ts"))).toBe(true)

      // Off: every read runs its SELECT, so a peer's row is seen.
      expect(yield* peer.write(writeOf("peer-off.ts"))).toBe(true)
      expect(yield* tagOf(ours, "peer-off.ts")).toBe("Module")

      yield* catalog.enter
      // On: rows present at the load are read from the table; its own writes are known.
      expect(yield* tagOf(ours, "before.ts")).toBe("Module")
      expect(yield* ours.write(writeOf("mine.ts"))).toBe(true)
      expect(yield* tagOf(ours, "mine.ts")).toBe("Module")
      // A row written behind its back (no peer can, while solo) is answered absent from memory.
      expect(yield* peer.write(writeOf("behind.ts"))).toBe(true)
      expect(yield* tagOf(ours, "behind.ts")).toBe("Absent")
      const [many] = yield* ours.readMany([keyOf("behind.ts")])
      expect(many?._tag).toBe("Absent")

      // Left: at once, reads run their SELECT again.
      catalog.leave()
      expect(yield* tagOf(ours, "behind.ts")).toBe("Module")
    })))

  it.live("a write that OCC rejects (a change it did not see) sends that key's reads to the table", () =>
    Effect.scoped(Effect.gen(function*() {
      const { catalog, ours, peer } = yield* stores
      yield* catalog.enter
      // A tombstone behind its back: the catalog still says generation 0.
      yield* peer.tombstone(moduleKey(realmUrl, "stale.ts"))
      const row = yield* ours.read(keyOf("stale.ts"))
      expect(row).toEqual({ _tag: "Absent", captured: { generation: 0, realmEpoch: 0 } })
      assert(ours.writeMany !== undefined)
      expect(yield* ours.writeMany([writeOf("stale.ts", row.captured.generation)])).toEqual([false])
      // Its reads go to the table now, which has the tombstone's generation.
      const again = yield* ours.read(keyOf("stale.ts"))
      expect(again._tag).toBe("Absent")
      expect(again.captured.generation).toBe(1)
      expect(yield* ours.write(writeOf("stale.ts", 1))).toBe(true)
      expect(yield* tagOf(ours, "stale.ts")).toBe("Module")
      catalog.leave()
    })))

  it.live("a leave while the catalog loads keeps it off", () =>
    Effect.scoped(Effect.gen(function*() {
      const { catalog, ours, peer } = yield* stores
      // The gate: another connection holds the realm table locked, so the load waits on it.
      const locker = yield* PgClient.make({ url: Redacted.make(url), maxConnections: 2 }).pipe(
        Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make)
      )
      const locked = yield* Deferred.make<void>()
      const unlock = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild(
        locker.withTransaction(Effect.gen(function*() {
          yield* locker`LOCK TABLE module_transpile_cache_realm IN ACCESS EXCLUSIVE MODE`
          yield* Deferred.succeed(locked, undefined)
          yield* Deferred.await(unlock)
        })).pipe(Effect.provideService(SqlClient.SqlClient, locker))
      )
      yield* Deferred.await(locked)
      const load = yield* Effect.forkChild(catalog.enter)
      // The load is blocked on the lock (its first SELECT ran): wait until Postgres says so.
      yield* Effect.gen(function*() {
        for (let i = 0; i < 500; i++) {
          const waiting = yield* locker`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted`
          if ((waiting[0]?.["n"] as number) > 0) return
          yield* Effect.sleep("10 millis")
        }
        expect.fail("the catalog's load never waited on the lock")
      })
      catalog.leave()
      yield* Deferred.succeed(unlock, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.join(load)
      // Off: a row written behind its back is read from the table.
      expect(yield* peer.write(writeOf("after-leave.ts"))).toBe(true)
      expect(yield* tagOf(ours, "after-leave.ts")).toBe("Module")
    })))
})
