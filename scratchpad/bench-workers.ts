/**
 * Transpiling off the event loop, side by side in one run:
 *
 * 1. Warm-hit latency (p50, p99) of `serve` while it transpiles a cold herd of 12 x 96 KiB
 *    modules (8 concurrent requests each), against idle; with the worker pool and in-process.
 * 2. The one-host cold herd (12 modules of 48 KiB x 32 concurrent requests): `serve` with its
 *    pool against nginx `proxy_cache_lock` in front of an uncached Babel upstream (a node:http
 *    server running the in-process transpiler on every request). Skipped, with a message, when
 *    nginx is not installed (`apt-get install nginx-light wrk`).
 * 3. `warm` throughput in modules/s with 1 worker and with all workers, with the native engine
 *    (where the main thread bounds it) and with `MTC_ENGINE=babel` (where the transpile does),
 *    side by side: medians of 3 alternating rounds.
 *
 * Run: npx node scratchpad/bench-workers.ts (section 3 alone: `node scratchpad/run-one.ts bench-workers benchWarmScaling`)
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import { availableParallelism, tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { percentile } from "../test/support/fleet.ts"
import { stats } from "../test/support/load.ts"
import { runCli, startServer } from "../test/support/server.ts"
import type { BenchRow } from "./bench-l1.ts"

/** A TypeScript module of about `bytes` bytes (different per name, so nothing is shared). */
const moduleOf = (name: string, bytes: number): string => {
  const lines: Array<string> = []
  let size = 0
  for (let i = 0; size < bytes; i++) {
    const line = `export class ${name}_${i}<T> { declare item: T; value: number = ${i}; get double(): number { return this.value * 2 } }\n`
    lines.push(line)
    size += line.length
  }
  return lines.join("")
}

const makeRealm = (prefix: string, files: Record<string, string>): string => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content)
  return dir
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity })

/** One GET; resolves to its latency in ms (rejects on a non-200). */
const timedGet = (url: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    http.get(url, { agent }, (response) => {
      response.resume()
      response.on("end", () =>
        response.statusCode === 200 ? resolve(performance.now() - started) : reject(new Error(`${url}: ${response.statusCode}`))
      )
    }).on("error", reject)
  })

const fmt = (values: ReadonlyArray<number>) =>
  `p50=${percentile(values, 50).toFixed(1)}ms p99=${percentile(values, 99).toFixed(1)}ms (n=${values.length})`

// -----------------------------------------------------------------------------
// 1. Warm hits during a cold herd
// -----------------------------------------------------------------------------

const HERD_MODULES = 12
const HERD_KIB = 96
const HERD_CONCURRENCY = 8

/** Sequential warm hits until `done()`, at least `min` of them. */
const hitsUntil = async (url: string, done: () => boolean, min: number): Promise<Array<number>> => {
  const latencies: Array<number> = []
  while (!done() || latencies.length < min) latencies.push(await timedGet(url))
  return latencies
}

const warmHitsDuringHerd = async (workers: number): Promise<{ idle: Array<number>; herd: Array<number> }> => {
  const herd = Object.fromEntries(Array.from({ length: HERD_MODULES }, (_, i) => [`h${i}.ts`, moduleOf(`H${i}`, HERD_KIB * 1024)]))
  const realm = makeRealm("mtc-bench-workers-", { "warm.ts": "export const warm: number = 1\n", ...herd })
  const server = await startServer({ realmDir: realm, store: "memory", env: { MTC_TRANSPILE_WORKERS: String(workers) } })
  try {
    const warmUrl = `${server.url}/warm.ts`
    await timedGet(warmUrl)
    const idle = await hitsUntil(warmUrl, () => true, 300)
    let finished = false
    const herdDone = Promise.all(
      Object.keys(herd).flatMap((name) => Array.from({ length: HERD_CONCURRENCY }, () => timedGet(`${server.url}/${name}`)))
    ).finally(() => {
      finished = true
    })
    const during = await hitsUntil(warmUrl, () => finished, 1)
    await herdDone
    return { idle, herd: during }
  } finally {
    await server.stop()
    rmSync(realm, { recursive: true, force: true })
  }
}

// -----------------------------------------------------------------------------
// 2. One-host cold herd against nginx proxy_cache_lock
// -----------------------------------------------------------------------------

const ONE_HOST_MODULES = 12
const ONE_HOST_KIB = 48
const ONE_HOST_CONCURRENCY = 32

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))))
    })
  })

/** The herd: every module `concurrency` times at once; latencies of all requests. */
const coldHerd = (base: string, names: ReadonlyArray<string>, concurrency: number): Promise<Array<number>> =>
  Promise.all(names.flatMap((name) => Array.from({ length: concurrency }, () => timedGet(`${base}/${name}`))))

const nginxPath = (): string | undefined => {
  for (const candidate of ["/usr/sbin/nginx", "/usr/bin/nginx"]) {
    try {
      execFileSync(candidate, ["-v"], { stdio: "ignore" })
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

const waitForPort = async (port: number): Promise<void> => {
  for (let i = 0; i < 400; i++) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.destroy()
        resolve(true)
      })
      socket.on("error", () => resolve(false))
    })
    if (open) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nothing listens on ${port}`)
}

const stopChild = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
  })

const nginxHerd = async (
  nginx: string,
  realm: string,
  names: ReadonlyArray<string>
): Promise<{ latencies: Array<number>; upstreamTranspiles: number }> => {
  const upstreamPort = await freePort()
  const upstream = spawn(process.execPath, [fileURLToPath(new URL("./babel-upstream.ts", import.meta.url)), realm, String(upstreamPort)], {
    stdio: ["ignore", "pipe", "inherit"]
  })
  const prefix = mkdtempSync(join(tmpdir(), "mtc-bench-nginx-"))
  mkdirSync(join(prefix, "cache"))
  const port = await freePort()
  writeFileSync(
    join(prefix, "nginx.conf"),
    `daemon off;
master_process off;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  proxy_cache_path ${prefix}/cache keys_zone=modules:10m;
  upstream babel { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://babel;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache modules;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 30s;
      proxy_cache_lock_age 30s;
    }
  }
}
`
  )
  const server = spawn(nginx, ["-e", join(prefix, "error.log"), "-p", prefix, "-c", join(prefix, "nginx.conf")], {
    stdio: ["ignore", "inherit", "inherit"]
  })
  try {
    await waitForPort(upstreamPort)
    await waitForPort(port)
    await timedGet(`http://127.0.0.1:${port}/warmup.ts`)
    const latencies = await coldHerd(`http://127.0.0.1:${port}`, names, ONE_HOST_CONCURRENCY)
    const count = -1 + await new Promise<number>((resolve, reject) => {
      http.get(`http://127.0.0.1:${upstreamPort}/_count`, (response) => {
        let body = ""
        response.on("data", (chunk: Buffer) => (body += chunk.toString()))
        response.on("end", () => resolve(Number(body)))
      }).on("error", reject)
    })
    return { latencies, upstreamTranspiles: count }
  } finally {
    await stopChild(server)
    await stopChild(upstream)
    rmSync(prefix, { recursive: true, force: true })
  }
}

const oneHostHerd = async (): Promise<Array<BenchRow>> => {
  const files = Object.fromEntries(
    Array.from({ length: ONE_HOST_MODULES }, (_, i) => [`o${i}.ts`, moduleOf(`O${i}`, ONE_HOST_KIB * 1024)])
  )
  const names = Object.keys(files)
  const realm = makeRealm("mtc-bench-onehost-", { ...files, "warmup.ts": "export const warmup: number = 1\n" })
  const label = `one-host cold herd ${ONE_HOST_MODULES} x ${ONE_HOST_KIB} KiB x ${ONE_HOST_CONCURRENCY}`
  const rows: Array<BenchRow> = []
  try {
    const server = await startServer({ realmDir: realm, store: "memory" })
    let ours: Array<number>
    try {
      // Both sides transpile one small module first, so that Babel is loaded everywhere.
      await timedGet(`${server.url}/warmup.ts`)
      ours = await coldHerd(server.url, names, ONE_HOST_CONCURRENCY)
      const transpiles = (await stats(server)).transpiles - 1
      rows.push({ name: `${label}, serve (${availableParallelism()} workers)`, value: `transpiles=${transpiles} ${fmt(ours)}` })
    } finally {
      await server.stop()
    }
    const nginx = nginxPath()
    if (nginx === undefined) {
      process.stderr.write("bench-workers: nginx not found, skipping the nginx comparison (apt-get install nginx-light wrk)\n")
      rows.push({ name: `${label}, nginx proxy_cache_lock`, value: "skipped: nginx not installed" })
      return rows
    }
    const theirs = await nginxHerd(nginx, realm, names)
    rows.push({
      name: `${label}, nginx proxy_cache_lock over uncached Babel`,
      value: `transpiles=${theirs.upstreamTranspiles} ${fmt(theirs.latencies)}`
    })
    rows.push({
      name: "one-host cold herd p99, serve / nginx",
      value: `${(percentile(ours, 99) / percentile(theirs.latencies, 99)).toFixed(2)}x`
    })
    return rows
  } finally {
    rmSync(realm, { recursive: true, force: true })
  }
}

// -----------------------------------------------------------------------------
// 3. warm throughput: the pool's scaling, per engine
// -----------------------------------------------------------------------------

/**
 * The realm of each engine: large enough that a round with every worker takes over a second.
 * With the native engine (oxc) a worker transpiles a 16 KiB module in about 0.5 ms and the
 * main thread (reading files, the read path) is the bottleneck; with `MTC_ENGINE=babel` the
 * transpile dominates, as when the pool was written.
 */
const WARM_ENGINES = [
  { engine: "native", modules: 1200 },
  { engine: "babel", modules: 160 }
] as const
const WARM_KIB = 16
const WARM_ROUNDS = 3

const warmThroughput = async (realm: string, engine: string, workers: number): Promise<number> => {
  const result = await runCli(["warm", realm, "--store", "memory", "--transpile-workers", String(workers)], {
    env: { MTC_ENGINE: engine },
    timeoutMs: 300_000
  })
  const match = /warmed (\d+) modules? in ([\d.]+) s/.exec(result.stdout)
  if (result.code !== 0 || match === null) throw new Error(`warm failed (${result.code}): ${result.stdout}\n${result.stderr}`)
  return Number(match[1]) / Number(match[2])
}

/**
 * `warm` in modules/s with 1 worker and with all, for each engine: the runs alternate within
 * a round (so that other load on the machine falls on all of them alike); medians of the rounds.
 */
export const benchWarmScaling = async (): Promise<Array<BenchRow>> => {
  const all = availableParallelism()
  const realms = WARM_ENGINES.map(({ engine, modules }) => ({
    engine,
    modules,
    dir: makeRealm(
      `mtc-bench-warm-${engine}-`,
      Object.fromEntries(Array.from({ length: modules }, (_, i) => [`w${i}.ts`, moduleOf(`W${i}`, WARM_KIB * 1024)]))
    ),
    one: [] as Array<number>,
    many: [] as Array<number>
  }))
  try {
    for (let round = 0; round < WARM_ROUNDS; round++) {
      for (const realm of realms) {
        realm.one.push(await warmThroughput(realm.dir, realm.engine, 1))
        realm.many.push(await warmThroughput(realm.dir, realm.engine, all))
      }
    }
    const median = (values: ReadonlyArray<number>) => percentile(values, 50)
    const rounds = (values: ReadonlyArray<number>) => values.map((value) => value.toFixed(0)).join(" ")
    return realms.map(({ engine, many, modules, one }) => ({
      name: `warm ${modules} x ${WARM_KIB} KiB, MTC_ENGINE=${engine}: modules/s 1 worker | ${all} workers | ${all}/1 (median of ${WARM_ROUNDS})`,
      value: `${median(one).toFixed(0)} | ${median(many).toFixed(0)} | ${(median(many) / median(one)).toFixed(2)}x` +
        ` (rounds: ${rounds(one)} | ${rounds(many)})`
    }))
  } finally {
    for (const realm of realms) rmSync(realm.dir, { recursive: true, force: true })
  }
}

// -----------------------------------------------------------------------------

/**
 * Section 1 alone, with the pool: warm-hit latency idle and during the herd (the engine from
 * `MTC_ENGINE`, as in `MTC_ENGINE=babel node scratchpad/run-one.ts bench-workers benchHerdHits`).
 */
export const benchHerdHits = async (): Promise<Array<BenchRow>> => {
  const pooled = await warmHitsDuringHerd(availableParallelism())
  agent.destroy()
  return [
    { name: "warm hit, idle", value: fmt(pooled.idle) },
    { name: `warm hit during a cold herd of ${HERD_MODULES} x ${HERD_KIB} KiB x ${HERD_CONCURRENCY}, ${availableParallelism()} workers`, value: fmt(pooled.herd) }
  ]
}

export const benchWorkers = async (): Promise<Array<BenchRow>> => {
  const rows: Array<BenchRow> = []
  const pooled = await warmHitsDuringHerd(availableParallelism())
  const inProcess = await warmHitsDuringHerd(0)
  const label = `warm hit during a cold herd of ${HERD_MODULES} x ${HERD_KIB} KiB x ${HERD_CONCURRENCY}`
  rows.push({ name: "warm hit, idle", value: fmt(pooled.idle) })
  rows.push({ name: `${label}, ${availableParallelism()} workers`, value: fmt(pooled.herd) })
  rows.push({ name: `${label}, in-process (MTC_TRANSPILE_WORKERS=0)`, value: fmt(inProcess.herd) })
  rows.push(...await oneHostHerd())
  rows.push(...await benchWarmScaling())
  agent.destroy()
  return rows
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.table(await benchWorkers())
}
