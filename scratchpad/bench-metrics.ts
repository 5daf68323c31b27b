/**
 * Does counting cost the hot path? Warm hits of one 12 KiB module (the fast path) under
 * `wrk -t1 -c32 -d3s`, side by side, rounds interleaved: `serve` of this checkout (fast-path
 * hits counted in plain counters and answer times in a plain histogram, folded into the
 * metrics when they are read, with a scraper reading `/_cache/metrics` every second during
 * each run) against `serve` of a checkout before the metrics work (`BEFORE_CHECKOUT`, default
 * /work/main: its fast path updated the `l1` outcome metric on every hit, and had no answer
 * times).
 *
 * Needs `wrk`. Run: BEFORE_CHECKOUT=/path/to/old/checkout npx node scratchpad/bench-metrics.ts
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { adminAuthorization, root, testAdminToken } from "../test/support/server.ts"
import { type BenchRow, median } from "./bench-l1.ts"
import { hasWrk } from "./wrk-graph.ts"

const ROUNDS = Number(process.env.ROUNDS ?? 7)
const WRK_ARGS = ["-t1", "-c32", "-d3s"]

/** CPU time (user + system) of a process so far, in seconds, from /proc (Linux; clock ticks of 10 ms). */
const cpuSeconds = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ")
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** One wrk run: requests per second, and the server's CPU microseconds per request (robust to a busy machine). */
const wrkRun = (url: string, pid: number): { readonly rps: number; readonly cpuMicros: number } => {
  const cpuBefore = cpuSeconds(pid)
  const out = execFileSync("wrk", [...WRK_ARGS, url], { encoding: "utf8" })
  const cpu = cpuSeconds(pid) - cpuBefore
  if (/Non-2xx/.test(out)) throw new Error(`errors from ${url}:\n${out}`)
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? "0")
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? "0"), cpuMicros: (cpu * 1e6) / Math.max(requests, 1) }
}

const get = (url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers }, (response) => {
      let body = ""
      response.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }))
    }).on("error", reject)
  })

const source = (): string => {
  const lines: Array<string> = []
  for (let i = 0; lines.join("").length < 12 * 1024; i++) lines.push(`export const value${i}: number = ${i} * 2 // a line\n`)
  return lines.join("")
}

const serve = (checkout: string, realm: string): Promise<{ url: string; child: ChildProcess }> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(checkout, "src", "bin.ts"), "serve", realm, "--port", "0", "--store", "memory"], {
      cwd: checkout,
      env: { ...process.env, MTC_ADMIN_TOKEN: testAdminToken, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    const check = (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening on (http:\/\/[^\s/]+)\//.exec(output)
      if (match?.[1] !== undefined) resolve({ url: match[1], child })
    }
    child.stdout?.on("data", check)
    child.stderr?.on("data", check)
    child.once("exit", (code) => reject(new Error(`serve of ${checkout} exited ${code}:\n${output}`)))
  })

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
  })

export const benchMetrics = async (): Promise<Array<BenchRow>> => {
  if (!hasWrk()) return [{ name: "metrics on the hot path (wrk)", value: "skipped: wrk is not installed" }]
  const before = process.env.BEFORE_CHECKOUT ?? "/work/main"
  const work = mkdtempSync(join(tmpdir(), "mtc-bench-metrics-"))
  const realm = join(work, "realm")
  mkdirSync(realm)
  writeFileSync(join(realm, "mod.ts"), source())
  const servers = [
    { name: "without (before)", ...(await serve(before, realm)) },
    { name: "with metrics (this checkout, scraped every 1 s)", ...(await serve(root, realm)) }
  ]
  try {
    for (const server of servers) {
      for (let i = 0; i < 3; i++) await get(`${server.url}/mod.ts`) // transpiled, the router's L1 hit, the fast path
    }
    const scraped = await get(`${servers[1]!.url}/_cache/metrics`, { authorization: adminAuthorization })
    if (scraped.status !== 200) throw new Error(`metrics answered ${scraped.status}`)
    const results = servers.map(() => [] as Array<number>)
    const cpu = servers.map(() => [] as Array<number>)
    for (const server of servers) wrkRun(`${server.url}/mod.ts`, server.child.pid ?? 0) // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      // Alternate which goes first, so that a drift in the machine's load hits both alike.
      const order = round % 2 === 0 ? [0, 1] : [1, 0]
      for (const index of order) {
        const server = servers[index]!
        const scraper = index === 1
          ? setInterval(() => void get(`${server.url}/_cache/metrics`, { authorization: adminAuthorization }), 1000)
          : undefined
        const run = wrkRun(`${server.url}/mod.ts`, server.child.pid ?? 0)
        results[index]!.push(run.rps)
        cpu[index]!.push(run.cpuMicros)
        if (scraper !== undefined) clearInterval(scraper)
      }
    }
    const [without, withMetrics] = results.map(median) as [number, number]
    const ratios = results[0]!.map((value, i) => results[1]![i]! / value)
    process.stderr.write(`bench-metrics: without ${results[0]!.map((v) => v.toFixed(0)).join(" ")}\n`)
    process.stderr.write(`bench-metrics: with    ${results[1]!.map((v) => v.toFixed(0)).join(" ")}\n`)
    const [cpuWithout, cpuWith] = cpu.map(median) as [number, number]
    return [
      { name: `warm hits without metrics (wrk -t1 -c32 -d3s, req/s, median of ${ROUNDS})`, value: without.toFixed(0) },
      { name: `warm hits with metrics, scraped every 1 s (req/s, median of ${ROUNDS})`, value: withMetrics.toFixed(0) },
      { name: "with / without (ratio of medians)", value: `${(withMetrics / without).toFixed(3)}x` },
      { name: "with / without (median of the per-round ratios)", value: `${median(ratios).toFixed(3)}x` },
      { name: "server CPU per warm hit, without / with (µs, median)", value: `${cpuWithout.toFixed(1)} / ${cpuWith.toFixed(1)}` },
      { name: "CPU per hit, without / with (the throughput a saturated core allows, as a ratio)", value: `${(cpuWithout / cpuWith).toFixed(3)}x` }
    ]
  } finally {
    for (const server of servers) await stop(server.child)
    rmSync(work, { recursive: true, force: true })
  }
}

if (import.meta.main) {
  console.table(await benchMetrics())
}
