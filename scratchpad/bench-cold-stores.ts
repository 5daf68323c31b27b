/**
 * A cold load on each store: fresh `serve` processes (empty L1 and L2) load the same graph of
 * 300 TypeScript modules of about 4 KiB (the native engine), 16 requests at a time over
 * keep-alive with `wrk` (scratchpad/wrk-graph.ts), on `--store memory`, `--store pglite` (a
 * fresh data directory) and `--store pg` (a fleet of one on a fresh database), interleaved
 * round after round; the best of the rounds is kept, with its ratio to memory.
 *
 * Each server runs with scratchpad/count-sql.ts preloaded: the SQL it sends during the load
 * (from the first request until its L2 writes drained) is counted per connection (the pool
 * and the fleet session on Postgres; PGlite calls on PGlite) and divided by the 300 modules.
 * With `BENCH_PROFILE=DIR`, one extra load per store is profiled (V8 CPU profile of the main
 * thread over the same window) and summarised: self time by component and the top functions.
 *
 * With `COLD_HERD=3`, instead: a cold herd of 3 fresh `serve` processes on one fresh Postgres
 * database, each loading the whole graph at the same time; the wall time and the transpiles
 * summed over the processes (exactly one per module is the claim).
 *
 * With `COLD_BEFORE=DIR` (a copy of the tree before a change, sharing node_modules), each
 * store but memory also runs from DIR, interleaved with this tree's: before and after side by side.
 *
 * With `COLD_L2=1` (and `COLD_STORES=pg`), each load is of L2 hits instead: a first server
 * fills L2, a second one with the preload off loads the graph from it.
 *
 * With `COLD_HITS=1`, instead: warm hits of one module during a cold load on PGlite, with
 * PGlite in its worker thread and on the event loop (`MTC_PGLITE_WORKER=0`).
 *
 * `vite` in COLD_STORES adds Vite's dev server (bench-preload.ts's baseline), fresh each round.
 * A store may carry environment variables for its server: `pg+MTC_FLEET_SOLO=0` is a variant of
 * `pg`, run beside it in the same rounds. `ACCEPT_ENCODING` among them is the `Accept-Encoding`
 * of the load's requests instead (`memory+ACCEPT_ENCODING=br`: a browser's cold load).
 *
 * Run: npx node scratchpad/bench-cold-stores.ts   (DATABASE_URL as for the tests;
 * COLD_ROUNDS=3, COLD_STORES=memory,pglite,pg,vite, BENCH_PROFILE=/tmp/prof, COLD_HERD=3)
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { hasWrk, loadGraphWithWrk } from "./wrk-graph.ts"

const MODULES = 300
const CONCURRENCY = 16
const ROUNDS = Number(process.env["COLD_ROUNDS"] ?? 3)
/** A store, run from this tree, or from the tree at `COLD_BEFORE` (`pglite@before`). */
type Store = string
type StoreKind = "memory" | "pglite" | "pg"
const BEFORE = process.env["COLD_BEFORE"]
const STORES: Array<Store> = (process.env["COLD_STORES"] ?? "memory,pglite,pg").split(",")
  .flatMap((store) => (BEFORE === undefined || store === "memory" || store === "vite" ? [store] : [`${store}@before`, store]))
const kindOf = (store: Store): StoreKind => store.split(/[@+]/)[0] as StoreKind
/** A variant's environment: `pg+MTC_FLEET_SOLO=0+MTC_L2_BATCH_READS=1` runs `pg` with those variables. */
const variantEnv = (store: Store): Record<string, string> =>
  Object.fromEntries(store.replace(/@before$/, "").split("+").slice(1).map((pair) => pair.split("=") as [string, string]))

/** A module of about 4 KiB of TypeScript importing two others (as in bench-preload.ts). */
const moduleSource = (i: number): string => {
  const lines = [
    `import { f0 as a${i} } from "./m${(i + 1) % MODULES}.ts"`,
    `import type { Shape } from "./m${(i + 2) % MODULES}.ts"`,
    `export interface Shape { readonly id: number; readonly name: string }`
  ]
  for (let j = 0; lines.join("\n").length < 4000; j++) {
    lines.push(`export function f${j}(input: Shape, n: number): { id: number; total: number } { return { id: input.id, total: n + ${j} + ${i} } }`)
  }
  lines.push(`export const uses = a${i}`)
  return `${lines.join("\n")}\n`
}
const paths = Array.from({ length: MODULES }, (_, i) => `/m${i}.ts`)

const binPath = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
const counterPath = fileURLToPath(new URL("./count-sql.ts", import.meta.url))
const adminToken = "bench-cold-admin-token"
const admin = { headers: { authorization: `Bearer ${adminToken}` } }

interface PgCounts {
  statements: number
  roundTrips: number
  messages: Record<string, number>
  parsed: Record<string, number>
}
interface Snapshot {
  sequence: number
  pg: Record<string, PgCounts>
  pglite: { statements: number; millis: number; texts: Record<string, number> }
}

interface Server {
  readonly url: string
  readonly child: ChildProcess
  readonly countFile: string
  readonly stop: () => Promise<void>
}

const startServe = (realm: string, store: Store, env: Record<string, string>, dataDir: string): Promise<Server> =>
  new Promise((resolve, reject) => {
    const countFile = join(dataDir, "counts.json")
    const child = spawn(
      process.execPath,
      [
        "--import",
        counterPath,
        "--max-old-space-size=512",
        store.endsWith("@before") && BEFORE !== undefined ? join(BEFORE, "src/bin.ts") : binPath,
        "serve",
        realm,
        "--port",
        "0",
        "--store",
        kindOf(store),
        "--data-dir",
        join(dataDir, "pglite")
      ],
      {
        env: { ...process.env, NO_COLOR: "1", MTC_ADMIN_TOKEN: adminToken, MTC_BENCH_COUNT_FILE: countFile, ...env },
        stdio: ["ignore", "pipe", "pipe"]
      }
    )
    let output = ""
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening on (http:\/\/[^\s/]+)\//.exec(output)
      if (match?.[1] === undefined) return
      child.stdout?.off("data", onData)
      const url = match[1]
      const poll = () =>
        http.get(`${url}/_cache/health`, (response) => {
          response.resume()
          if (response.statusCode === 200) {
            child.removeAllListeners("exit")
            resolve({
              url,
              child,
              countFile,
              stop: () =>
                new Promise((done) => {
                  child.once("exit", () => done())
                  child.kill("SIGTERM")
                })
            })
          } else setTimeout(poll, 50)
        }).on("error", () => setTimeout(poll, 50))
      poll()
    }
    child.stdout?.on("data", onData)
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.once("exit", (code) => reject(new Error(`server exited ${code}:\n${output}`)))
  })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Signals the server and waits for its counts of that sequence number. */
const snapshot = async (server: Server, sequence: number): Promise<Snapshot> => {
  server.child.kill("SIGUSR2")
  for (let i = 0; i < 200; i++) {
    if (existsSync(server.countFile)) {
      try {
        const read = JSON.parse(readFileSync(server.countFile, "utf8")) as Snapshot
        if (read.sequence === sequence) return read
      } catch {
        // being written
      }
    }
    await sleep(10)
  }
  throw new Error("no counts from the server")
}

/** Waits until the server's loads (their L2 writes included) are done. */
const drained = async (url: string) => {
  for (let i = 0; i < 200; i++) {
    const stats = await fetch(`${url}/_cache/stats`, admin).then((r) => r.json() as Promise<{ inFlight: number }>)
    if (stats.inFlight === 0) return
    await sleep(25)
  }
}

interface Delta {
  readonly byConnection: Record<string, { statements: number; roundTrips: number; parsed: Record<string, number> }>
  readonly pglite: { statements: number; millis: number; texts: Record<string, number> }
}
const minus = (a: Record<string, number>, b: Record<string, number> | undefined) =>
  Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - (b?.[k] ?? 0)]).filter(([, v]) => (v as number) > 0))
const delta = (before: Snapshot, after: Snapshot): Delta => ({
  byConnection: Object.fromEntries(Object.entries(after.pg).map(([name, counts]) => {
    const prior = before.pg[name]
    return [name, {
      statements: counts.statements - (prior?.statements ?? 0),
      roundTrips: counts.roundTrips - (prior?.roundTrips ?? 0),
      parsed: minus(counts.parsed, prior?.parsed)
    }]
  })),
  pglite: {
    statements: after.pglite.statements - before.pglite.statements,
    millis: after.pglite.millis - before.pglite.millis,
    texts: minus(after.pglite.texts, before.pglite.texts)
  }
})

interface Run {
  readonly ms: number
  readonly outcomes: Record<string, number>
  readonly delta: Delta
  /** CPU time of the load: the server process (every thread) and its Postgres backends, in ms. */
  readonly cpu?: { readonly server: number; readonly postgres: number }
}

/** CPU time (user + system) of a process so far, in ms, from /proc (0 when it cannot be read). */
const cpuMs = (pid: number | undefined): number => {
  if (pid === undefined) return 0
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ")
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return 0
  }
}

/** The Postgres backends of a database (they stay open a while after the load: the pool's idle timeout). */
const backendsOf = async (databaseUrl: string | undefined): Promise<Array<number>> => {
  if (databaseUrl === undefined) return []
  const { psql } = await import("../test/support/database.ts")
  const name = new URL(databaseUrl).pathname.slice(1)
  return psql(`SELECT pid FROM pg_stat_activity WHERE datname = '${name}'`).split("\n").filter(Boolean).map(Number)
}

/**
 * Vite's dev server (bench-preload.ts's baseline, a process of its own), started fresh, with
 * the graph loaded once cold: what a dev server that keeps nothing does on its first load.
 */
const viteRun = (realm: string): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(new URL("./bench-preload.ts", import.meta.url)), "--serve", "vite", realm], {
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.once("exit", (code) => reject(new Error(`vite exited ${code}:\n${output}`)))
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening on (http:\/\/[^\s/]+)\//.exec(output)
      if (match?.[1] === undefined) return
      const url = match[1]
      child.stdout?.removeAllListeners("data")
      const poll = () =>
        http.get(`${url}/_probe.ts`, (response) => {
          response.resume()
          if (response.statusCode !== 200) return setTimeout(poll, 50)
          void loadGraphWithWrk(url, paths, { concurrency: CONCURRENCY, probe: "/_not_a_module.ts" }).then((load) => {
            child.removeAllListeners("exit")
            child.once("exit", () => resolve({ ms: load.ms, outcomes: load.outcomes, delta: { byConnection: {}, pglite: { statements: 0, millis: 0, texts: {} } } }))
            child.kill("SIGTERM")
          }, reject)
        }).on("error", () => setTimeout(poll, 50))
      poll()
    })
  })

/**
 * L2 hits: a first server fills L2 (and stops), then a second one, with the preload off, loads
 * the graph from L2 (every module an L1 miss and an L2 hit): what the lock-first read path costs
 * a hit on Postgres.
 */
const l2HitRun = async (realm: string, store: Store): Promise<Run> => {
  const { dropDatabase, freshDatabase } = await import("../test/support/database.ts")
  const databaseUrl = freshDatabase("bench_l2_hits")
  const dataDir = mkdtempSync(join(tmpdir(), "mtc-bench-l2-data-"))
  try {
    const env = { DATABASE_URL: databaseUrl, MTC_L1_PRELOAD_BYTES: "0", MTC_WARMUP_REQUESTS: "0" }
    const filler = await startServe(realm, store, env, dataDir)
    await loadGraphWithWrk(filler.url, paths, { concurrency: CONCURRENCY, probe: "/_not_a_module.ts" })
    await drained(filler.url)
    await filler.stop()
    const server = await startServe(realm, store, env, dataDir)
    try {
      const before = await snapshot(server, 1)
      const accept = variantEnv(store)["ACCEPT_ENCODING"]
      const load = await loadGraphWithWrk(server.url, paths, {
        concurrency: CONCURRENCY,
        probe: "/_not_a_module.ts",
        ...(accept === undefined ? {} : { headers: { "accept-encoding": accept } })
      })
      await drained(server.url)
      const after = await snapshot(server, 2)
      return { ms: load.ms, outcomes: load.outcomes, delta: delta(before, after) }
    } finally {
      await server.stop()
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
    dropDatabase(databaseUrl)
  }
}

const coldRun = async (realm: string, store: Store, env: Record<string, string> = {}): Promise<Run> => {
  if (store === "vite") return viteRun(realm)
  if (process.env["COLD_L2"] !== undefined) return l2HitRun(realm, store)
  const dataDir = mkdtempSync(join(tmpdir(), "mtc-bench-cold-data-"))
  const { dropDatabase, freshDatabase } = await import("../test/support/database.ts")
  const databaseUrl = kindOf(store) === "pg" ? freshDatabase("bench_cold") : undefined
  try {
    const server = await startServe(realm, store, {
      ...(databaseUrl === undefined ? {} : { DATABASE_URL: databaseUrl }),
      ...variantEnv(store),
      ...env
    }, dataDir)
    try {
      const before = await snapshot(server, 1)
      const serverCpu = cpuMs(server.child.pid)
      // Backends open before the load (the fleet session; the pool's, if any yet) and their CPU so far.
      const backendsBefore = new Map((await backendsOf(databaseUrl)).map((pid) => [pid, cpuMs(pid)]))
      const load = await loadGraphWithWrk(server.url, paths, { concurrency: CONCURRENCY, probe: "/_not_a_module.ts" })
      await drained(server.url)
      const after = await snapshot(server, 2)
      const cpu = {
        server: cpuMs(server.child.pid) - serverCpu,
        postgres: (await backendsOf(databaseUrl)).reduce((sum, pid) => sum + cpuMs(pid) - (backendsBefore.get(pid) ?? 0), 0)
      }
      await sleep(200) // the profile, if any, is written
      return { ms: load.ms, outcomes: load.outcomes, delta: delta(before, after), cpu }
    } finally {
      await server.stop()
    }
  } finally {
    if (env["MTC_BENCH_PROFILE_DIR"] === undefined) rmSync(dataDir, { recursive: true, force: true })
    if (databaseUrl !== undefined) dropDatabase(databaseUrl)
  }
}

/**
 * A cold herd: `processes` fresh `serve` processes on one fresh Postgres database, each loaded
 * with the whole graph at once (one wrk per process, all started together). The wall time is
 * from the start until the last load finished; the transpiles are summed over the processes.
 */
const coldHerd = async (realm: string, processes: number, store: Store = "pg") => {
  const { dropDatabase, freshDatabase } = await import("../test/support/database.ts")
  const databaseUrl = freshDatabase("bench_cold_herd")
  const dirs = Array.from({ length: processes }, () => mkdtempSync(join(tmpdir(), "mtc-bench-herd-data-")))
  try {
    const servers = await Promise.all(dirs.map((dir) => startServe(realm, store, { DATABASE_URL: databaseUrl, ...variantEnv(store) }, dir)))
    try {
      const started = performance.now()
      const loads = await Promise.all(
        servers.map((server) => loadGraphWithWrk(server.url, paths, { concurrency: CONCURRENCY, probe: "/_not_a_module.ts" }))
      )
      const wall = performance.now() - started
      await Promise.all(servers.map((server) => drained(server.url)))
      const stats = await Promise.all(servers.map((server) =>
        fetch(`${server.url}/_cache/stats`, admin).then((r) => r.json() as Promise<{ transpiles: number; fallbacks?: unknown }>)
      ))
      return {
        wall,
        loads: loads.map((load) => load.ms),
        transpiles: stats.reduce((sum, s) => sum + s.transpiles, 0),
        outcomes: loads.map((load) => load.outcomes)
      }
    } finally {
      await Promise.all(servers.map((server) => server.stop()))
    }
  } finally {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
    dropDatabase(databaseUrl)
  }
}

/**
 * Warm hits during a cold load on PGlite: one warm module (outside the graph) is requested one
 * at a time over keep-alive while wrk loads the graph cold; the hits' latencies, p50 and p99.
 */
const hitsDuringColdLoad = async (realm: string, env: Record<string, string>) => {
  const dataDir = mkdtempSync(join(tmpdir(), "mtc-bench-hits-data-"))
  try {
    const server = await startServe(realm, "pglite", env, dataDir)
    try {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      const get = (path: string) =>
        new Promise<number>((resolve, reject) => {
          const started = performance.now()
          http.get(`${server.url}${path}`, { agent }, (response) => {
            response.resume()
            response.on("end", () => resolve(performance.now() - started))
          }).on("error", reject)
        })
      for (let i = 0; i < 50; i++) await get("/warm.ts")
      const latencies: Array<number> = []
      let loading = true
      const hits = (async () => {
        while (loading) latencies.push(await get("/warm.ts"))
      })()
      const load = await loadGraphWithWrk(server.url, paths, { concurrency: CONCURRENCY, probe: "/_not_a_module.ts" })
      loading = false
      await hits
      agent.destroy()
      const sorted = [...latencies].sort((a, b) => a - b)
      const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN
      return { loadMs: load.ms, hits: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? Number.NaN }
    } finally {
      await server.stop()
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}

// -----------------------------------------------------------------------------
// Profile summary
// -----------------------------------------------------------------------------

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: Array<number>
}
interface Profile {
  nodes: Array<ProfileNode>
  samples: Array<number>
  timeDeltas: Array<number>
}

const component = (frame: ProfileNode["callFrame"]): string => {
  const url = frame.url
  if (url.startsWith("wasm://")) return "pglite (WASM Postgres)"
  if (url === "") return frame.functionName.startsWith("(") ? frame.functionName : "(native)"
  if (url.includes("pglite")) return "pglite (WASM Postgres)"
  if (url.includes("@effect/sql-pg")) return "@effect/sql-pg"
  if (url.includes("node_modules/effect/")) return "effect"
  if (url.includes("/src/store/")) return "src/store"
  if (url.includes("/src/fleet/")) return "src/fleet"
  if (url.includes("/src/cache/")) return "src/cache"
  if (url.includes("/src/http/")) return "src/http"
  if (url.includes("/src/realm/")) return "src/realm"
  if (url.includes("/src/")) return "src/other"
  if (url.startsWith("node:")) return "node internals"
  if (url.includes("node_modules/")) return `other modules`
  return "other"
}

const summarise = (file: string) => {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const self = new Map<number, number>()
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))
  const total = [...self.values()].reduce((a, b) => a + b, 0)
  const components = new Map<string, number>()
  const functions = new Map<string, number>()
  for (const [id, micros] of self) {
    const frame = byId.get(id)!.callFrame
    const c = component(frame)
    components.set(c, (components.get(c) ?? 0) + micros)
    const name = `${frame.functionName || "(anonymous)"} ${frame.url.replace(/.*node_modules\//, "").replace(/.*\/src\//, "src/")}:${frame.lineNumber + 1}`
    functions.set(name, (functions.get(name) ?? 0) + micros)
  }
  const pct = (micros: number) => `${(micros / 1000).toFixed(0)} ms (${((100 * micros) / total).toFixed(1)}%)`
  return {
    totalMs: total / 1000,
    components: [...components].sort((a, b) => b[1] - a[1]).map(([name, micros]) => `${name}: ${pct(micros)}`),
    top: [...functions].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([name, micros]) => `${pct(micros)} ${name}`)
  }
}

// -----------------------------------------------------------------------------

const perModule = (n: number) => (n / MODULES).toFixed(2)

const main = async () => {
  if (!hasWrk()) throw new Error("wrk is not installed")
  const realm = mkdtempSync(join(tmpdir(), "mtc-bench-cold-"))
  for (let i = 0; i < MODULES; i++) writeFileSync(join(realm, `m${i}.ts`), moduleSource(i))
  writeFileSync(join(realm, "_probe.ts"), "export {}\n")
  try {
    if (process.env["COLD_HITS"] !== undefined) {
      writeFileSync(join(realm, "warm.ts"), moduleSource(0).replace(/\.\/m\d+\.ts/g, "./warm-dep.ts"))
      for (let round = 0; round < ROUNDS; round++) {
        for (const [name, env] of [["PGlite in its worker", {}], ["PGlite on the event loop", { MTC_PGLITE_WORKER: "0" }]] as const) {
          const r = await hitsDuringColdLoad(realm, env)
          console.log(`round ${round + 1} ${name}: cold load ${r.loadMs.toFixed(0)} ms; ${r.hits} warm hits meanwhile, p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, max ${r.max.toFixed(1)} ms`)
        }
      }
      return
    }
    const herd = Number(process.env["COLD_HERD"] ?? 0)
    if (herd > 0) {
      // `pg` (and `pg@before` with COLD_BEFORE, and any `pg+VAR=value` variant in COLD_STORES), interleaved.
      const herdStores = STORES.filter((store) => kindOf(store) === "pg")
      const walls = new Map<Store, Array<number>>(herdStores.map((store) => [store, []]))
      for (let round = 0; round < ROUNDS; round++) {
        for (const store of herdStores) {
          const result = await coldHerd(realm, herd, store)
          walls.get(store)!.push(result.wall)
          console.log(`herd round ${round + 1} ${store}: ${herd} processes on Postgres, ${result.wall.toFixed(0)} ms wall (loads ${result.loads.map((ms) => ms.toFixed(0)).join(", ")}), ${result.transpiles} transpiles for ${MODULES} modules ${JSON.stringify(result.outcomes)}`)
        }
      }
      for (const [store, all] of walls) {
        const sorted = [...all].sort((a, b) => a - b)
        console.log(`cold herd of ${herd} processes, ${store}: best ${sorted[0]!.toFixed(0)} ms, median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} ms (all: ${all.map((ms) => ms.toFixed(0)).join(", ")})`)
      }
      return
    }
    const runs = new Map<Store, Array<Run>>(STORES.map((store) => [store, []]))
    // One unmeasured load first: the machine's caches, the first wrk and psql runs.
    await coldRun(realm, "memory")
    for (let round = 0; round < ROUNDS; round++) {
      for (const store of STORES) {
        const run = await coldRun(realm, store)
        runs.get(store)!.push(run)
        const cpu = run.cpu === undefined ? "" : ` cpu: server ${run.cpu.server.toFixed(0)} ms, postgres ${run.cpu.postgres.toFixed(0)} ms`
        console.log(`round ${round + 1} ${store}: ${run.ms.toFixed(0)} ms${cpu} ${JSON.stringify(run.outcomes)}`)
      }
    }
    const best = (store: Store) => runs.get(store)!.reduce((a, b) => (b.ms < a.ms ? b : a))
    const memory = STORES.includes("memory") ? best("memory").ms : undefined
    // Medians resist a shared machine better than the best: each store's median load, its ratio to
    // memory's median, and its median CPU (the server's threads, its Postgres backends).
    const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN
    const memoryMedian = STORES.includes("memory") ? median(runs.get("memory")!.map((r) => r.ms)) : undefined
    console.log(`\nmedians of ${ROUNDS} rounds:`)
    console.log("| store | cold load | vs memory | CPU: server | CPU: Postgres |")
    console.log("|---|---|---|---|---|")
    for (const store of STORES) {
      const all = runs.get(store)!
      const ms = median(all.map((r) => r.ms))
      const ratio = memoryMedian === undefined ? "" : `${(ms / memoryMedian).toFixed(2)}x`
      const cpu = (pick: (r: Run) => number | undefined) => {
        const values = all.map(pick).filter((v): v is number => v !== undefined)
        return values.length === 0 ? "" : `${median(values).toFixed(0)} ms`
      }
      console.log(`| ${store} | ${ms.toFixed(0)} ms | ${ratio} | ${cpu((r) => r.cpu?.server)} | ${cpu((r) => r.cpu?.postgres)} |`)
    }
    console.log(`\ncold load of ${MODULES} modules (4 KiB TS, native engine), c=${CONCURRENCY}, best of ${ROUNDS}:`)
    console.log("| store | cold load | vs memory | statements / cold module | round trips / cold module |")
    console.log("|---|---|---|---|---|")
    for (const store of STORES) {
      const run = best(store)
      const conns = Object.entries(run.delta.byConnection)
      const statements = kindOf(store) === "pglite"
        ? perModule(run.delta.pglite.statements)
        : conns.map(([name, c]) => `${name.replace("module-transpile-cache:", "")} ${perModule(c.statements)}`).join(", ") || "0"
      const trips = kindOf(store) === "pglite"
        ? `${perModule(run.delta.pglite.statements)} (${(run.delta.pglite.millis).toFixed(0)} ms in PGlite)`
        : conns.map(([name, c]) => `${name.replace("module-transpile-cache:", "")} ${perModule(c.roundTrips)}`).join(", ") || "0"
      const ratio = memory === undefined ? "" : `${(run.ms / memory).toFixed(2)}x`
      console.log(`| ${store} | ${run.ms.toFixed(0)} ms (all: ${runs.get(store)!.map((r) => r.ms.toFixed(0)).join(", ")}) | ${ratio} | ${statements} | ${trips} |`)
    }
    for (const store of STORES) {
      const run = best(store)
      if (store === "memory" || store === "vite") continue
      console.log(`\n${store}: statements during the load, by text`)
      const texts = kindOf(store) === "pglite"
        ? run.delta.pglite.texts
        : Object.assign({}, ...Object.entries(run.delta.byConnection).map(([name, c]) =>
          Object.fromEntries(Object.entries(c.parsed).map(([text, n]) => [`[${name.replace("module-transpile-cache:", "")}] ${text}`, n]))
        )) as Record<string, number>
      for (const [text, n] of Object.entries(texts).sort((a, b) => b[1] - a[1])) console.log(`  ${n}\t${text}`)
    }

    const profileDir = process.env["BENCH_PROFILE"]
    if (profileDir !== undefined) {
      mkdirSync(profileDir, { recursive: true })
      for (const store of STORES) {
        const dir = join(profileDir, store)
        rmSync(dir, { recursive: true, force: true })
        mkdirSync(dir, { recursive: true })
        const run = await coldRun(realm, store, { MTC_BENCH_PROFILE_DIR: dir })
        const file = readdirSync(dir).find((name) => name.endsWith(".cpuprofile"))
        if (file === undefined) {
          console.log(`${store}: no profile written`)
          continue
        }
        const summary = summarise(join(dir, file))
        console.log(`\nprofile of a cold load on ${store} (${run.ms.toFixed(0)} ms, main thread sampled ${summary.totalMs.toFixed(0)} ms):`)
        for (const line of summary.components) console.log(`  ${line}`)
        console.log("  top functions (self time):")
        for (const line of summary.top) console.log(`    ${line}`)
      }
    }
  } finally {
    rmSync(realm, { recursive: true, force: true })
  }
}

await main()
