/**
 * A fleet of dozens of processes on one ordinary Postgres (`max_connections = 100`, shared
 * with other clients), still exactly once:
 * - 12 real `serve` processes, a cold herd of 4 GETs x 24 modules on every process: exactly
 *   24 transpiles, no failed request, and the fleet holds at most 12 x its budget.
 * - 48 simulated members (one process, each with its own sessions and pool) at a budget of
 *   one connection: one transpile per module, peers hear an invalidation within 1 s, and
 *   the database's connections stay below 90 throughout.
 * - Refused connections (a role's connection limit stands in for "too many clients") are
 *   waited out: still one transpile per module, no fallback, and the refusals are counted.
 */
import { Effect, Layer, Logger, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as ModuleCacheLive from "../src/live/ModuleCacheLive.ts"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"
import { databaseOf, describeSamples, endFleet, herd as httpHerd, outcomes, stats, totalTranspiles } from "./support/load.ts"
import { makeRealm, startServer } from "./support/server.ts"
import { herd, invalidationSpread, sampleConnections, startFleet, totals } from "./support/simulation.ts"

const moduleCount = 24
const perModule = 4
const paths = Array.from({ length: moduleCount }, (_, i) => `m${i}.ts`)
const tinyModule = (i: number, version = 1) => `export const id: string = "m${i}"\nexport const version: number = ${version}\n`

const adminUrl = (url: string) => {
  const admin = new URL(url)
  admin.pathname = "/postgres"
  return admin.toString()
}

describe("a fleet at scale on one Postgres", () => {
  let url: string
  let database: string
  beforeAll(() => {
    url = freshDatabase("fleet_scale")
    database = databaseOf(url)
  })
  afterAll(() => endFleet(url, { noLocksLeft: false }), 60_000)

  it("12 serve processes, a cold herd of 4 x 24 on each: exactly 24 transpiles, no failed request", async () => {
    const files = Object.fromEntries(paths.map((p, i) => [p, tinyModule(i)]))
    const realm = makeRealm(files, "mtc-fleet-scale-")
    const env = { DATABASE_URL: url, MTC_FLEET_SIZE: "12", MTC_PG_CONNECT_TIMEOUT: "5 seconds", MTC_SESSION_TIMEOUT: "10 seconds" }
    const t0 = performance.now()
    // Twelve Node processes loading Effect and Babel at once on a small shared machine can
    // take a minute to come up: the start-up bound is generous (it is not what is tested).
    const servers = await Promise.all(
      Array.from({ length: 12 }, () => startServer({ realmDir: realm, store: "pg", env, timeoutMs: 180_000 }))
    )
    const t1 = performance.now()
    const sampler = await sampleConnections(adminUrl(url), database)
    const samples = await httpHerd(servers, paths.map((p) => `/${p}`), perModule)
    const t2 = performance.now()
    const { peak } = await sampler.stop()
    const perServer = await Promise.all(servers.map(stats))
    console.log(
      `12-process herd: start ${(t1 - t0).toFixed(0)} ms, herd ${(t2 - t1).toFixed(0)} ms, ${samples.length} GETs, transpiles ${perServer.map((s) => s.transpiles).join("+")}, peak connections ${peak} (budget ${perServer[0]?.connections?.budget}), outcomes ${JSON.stringify(outcomes(samples))}`
    )
    const failed = samples.filter((s) => s.status !== 200)
    expect(failed, describeSamples(failed)).toHaveLength(0)
    expect(samples).toHaveLength(12 * moduleCount * perModule)
    expect(await totalTranspiles(servers)).toBe(moduleCount)
    expect(perServer.map((s) => s.fallbacks)).toEqual(Array(12).fill(0))
    for (const p of paths) {
      expect(new Set(samples.filter((s) => s.path === `/${p}`).map((s) => s.etag)).size, p).toBe(1)
    }
    // Stats report the budget and the server's max_connections, and the fleet kept to it.
    const budget = perServer[0]!.connections!.budget
    expect(perServer.every((s) => s.connections?.serverMax === Number(psql("SHOW max_connections")))).toBe(true)
    expect(budget).toBe(2)
    expect(perServer.every((s) => s.connections!.open <= budget)).toBe(true)
    expect(peak).toBeLessThanOrEqual(12 * budget)
    const t3 = performance.now()
    await Promise.all(servers.map((s) => s.stop()))
    console.log(`12-process stop: ${(performance.now() - t3).toFixed(0)} ms`)
  }, 300_000)

  it("48 simulated members at a budget of 1: one transpile per module, invalidations reach peers within 1 s, connections below 90", async () => {
    const sampler = await sampleConnections(adminUrl(url), database)
    const fleet = await startFleet({
      url,
      members: 48,
      budget: 1,
      realmUrl: "https://sim-48.test/",
      modules: paths.map((p, i) => [p, tinyModule(i)] as const),
      // 48 members share ONE event loop here (48 processes would have 48): on a loaded
      // machine their herd can outlast the default 10 s deadline, after which waiters
      // fall back by design. This test is about exactly-once and connections, not latency.
      cache: { deadline: "60 seconds" }
    })
    try {
      const herdAt = performance.now()
      const samples = await herd(fleet, paths, perModule)
      console.log(`48 simulated members: herd of ${samples.length} gets in ${(performance.now() - herdAt).toFixed(0)} ms`)
      expect(samples.filter((s) => !s.ok)).toEqual([])
      expect(samples).toHaveLength(48 * moduleCount * perModule)
      expect(fleet.transpiles()).toBe(moduleCount)
      const stats = await totals(fleet)
      expect(stats.reduce((sum, s) => sum + s.fallbacks, 0)).toBe(0)
      expect(stats.every((s) => s.connections?.budget === 1 && s.connections.poolSize === 0)).toBe(true)
      // Every peer hears an invalidation within 1 s.
      fleet.sources.set(fleet.key(paths[0]!), tinyModule(0, 2))
      const spread = await invalidationSpread(fleet, paths[0]!, 1000)
      expect(spread, "every peer dropped the invalidated module within 1 s").toBeDefined()
      // ... and the new version is transpiled once more, fleet-wide.
      await herd(fleet, [paths[0]!], 2)
      expect(fleet.transpiles()).toBe(moduleCount + 1)
      console.log(`48 simulated members: invalidation reached every peer in ${spread?.toFixed(0)} ms`)
    } finally {
      await fleet.close()
      const { peak, samples } = await sampler.stop()
      console.log(`48 simulated members: peak connections ${peak} over ${samples} samples`)
      expect(samples).toBeGreaterThan(0)
      expect(peak).toBeLessThan(90)
    }
  }, 120_000)
})

describe("the connection budget at start", () => {
  let url: string
  beforeAll(() => {
    url = freshDatabase("fleet_budget")
  })
  afterAll(() => dropDatabase(url))

  const warningsAtStart = (fleetSize: number, maxConnections: number) => {
    const warnings: Array<string> = []
    const collector = Logger.make((options) => {
      if (options.logLevel === "Warn") warnings.push(String(options.message))
    })
    const services = ModuleCacheLive.services({ _tag: "postgres", url: Redacted.make(url), fleetSize, maxConnections })
    return Effect.runPromise(
      Effect.scoped(Layer.build(services)).pipe(Effect.provide(Logger.layer([collector])), Effect.as(warnings))
    )
  }

  it("warns when the stated fleet size x budget does not fit max_connections minus the headroom", async () => {
    const max = Number(psql("SHOW max_connections"))
    const tooMany = await warningsAtStart(Math.floor(max / 2), 2)
    expect(tooMany.filter((w) => w.includes("does not fit"))).toHaveLength(1)
    expect(tooMany.find((w) => w.includes("does not fit"))).toContain(`max_connections ${max}`)
    const fitting = await warningsAtStart(Math.floor(max / 2), 1)
    expect(fitting.filter((w) => w.includes("does not fit"))).toHaveLength(0)
  }, 60_000)
})

describe("refused connections are waited out", () => {
  const role = `mtc_refusal_${process.pid}`
  let url: string
  beforeAll(() => {
    // A non-superuser role with a connection limit: the server refuses its extra connects
    // with 53300, as it refuses anyone's beyond max_connections. (Superusers ignore limits.)
    psql(`DROP ROLE IF EXISTS ${role}`)
    psql(`CREATE ROLE ${role} LOGIN CONNECTION LIMIT 9`)
    const base = freshDatabase("fleet_refusal")
    const name = databaseOf(base)
    psql(`ALTER DATABASE ${name} OWNER TO ${role}`)
    const roleUrl = new URL(base)
    roleUrl.username = role
    url = roleUrl.toString()
  })
  afterAll(() => {
    try {
      dropDatabase(url)
    } finally {
      psql(`DROP ROLE IF EXISTS ${role}`)
    }
  })

  it("6 members x budget 2 under a limit of 9 connections: one transpile per module, no fallback, refusals counted", async () => {
    const fleet = await startFleet({
      url,
      members: 6,
      budget: 2,
      realmUrl: "https://refused.test/",
      modules: paths.slice(0, 8).map((p, i) => [p, tinyModule(i)] as const),
      // Pool connections close soon when idle, so that refused members get their turn.
      poolIdleTimeout: "100 millis"
      // All at once: the start-up migrations are refused too, and wait.
    })
    try {
      const samples = await herd(fleet, paths.slice(0, 8), perModule)
      const stats = await totals(fleet)
      const refusals = stats.reduce((sum, s) => sum + s.refusals + (s.connections?.refusals ?? 0), 0)
      console.log(`refusals waited out: ${refusals}, outcomes ${JSON.stringify(samples.reduce<Record<string, number>>((acc, s) => {
        acc[s.outcome ?? "error"] = (acc[s.outcome ?? "error"] ?? 0) + 1
        return acc
      }, {}))}`)
      expect(samples.filter((s) => !s.ok)).toEqual([])
      expect(fleet.transpiles()).toBe(8)
      expect(stats.reduce((sum, s) => sum + s.fallbacks, 0)).toBe(0)
      expect(refusals).toBeGreaterThan(0)
    } finally {
      await fleet.close()
    }
  }, 120_000)
})
