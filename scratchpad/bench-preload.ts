/**
 * Restarts: the time to load a graph of 300 TypeScript modules of about 4 KiB, 16 requests
 * at a time over keep-alive, from a `serve` process that was just (re)started, side by side
 * in one run. The load generator is `wrk` (scratchpad/wrk-graph.ts): a Node client on the
 * same two cores took as long as the server's whole answer and hid the difference.
 *
 * - on PGlite and on Postgres: a fresh server (empty L2: Babel transpiles everything), a
 *   restart with the L1 preload and the JIT warm-up (the defaults: see src/http/JitWarmup.ts),
 *   one with the warm-up off (`MTC_WARMUP_REQUESTS=0`), and restarts with the preload off
 *   (`MTC_L1_PRELOAD_BYTES=0`: every module is an L2 read on the request path), with the misses'
 *   L2 reads batched (`MTC_L2_BATCH_READS=1`: one `readMany` for the misses that arrive
 *   together) and not (`MTC_L2_BATCH_READS=0`: one `read` each), side by side;
 * - against bare `node:http` servers that re-transpile every module on each request with the
 *   fastest transforms installed here (esbuild's and oxc's `transformSync`, TypeScript strip
 *   only), and against Vite's dev server, also restarted before each load: what a dev server
 *   that keeps nothing does. "Fastest re-transform" is the fastest of these;
 * - against the floor: a bare `node:http` process that transformed everything before it
 *   listened and answers from memory, doing no work per request (what any Node server's
 *   first load after a start costs, with V8 not yet having compiled its serving path).
 *
 * Every server is a process of its own, restarted before each load; the configurations take
 * turns, round after round, so that a change in the machine's load hits them all alike.
 * "start" is the time from spawn until the server answers (polled every 50 ms; for `serve` it
 * includes the preload and the warm-up, which are also shown apart). Baselines are probed with a module outside the graph.
 * Run: npx node scratchpad/bench-preload.ts   (DATABASE_URL as for the tests)
 * The same file is the baseline server: npx node scratchpad/bench-preload.ts --serve esbuild|oxc DIR
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { type GraphLoad, hasWrk, loadGraphWithWrk } from "./wrk-graph.ts"

const MODULES = 300
const CONCURRENCY = 16
/** The baseline that does no work per request: what any Node server's first load costs. */
const floorName = "bare node:http answering from memory (the floor)"
const ROUNDS = Number(process.env["PRELOAD_ROUNDS"] ?? 5)

type Engine = "esbuild" | "oxc" | "vite" | "static"

// -----------------------------------------------------------------------------
// The baseline server (a child process of the bench)
// -----------------------------------------------------------------------------

const serveBaseline = async (engine: Engine, dir: string) => {
  if (engine === "vite") {
    // Vite's own dev server (installed with vitest): it transforms TypeScript with oxc and
    // rewrites imports, keeping nothing across restarts.
    const vite = await import("vite")
    const server = await vite.createServer({
      root: dir,
      configFile: false,
      logLevel: "silent",
      server: { host: "127.0.0.1", port: 0, strictPort: false, hmr: false, watch: null },
      optimizeDeps: { noDiscovery: true, include: [] }
    })
    await server.listen()
    const address = server.httpServer?.address()
    console.log(`listening on http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/`)
    process.on("SIGTERM", () => void server.close().then(() => process.exit(0)))
    return
  }
  const transform: (source: string, file: string) => string = engine === "esbuild"
    ? await import("esbuild").then((esbuild) => (source: string, file: string) =>
      esbuild.transformSync(source, { loader: "ts", sourcefile: file, format: "esm" }).code
    )
    : await import("oxc-transform").then((oxc) => (source: string, file: string) =>
      oxc.transformSync(file, source, { lang: "ts" }).code
    )
  // "static": the floor of any Node server, every body transformed before listening and
  // answered from memory (nothing is read or transformed per request).
  const answered = new Map<string, Buffer>()
  if (engine === "static") {
    for (const file of readdirSync(dir)) answered.set(`/${file}`, Buffer.from(transform(readFileSync(join(dir, file), "utf8"), file)))
  }
  const server = http.createServer((request, response) => {
    const ready = answered.get(request.url ?? "")
    if (ready !== undefined) {
      response.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "content-length": ready.length })
      response.end(ready)
      return
    }
    const path = decodeURIComponent((request.url ?? "/").split("?")[0]!)
    if (path.includes("..")) {
      response.writeHead(400).end()
      return
    }
    let source: string
    try {
      source = readFileSync(join(dir, path), "utf8")
    } catch {
      response.writeHead(404).end()
      return
    }
    const body = Buffer.from(transform(source, path))
    response.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "content-length": body.length })
    response.end(body)
  })
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    console.log(`listening on http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/`)
  })
  process.on("SIGTERM", () => server.close(() => process.exit(0)))
}

// -----------------------------------------------------------------------------
// The bench
// -----------------------------------------------------------------------------

/** A module of about 4 KiB of TypeScript importing two others. */
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

type LoadResult = GraphLoad

/** GETs every module once, `CONCURRENCY` at a time over keep-alive, with wrk; the time of the whole load. */
const loadGraph = (base: string): Promise<LoadResult> =>
  loadGraphWithWrk(base, paths, { concurrency: CONCURRENCY, probe: "/_not_a_module.ts" })

interface Started {
  readonly url: string
  readonly startMs: number
  readonly stop: () => Promise<void>
}

/** Spawns a server process and waits until it answers; `startMs` is spawn to first answer. */
const startProcess = (args: ReadonlyArray<string>, env: Record<string, string>, probe: string): Promise<Started> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    const child: ChildProcess = spawn(process.execPath, args, {
      env: { ...process.env, NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening on (http:\/\/[^\s/]+)\//.exec(output)
      if (match?.[1] === undefined) return
      child.stdout?.off("data", onData)
      const url = match[1]
      const poll = () =>
        http.get(`${url}${probe}`, (response) => {
          response.resume()
          if (response.statusCode === 200) {
            resolve({
              url,
              startMs: performance.now() - started,
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

const binPath = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
const selfPath = fileURLToPath(import.meta.url)


/** The admin token the bench's servers get, for `/_cache/stats`. */
const adminToken = "bench-preload-admin-token"
const admin = { headers: { authorization: `Bearer ${adminToken}` } }

const startServe = (realm: string, store: "pg" | "pglite", env: Record<string, string>, dataDir: string) =>
  startProcess(
    ["--max-old-space-size=512", binPath, "serve", realm, "--port", "0", "--store", store, "--data-dir", dataDir],
    { MTC_ADMIN_TOKEN: adminToken, ...env },
    "/_cache/health"
  )

interface Stats {
  readonly preloadMillis: number
  readonly warmupMillis?: number
}
const stats = (url: string): Promise<Stats> => fetch(`${url}/_cache/stats`, admin).then((r) => r.json() as Promise<Stats>)

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const fmt = (ms: number) => `${ms.toFixed(0)} ms`

export const benchPreload = async (): Promise<Array<{ name: string; value: string }>> => {
  if (!hasWrk()) {
    process.stderr.write("bench-preload: wrk not found, skipping (apt-get install wrk)\n")
    return [{ name: "restart (preload)", value: "skipped: wrk is not installed (apt-get install wrk)" }]
  }
  const { dropDatabase, freshDatabase } = await import("../test/support/database.ts")
  const realm = mkdtempSync(join(tmpdir(), "mtc-bench-preload-"))
  for (let i = 0; i < MODULES; i++) writeFileSync(join(realm, `m${i}.ts`), moduleSource(i))
  const dataDir = mkdtempSync(join(tmpdir(), "mtc-bench-preload-data-"))
  const databaseUrl = freshDatabase("bench_preload")
  const envOf = (store: "pg" | "pglite"): Record<string, string> => store === "pg" ? { DATABASE_URL: databaseUrl } : {}
  const rows: Array<{ name: string; value: string }> = []
  try {
    // Fresh servers: Babel transpiles everything into L2 (one run each: it needs an empty L2).
    const cold = new Map<string, LoadResult>()
    for (const store of ["pglite", "pg"] as const) {
      const fresh = await startServe(realm, store, envOf(store), join(dataDir, store))
      const load = await loadGraph(fresh.url)
      // Let its L2 writes commit before it stops (the drain waits for them too).
      for (let i = 0; i < 100 && (await fetch(`${fresh.url}/_cache/stats`, admin).then((r) => r.json() as Promise<{ inFlight: number }>)).inFlight > 0; i++) {
        await new Promise((r) => setTimeout(r, 50))
      }
      await fresh.stop()
      cold.set(store, load)
    }

    // Then every configuration once per round, interleaved, each on a freshly started process.
    interface Configuration {
      readonly name: string
      readonly start: () => Promise<Started>
      readonly ours: boolean
    }
    const configurations: Array<Configuration> = [
      ...(["esbuild", "oxc", "vite", "static"] as const).map((engine): Configuration => ({
        name: engine === "vite"
          ? "Vite 8 dev server"
          : engine === "static"
          ? floorName
          : `${engine} transformSync server`,
        start: () => startProcess([selfPath, "--serve", engine, realm], {}, "/_probe.ts"),
        ours: false
      })),
      ...(["pglite", "pg"] as const).flatMap((store) =>
        ([["on", {}], ["on, JIT warm-up off", { MTC_WARMUP_REQUESTS: "0" }], ...(["off", "on"] as const).map((batch) =>
          [`off, batched L2 reads ${batch}`, { MTC_L1_PRELOAD_BYTES: "0", MTC_L2_BATCH_READS: batch === "on" ? "1" : "0" }] as const
        )] as const).map(([preload, env]): Configuration => ({
          name: `${store}: restart, preload ${preload}`,
          start: () => startServe(realm, store, { ...envOf(store), ...env }, join(dataDir, store)),
          ours: true
        }))
      )
    ]
    writeFileSync(join(realm, "_probe.ts"), "export {}\n")
    const results = new Map<
      string,
      {
        loads: Array<number>
        secondLoads: Array<number>
        starts: Array<number>
        preloads: Array<number>
        warmups: Array<number>
        outcomes: Record<string, number>
      }
    >()
    for (let round = 0; round < ROUNDS; round++) {
      for (const configuration of configurations) {
        const server = await configuration.start()
        const load = await loadGraph(server.url)
        const { preloadMillis, warmupMillis = 0 } = configuration.ours ? await stats(server.url) : { preloadMillis: 0 }
        // A baseline's second load on the same process: its serving path compiled by V8, as ours is by the warm-up.
        const second = configuration.ours ? undefined : await loadGraph(server.url)
        await server.stop()
        const result = results.get(configuration.name) ?? { loads: [], secondLoads: [], starts: [], preloads: [], warmups: [], outcomes: {} }
        result.loads.push(load.ms)
        if (second !== undefined) result.secondLoads.push(second.ms)
        result.starts.push(server.startMs)
        result.preloads.push(preloadMillis)
        result.warmups.push(warmupMillis)
        result.outcomes = load.outcomes
        results.set(configuration.name, result)
      }
    }

    const baselines = configurations.filter((c) => !c.ours && c.name !== floorName).map((c) => ({ name: c.name, load: median(results.get(c.name)!.loads) }))
    const fastest = baselines.reduce((a, b) => (b.load < a.load ? b : a))
    for (const configuration of configurations) {
      const r = results.get(configuration.name)!
      const extra = configuration.ours ? `; preload ${fmt(median(r.preloads))}, JIT warm-up ${fmt(median(r.warmups))}` : ""
      rows.push({
        name: `${configuration.name}: load of ${MODULES} modules, c=${CONCURRENCY} (start${extra}) ${JSON.stringify(r.outcomes)}`,
        value: `${fmt(median(r.loads))} (${fmt(median(r.starts))}${extra})`
      })
      if (!configuration.ours) rows.push({ name: `${configuration.name}: second load on the same process (JIT-warm)`, value: fmt(median(r.secondLoads)) })
    }
    for (const store of ["pglite", "pg"] as const) {
      const on = results.get(`${store}: restart, preload on`)!
      const unwarmed = results.get(`${store}: restart, preload on, JIT warm-up off`)!
      const off = results.get(`${store}: restart, preload off, batched L2 reads on`)!
      const unbatched = results.get(`${store}: restart, preload off, batched L2 reads off`)!
      const coldLoad = cold.get(store)!
      rows.push({ name: `${store}: fresh server (Babel, 1 run): load`, value: `${fmt(coldLoad.ms)} ${JSON.stringify(coldLoad.outcomes)}` })
      rows.push({ name: `${store}: ${fastest.name} load / restart load with preload`, value: `${(fastest.load / median(on.loads)).toFixed(2)}x` })
      rows.push({
        name: `${store}: ${fastest.name} second load (JIT-warm) / restart load with preload`,
        value: `${(median(results.get(fastest.name)!.secondLoads) / median(on.loads)).toFixed(2)}x`
      })
      rows.push({ name: `${store}: ${fastest.name} load / restart load with preload, JIT warm-up off`, value: `${(fastest.load / median(unwarmed.loads)).toFixed(2)}x` })
      rows.push({
        name: `${store}: ${fastest.name} load / (preload + JIT warm-up + restart load)`,
        value: `${(fastest.load / (median(on.loads) + median(on.preloads) + median(on.warmups))).toFixed(2)}x`
      })
      rows.push({
        name: `${store}: restart load with preload / ${floorName} load`,
        value: `${(median(on.loads) / median(results.get(floorName)!.loads)).toFixed(2)}x`
      })
      rows.push({ name: `${store}: restart load, preload off (batched L2 reads on) / on`, value: `${(median(off.loads) / median(on.loads)).toFixed(2)}x` })
      rows.push({ name: `${store}: fresh load / restart load with preload`, value: `${(coldLoad.ms / median(on.loads)).toFixed(1)}x` })
      // Taken round by round (the two ran one after the other), then the median: the machine's load changes less within a round.
      rows.push({
        name: `${store}: restart load, preload off: batched L2 reads off / on (median of per-round ratios)`,
        value: `${median(unbatched.loads.map((ms, round) => ms / off.loads[round]!)).toFixed(2)}x`
      })
    }
  } finally {
    rmSync(realm, { recursive: true, force: true })
    rmSync(dataDir, { recursive: true, force: true })
    dropDatabase(databaseUrl)
  }
  return rows
}

if (process.argv[2] === "--serve") {
  await serveBaseline(process.argv[3] as Engine, process.argv[4]!)
} else if (import.meta.main) {
  console.table(await benchPreload())
}
