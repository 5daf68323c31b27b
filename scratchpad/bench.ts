/**
 * `npm run bench`: every benchmark side by side in one run, printed as one table.
 * `npm run bench -- --write` also writes scratchpad/RESULTS.md with the machine it ran on.
 */
import { execFileSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { cpus, totalmem } from "node:os"
import { benchBabel } from "./bench-babel.ts"
import { benchBounded } from "./bench-bounded.ts"
import { benchEngines } from "./bench-engines.ts"
import { benchFleetScale } from "./bench-fleet-scale.ts"
import { benchHerd } from "./bench-herd.ts"
import { benchHotPath } from "./bench-hot-path.ts"
import { benchHttp } from "./bench-http.ts"
import { type BenchRow, benchL1 } from "./bench-l1.ts"
import { benchL2 } from "./bench-l2.ts"
import { benchPipelines } from "./bench-pipelines.ts"
import { benchPooler } from "./bench-pooler.ts"
import { benchSources } from "./bench-sources.ts"
import { benchWake } from "./bench-wake.ts"
import { benchWorkers } from "./bench-workers.ts"

const sections: Array<[string, () => Promise<Array<BenchRow>>]> = [
  ["L1 hit vs Map", benchL1],
  ["L2 hit vs SELECT", benchL2],
  ["realm file reads", benchSources],
  ["herd", benchHerd],
  ["waiter wake-up", benchWake],
  ["HTTP warm hits", benchHttp],
  ["hot path vs bare node and vite (wrk)", benchHotPath],
  ["Babel", benchBabel],
  ["transpile workers", benchWorkers],
  ["fleet at scale", benchFleetScale],
  ["pipelines", benchPipelines],
  ["restart (preload)", () => import("./bench-preload.ts").then((bench) => bench.benchPreload())],
  ["bounded L2: wipe cost vs history", benchBounded],
  ["transaction pooler", benchPooler],
  ["standard engines", benchEngines]
]

const rows: Array<BenchRow & { section: string }> = []
for (const [section, run] of sections) {
  process.stderr.write(`running ${section}...\n`)
  for (const row of await run()) rows.push({ section, ...row })
}
console.table(rows)

if (process.argv.includes("--write")) {
  const postgres = (() => {
    try {
      return execFileSync("psql", [process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres", "-XAtc", "SHOW server_version"], {
        encoding: "utf8"
      }).trim()
    } catch {
      return "unknown"
    }
  })()
  const machine = `${cpus().length} x ${cpus()[0]?.model ?? "cpu"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
    `Node ${process.version}, PostgreSQL ${postgres}, ${new Date().toISOString().slice(0, 10)}`
  const table = rows.map((r) => `| ${r.section} | ${r.name} | ${r.value} |`).join("\n")
  writeFileSync(
    new URL("./RESULTS.md", import.meta.url),
    `# Benchmark results\n\nMeasured by \`npm run bench -- --write\` on: ${machine}.\n\n` +
      `Every row of a section was measured in the same run as its baseline; medians unless noted.\n\n` +
      `| section | measurement | value |\n|---|---|---|\n${table}\n`
  )
}
