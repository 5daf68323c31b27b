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
 * Run: npx node scratchpad/bench-cold-stores.ts   (DATABASE_URL as for the tests;
 * COLD_ROUNDS=3, COLD_STORES=memory,pglite,pg, BENCH_PROFILE=/tmp/prof)
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
type Store = "memory" | "pglite" | "pg"
const STORES = (process.env["COLD_STORES"] ?? "memory,pglite,pg").split(",") as Array<Store>

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
        binPath,
        "serve",
        realm,
        "--port",
        "0",
        "--store",
        store,
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
}

const coldRun = async (realm: string, store: Store, env: Record<string, string> = {}): Promise<Run> => {
  const dataDir = mkdtempSync(join(tmpdir(), "mtc-bench-cold-data-"))
  const { dropDatabase, freshDatabase } = await import("../test/support/database.ts")
  const databaseUrl = store === "pg" ? freshDatabase("bench_cold") : undefined
  try {
    const server = await startServe(realm, store, {
      ...(databaseUrl === undefined ? {} : { DATABASE_URL: databaseUrl }),
      ...env
    }, dataDir)
    try {
      const before = await snapshot(server, 1)
      const load = await loadGraphWithWrk(server.url, paths, { concurrency: CONCURRENCY, probe: "/_not_a_module.ts" })
      await drained(server.url)
      const after = await snapshot(server, 2)
      await sleep(200) // the profile, if any, is written
      return { ms: load.ms, outcomes: load.outcomes, delta: delta(before, after) }
    } finally {
      await server.stop()
    }
  } finally {
    if (env["MTC_BENCH_PROFILE_DIR"] === undefined) rmSync(dataDir, { recursive: true, force: true })
    if (databaseUrl !== undefined) dropDatabase(databaseUrl)
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
  if (url.includes("/src/server/")) return "src/server"
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
  try {
    const runs = new Map<Store, Array<Run>>(STORES.map((store) => [store, []]))
    // One unmeasured load first: the machine's caches, the first wrk and psql runs.
    await coldRun(realm, "memory")
    for (let round = 0; round < ROUNDS; round++) {
      for (const store of STORES) {
        const run = await coldRun(realm, store)
        runs.get(store)!.push(run)
        console.log(`round ${round + 1} ${store}: ${run.ms.toFixed(0)} ms ${JSON.stringify(run.outcomes)}`)
      }
    }
    const best = (store: Store) => runs.get(store)!.reduce((a, b) => (b.ms < a.ms ? b : a))
    const memory = STORES.includes("memory") ? best("memory").ms : undefined
    console.log(`\ncold load of ${MODULES} modules (4 KiB TS, native engine), c=${CONCURRENCY}, best of ${ROUNDS}:`)
    console.log("| store | cold load | vs memory | statements / cold module | round trips / cold module |")
    console.log("|---|---|---|---|---|")
    for (const store of STORES) {
      const run = best(store)
      const conns = Object.entries(run.delta.byConnection)
      const statements = store === "pglite"
        ? perModule(run.delta.pglite.statements)
        : conns.map(([name, c]) => `${name.replace("module-transpile-cache:", "")} ${perModule(c.statements)}`).join(", ") || "0"
      const trips = store === "pglite"
        ? `${perModule(run.delta.pglite.statements)} (${(run.delta.pglite.millis).toFixed(0)} ms in PGlite)`
        : conns.map(([name, c]) => `${name.replace("module-transpile-cache:", "")} ${perModule(c.roundTrips)}`).join(", ") || "0"
      const ratio = memory === undefined ? "" : `${(run.ms / memory).toFixed(2)}x`
      console.log(`| ${store} | ${run.ms.toFixed(0)} ms (all: ${runs.get(store)!.map((r) => r.ms.toFixed(0)).join(", ")}) | ${ratio} | ${statements} | ${trips} |`)
    }
    for (const store of STORES) {
      const run = best(store)
      if (store === "memory") continue
      console.log(`\n${store}: statements during the load, by text`)
      const texts = store === "pglite"
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
