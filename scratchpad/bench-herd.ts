/**
 * The herd, side by side in one run: P processes x K concurrent gets x M cold modules, with the
 * coordinator on, off (shared L2 only), and with no L2 (L1 only per process).
 * Run: npx node scratchpad/bench-herd.ts   (DATABASE_URL as for the tests; HERD_P sets P, default 4)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { dropDatabase, freshDatabase } from "../test/support/database.ts"
import { percentile, startProcess } from "../test/support/fleet.ts"
import type { BenchRow } from "./bench-l1.ts"

const P = Number(process.env["HERD_P"] ?? 4)
const K = 25
const M = 20
const TRANSPILE_DELAY_MS = 20

const configurations = [
  { name: "coordinator on", env: {} },
  { name: "coordinator off (L2 only)", env: { COORDINATE: "false" } },
  { name: "no L2 (L1 only)", env: { STORE: "none" } }
] as const

export const benchHerd = async (): Promise<Array<BenchRow>> => {
  const url = freshDatabase("bench_herd")
  const realmDir = mkdtempSync(join(tmpdir(), "mtc-bench-herd-"))
  const modules = Array.from({ length: M }, (_, i) => {
    const path = `m${i}.ts`
    const classes = Array.from({ length: 20 }, (_, j) => `export class C${j}<T> { declare x: T; value = ${i} }\n`)
    writeFileSync(join(realmDir, path), classes.join(""))
    return path
  })
  const rows: Array<BenchRow> = []
  try {
    for (const [index, configuration] of configurations.entries()) {
      const processes = await Promise.all(Array.from({ length: P }, () =>
        startProcess({
          DATABASE_URL: url,
          REALM_DIR: realmDir,
          REALM_URL: `https://herd-${index}.test/`,
          TRANSPILE_DELAY_MS: String(TRANSPILE_DELAY_MS),
          ...configuration.env
        })))
      try {
        const reports = (await Promise.all(processes.map((p) => p.herd(modules, K)))).flat()
        const stats = await Promise.all(processes.map((p) => p.stats()))
        const ms = reports.map((r) => r.ms)
        const failed = reports.filter((r) => !r.ok).length
        rows.push({
          name: `herd P=${P} K=${K} M=${M}, ${configuration.name}`,
          value: `transpiles=${stats.reduce((n, s) => n + s.transpiles, 0)} p50=${percentile(ms, 50).toFixed(0)}ms ` +
            `p99=${percentile(ms, 99).toFixed(0)}ms${failed ? ` failed=${failed}` : ""}`
        })
      } finally {
        await Promise.all(processes.map((p) => p.stop()))
      }
    }
  } finally {
    dropDatabase(url)
    rmSync(realmDir, { recursive: true, force: true })
  }
  return rows
}

if (import.meta.main) {
  console.table(await benchHerd())
}
