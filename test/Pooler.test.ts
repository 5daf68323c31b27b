/**
 * Exactly-once behind a transaction pooler: a real PgBouncer (transaction mode, port of its
 * own) in front of the real Postgres, 3 real fleet processes (test/support/fleet-child.ts)
 * reaching the database only through it: lease rows and the polled invalidation log. Then
 * the same suite with a direct URL for the fleet session (LISTEN, advisory locks).
 *
 * The 3 processes of a mode are shared by its cases (herd, edit, PgBouncer restart, then a
 * winner killed last); every case uses modules of its own.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"
import { type FleetProcess, percentile, startProcess } from "./support/fleet.ts"
import { type PgBouncer, startPgBouncer } from "./support/pgbouncer.ts"
import { presenceKey } from "../src/fleet/AdvisoryLockCoordinator.ts"

const leaseTtlMs = 2000
const slowMs = 1500

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let bouncer: PgBouncer
let realmDir: string
beforeAll(async () => {
  bouncer = await startPgBouncer()
  realmDir = mkdtempSync(join(tmpdir(), "mtc-pooler-"))
})
afterAll(async () => {
  await bouncer.close()
  rmSync(realmDir, { recursive: true, force: true })
})

const writeModules = (prefix: string, count: number): Array<string> =>
  Array.from({ length: count }, (_, i) => {
    const path = `${prefix}-${i}.ts`
    writeFileSync(join(realmDir, path), `export const value: number = ${i}\nexport class C${i}<T> { declare x: T }\n`)
    return path
  })

const totalTranspiles = async (processes: ReadonlyArray<FleetProcess>) =>
  (await Promise.all(processes.map((p) => p.stats()))).reduce((sum, s) => sum + s.transpiles, 0)

describe.each([
  { mode: "pooler only (leases, polled log)", direct: false },
  { mode: "pooler + DATABASE_DIRECT_URL (LISTEN, advisory locks on the direct session)", direct: true }
])("behind PgBouncer in transaction mode: $mode", ({ direct }) => {
  let url: string
  let database: string
  let processes: Array<FleetProcess> = []
  const prefix = direct ? "d" : "p"

  /** Live leases (an expired one, left by an owner that died or could not delete it, is free). */
  const leases = () => Number(psql("SELECT count(*) FROM module_transpile_cache_lease WHERE expires_at > now()", url))
  /** Key locks (the presence locks of solo mode, one per process, apart). */
  const advisoryLocks = () =>
    Number(psql(`SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
      WHERE l.locktype = 'advisory' AND d.datname = '${database}'
        AND NOT (l.classid::bigint = ${(presenceKey >> 32n) & 0xffffffffn} AND l.objid::bigint = ${presenceKey & 0xffffffffn})`))
  const held = () => (direct ? advisoryLocks() : leases())

  beforeAll(async () => {
    url = freshDatabase(`pooler_${prefix}`)
    database = new URL(url).pathname.slice(1)
    const starting = performance.now()
    processes = await Promise.all(Array.from({ length: 3 }, () =>
      startProcess({
        DATABASE_URL: bouncer.urlFor(url),
        POOLER: "transaction",
        ...(direct ? { DIRECT_URL: url } : {}),
        REALM_DIR: realmDir,
        REALM_URL: `https://pooler-${prefix}.test/`,
        TRANSPILE_DELAY_MS: "30",
        SLOW_DELAY_MS: String(slowMs),
        LEASE_TTL_MS: String(leaseTtlMs),
        DEADLINE: "30000 millis"
      })))
    console.log(`pooler (${prefix}): 3 processes up in ${(performance.now() - starting).toFixed(0)} ms`)
  })
  afterAll(async () => {
    const stopping = performance.now()
    await Promise.all(processes.map((p) => p.stop()))
    console.log(`pooler (${prefix}): stopped in ${(performance.now() - stopping).toFixed(0)} ms`)
    // No live lease outlives the fleet (PgBouncer keeps its server connections: no session count here).
    if (!direct) expect(leases()).toBe(0)
    dropDatabase(url)
  })

  it("migrations ran through the pooler, and no process holds a direct session unless told to", () => {
    expect(psql("SELECT count(*) FROM module_transpile_cache_migrations", url)).toBe("8")
    const listeners = Number(psql(`SELECT count(*) FROM pg_stat_activity
      WHERE datname = '${database}' AND application_name LIKE 'module-transpile-cache:listen:%'`))
    expect(listeners).toBe(direct ? 3 : 0)
  })

  it("a cold herd of 8 concurrent requests per module over 24 modules, on 3 processes, gives exactly 24 transpiles", async () => {
    const modules = writeModules(`${prefix}-herd`, 24)
    const before = await totalTranspiles(processes)
    const started = performance.now()
    const reports = (await Promise.all(processes.map((p) => p.herd(modules, 8)))).flat()
    const wall = performance.now() - started
    expect(reports).toHaveLength(3 * 8 * 24)
    expect(reports.filter((r) => !r.ok)).toEqual([])
    const stats = await Promise.all(processes.map((p) => p.stats()))
    console.log(`pooler herd (${prefix}): transpiles by process ${stats.map((s) => s.transpiles).join("/")}, fallbacks ${
      stats.map((s) => s.fallbacks).join("/")
    }`)
    expect((await totalTranspiles(processes)) - before).toBe(24)
    for (const path of modules) {
      expect(new Set(reports.filter((r) => r.path === path).map((r) => r.hash)).size).toBe(1)
    }
    expect(held()).toBe(0)
    const ms = reports.map((r) => r.ms)
    console.log(`pooler herd (${prefix}) P=3 K=8 M=24: transpiles=24 p50=${percentile(ms, 50).toFixed(1)}ms p99=${
      percentile(ms, 99).toFixed(1)
    }ms wall=${wall.toFixed(0)}ms`)
  })

  it("an edit on disk reaches every process within 1 s, never regressing to the old bytes", async () => {
    const [path] = writeModules(`${prefix}-edit`, 1)
    const old = await Promise.all(processes.map((p) => p.get(path!)))
    expect(new Set(old.map((r) => r.hash)).size).toBe(1)
    const oldHash = old[0]!.hash
    writeFileSync(join(realmDir, path!), "export const value = 'edited'\n")
    const [editor, ...peers] = processes
    const editedAt = performance.now()
    await editor!.invalidate(path!)
    // The invalidating process never serves the old bytes again.
    const fresh = await editor!.get(path!)
    expect(fresh.hash).not.toBe(oldHash)
    for (const peer of peers) {
      const seen: Array<string | undefined> = []
      let report = await peer.get(path!)
      seen.push(report.hash)
      while (report.hash === oldHash && performance.now() - editedAt < 1000) {
        await sleep(25)
        report = await peer.get(path!)
        seen.push(report.hash)
      }
      expect(report.hash).toBe(fresh.hash)
      // Once fresh, never old again.
      for (let i = 0; i < 5; i++) seen.push((await peer.get(path!)).hash)
      expect(seen.slice(seen.indexOf(fresh.hash)).every((hash) => hash === fresh.hash)).toBe(true)
    }
  })

  it("PgBouncer restarted under load: no failed request, and coalescing resumes", async () => {
    const during = writeModules(`${prefix}-restart`, 12)
    const load = Promise.all(processes.map(async (p) => {
      const reports = []
      for (let round = 0; round < 6; round++) {
        reports.push(...(await p.herd(during.slice(round * 2, round * 2 + 2), 4)))
        await sleep(60)
      }
      return reports
    }))
    await sleep(100)
    await bouncer.stop()
    await sleep(300)
    await bouncer.start()
    const reports = (await load).flat()
    expect(reports).toHaveLength(3 * 6 * 2 * 4)
    expect(reports.filter((r) => !r.ok)).toEqual([])
    // Coalescing resumes: a cold herd after the restart transpiles each module once.
    const after = writeModules(`${prefix}-resumed`, 6)
    const before = await totalTranspiles(processes)
    const resumed = (await Promise.all(processes.map((p) => p.herd(after, 8)))).flat()
    expect(resumed.filter((r) => !r.ok)).toEqual([])
    expect((await totalTranspiles(processes)) - before).toBe(6)
  })

  it("a winner SIGKILLed mid-transpile: the peers finish within the lease TTL plus one transpile", async () => {
    const path = `slow-${prefix}.ts`
    writeFileSync(join(realmDir, path), "export const slow = 1\n")
    const [winner, ...peers] = processes
    // A lease or lock left by the PgBouncer restart above (its unlock was cut) lives out its
    // TTL: wait until none is held, so that the one counted below is the winner's.
    for (let i = 0; i < 1000 && held() > 0; i++) await sleep(10)
    expect(held()).toBe(0)
    const winning = winner!.get(path).catch(() => undefined)
    for (let i = 0; i < 200 && held() === 0; i++) await sleep(10)
    expect(held()).toBe(1)
    const losing = peers.map((p) => p.get(path))
    await sleep(200)
    const killedAt = performance.now()
    winner!.child.kill("SIGKILL")
    const reports = await Promise.all(losing)
    const elapsed = performance.now() - killedAt
    await winning
    expect(reports.every((r) => r.ok)).toBe(true)
    expect(new Set(reports.map((r) => r.hash)).size).toBe(1)
    // One peer takes over once the lease expires (or, direct, once the lock is free) and
    // transpiles; the other is coalesced onto it.
    expect(reports.map((r) => r.outcome).sort()).toEqual(["coalesced", "transpiled"])
    console.log(`pooler kill (${prefix}): peers done ${elapsed.toFixed(0)} ms after the kill`)
    expect(elapsed).toBeLessThan(leaseTtlMs + slowMs + 1000)
  })
})
