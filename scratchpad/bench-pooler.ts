/**
 * The herd through a transaction pooler, side by side with a direct connection: 3 processes x
 * K=8 concurrent gets x M=24 cold modules, over
 * - Postgres directly (advisory locks and LISTEN on the fleet session),
 * - PgBouncer in transaction mode with no direct URL (lease rows, polled invalidation log),
 * - PgBouncer for L2 plus DATABASE_DIRECT_URL for the fleet session.
 * Each configuration runs ROUNDS herds on fresh modules, alternating with the others; medians over rounds.
 * Also the invalidation spread: invalidate on one process, time until a peer serves the new bytes.
 * Run: npx node scratchpad/bench-pooler.ts   (DATABASE_URL as for the tests; needs pgbouncer)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { dropDatabase, freshDatabase } from "../test/support/database.ts"
import { percentile, startProcess } from "../test/support/fleet.ts"
import { startPgBouncer } from "../test/support/pgbouncer.ts"
import type { BenchRow } from "./bench-l1.ts"

const P = 3
const K = 8
const M = 24
const ROUNDS = 3
const EDITS = 5
const TRANSPILE_DELAY_MS = 20

const median = (values: ReadonlyArray<number>) => percentile(values, 50)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export const benchPooler = async (): Promise<Array<BenchRow>> => {
  const url = freshDatabase("bench_pooler")
  const bouncer = await startPgBouncer()
  const realmDir = mkdtempSync(join(tmpdir(), "mtc-bench-pooler-"))
  const configurations = [
    { name: "direct", env: { DATABASE_URL: url } },
    { name: "PgBouncer, leases + polled log", env: { DATABASE_URL: bouncer.urlFor(url), POOLER: "transaction" } },
    {
      name: "PgBouncer + DATABASE_DIRECT_URL",
      env: { DATABASE_URL: bouncer.urlFor(url), POOLER: "transaction", DIRECT_URL: url }
    }
  ] as const
  const rows: Array<BenchRow> = []
  try {
    // Every configuration's processes are up at once and the rounds alternate between them, so
    // that each comparison sees the same load on the machine.
    const fleets = await Promise.all(configurations.map((configuration, index) =>
      Promise.all(Array.from({ length: P }, () =>
        startProcess({
          REALM_DIR: realmDir,
          REALM_URL: `https://bench-pooler-${index}.test/`,
          TRANSPILE_DELAY_MS: String(TRANSPILE_DELAY_MS),
          ...configuration.env
        })))))
    try {
      const results = configurations.map(() => ({
        p50s: [] as Array<number>,
        p99s: [] as Array<number>,
        transpiles: [] as Array<number>,
        spreads: [] as Array<number>,
        failed: 0
      }))
      for (let round = 0; round < ROUNDS; round++) {
        for (const [index, processes] of fleets.entries()) {
          const result = results[index]!
          const modules = Array.from({ length: M }, (_, i) => {
            const path = `c${index}-r${round}-m${i}.ts`
            writeFileSync(join(realmDir, path), `export class C${i}<T> { declare x: T; value = ${i} }\n`)
            return path
          })
          const before = (await Promise.all(processes.map((p) => p.stats()))).reduce((n, s) => n + s.transpiles, 0)
          const reports = (await Promise.all(processes.map((p) => p.herd(modules, K)))).flat()
          const after = (await Promise.all(processes.map((p) => p.stats()))).reduce((n, s) => n + s.transpiles, 0)
          const ms = reports.map((r) => r.ms)
          result.p50s.push(percentile(ms, 50))
          result.p99s.push(percentile(ms, 99))
          result.transpiles.push(after - before)
          result.failed += reports.filter((r) => !r.ok).length
        }
      }
      // Invalidation spread: edit, invalidate on one process, time until the others serve the new bytes.
      for (const [index, processes] of fleets.entries()) {
        const path = `c${index}-edit.ts`
        writeFileSync(join(realmDir, path), "export const v = 0\n")
        await Promise.all(processes.map((p) => p.get(path)))
      }
      for (let edit = 1; edit <= EDITS; edit++) {
        for (const [index, processes] of fleets.entries()) {
          const path = `c${index}-edit.ts`
          writeFileSync(join(realmDir, path), `export const v = ${edit}\n`)
          const [editor, ...peers] = processes
          const started = performance.now()
          await editor!.invalidate(path)
          const fresh = (await editor!.get(path)).hash
          await Promise.all(peers.map(async (peer) => {
            while ((await peer.get(path)).hash !== fresh && performance.now() - started < 5000) await sleep(5)
          }))
          results[index]!.spreads.push(performance.now() - started)
        }
      }
      const baseline = median(results[0]!.p50s)
      for (const [index, configuration] of configurations.entries()) {
        const result = results[index]!
        const p50 = median(result.p50s)
        rows.push({
          name: `herd P=${P} K=${K} M=${M}, ${configuration.name}`,
          value: `transpiles/round=${result.transpiles.join(",")} p50=${p50.toFixed(0)}ms p99=${
            median(result.p99s).toFixed(0)
          }ms (x${(p50 / baseline).toFixed(2)} of direct)${result.failed ? ` failed=${result.failed}` : ""}`
        })
        rows.push({
          name: `invalidation spread to ${P - 1} peers, ${configuration.name}`,
          value: `median=${median(result.spreads).toFixed(0)}ms max=${Math.max(...result.spreads).toFixed(0)}ms (${EDITS} edits)`
        })
      }
    } finally {
      await Promise.all(fleets.flat().map((p) => p.stop()))
    }
  } finally {
    await bouncer.close()
    dropDatabase(url)
    rmSync(realmDir, { recursive: true, force: true })
  }
  return rows
}

if (import.meta.main) {
  console.table(await benchPooler())
}
