/**
 * Source maps (issue 35), side by side in one run, every rate a median of ROUNDS:
 *
 * 1. **L2 bytes per module** with maps and without: the demo realm with Ember's runtime
 *    vendored (`--pipeline ember`, real code), every module requested once on a fresh PGlite
 *    store; `l2Bytes / l2Rows` from `/_cache/stats` (bodies, their br and gzip forms, maps), and
 *    the bytes of the bodies and of the maps as served.
 * 2. **Warm hits** (`wrk -t1 -c32 -d4s`) of a 12 KiB TypeScript module: `serve` with maps and
 *    without, the module's map itself, and stock Vite's dev server (`vite-dev-server.ts
 *    --stock`), which inlines its map into every answer.
 *
 * The cold load with maps on and off, and against stock Vite, is bench-cold-stores.ts's, with
 * variants: `COLD_STORES=memory,memory+MTC_SOURCE_MAPS=false,pglite,pglite+MTC_SOURCE_MAPS=false,vite`.
 *
 * Needs `wrk` (`apt-get install wrk`); says so and stops without it.
 * Run: npx node scratchpad/bench-source-maps.ts (BENCH_ROUNDS=3)
 */
import type { ChildProcess } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { copyDemoRealm } from "../test/support/demo-vendor.ts"
import { request, startServer, stopAll } from "../test/support/server.ts"
import { median } from "./bench-l1.ts"
import { filesOf, get, spawnListening, stop, twelveKiB } from "./bench-hot-path.ts"
import { hasWrk, wrkRate } from "./wrk-graph.ts"

const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 3)
const WRK_ARGS = ["-t1", "-c32", "-d4s"]

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`

/** The L2 figures of the realm loaded once on a fresh PGlite store, maps on or off. */
const l2Figures = async (realm: string, work: string, maps: boolean) => {
  const dataDir = join(work, `store-${maps ? "on" : "off"}`)
  const server = await startServer({
    realmDir: realm,
    store: "pglite",
    args: ["--pipeline", "ember", "--data-dir", dataDir],
    env: { MTC_SOURCE_MAPS: String(maps) }
  })
  let modules = 0
  let bodyBytes = 0
  let mapBytes = 0
  for (const p of filesOf(realm)) {
    const answer = await request(server.url, p)
    if (answer.status !== 200 || answer.headers["x-module-cache"] === undefined) continue
    modules++
    bodyBytes += answer.bytes.byteLength
    if (maps) {
      const name = /\n\/\/# sourceMappingURL=(\S+)$/.exec(answer.body)?.[1]
      if (name !== undefined) {
        const url = new URL(name, `${server.url}${p}`)
        mapBytes += (await request(server.url, url.pathname + url.search)).bytes.byteLength
      }
    }
  }
  // L2 writes are held and batched: wait until every row is written.
  let stats: { l2Rows?: number; l2Bytes?: number } = {}
  for (let i = 0; i < 100; i++) {
    const body = JSON.parse((await request(server.url, "/_cache/stats")).body) as { realms?: Record<string, { l2Rows?: number; l2Bytes?: number }> }
    stats = body.realms?.["/"] ?? {}
    if ((stats.l2Rows ?? 0) >= modules) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  await stopAll()
  return { modules, bodyBytes, mapBytes, l2Rows: stats.l2Rows ?? 0, l2Bytes: stats.l2Bytes ?? 0 }
}

const main = async () => {
  if (!hasWrk()) {
    console.log("bench-source-maps: needs wrk (apt-get install wrk); not run")
    return
  }
  const work = mkdtempSync(join(tmpdir(), "mtc-bench-source-maps-"))
  const realm = join(work, "realm")
  copyDemoRealm(realm)
  const children: Array<ChildProcess> = []
  try {
    console.log("1. L2 bytes per module, the demo realm with Ember's runtime on PGlite (--pipeline ember):")
    console.log("| maps | modules | L2 rows | L2 bytes per row | body per module | map per module |")
    console.log("|---|---|---|---|---|---|")
    const figures = []
    for (const maps of [false, true]) {
      const f = await l2Figures(realm, work, maps)
      figures.push(f)
      console.log(`| ${maps ? "on" : "off"} | ${f.modules} | ${f.l2Rows} | ${kib(f.l2Bytes / Math.max(1, f.l2Rows))} | ${kib(f.bodyBytes / f.modules)} | ${maps ? kib(f.mapBytes / f.modules) : "-"} |`)
    }
    console.log(`L2 bytes per row, on / off: ${((figures[1]!.l2Bytes / figures[1]!.l2Rows) / (figures[0]!.l2Bytes / figures[0]!.l2Rows)).toFixed(2)}x`)

    // 2. Warm hits.
    const hot = join(work, "hot")
    mkdirSync(hot)
    writeFileSync(join(hot, "twelve.ts"), twelveKiB())
    // Fresh servers each round, started and measured in alternating order: one process's rate
    // varies by more than the comment's few bytes could (its JIT, where its threads land).
    const vite = await spawnListening("./vite-dev-server.ts", [hot, "--stock"])
    children.push(vite.child)
    const viteBody = (await request(vite.url, "/twelve.ts")).body
    let onBody = ""
    const names = ["serve, maps on", "serve, maps off", "serve, the module's map", "stock vite dev (map inline)"]
    const rates = new Map<string, Array<number>>(names.map((name) => [name, []]))
    for (let round = 0; round < ROUNDS; round++) {
      const on = await startServer({ realmDir: hot, store: "memory" })
      const off = await startServer({ realmDir: hot, store: "memory", env: { MTC_SOURCE_MAPS: "false" } })
      onBody = (await request(on.url, "/twelve.ts")).body
      const mapName = /\n\/\/# sourceMappingURL=(\S+)$/.exec(onBody)?.[1] ?? "twelve.ts.map"
      const targets = [
        { name: "serve, maps on", url: `${on.url}/twelve.ts` },
        { name: "serve, maps off", url: `${off.url}/twelve.ts` },
        { name: "serve, the module's map", url: `${on.url}/${mapName}` },
        { name: "stock vite dev (map inline)", url: `${vite.url}/twelve.ts` }
      ]
      // warm each (the fast path answers from the second hit), then measure
      for (const target of targets) for (let i = 0; i < 3; i++) await get(target.url)
      for (const target of round % 2 === 0 ? targets : [...targets].reverse()) {
        rates.get(target.name)!.push(wrkRate(target.url, WRK_ARGS))
      }
      await stopAll()
    }
    const rate = (name: string) => median(rates.get(name)!)
    console.log(`\n2. warm hits of a 12 KiB module (wrk ${WRK_ARGS.join(" ")}, median of ${ROUNDS}); bodies: serve ${kib(Buffer.byteLength(onBody))}, vite ${kib(Buffer.byteLength(viteBody))}:`)
    console.log("| target | requests/s |")
    console.log("|---|---|")
    for (const name of names) console.log(`| ${name} | ${rate(name).toFixed(0)} (all: ${rates.get(name)!.map((r) => r.toFixed(0)).join(", ")}) |`)
    // Each round's on and off ran beside each other: the median of their ratios pairs them.
    const paired = median(rates.get("serve, maps on")!.map((on, i) => on / rates.get("serve, maps off")![i]!))
    console.log(`- maps on / maps off: ${(rate("serve, maps on") / rate("serve, maps off")).toFixed(3)}x of the medians, ${paired.toFixed(3)}x the median of the rounds' ratios (goal at least 0.97x)`)
    console.log(`- serve, maps on / stock vite: ${(rate("serve, maps on") / rate("stock vite dev (map inline)")).toFixed(2)}x`)
  } finally {
    for (const child of children) await stop(child)
    await stopAll()
    rmSync(work, { recursive: true, force: true })
  }
}

await main()
