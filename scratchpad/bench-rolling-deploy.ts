/**
 * A rolling deploy behind Debian's nginx under `wrk` load: 3 `serve` processes of the old
 * version on one Postgres, each replaced in turn by a process of the new version (SIGTERM,
 * wait for its exit, start the new one on the same port), optionally after pre-warming the
 * new version with `warm`.
 *
 * Prints: requests, failures (wrk's socket errors and non-2xx answers), worst latency and
 * answers over 1 s, the transpiles of each fleet (the old one's counted just before each
 * SIGTERM), what nginx logged (refused connects, and requests cut under it by an upstream, which
 * it retried elsewhere), each stop's time from SIGTERM to exit, the pre-warm's time, and the time from the
 * first new process's start until the new fleet holds every module in L1 ("fully warm").
 *
 * The version is the engine of the `standard` pipeline, which is part of the fingerprint:
 * `--old-engine native --new-engine babel` (the default) is a real version change; equal
 * engines are a restart of the same version.
 *
 * Run: npx node scratchpad/bench-rolling-deploy.ts [--old-engine native] [--new-engine babel]
 *        [--prewarm] [--modules 24] [--l1-bytes N] [--connections 8] [--verbose]
 * (DATABASE_URL as for the tests; needs nginx and wrk.)
 */
import { execFileSync, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { dropDatabase, freshDatabase } from "../test/support/database.ts"
import { stats } from "../test/support/load.ts"
import { startNginx } from "../test/support/nginx.ts"
import { freePort, makeRealm, removeRealms, request, runCli, type ServerProcess, sleep, startServer, stopAll } from "../test/support/server.ts"
import { hasWrk } from "./wrk-graph.ts"

const { values: flags } = parseArgs({
  options: {
    "old-engine": { type: "string", default: "native" },
    "new-engine": { type: "string", default: "babel" },
    prewarm: { type: "boolean", default: false },
    modules: { type: "string", default: "24" },
    "l1-bytes": { type: "string" },
    connections: { type: "string", default: "8" },
    verbose: { type: "boolean", default: false }
  }
})

const engines = ["native", "babel"]
const oldEngine = flags["old-engine"]
const newEngine = flags["new-engine"]
if (!engines.includes(oldEngine) || !engines.includes(newEngine)) throw new Error(`--old-engine/--new-engine: one of ${engines.join(", ")}`)
const moduleCount = Number(flags.modules)
const realmUrl = "https://realm.test/"

/** A module of about 6 KiB of TypeScript, importing the one before it. */
const moduleSource = (i: number): string => {
  const imports = i === 0 ? "" : `import { value${i - 1} } from "./m${i - 1}.ts"\n`
  const body = Array.from({ length: 150 }, (_, j) => `export const c${i}_${j}: number = ${i * 1000 + j}\n`).join("")
  return `${imports}export interface Shape${i} { readonly id: number }\nexport const value${i}: string = "m${i}"\n${body}`
}

/** wrk's script: the paths round robin, and a summary line of JSON at the end. */
const wrkScript = (paths: ReadonlyArray<string>): string => `
local paths = { ${paths.map((path) => `"${path}"`).join(", ")} }
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local over = 0
  local index = 1
  while true do
    local value, count = latency(index)
    if value == 0 or value == nil then break end
    if value > 1000000 then over = over + count end
    index = index + 1
  end
  io.write(string.format('RESULT {"requests":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"maxUs":%d,"p99Us":%d,"over1s":%d}\\n',
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency.max, latency:percentile(99), over))
end
`

interface WrkResult {
  readonly requests: number
  readonly connect: number
  readonly read: number
  readonly write: number
  readonly status: number
  readonly timeout: number
  readonly maxUs: number
  readonly p99Us: number
  readonly over1s: number
}

/** Starts wrk for a long time; `stop` interrupts it (SIGINT: it prints its summary) and parses that. */
const startWrk = (url: string, paths: ReadonlyArray<string>, connections: number, dir: string) => {
  const script = join(dir, "rotate.lua")
  writeFileSync(script, wrkScript(paths))
  const child = spawn("wrk", ["-t1", `-c${connections}`, "-d3600s", "--timeout", "5s", "-s", script, url], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString()
  })
  child.stderr.on("data", (chunk: Buffer) => {
    output += chunk.toString()
  })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  return {
    stop: async (): Promise<WrkResult> => {
      child.kill("SIGINT")
      await exited
      const line = /RESULT (\{.*\})/.exec(output)?.[1]
      if (line === undefined) throw new Error(`wrk printed no result:\n${output}`)
      return JSON.parse(line) as WrkResult
    }
  }
}

const main = async () => {
  if (!hasWrk()) throw new Error("wrk is not installed (apt-get install wrk)")
  const databaseUrl = freshDatabase("bench_rolling")
  const files: Record<string, string> = {}
  for (let i = 0; i < moduleCount; i++) files[`m${i}.ts`] = moduleSource(i)
  const realm = makeRealm(files, "mtc-bench-rolling-")
  const scratch = mkdtempSync(join(tmpdir(), "mtc-bench-rolling-wrk-"))
  const paths = Array.from({ length: moduleCount }, (_, i) => `/m${i}.ts`)
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    ...(flags["l1-bytes"] === undefined ? {} : { MTC_L1_MAX_BYTES: flags["l1-bytes"] })
  }
  const start = (port: number, engine: string) =>
    startServer({
      realmDir: realm,
      store: "pg",
      port,
      args: ["--realm-url", realmUrl, "--engine", engine, "--transpile-workers", "1"],
      env,
      timeoutMs: 180_000
    })
  try {
    const ports = [await freePort(), await freePort(), await freePort()]
    const fleet: Array<ServerProcess> = []
    for (const port of ports) fleet.push(await start(port, oldEngine))
    const nginx = await startNginx({ upstreams: ports })
    // The old fleet warm: every module through every process.
    for (const path of paths) await request(fleet[0]!.url, path)
    await Promise.all(fleet.slice(1).flatMap((server) => paths.map((path) => request(server.url, path))))

    const wrk = startWrk(`${nginx.url}/`, paths, Number(flags.connections), scratch)
    await sleep(3_000)

    let prewarmMs: number | undefined
    if (flags.prewarm) {
      const started = performance.now()
      const warm = await runCli(["warm", realm, "--store", "pg", "--realm-url", realmUrl, "--engine", newEngine], {
        env,
        timeoutMs: 300_000
      })
      if (warm.code !== 0) throw new Error(`warm failed: ${warm.stdout}${warm.stderr}`)
      prewarmMs = performance.now() - started
    }

    const oldTranspiles: Array<number> = []
    const stopMs: Array<number> = []
    const exits: Array<number | string | null> = []
    const rollStarted = performance.now()
    let firstNewStart: number | undefined
    for (let index = 0; index < fleet.length; index++) {
      const old = fleet[index]!
      oldTranspiles.push((await stats(old)).transpiles)
      const stopping = performance.now()
      exits.push(await old.stop("SIGTERM"))
      stopMs.push(performance.now() - stopping)
      firstNewStart ??= performance.now()
      fleet[index] = await start(old.port, newEngine)
      await sleep(2_000)
    }
    const rollMs = performance.now() - rollStarted
    // Fully warm: every new process holds every module in L1 (the load reaches them all).
    let warmMs: number | undefined
    const deadline = performance.now() + 60_000
    while (performance.now() < deadline) {
      const all = await Promise.all(fleet.map(stats))
      if (all.every((s) => s.l1Entries >= moduleCount)) {
        warmMs = performance.now() - (firstNewStart ?? rollStarted)
        break
      }
      await sleep(100)
    }
    await sleep(3_000)
    const load = await wrk.stop()
    const newStats = await Promise.all(fleet.map(stats))
    const errorLog = nginx.errorLog()
    await nginx.stop()
    // What nginx saw of the upstreams: refused connects (a process not listening: harmless, the
    // request goes to the next one) and connections cut under a request (retried elsewhere).
    const refusedConnects = (errorLog.match(/Connection refused/g) ?? []).length
    const cutLines = errorLog.split("\n").filter((line) => /prematurely closed|reset by peer|Broken pipe/.test(line))
    const cut = cutLines.length
    if (flags.verbose) process.stderr.write(`${cutLines.join("\n")}\n`)

    const failures = load.connect + load.read + load.write + load.status + load.timeout
    const rows: Array<[string, string]> = [
      ["versions", `${oldEngine} -> ${newEngine}${oldEngine === newEngine ? " (same fingerprint)" : " (new fingerprint)"}`],
      ["pre-warm", prewarmMs === undefined ? "no" : `yes, warm took ${(prewarmMs / 1000).toFixed(2)} s`],
      ["L1 bound", flags["l1-bytes"] ?? "default (64 MiB)"],
      ["requests", String(load.requests)],
      ["failures", `${failures} (connect ${load.connect}, read ${load.read}, write ${load.write}, non-2xx ${load.status}, timeout ${load.timeout})`],
      ["worst latency", `${(load.maxUs / 1000).toFixed(0)} ms (p99 ${(load.p99Us / 1000).toFixed(1)} ms), ${load.over1s} over 1 s`],
      ["transpiles, old fleet", `${oldTranspiles.reduce((a, b) => a + b, 0)} (${oldTranspiles.join(" + ")}) for ${moduleCount} modules`],
      ["transpiles, new fleet", `${newStats.reduce((a, s) => a + s.transpiles, 0)} (${newStats.map((s) => s.transpiles).join(" + ")}), preloaded ${newStats.map((s) => s.preloadedEntries).join("/")}`],
      ["nginx: refused connects / requests cut by an upstream (retried)", `${refusedConnects} / ${cut}`],
      ["SIGTERM to exit", `${stopMs.map((ms) => ms.toFixed(0)).join(", ")} ms; exit codes ${exits.join(", ")}`],
      ["roll (3 stops and starts)", `${(rollMs / 1000).toFixed(1)} s`],
      ["first new start to a fully warm new fleet", warmMs === undefined ? "not within 60 s" : `${(warmMs / 1000).toFixed(1)} s`]
    ]
    const load1 = execFileSync("cat", ["/proc/loadavg"], { encoding: "utf8" }).trim()
    process.stdout.write(`rolling deploy, ${moduleCount} modules, wrk -t1 -c${flags.connections} through nginx; load average ${load1}\n`)
    process.stdout.write("| measurement | value |\n|---|---|\n")
    for (const [name, value] of rows) process.stdout.write(`| ${name} | ${value} |\n`)
  } finally {
    await stopAll()
    dropDatabase(databaseUrl)
    removeRealms()
    rmSync(scratch, { recursive: true, force: true })
  }
}

await main()
