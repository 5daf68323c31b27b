/**
 * Fleet coalescing with real OS processes on the real Postgres: one transpile per module
 * version across processes, no waits that hang, and nothing left behind.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"
import { type FleetProcess, percentile, startProcess } from "./support/fleet.ts"
import { until } from "./support/load.ts"
import { presenceKey } from "../src/fleet/AdvisoryLockCoordinator.ts"

let url: string
let database: string
let realmDir: string
const running: Array<FleetProcess> = []

beforeAll(() => {
  url = freshDatabase("fleet")
  database = new URL(url).pathname.slice(1)
  realmDir = mkdtempSync(join(tmpdir(), "mtc-fleet-"))
})
afterAll(() => {
  dropDatabase(url)
  rmSync(realmDir, { recursive: true, force: true })
})

const advisoryLocks = () =>
  Number(psql(`SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
    WHERE l.locktype = 'advisory' AND d.datname = '${database}'`))
/**
 * The presence locks of solo mode (src/fleet/AdvisoryLockCoordinator.ts), by mode, and the key
 * locks: the fleet session's locks, on int8 keys (`objsubid` 1). A write transaction's shared
 * locks on (space, id) pairs (`objsubid` 2) last only while it runs, and are not counted.
 */
const presenceHigh = (presenceKey >> 32n) & 0xffffffffn
const presenceLow = presenceKey & 0xffffffffn
const lockModes = () => {
  const rows = psql(`SELECT (l.classid::bigint = ${presenceHigh} AND l.objid::bigint = ${presenceLow}), l.mode
    FROM pg_locks l JOIN pg_database d ON d.oid = l.database
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND d.datname = '${database}' ORDER BY 1, 2`)
  const lines = rows.split("\n").map((line) => line.trim()).filter((line) => line.length > 0)
  return {
    presence: lines.filter((line) => line.startsWith("t|")).map((line) => line.slice(2)),
    keys: lines.filter((line) => line.startsWith("f|")).length
  }
}
/** Key locks only (not the presence locks). */
const keyLocks = () => lockModes().keys
const sessions = () => Number(psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = '${database}'`))

// Advisory-lock hygiene after every test: once the fleet exits, nothing of it remains.
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()))
  for (let i = 0; i < 50 && sessions() > 0; i++) await new Promise((r) => setTimeout(r, 100))
  expect(advisoryLocks()).toBe(0)
  expect(sessions()).toBe(0)
})

let realmCounter = 0
/** A fresh realm URL (so tests never share rows) with modules written to the realm dir. */
const writeModules = (prefix: string, count: number): Array<string> =>
  Array.from({ length: count }, (_, i) => {
    const path = `${prefix}-${i}.ts`
    writeFileSync(
      join(realmDir, path),
      `import { helper } from "./helper-${i}.ts"\nexport const value: number = ${i}\nexport class C${i}<T> { declare x: T }\n`
    )
    return path
  })

const fleet = async (
  count: number,
  env: Record<string, string> = {},
  realmUrl = `https://fleet-${realmCounter++}.test/`
): Promise<Array<FleetProcess>> => {
  const processes = await Promise.all(
    Array.from({ length: count }, () =>
      startProcess({ DATABASE_URL: url, REALM_DIR: realmDir, REALM_URL: realmUrl, ...env }))
  )
  running.push(...processes)
  return processes
}

const totalTranspiles = async (processes: ReadonlyArray<FleetProcess>) =>
  (await Promise.all(processes.map((p) => p.stats()))).reduce((sum, s) => sum + s.transpiles, 0)

describe("fleet on Postgres", () => {
  it("a herd of P=4 processes x K=25 gets x M=20 cold modules gives exactly M transpiles", async () => {
    const modules = writeModules("herd", 20)
    const processes = await fleet(4, { TRANSPILE_DELAY_MS: "50" })
    const reports = (await Promise.all(processes.map((p) => p.herd(modules, 25)))).flat()
    expect(reports).toHaveLength(4 * 25 * 20)
    expect(reports.every((r) => r.ok)).toBe(true)
    expect(await totalTranspiles(processes)).toBe(20)
    for (const path of modules) {
      expect(new Set(reports.filter((r) => r.path === path).map((r) => r.hash)).size).toBe(1)
    }
    const ms = reports.map((r) => r.ms)
    console.log(
      `herd P=4 K=25 M=20: transpiles=20 p50=${percentile(ms, 50).toFixed(1)}ms p99=${percentile(ms, 99).toFixed(1)}ms`
    )
  })

  it("a SIGKILLed winner is taken over by a loser through the lock, not the deadline", async () => {
    const [path] = writeModules("killed", 1)
    const transpileMs = 1500
    const [winner, loser] = await fleet(2, { TRANSPILE_DELAY_MS: String(transpileMs), DEADLINE: "30000 millis" })
    // Both in the fleet (neither in solo mode): the winner's miss takes a key lock.
    await until(() => lockModes().presence.length === 2, 10_000, "both processes in the fleet")
    const winning = winner!.get(path!).catch(() => undefined)
    for (let i = 0; i < 100 && keyLocks() === 0; i++) await new Promise((r) => setTimeout(r, 20))
    expect(keyLocks()).toBe(1)
    const losing = loser!.get(path!)
    await new Promise((r) => setTimeout(r, 200))
    const killedAt = performance.now()
    winner!.child.kill("SIGKILL")
    const report = await losing
    const elapsed = performance.now() - killedAt
    await winning
    expect(report.ok).toBe(true)
    expect(report.outcome).toBe("transpiled")
    // The loser won the lock the dead session released and transpiled: no deadline fallback,
    // and far below the 30 s deadline (the time is one transpile plus a poll; not asserted
    // closer, as the machine may be loaded).
    const stats = await loser!.stats()
    expect(stats.fallbacks).toBe(0)
    expect(stats.transpiles).toBe(1)
    expect(elapsed).toBeLessThan(15_000)
  })

  it("a loser whose LISTEN backend is terminated while it waits finishes within about one poll interval", async () => {
    const [warm, path] = writeModules("lost", 2)
    const [winner, loser] = await fleet(2, { TRANSPILE_DELAY_MS: "1000", DEADLINE: "30000 millis" })
    await loser!.get(warm!)
    expect((await loser!.stats()).l1Entries).toBe(1)
    await until(() => lockModes().presence.length === 2, 10_000, "both processes in the fleet")
    const winning = winner!.get(path!)
    for (let i = 0; i < 100 && keyLocks() === 0; i++) await new Promise((r) => setTimeout(r, 20))
    const losing = loser!.get(path!)
    await new Promise((r) => setTimeout(r, 100))
    const killed = psql(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
      WHERE datname = '${database}' AND application_name = 'module-transpile-cache:listen:${loser!.pid}'`)
    expect(killed).toBe("1")
    const won = await winning
    const doneAt = performance.now()
    const report = await losing
    const lag = performance.now() - doneAt
    expect(won.outcome).toBe("transpiled")
    expect(report.ok).toBe(true)
    expect(report.hash).toBe(won.hash)
    // Poll interval is at most 200 ms; allow scheduling noise.
    expect(lag).toBeLessThan(700)
    // It reconnected and flushed L1.
    for (let i = 0; i < 50; i++) {
      if ((await loser!.stats()).l1Entries <= 1) break
      await new Promise((r) => setTimeout(r, 100))
    }
    const again = await loser!.get(warm!)
    expect(again.outcome).toBe("l2")
    expect(await totalTranspiles([winner!, loser!])).toBe(2)
  })

  it("a winner's syntax error reaches every loser in every process quickly, from one transpile", async () => {
    writeFileSync(join(realmDir, "broken.ts"), "export const x = ;\n")
    const processes = await fleet(4, { TRANSPILE_DELAY_MS: "200" })
    const started = performance.now()
    const reports = (await Promise.all(processes.map((p) => p.herd(["broken.ts"], 10)))).flat()
    const elapsed = performance.now() - started
    expect(reports.every((r) => !r.ok && r.error === "TranspileError")).toBe(true)
    expect(new Set(reports.map((r) => r.message)).size).toBe(1)
    expect(await totalTranspiles(processes)).toBe(1)
    expect(elapsed).toBeLessThan(5000)
  })

  it("an invalidate on A drops B's L1 entry and B's next get returns the new bytes", async () => {
    const [path] = writeModules("inval", 1)
    const [a, b] = await fleet(2)
    const first = await a!.get(path!)
    // A answers before its L2 write commits; B must find the row, not A's lock.
    await until(async () => (await a!.stats()).inFlight === 0, 2000, "A's L2 write committed", 20)
    expect((await b!.get(path!)).outcome).toBe("l2")
    expect((await b!.get(path!)).outcome).toBe("l1")
    writeFileSync(join(realmDir, path!), "export const value = 'edited'\n")
    await a!.invalidate(path!)
    let report = await b!.get(path!)
    for (let i = 0; i < 20 && report.outcome === "l1"; i++) {
      await new Promise((r) => setTimeout(r, 50))
      report = await b!.get(path!)
    }
    expect(report.outcome).not.toBe("l1")
    expect(report.hash).not.toBe(first.hash)
    expect((await a!.get(path!)).hash).toBe(report.hash)
  })

  it("a pool of 2 connections and 30 distinct cold modules completes with no deadlock", async () => {
    const modules = writeModules("pool", 30)
    const processes = await fleet(2, { POOL_SIZE: "2", TRANSPILE_DELAY_MS: "20" })
    const reports = (await Promise.all(processes.map((p) => p.herd(modules, 3)))).flat()
    expect(reports.every((r) => r.ok)).toBe(true)
    expect(await totalTranspiles(processes)).toBe(30)
  })

  it("solo mode: a process that joins while the only other one is mid-transpile waits for its row (one transpile), then both take key locks", async () => {
    const [warm] = writeModules("solo-warm", 1)
    const [path] = writeModules("slow-solo", 1)
    const realmUrl = `https://fleet-${realmCounter++}.test/`
    const env = { TRANSPILE_DELAY_MS: "0", SLOW_DELAY_MS: "15000", DEADLINE: "30000 millis" }
    const [solo] = await fleet(1, env, realmUrl)
    // Alone on the database: solo mode, a miss takes no key lock.
    expect((await solo!.get(warm!)).outcome).toBe("transpiled")
    expect(lockModes()).toEqual({ presence: ["ExclusiveLock"], keys: 0 })
    let winnerDone = false
    const winning = solo!.get(path!).finally(() => {
      winnerDone = true
    })
    await until(async () => (await solo!.stats()).inFlight === 1, 10_000, "the solo transpile in flight")
    expect(lockModes()).toEqual({ presence: ["ExclusiveLock"], keys: 0 })
    // A second process starts and asks for the module being transpiled under solo mode.
    const [joiner] = await fleet(1, env, realmUrl)
    const joining = joiner!.get(path!)
    // The window under test: the solo transpile is still running when the joiner asks.
    expect(winnerDone).toBe(false)
    const [won, joined] = await Promise.all([winning, joining])
    expect(won.outcome).toBe("transpiled")
    expect(joined.ok).toBe(true)
    expect(joined.outcome).toBe("coalesced")
    expect(joined.hash).toBe(won.hash)
    expect(await totalTranspiles([solo!, joiner!])).toBe(2)
    expect((await joiner!.stats()).fallbacks).toBe(0)
    // Both in the fleet now: shared presence locks, and key locks again.
    await until(() => lockModes().presence.length === 2, 10_000, "both processes in the fleet")
    expect(lockModes()).toEqual({ presence: ["ShareLock", "ShareLock"], keys: 0 })
  })
})
