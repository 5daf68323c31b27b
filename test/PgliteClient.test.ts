/**
 * PGlite behind Effect's SqlClient: the single session shared soundly between fibers, the
 * aborted-COMMIT check, typed jsonb, and the embedded store's data directory (restart
 * survival and the exclusive lock).
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, assert, describe, expect, it, layer } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber } from "effect"
import { SqlClient } from "effect/sql"
import { SqlError } from "effect/sql/SqlError"
import * as DataDirLock from "../src/store/DataDirLock.ts"
import { moduleKey, versionedKey } from "../src/domain/Domain.ts"
import * as PgliteClient from "../src/store/PgliteClient.ts"
import * as SqlTranspileStore from "../src/store/SqlTranspileStore.ts"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "mtc-pglite-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

// Every case on PGlite on this thread, and in its worker thread (what the embedded store runs).
for (const worker of [false, true]) {
layer(PgliteClient.layer({ dataDir: undefined, worker }), { excludeTestServices: true, timeout: "60 seconds" })(
  worker ? "PgliteClient in a worker thread" : "PgliteClient",
  (it) => {
    it.effect("decodes int8 as bigint and date as text, and binds json as typed jsonb", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const client = yield* PgliteClient.PgliteClient
        expect(sql.driver).toBe("pglite")
        const [row] = yield* sql<{
          big: bigint
          day: string
          str: unknown
          obj: unknown
          type: string
        }>`
          SELECT 9007199254740993::int8 AS big, DATE '2024-02-29' AS day,
                 ${client.json("a string")} AS str, ${client.json({ a: [1, null, "x"] })} AS obj,
                 pg_typeof(${client.json(1)})::text AS type
        `
        expect(row).toEqual({
          big: 9007199254740993n,
          day: "2024-02-29",
          str: "a string",
          obj: { a: [1, null, "x"] },
          type: "jsonb"
        })
      }))

    it.effect("classifies server errors like sql-pg", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE classify_t (id int PRIMARY KEY)`
        yield* sql`INSERT INTO classify_t VALUES (1)`
        const duplicate = yield* Effect.flip(sql`INSERT INTO classify_t VALUES (1)`)
        expect(duplicate.reason._tag).toBe("UniqueViolation")
        const syntax = yield* Effect.flip(sql`SELEC 1`)
        expect(syntax.reason._tag).toBe("SqlSyntaxError")
      }))

    it.effect("a statement from another fiber never runs inside an open transaction", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE serial_t (id int PRIMARY KEY, origin text NOT NULL)`
        const inTransaction = yield* Deferred.make<void>()
        const order: Array<string> = []
        // A transaction that writes, lets the other fiber try to run, writes again, then fails.
        const transaction = sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO serial_t VALUES (1, 'tx')`
          yield* Deferred.succeed(inTransaction, undefined)
          yield* Effect.sleep("100 millis")
          yield* sql`INSERT INTO serial_t VALUES (2, 'tx')`
          order.push("tx done")
          return yield* Effect.fail("roll back" as const)
        }))
        const txFiber = yield* Effect.forkChild(Effect.exit(transaction))
        yield* Deferred.await(inTransaction)
        const outside = yield* Effect.forkChild(
          Effect.tap(sql`INSERT INTO serial_t VALUES (3, 'outside')`, () => Effect.sync(() => order.push("outside")))
        )
        const txExit = yield* Fiber.join(txFiber)
        yield* Fiber.join(outside)
        expect(Exit.isFailure(txExit)).toBe(true)
        // The outside statement waited for the transaction, and was not rolled back with it.
        expect(order).toEqual(["tx done", "outside"])
        const rows = yield* sql<{ id: number; origin: string }>`SELECT id, origin FROM serial_t ORDER BY id`
        expect(rows).toEqual([{ id: 3, origin: "outside" }])
      }))

    it.effect("transactions of several fibers serialise, and nested ones use savepoints", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE counter_t (id int PRIMARY KEY, n int NOT NULL)`
        yield* sql`INSERT INTO counter_t VALUES (1, 0)`
        // Read-modify-write: lost updates would show if two transactions interleaved.
        const increment = sql.withTransaction(Effect.gen(function*() {
          const [row] = yield* sql<{ n: number }>`SELECT n FROM counter_t WHERE id = 1`
          yield* Effect.yieldNow
          yield* sql`UPDATE counter_t SET n = ${(row?.n ?? 0) + 1} WHERE id = 1`
          // A nested transaction that fails rolls back to its savepoint only.
          yield* Effect.ignore(sql.withTransaction(
            Effect.andThen(sql`UPDATE counter_t SET n = n + 1000 WHERE id = 1`, Effect.fail("nested"))
          ))
        }))
        yield* Effect.all(Array.from({ length: 20 }, () => increment), { concurrency: "unbounded" })
        const [row] = yield* sql<{ n: number }>`SELECT n FROM counter_t WHERE id = 1`
        expect(row?.n).toBe(20)
      }))

    it.effect("committing an aborted transaction fails, and the session stays usable", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE aborted_t (id int PRIMARY KEY)`
        const exit = yield* Effect.exit(sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO aborted_t VALUES (1)`
          // The failing statement aborts the transaction; swallowing its error must not commit.
          yield* Effect.ignore(sql`SELECT 1 / 0`)
        })))
        assert(Exit.isFailure(exit), "the transaction must fail")
        const error = Cause.squash(exit.cause)
        assert(error instanceof SqlError, `expected a SqlError, got ${String(error)}`)
        expect(error.message).toContain("COMMIT rolled back an aborted transaction")
        expect(yield* sql`SELECT id FROM aborted_t`).toEqual([])
        // Not left inside a transaction: a later failure does not poison this write.
        yield* sql`INSERT INTO aborted_t VALUES (2)`
        expect(yield* sql`SELECT id FROM aborted_t`).toEqual([{ id: 2 }])
      }))

    it.effect("raw PGlite calls share the session permit, inside a transaction too", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const client = yield* PgliteClient.PgliteClient
        yield* sql`CREATE TABLE raw_t (id int PRIMARY KEY)`
        const inside = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO raw_t VALUES (1)`
          // Runs on the transaction's session, so it sees the uncommitted row and does not deadlock.
          return yield* client.withPglite((db) => db.query<{ n: number }>("SELECT count(*)::int AS n FROM raw_t"))
        }))
        expect(inside.rows).toEqual([{ n: 1 }])
        const outside = yield* client.withPglite((db) => db.query<{ n: number }>("SELECT count(*)::int AS n FROM raw_t"))
        expect(outside.rows).toEqual([{ n: 1 }])
      }))

    if (worker) {
      it.effect("a long statement leaves the event loop free", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          // Turns of the event loop while the statement runs: on this thread, WebAssembly
          // Postgres would hold it for the whole statement.
          let turns = 0
          let done = false
          const spin = () => {
            turns++
            if (!done) setImmediate(spin)
          }
          setImmediate(spin)
          const [row] = yield* sql<{ n: bigint }>`SELECT count(*) AS n FROM generate_series(1, 2000000)`.pipe(
            Effect.ensuring(Effect.sync(() => { done = true }))
          )
          expect(row?.n).toBe(2000000n)
          expect(turns).toBeGreaterThan(20)
        }))
    }
  }
)
}

describe("the embedded store's data directory", () => {
  const dataDir = path.join(root, "store")
  const storeAt = (dir: string) => SqlTranspileStore.makePglite({ dataDir: dir })

  it.live("a store survives a restart on the same directory", () =>
    Effect.gen(function*() {
      const key = versionedKey(moduleKey("https://realm.test/restart/", "a.gts"), "fp")
      const written = yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* storeAt(dataDir)
        yield* store.tombstone(key)
        return yield* store.write({
          key,
          captured: { generation: 1, realmEpoch: 0 },
          fingerprint: "fp",
          sourceHash: "h",
          content: {
            _tag: "Module",
            module: { body: "export default 1", headers: { "x-a": "1" }, dependencyKeys: ["b.gts"], sourceHash: "h" }
          }
        })
      }))
      expect(written).toBe(true)
      expect(fs.existsSync(DataDirLock.lockFileOf(dataDir))).toBe(false)
      const row = yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* storeAt(dataDir)
        return yield* store.read(key)
      }))
      expect(row).toEqual({
        _tag: "Module",
        captured: { generation: 1, realmEpoch: 0 },
        fingerprint: "fp",
        sourceHash: "h",
        module: { body: "export default 1", headers: { "x-a": "1" }, dependencyKeys: ["b.gts"], sourceHash: "h" }
      })
    }), 120_000)

  it.live("a second open of a locked directory fails with DataDirLockedError; it opens once released", () =>
    Effect.gen(function*() {
      const dir = path.join(root, "locked")
      yield* Effect.scoped(Effect.gen(function*() {
        yield* storeAt(dir)
        const error = yield* Effect.flip(Effect.scoped(storeAt(dir)))
        assert(error instanceof DataDirLock.DataDirLockedError, `expected DataDirLockedError, got ${String(error)}`)
        expect(error.pid).toBe(process.pid)
        expect(error.message).toContain(`in use by process ${process.pid}`)
        expect(error.message).toContain("only one process may open it")
        // A second process is refused too.
        const child = spawnSync(process.execPath, [
          "--input-type=module",
          "-e",
          `import * as L from ${JSON.stringify(path.resolve("src/store/DataDirLock.ts"))}
           import { Effect } from "effect"
           const exit = await Effect.runPromiseExit(Effect.scoped(L.acquire(${JSON.stringify(dir)})))
           process.stdout.write(exit._tag === "Failure" ? String(exit.cause) : "acquired")`
        ], { encoding: "utf8", cwd: process.cwd() })
        expect(child.stdout).toContain("DataDirLockedError")
        expect(child.stdout).toContain(`in use by process ${process.pid}`)
      }))
      // Released with the scope: the directory opens again.
      yield* Effect.scoped(storeAt(dir))
    }), 120_000)

  it.live("a lock left by a dead process is taken over; one held by a live process is not", () =>
    Effect.gen(function*() {
      const dir = path.join(root, "stale")
      fs.mkdirSync(dir, { recursive: true })
      const lockFile = DataDirLock.lockFileOf(dir)
      // A pid that no longer runs: a child that has exited.
      const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" })
      const deadPid = Number(dead.stdout)
      fs.writeFileSync(lockFile, JSON.stringify({ pid: deadPid, host: os.hostname(), token: "stale" }))
      const lock = yield* DataDirLock.acquire(dir)
      expect(JSON.parse(fs.readFileSync(lockFile, "utf8"))).toMatchObject({ pid: process.pid, token: lock.token })

      // A lock with this process's pid that this process does not hold: an earlier process
      // that had the same pid (as after a container restart).
      const reused = path.join(root, "reused-pid")
      fs.mkdirSync(reused, { recursive: true })
      fs.writeFileSync(
        DataDirLock.lockFileOf(reused),
        JSON.stringify({ pid: process.pid, host: os.hostname(), token: "earlier" })
      )
      const reusedLock = yield* DataDirLock.acquire(reused)
      expect(JSON.parse(fs.readFileSync(reusedLock.lockFile, "utf8"))).toMatchObject({ token: reusedLock.token })

      const live = path.join(root, "live")
      fs.mkdirSync(live, { recursive: true })
      fs.writeFileSync(
        DataDirLock.lockFileOf(live),
        JSON.stringify({ pid: process.ppid, host: os.hostname(), token: "live" })
      )
      const error = yield* Effect.flip(DataDirLock.acquire(live))
      assert(error instanceof DataDirLock.DataDirLockedError)
      expect(error.pid).toBe(process.ppid)
      // A lock of another host cannot be checked, so it is never taken over.
      const remote = path.join(root, "remote")
      fs.mkdirSync(remote, { recursive: true })
      fs.writeFileSync(DataDirLock.lockFileOf(remote), JSON.stringify({ pid: deadPid, host: "elsewhere", token: "r" }))
      const remoteError = yield* Effect.flip(DataDirLock.acquire(remote))
      assert(remoteError instanceof DataDirLock.DataDirLockedError)
      expect(remoteError.host).toBe("elsewhere")
    }))
})
