/**
 * Issue 34: an edit costs one transpile in the fleet, not one per process. Real `serve --store pg`
 * processes on one realm directory (each watching it) and one fresh Postgres database; the
 * transpiles of every process (`/_cache/stats`) are read before and after each edit, and their
 * sum must be exactly what the edit needs:
 *
 * 1. 3 processes, every module warm on every process, one file edited in place (truncated, then
 *    written, as many editors do): 1.
 * 2. 20 files edited at once, in place (a branch switch): 20.
 * 3. 6 processes (3 more on the same realm): one edit 1, twenty edits 20.
 * 4. 3 processes behind PgBouncer in transaction mode (leases, polled invalidation log): 1 and 20.
 * 5. An editor's atomic save (temp file renamed over the module) twice within 50 ms: 1.
 * 6. A -> B: 1; B written again in place with the same bytes: 0; touched: 0; B -> A (A's row was
 *    tombstoned by the B edit): 1; A saved again with the same bytes: 0.
 * 7. `POST /_cache/invalidate?path=` of an unchanged file on one process, then a GET on every
 *    process: 1 (a forced invalidation re-transpiles once, not once per peer).
 *
 * Most edits are written in place, as many editors and `git checkout` do: the file is truncated
 * first. A watcher that read it at the first event would see an empty module, an edit of its own
 * (to "" and back); the watcher reads a file only once its events are quiet for 25 ms.
 *
 * After an edit every process is polled until it serves the new bytes (within a generous
 * bound); the time the last one became fresh is printed, never asserted. After that, every
 * process is asked again a few times and must never serve an old byte. The counts and times
 * are printed as `[FleetEdits] ...` lines.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freshDatabase, psql } from "./support/database.ts"
import {
  awaitInvalidations,
  confirm,
  costOf,
  describeCost,
  fleetServeEnv,
  invalidationsOf,
  moduleSource,
  pollFresh,
  quiet,
  touch,
  urlOf,
  warm,
  saveAtomically,
  startFleetServers,
  writeInPlace
} from "./support/edits.ts"
import { endFleet, stats } from "./support/load.ts"
import { type PgBouncer, startPgBouncer } from "./support/pgbouncer.ts"
import { makeRealm, request, type ServerProcess, sleep } from "./support/server.ts"

const log = (line: string) => console.log(`[FleetEdits] ${line}`)

/** 24 small modules: m0 (one edit), m1..m20 (the branch switch), m21 (atomic saves), m22 (A/B), m23 (API). */
const names = Array.from({ length: 24 }, (_, i) => `m${i}`)
const single = "m0"
const branch = names.slice(1, 21)
const saved = "m21"
const flipped = "m22"
const forced = "m23"

/** How long a process may take to serve an edit (generous: the goal is < 1 s, never asserted). */
const freshWithinMs = 30_000
/** After freshness: how long late reports (the watchers' trailing batches, peer notices, the polled log) get to land. */
const settleMs = 800

/** A fleet of `serve` processes on one realm directory, and the version each module is at. */
interface Fleet {
  readonly label: string
  readonly realm: string
  readonly servers: Array<ServerProcess>
  readonly versions: Map<string, number>
}

const makeFleetRealm = (prefix: string) => {
  const versions = new Map(names.map((name) => [name, 1]))
  const realm = makeRealm(Object.fromEntries(names.map((name) => [`${name}.ts`, moduleSource(name, 1)])), prefix)
  return { realm, versions }
}


/**
 * Edits the modules in `edits` (name to new version) with `write`, polls every process until
 * it serves them all, lets late reports land, asks every process again, and returns what the
 * fleet spent. Everything but the count is asserted here; the caller asserts the count.
 */
const measureEdit = async (
  fleet: Fleet,
  label: string,
  edits: ReadonlyMap<string, number>,
  write: () => void | Promise<void>
) => {
  const before = await quiet(fleet.servers)
  const startedAt = performance.now()
  await write()
  const writtenMs = performance.now() - startedAt
  const fresh = await pollFresh(fleet.servers, edits, startedAt, freshWithinMs)
  for (const [name, version] of edits) fleet.versions.set(name, version)
  await sleep(settleMs)
  const wrong = await confirm(fleet.servers, fresh.bodies)
  const after = await quiet(fleet.servers)
  const cost = costOf(before, after)
  log(
    `${fleet.label}, ${label}: fleet transpiles ${describeCost(cost)}, expected ${edits.size}; ` +
      `last process fresh ${fresh.lastMs.toFixed(0)} ms after the write began (per process ${
        fresh.perProcess.map((ms) => ms.toFixed(0)).join("/")
      } ms; writing took ${writtenMs.toFixed(0)} ms)`
  )
  expect(fresh.regressions, "no old byte once a process served the new ones").toEqual([])
  expect(wrong, "every process serves the new bytes afterwards").toEqual([])
  return cost
}

/**
 * Writes that leave the module's bytes as they are (`write`), then waits until every process's
 * watcher reported it (soft: at most 3 s), lets late reports land, asks every process a few
 * times, and returns what the fleet spent.
 */
const measureNoop = async (fleet: Fleet, label: string, name: string, write: () => void) => {
  const current = await request(fleet.servers[0]!.url, urlOf(name))
  expect(current.status).toBe(200)
  const before = await quiet(fleet.servers)
  const reportsBefore = await Promise.all(fleet.servers.map(invalidationsOf))
  write()
  const reported = await awaitInvalidations(fleet.servers, reportsBefore, "watcher", 3000)
  await sleep(settleMs)
  const wrong = await confirm(fleet.servers, new Map([[name, current.body]]))
  const after = await quiet(fleet.servers)
  const cost = costOf(before, after)
  log(
    `${fleet.label}, ${label}: fleet transpiles ${describeCost(cost)}, expected 0 ` +
      `(every watcher reported it: ${reported ? "yes" : "not within 3 s"})`
  )
  expect(wrong, "every process serves the same bytes").toEqual([])
  return cost
}

const editOne = (fleet: Fleet, label: string) => {
  const version = fleet.versions.get(single)! + 1
  return measureEdit(fleet, label, new Map([[single, version]]), () => writeInPlace(fleet.realm, single, version))
}

const switchBranch = (fleet: Fleet, label: string) => {
  const edits = new Map(branch.map((name) => [name, fleet.versions.get(name)! + 1]))
  return measureEdit(fleet, label, edits, () => {
    for (const [name, version] of edits) writeInPlace(fleet.realm, name, version)
  })
}

/** Every module on every process, then a quiet fleet. */
const warmAll = async (fleet: Fleet) => {
  const before = await quiet(fleet.servers)
  await warm(fleet.servers, fleet.versions)
  const after = await quiet(fleet.servers)
  log(`${fleet.label}: warmed ${fleet.versions.size} modules on ${fleet.servers.length} processes, transpiles ${describeCost(costOf(before, after))}`)
}

let dbUrl: string
beforeAll(() => {
  dbUrl = freshDatabase("fleet_edits")
})
// Stops every process left, waits until their sessions closed (no advisory lock left), drops
// the database and the realms. The pooler fleet's PgBouncer is closed by its own block first.
afterAll(() => endFleet(dbUrl, { noLocksLeft: true }), 60_000)

describe("a fleet on one Postgres, every process watching one realm directory", () => {
  const { realm, versions } = makeFleetRealm("mtc-fleet-edits-")
  const fleet: Fleet = { label: "3 processes", realm, servers: [], versions }

  beforeAll(async () => {
    const { servers, ms } = await startFleetServers(realm, 3, fleetServeEnv(6, dbUrl))
    fleet.servers.push(...servers)
    log(`3 processes up in ${ms.toFixed(0)} ms (${(await stats(servers[0]!)).coordinator} coordinator)`)
    await warmAll(fleet)
  }, 180_000)
  afterAll(async () => {
    await Promise.all(fleet.servers.map((s) => s.stop()))
  }, 60_000)

  it("3 processes, every module warm on every process: one edited file costs exactly 1 transpile in the fleet", async () => {
    const cost = await editOne(fleet, "one edit")
    expect(cost.total, `fleet transpiles for one edit (${describeCost(cost)})`).toBe(1)
  }, 90_000)

  it("3 processes: 20 files edited at once (a branch switch) cost exactly 20 transpiles", async () => {
    const cost = await switchBranch(fleet, "20 edits at once")
    expect(cost.total, `fleet transpiles for 20 edits (${describeCost(cost)})`).toBe(20)
  }, 90_000)

  it("3 processes: an editor's atomic save (temp file renamed over the module) twice within 50 ms costs exactly 1 transpile", async () => {
    const version = fleet.versions.get(saved)! + 1
    let gapMs = 0
    const cost = await measureEdit(fleet, "atomic save twice", new Map([[saved, version]]), async () => {
      const first = performance.now()
      saveAtomically(realm, saved, version)
      await sleep(20)
      saveAtomically(realm, saved, version)
      gapMs = performance.now() - first
    })
    log(`3 processes, atomic save twice: the two saves were ${gapMs.toFixed(0)} ms apart`)
    expect(cost.total, `fleet transpiles for two saves of one edit (${describeCost(cost)})`).toBe(1)
  }, 90_000)

  it("3 processes: A -> B costs 1, B saved again with the same bytes (in place) or touched costs 0, B -> A 1, A saved again 0", async () => {
    const a = fleet.versions.get(flipped)!
    const b = a + 1
    const toB = await measureEdit(fleet, "A -> B", new Map([[flipped, b]]), () => saveAtomically(realm, flipped, b))
    const sameB = await measureNoop(fleet, "B written again in place, same bytes", flipped, () => writeInPlace(realm, flipped, b))
    const touched = await measureNoop(fleet, "B touched (mtime only)", flipped, () => touch(realm, flipped))
    // The row of the key held A until the B edit tombstoned it and B was written over it: A is
    // a new source again as far as L2 goes. One edit, so one transpile in the fleet.
    const toA = await measureEdit(fleet, "B -> A (A transpiled before)", new Map([[flipped, a]]), () => writeInPlace(realm, flipped, a))
    const sameA = await measureNoop(fleet, "A saved again (atomically), same bytes", flipped, () => saveAtomically(realm, flipped, a))
    expect.soft(toB.total, `A -> B (${describeCost(toB)})`).toBe(1)
    expect.soft(sameB.total, `B saved again (${describeCost(sameB)})`).toBe(0)
    expect.soft(touched.total, `B touched (${describeCost(touched)})`).toBe(0)
    expect.soft(toA.total, `B -> A (${describeCost(toA)})`).toBe(1)
    expect.soft(sameA.total, `A saved again (${describeCost(sameA)})`).toBe(0)
  }, 120_000)

  it("3 processes: POST /_cache/invalidate of an unchanged file on one process, then a GET on every process: exactly 1 transpile", async () => {
    const current = await request(fleet.servers[0]!.url, urlOf(forced))
    expect(current.status).toBe(200)
    const before = await quiet(fleet.servers)
    const reportsBefore = await Promise.all(fleet.servers.map(invalidationsOf))
    const response = await request(fleet.servers[0]!.url, `/_cache/invalidate?path=${encodeURIComponent(urlOf(forced))}`, { method: "POST" })
    expect(response.status, response.body).toBe(200)
    // The peers hear of it (soft bound: counted as a peer's invalidation), then everyone asks.
    const heard = await awaitInvalidations(fleet.servers.slice(1), reportsBefore.slice(1), "peer", 5000)
    const wrong = await confirm(fleet.servers, new Map([[forced, current.body]]))
    await sleep(settleMs)
    wrong.push(...(await confirm(fleet.servers, new Map([[forced, current.body]]), 2)))
    const after = await quiet(fleet.servers)
    const cost = costOf(before, after)
    log(`3 processes, API invalidate of an unchanged file: fleet transpiles ${describeCost(cost)}, expected 1 (peers heard it: ${heard ? "yes" : "not within 5 s"})`)
    expect(wrong, "every process serves the same bytes").toEqual([])
    expect(cost.total, `fleet transpiles for one API invalidation (${describeCost(cost)})`).toBe(1)
  }, 90_000)

  describe("6 processes (3 more on the same realm)", () => {
    const six: Fleet = { label: "6 processes", realm, servers: fleet.servers, versions }

    beforeAll(async () => {
      const { servers, ms } = await startFleetServers(realm, 3, fleetServeEnv(6, dbUrl))
      six.servers.push(...servers)
      log(`3 more processes up in ${ms.toFixed(0)} ms`)
      await warmAll(six)
    }, 180_000)

    it("6 processes: one edited file costs exactly 1 transpile in the fleet", async () => {
      const cost = await editOne(six, "one edit")
      expect(cost.total, `fleet transpiles for one edit (${describeCost(cost)})`).toBe(1)
    }, 90_000)

    it("6 processes: 20 files edited at once cost exactly 20 transpiles", async () => {
      const cost = await switchBranch(six, "20 edits at once")
      expect(cost.total, `fleet transpiles for 20 edits (${describeCost(cost)})`).toBe(20)
    }, 90_000)
  })
})

describe("3 processes behind PgBouncer in transaction mode (leases, polled invalidation log)", () => {
  const { realm, versions } = makeFleetRealm("mtc-fleet-edits-pooler-")
  const fleet: Fleet = { label: "3 processes behind PgBouncer", realm, servers: [], versions }
  let bouncer: PgBouncer | undefined

  beforeAll(async () => {
    bouncer = await startPgBouncer()
    const { servers, ms } = await startFleetServers(realm, 3, fleetServeEnv(6, bouncer.urlFor(dbUrl), { MTC_PG_POOLER: "transaction" }))
    fleet.servers.push(...servers)
    log(`3 processes behind PgBouncer up in ${ms.toFixed(0)} ms (${(await stats(servers[0]!)).coordinator} coordinator)`)
    await warmAll(fleet)
  }, 180_000)
  afterAll(async () => {
    // The processes first, then PgBouncer, whose server connections would keep sessions open.
    await Promise.all(fleet.servers.map((s) => s.stop()))
    await bouncer?.close()
  }, 60_000)

  it("behind PgBouncer: one edited file costs exactly 1 transpile in the fleet", async () => {
    const cost = await editOne(fleet, "one edit")
    expect(cost.total, `fleet transpiles for one edit (${describeCost(cost)})`).toBe(1)
  }, 90_000)

  it("behind PgBouncer: 20 files edited at once cost exactly 20 transpiles", async () => {
    const cost = await switchBranch(fleet, "20 edits at once")
    expect(cost.total, `fleet transpiles for 20 edits (${describeCost(cost)})`).toBe(20)
  }, 90_000)

  it("behind PgBouncer: the edits went through the polled invalidation log", async () => {
    const realmUrl = (await stats(fleet.servers[0]!)).realmUrl
    expect(realmUrl).toBeDefined()
    const entries = Number(psql(`SELECT count(*) FROM module_transpile_cache_log WHERE realm_url = '${realmUrl}'`, dbUrl))
    log(`3 processes behind PgBouncer: ${entries} entries in the polled invalidation log`)
    expect(entries).toBeGreaterThan(0)
  })
})
