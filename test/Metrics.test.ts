/**
 * `GET /_cache/metrics` of a real `serve` on Postgres: Prometheus' own linter accepts it, a
 * real Prometheus server scrapes it with the admin token and sees the gets counter move by
 * exactly the requests sent (fast-path hits included), the routes refuse callers without
 * the token and cross-origin ones, and `stats` prints a table (`--json` the JSON).
 */
import { spawn, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase } from "./support/database.ts"
import { which } from "./support/prerequisites.ts"
import {
  eventually,
  freePort,
  jsonOf,
  makeRealm,
  removeRealms,
  request,
  runCli,
  type ServerProcess,
  startServer,
  stopAll,
  testAdminToken
} from "./support/server.ts"

const promtool = which("promtool") ?? "/usr/bin/promtool"
const prometheus = which("prometheus") ?? "/usr/bin/prometheus"

/** One sample of the Prometheus text format. */
interface Sample {
  readonly name: string
  readonly labels: Record<string, string>
  readonly value: number
}

const parse = (text: string): Array<Sample> =>
  text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) throw new Error(`not a sample: ${line}`)
    const labels: Record<string, string> = {}
    for (const label of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[label[1]!] = label[2]!
    }
    return { name: match[1]!, labels, value: Number(match[3]) }
  })

const sum = (samples: ReadonlyArray<Sample>, name: string, where: (labels: Record<string, string>) => boolean = () => true) =>
  samples.filter((s) => s.name === name && where(s.labels)).reduce((total, s) => total + s.value, 0)


const modules = Array.from({ length: 6 }, (_, i) => `m${i}.ts`)

describe("Prometheus metrics of serve", () => {
  let dbUrl: string
  let realm: string
  let server: ServerProcess
  const scratch = mkdtempSync(path.join(tmpdir(), "mtc-prometheus-"))

  const metrics = async () => {
    const response = await request(server.url, "/_cache/metrics")
    expect(response.status).toBe(200)
    expect(response.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8")
    expect(response.headers["access-control-allow-origin"]).toBeUndefined()
    return response.body
  }

  beforeAll(async () => {
    dbUrl = freshDatabase("metrics")
    realm = makeRealm({
      ...Object.fromEntries(modules.map((name, i) => [name, `export const value: number = ${i}\n`])),
      "bad.ts": "export const broken = (\n",
      "notes.txt": "plain text\n"
    })
    server = await startServer({ realmDir: realm, store: "pg", env: { DATABASE_URL: dbUrl } })
  }, 90_000)

  afterAll(async () => {
    await stopAll()
    removeRealms()
    rmSync(scratch, { recursive: true, force: true })
    dropDatabase(dbUrl)
  })

  it("passes promtool check metrics, with Prometheus names and every family an operator needs", async () => {
    // Traffic of every kind: cold, coalesced, warm (router, then fast path), an error, a raw file, an invalidation.
    await Promise.all([0, 1, 2].map(() => request(server.url, "/m0.ts")))
    for (let i = 0; i < 5; i++) expect((await request(server.url, "/m0.ts")).status).toBe(200)
    expect((await request(server.url, "/bad.ts")).status).toBe(422)
    for (let i = 0; i < 3; i++) expect((await request(server.url, "/notes.txt")).status).toBe(200)
    expect((await request(server.url, "/_cache/invalidate?path=m0.ts", { method: "POST" })).status).toBe(200)
    // The loads' L2 writes landed (held for a quiet moment while this process is alone on the database).
    for (let i = 0; i < 200 && jsonOf(await request(server.url, "/_cache/stats"))["inFlight"] !== 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25))
    }

    const text = await metrics()
    const lint = spawnSync(promtool, ["check", "metrics"], { input: text, encoding: "utf8" })
    expect({ status: lint.status, output: `${lint.stdout}${lint.stderr}` }).toEqual({ status: 0, output: "" })

    const types = new Map(Array.from(text.matchAll(/^# TYPE (\S+) (\S+)$/gm), (m) => [m[1]!, m[2]!]))
    for (const [name, type] of types) {
      if (type === "counter") expect(name).toMatch(/_total$/)
      expect(name).not.toMatch(/_ms$|_millis|milliseconds/)
    }
    expect(Object.fromEntries(types)).toMatchObject({
      module_cache_gets_total: "counter",
      module_cache_fallbacks_total: "counter",
      module_cache_pg_refusals_total: "counter",
      module_cache_persist_failures_total: "counter",
      transpile_pool_worker_restarts_total: "counter",
      module_cache_invalidations_total: "counter",
      module_cache_transpile_errors_total: "counter",
      module_cache_transpile_seconds: "histogram",
      module_cache_wait_seconds: "histogram",
      module_cache_answer_seconds: "histogram",
      module_cache_l2_read_seconds: "histogram",
      module_cache_l2_write_seconds: "histogram",
      module_cache_l1_bytes: "gauge",
      module_cache_l1_entries: "gauge",
      module_cache_raw_file_bytes: "gauge",
      transpile_pool_queue_length: "gauge",
      transpile_pool_busy_workers: "gauge",
      module_cache_loads_in_flight: "gauge",
      module_cache_pg_connections: "gauge",
      module_cache_pg_server_connections: "gauge",
      module_cache_l2_bytes: "gauge",
      module_cache_l2_rows: "gauge"
    })

    const samples = parse(text)
    const stats = jsonOf(await request(server.url, "/_cache/stats"))
    const gets = (outcome: string) => sum(samples, "module_cache_gets_total", (l) => l.outcome === outcome)
    // Every get counted once: 1 transpiled + 2 joined, 5 warm (the first by the router, the rest by the fast path), 1 error.
    // (a third concurrent get that came after the transpile ended is an L1 hit rather than a joiner)
    expect({ transpiled: gets("transpiled"), joinedOrHit: gets("coalesced") + gets("l1"), error: gets("error") })
      .toEqual({ transpiled: 1, joinedOrHit: 7, error: 1 })
    expect(gets("l1")).toBe(stats["l1Hits"])
    expect(gets("coalesced")).toBe(stats["coalesced"])
    expect(sum(samples, "module_cache_answer_seconds_count", (l) => l.path === "fast_path" && l.outcome === "l1"))
      .toBeGreaterThan(0)
    expect(sum(samples, "module_cache_answer_seconds_count", (l) => l.path === "fast_path" && l.outcome === "raw"))
      .toBeGreaterThan(0)
    expect(sum(samples, "module_cache_transpile_errors_total", (l) => l.kind === "syntax")).toBe(1)
    expect(sum(samples, "module_cache_invalidations_total", (l) => l.source === "api")).toBe(1)
    expect(sum(samples, "module_cache_transpile_seconds_count", (l) => l.pipeline === "standard" && l.engine === "native"))
      .toBe(2)
    expect(sum(samples, "module_cache_pg_connections")).toBeGreaterThanOrEqual(1)
    expect(sum(samples, "module_cache_pg_server_connections")).toBeGreaterThanOrEqual(sum(samples, "module_cache_pg_connections"))
    expect(sum(samples, "module_cache_l1_entries")).toBe(stats["l1Entries"])
    expect(sum(samples, "module_cache_raw_file_bytes")).toBeGreaterThan(0)
    // L2 of the realm: m0's row was tombstoned by the invalidation, bad.ts's failure is recorded.
    const [realmStats] = Object.values(stats["realms"] as Record<string, { l2Rows: number; l2Bytes: number }>)
    expect(realmStats?.l2Rows).toBe(1)
    expect(sum(samples, "module_cache_l2_rows")).toBe(1)
    expect(sum(samples, "module_cache_l2_bytes")).toBe(realmStats?.l2Bytes)
    expect(realmStats?.l2Bytes).toBeGreaterThan(0)
    // One realm label value: the realm's URL.
    const realms = new Set(samples.filter((s) => s.name === "module_cache_gets_total").map((s) => s.labels["realm"]))
    expect([...realms]).toEqual([stats["realmUrl"]])
  })

  it("refuses callers without the token and cross-origin callers, on metrics and the page's data", async () => {
    for (const route of ["/_cache/metrics", "/_cache/stats"]) {
      const anonymous = await request(server.url, route, { admin: false })
      expect(anonymous.status).toBe(401)
      expect(anonymous.headers["www-authenticate"]).toBe("Bearer")
      expect((await request(server.url, route, { headers: { authorization: "Bearer not-the-admin-token-at-all" } })).status)
        .toBe(401)
      const crossOrigin = await request(server.url, route, { headers: { origin: "http://evil.example" } })
      expect(crossOrigin.status).toBe(403)
      expect(crossOrigin.headers["access-control-allow-origin"]).toBeUndefined()
      expect((await request(server.url, route, { method: "OPTIONS", headers: { origin: "http://evil.example" } })).status)
        .toBe(403)
    }
    const bare = await request(server.url, "/_cache", { admin: false })
    expect({ status: bare.status, location: bare.headers["location"] }).toEqual({ status: 308, location: "/_cache/" })
    // The page and its scripts need no token: they hold no figure and no path.
    for (const route of ["/_cache/", "/_cache/live.js", "/_cache/uplot.js", "/_cache/uplot.css"]) {
      const response = await request(server.url, route, { admin: false })
      expect(response.status).toBe(200)
      expect(response.headers["access-control-allow-origin"]).toBeUndefined()
      expect(response.body).not.toContain(realm)
      expect(response.body).not.toContain(testAdminToken)
    }
  })

  it("stats prints a table; --json prints the JSON", async () => {
    const env = { MTC_ADMIN_TOKEN: testAdminToken }
    const table = await runCli(["stats", "--url", server.url], { env })
    expect(table.code, table.stderr).toBe(0)
    expect(table.stdout).toMatch(/^gets\s+l1\s+l2\s+transpiled\s+coalesced\s+fallback\s+error$/m)
    expect(table.stdout).toContain("bad.ts:2:0")
    expect(table.stdout).toMatch(/^connections\s+/m)
    const json = await runCli(["stats", "--json", "--url", server.url], { env })
    expect(json.code).toBe(0)
    const body = JSON.parse(json.stdout) as Record<string, unknown>
    expect(typeof body["l1Hits"]).toBe("number")
    expect(body["realmUrl"]).toMatch(/^file:/)
  })

  it("a real Prometheus server scrapes it with the token and sees the gets counter move by the requests sent", async () => {
    const port = await freePort()
    const config = path.join(scratch, "prometheus.yml")
    writeFileSync(config, [
      "global:",
      "  scrape_interval: 1s",
      "  evaluation_interval: 1s",
      "scrape_configs:",
      "  - job_name: transpile-cache",
      "    metrics_path: /_cache/metrics",
      "    authorization:",
      `      credentials: ${testAdminToken}`,
      "    static_configs:",
      `      - targets: ["127.0.0.1:${server.port}"]`,
      ""
    ].join("\n"))
    const child = spawn(prometheus, [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(scratch, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`
    ], { stdio: ["ignore", "pipe", "pipe"] })
    let log = ""
    child.stderr.on("data", (chunk: Buffer) => (log += chunk.toString("utf8")))
    try {
      const api = `http://127.0.0.1:${port}`
      const query = async (promql: string): Promise<number | undefined> => {
        const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`).catch(() => undefined)
        if (response === undefined || !response.ok) return undefined
        const body = await response.json() as { data: { result: Array<{ value: [number, string] }> } }
        const first = body.data.result[0]
        return first === undefined ? undefined : Number(first.value[1])
      }
      // The target is up (the token works) and a sample of the counter is in.
      await eventually(async () => ((await query("up{job=\"transpile-cache\"}")) === 1 ? true : undefined), 60_000, `target up\n${log}`)
      const before = await eventually(
        async () => query("sum(module_cache_gets_total)"),
        30_000,
        "a sample of module_cache_gets_total"
      )
      const outcome = async (name: string) => (await query(`sum(module_cache_gets_total{outcome="${name}"})`)) ?? 0
      const fastHits = async () => (await query("sum(module_cache_answer_seconds_count{path=\"fast_path\",outcome=\"l1\"})")) ?? 0
      const l1Before = await outcome("l1")
      const transpiledBefore = await outcome("transpiled")
      const coalescedBefore = await outcome("coalesced")
      const fastBefore = await fastHits()

      // A cold herd of the other modules, then warm hits (all but one per path by the fast path).
      const cold = modules.slice(1)
      await Promise.all(cold.flatMap((name) => [0, 1, 2].map(() => request(server.url, `/${name}`))))
      const warmPerModule = 10
      for (const name of cold) {
        for (let i = 0; i < warmPerModule; i++) expect((await request(server.url, `/${name}`)).status).toBe(200)
      }
      const sent = cold.length * 3 + cold.length * warmPerModule

      const after = await eventually(async () => {
        const now = await query("sum(module_cache_gets_total)")
        return now === before + sent ? now : undefined
      }, 30_000, `module_cache_gets_total to move by ${sent} from ${before}`)
      expect(after - before).toBe(sent)
      // One transpile per module. Each herd's other two requests joined it or, when one arrived
      // after it ended, hit L1: the split between those is the scheduler's, their sum is exact.
      const l1 = (await outcome("l1")) - l1Before
      const coalesced = (await outcome("coalesced")) - coalescedBefore
      expect((await outcome("transpiled")) - transpiledBefore).toBe(cold.length)
      expect(coalesced + l1).toBe(cold.length * 2 + cold.length * warmPerModule)
      expect(l1).toBeGreaterThanOrEqual(cold.length * warmPerModule)
      // Every L1 hit of a path but its first (the router's, which remembers the route) was the fast path's.
      expect((await fastHits()) - fastBefore).toBe(l1 - cold.length)
    } finally {
      child.kill("SIGTERM")
      await new Promise((resolve) => child.once("exit", resolve))
    }
  }, 120_000)

  it("counts invalidations by source: the API, the watcher, and a peer's", async () => {
    const peer = await startServer({ realmDir: realm, store: "pg", env: { DATABASE_URL: dbUrl } })
    const invalidations = async (target: ServerProcess) => {
      const response = await request(target.url, "/_cache/metrics")
      const samples = parse(response.body)
      const bySource = (source: string) => sum(samples, "module_cache_invalidations_total", (l) => l.source === source)
      return { api: bySource("api"), watcher: bySource("watcher"), peer: bySource("peer") }
    }
    const before = await invalidations(server)
    const peerBefore = await invalidations(peer)
    // An API invalidation here reaches the peer as a peer's.
    expect((await request(server.url, "/_cache/invalidate?path=m1.ts", { method: "POST" })).status).toBe(200)
    expect((await invalidations(server)).api).toBe(before.api + 1)
    await eventually(async () => ((await invalidations(peer)).peer > peerBefore.peer ? true : undefined), 10_000, "a peer invalidation counted")
    // An edit on disk: each process's watcher invalidates the module.
    writeFileSync(path.join(realm, "m2.ts"), "export const value: number = 22\n")
    await eventually(async () => ((await invalidations(server)).watcher > before.watcher ? true : undefined), 10_000, "a watcher invalidation counted")
    await peer.stop()
  }, 90_000)

  it("a realm label per realm URL, at most 100 values", async () => {
    // Checked in-process on the helper: one process serves one realm today.
    const { realmLabel, maxRealmLabels } = await import("../src/internal/realmLabel.ts")
    const labels = Array.from({ length: maxRealmLabels + 50 }, (_, i) => realmLabel(`https://realm-${i}.example/`))
    expect(new Set(labels.filter((l) => l !== "other")).size).toBeLessThanOrEqual(maxRealmLabels)
    expect(labels.slice(-50).every((l) => l === "other")).toBe(true)
    expect(realmLabel("https://realm-0.example/")).toBe("https://realm-0.example/")
  })
})
