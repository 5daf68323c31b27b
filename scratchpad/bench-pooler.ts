/**
 * The herd through a transaction pooler, side by side with a direct connection: 3 processes x
 * K=8 concurrent gets x M=24 cold modules, over
 * - Postgres directly (advisory locks and LISTEN on the fleet session),
 * - PgBouncer in transaction mode with no direct URL (lease rows, polled invalidation log),
 * - PgBouncer for L2 plus DATABASE_DIRECT_URL for the fleet session.
 * Each configuration runs ROUNDS herds on fresh modules (same processes); medians over rounds.
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
  let baseline: number | undefined
  try {
    for (const [index, configuration] of configurations.entries()) {
      const processes = await Promise.all(Array.from({ length: P }, () =>
        startProcess({
          REALM_DIR: realmDir,
          REALM_URL: `https://bench-pooler-${index}.test/`,
          TRANSPILE_DELAY_MS: String(TRANSPILE_DELAY_MS),
          ...configuration.env
        })))
      try {
        const p50s: Array<number> = []
        const p99s: Array<number> = []
        const transpiles: Array<number> = []
        let failed = 0
        for (let round = 0; round < ROUNDS; round++) {
          const modules = Array.from({ length: M }, (_, i) => {
            const path = `c${index}-r${round}-m${i}.ts`
            writeFileSync(join(realmDir, path), `export class C${i}<T> { declare x: T; value = ${i} }\n`)
            return path
          })
          const before = (await Promise.all(processes.map((p) => p.stats()))).reduce((n, s) => n + s.transpiles, 0)
          const reports = (await Promise.all(processes.map((p) => p.herd(modules, K)))).flat()
          const after = (await Promise.all(processes.map((p) => p.stats()))).reduce((n, s) => n + s.transpiles, 0)
          const ms = reports.map((r) => r.ms)
          p50s.push(percentile(ms, 50))
          p99s.push(percentile(ms, 99))
          transpiles.push(after - before)
          failed += reports.filter((r) => !r.ok).length
        }
        const p50 = median(p50s)
        baseline ??= p50
        rows.push({
          name: `herd P=${P} K=${K} M=${M}, ${configuration.name}`,
          value: `transpiles/round=${transpiles.join(",")} p50=${p50.toFixed(0)}ms p99=${median(p99s).toFixed(0)}ms ` +
            `(x${(p50 / baseline).toFixed(2)} of direct)${failed ? ` failed=${failed}` : ""}`
        })
        // Invalidation spread: edit, invalidate on one process, time until the others serve the new bytes.
        const path = `c${index}-edit.ts`
        writeFileSync(join(realmDir, path), "export const v = 0\n")
        await Promise.all(processes.map((p) => p.get(path)))
        const spreads: Array<number> = []
        for (let edit = 1; edit <= EDITS; edit++) {
          writeFileSync(join(realmDir, path), `export const v = ${edit}\n`)
          const [editor, ...peers] = processes
          const started = performance.now()
          await editor!.invalidate(path)
          const fresh = (await editor!.get(path)).hash
          await Promise.all(peers.map(async (peer) => {
            while ((await peer.get(path)).hash !== fresh && performance.now() - started < 5000) await sleep(5)
          }))
          spreads.push(performance.now() - started)
        }
        rows.push({
          name: `invalidation spread to ${P - 1} peers, ${configuration.name}`,
          value: `median=${median(spreads).toFixed(0)}ms max=${Math.max(...spreads).toFixed(0)}ms (${EDITS} edits)`
        })
      } finally {
        await Promise.all(processes.map((p) => p.stop()))
      }
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
