/**
 * A fleet at scale, side by side: 3, 12 and 48 members simulated in one process (each with
 * its own fleet session and pool, as separate processes would have), a cold herd of
 * K=4 gets x M=24 modules on every member, a counting transpiler of 20 ms per module.
 * Each size gets the largest budget (at most the default 2) that fits
 * "members x budget <= max_connections - 10"; 12 members also run at a budget of 9 (the
 * pool of 8 plus one session) as a baseline. Reports the peak connections of the
 * database, the herd's latency and the time an invalidation takes to reach every peer.
 * Run: npx node scratchpad/bench-fleet-scale.ts   (DATABASE_URL as for the tests)
 */
import { budgetDefaults } from "../src/live/ModuleCacheLive.ts"
import { dropDatabase, freshDatabase, psql } from "../test/support/database.ts"
import { percentile } from "../test/support/fleet.ts"
import { herd, invalidationSpread, sampleConnections, startFleet, totals } from "../test/support/simulation.ts"
import type { BenchRow } from "./bench-l1.ts"

/** Members, and the budget to run them at (undefined: the largest that fits, at most the default). */
const RUNS: ReadonlyArray<readonly [number, number | undefined]> = [
  [3, undefined],
  [12, undefined],
  // Baseline: the pool of 8 the library used to open, plus the fleet session.
  [12, 9],
  [48, undefined]
]
const K = 4
const M = 24

export const benchFleetScale = async (): Promise<Array<BenchRow>> => {
  const serverMax = Number(psql("SHOW max_connections"))
  const paths = Array.from({ length: M }, (_, i) => `m${i}.ts`)
  const rows: Array<BenchRow> = []
  for (const [members, fixed] of RUNS) {
    const budget = fixed ?? Math.max(
      1,
      Math.min(budgetDefaults.maxConnections, Math.floor((serverMax - budgetDefaults.headroom) / members))
    )
    const url = freshDatabase(`bench_fleet_${members}`)
    const database = new URL(url).pathname.slice(1)
    const admin = new URL(url)
    admin.pathname = "/postgres"
    const sampler = await sampleConnections(admin.toString(), database, 10)
    try {
      const startedAt = performance.now()
      const fleet = await startFleet({
        url,
        members,
        budget,
        realmUrl: `https://bench-fleet-${members}.test/`,
        modules: paths.map((p, i) => [p, `export const id: string = "m${i}"\n`] as const)
      })
      const started = performance.now() - startedAt
      try {
        const herdAt = performance.now()
        const samples = await herd(fleet, paths, K)
        const herdMs = performance.now() - herdAt
        const failed = samples.filter((s) => !s.ok).length
        const fallbacks = (await totals(fleet)).reduce((sum, s) => sum + s.fallbacks, 0)
        const transpiles = fleet.transpiles()
        const spread = await invalidationSpread(fleet, paths[0]!, 5000)
        const ms = samples.map((s) => s.ms)
        const { peak } = await sampler.stop()
        rows.push({
          name: `${members} members x budget ${budget}`,
          value: `peak connections ${peak}; herd of ${samples.length} gets ${herdMs.toFixed(0)} ms, p50=${
            percentile(ms, 50).toFixed(1)
          }ms p99=${percentile(ms, 99).toFixed(1)}ms; transpiles ${transpiles}/${M}, fallbacks ${fallbacks}, failed ${failed}; invalidation reached all peers in ${
            spread === undefined ? "> 5000" : spread.toFixed(0)
          } ms; start ${started.toFixed(0)} ms`
        })
      } finally {
        await fleet.close()
      }
    } finally {
      await sampler.stop()
      dropDatabase(url)
    }
  }
  return rows
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.table(await benchFleetScale())
}
