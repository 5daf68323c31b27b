/**
 * Warm hits and 304s of `serve` (its fast path) under `wrk -t1 -c32 -d4s`, side by side in
 * one run with a bare node:http server sending the same bytes and headers
 * (bare-hot-server.ts) and with Vite's dev server on the same module (vite-dev-server.ts,
 * source maps off). Then edit-to-fresh-bytes: the time from writing the file to the first
 * response carrying the new bytes, for `serve` and for Vite.
 *
 * Needs `wrk` (`apt-get install wrk`); says so and skips when it is absent.
 * Run: npx node scratchpad/bench-hot-path.ts
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import { join, relative, sep } from "node:path"
import { fileURLToPath } from "node:url"
import { request, startServer } from "../test/support/server.ts"
import { type BenchRow, median } from "./bench-l1.ts"
import { hasWrk } from "./wrk-graph.ts"

const ROUNDS = 3
const EDITS = 15
const WRK_ARGS = ["-t1", "-c32", "-d4s", "--latency"]

interface WrkResult {
  readonly rps: number
  readonly p99ms: number
  readonly errors: number
}

const wrk = (url: string, headers: Record<string, string> = {}): WrkResult => {
  const args = [...WRK_ARGS, ...Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]), url]
  const out = execFileSync("wrk", args, { encoding: "utf8" })
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? "0")
  const p99 = /\s99%\s+([\d.]+)(us|ms|s)/.exec(out)
  const unit = p99?.[2] === "us" ? 0.001 : p99?.[2] === "s" ? 1000 : 1
  const p99ms = Number(p99?.[1] ?? "0") * unit
  const errors = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? "0") +
    Number(/Socket errors:.*?connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)?.slice(1).reduce((a, b) => a + Number(b), 0) ?? 0)
  return { rps, p99ms, errors }
}

/** An answer as `get` read it. */
export interface Reply {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
}

/** One GET on a fresh connection, its body read whole. */
export const get = (url: string, headers: Record<string, string> = {}): Promise<Reply> =>
  new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }))
    }).on("error", reject)
  })

/** Spawns a Node script that logs `listening on http://...`, and waits for that line. */
export const spawnListening = (script: string, args: ReadonlyArray<string>): Promise<{ url: string; child: ChildProcess }> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    child.stdout?.on("data", (chunk: Buffer) => {
      const match = /listening on (http:\/\/[^\s/]+)\//.exec(chunk.toString())
      if (match?.[1]) resolve({ url: match[1], child })
    })
    child.once("exit", (code) => reject(new Error(`${script} exited ${code}`)))
  })

/** Stops a child: SIGTERM, SIGKILL after 3 s. */
export const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
    setTimeout(() => child.kill("SIGKILL"), 3000).unref()
  })

/** A TypeScript module of about 12 KiB (the benches' warm-hit module). */
export const twelveKiB = (): string => {
  const lines: Array<string> = []
  for (let i = 0; lines.join("").length < 12 * 1024; i++) {
    lines.push(`export const value${i}: number = ${i} * 2 // a line of the benchmark module\n`)
  }
  return lines.join("")
}

/** Every file of a directory tree but dotfiles, as request paths, sorted. */
export const filesOf = (dir: string): Array<string> => {
  const out: Array<string> = []
  const walk = (at: string) => {
    for (const name of readdirSync(at)) {
      if (name.startsWith(".")) continue
      const full = join(at, name)
      if (statSync(full).isDirectory()) walk(full)
      else out.push(`/${relative(dir, full).split(sep).join("/")}`)
    }
  }
  walk(dir)
  return out.sort()
}

/** {@link twelveKiB}, ending with a marker export. */
const source = (marker: string): string => twelveKiB() + `export const marker: string = "${marker}"\n`

/** Milliseconds from writing the file to the first response with the new marker (median of EDITS). */
const editToFresh = async (file: string, url: string): Promise<number> => {
  const times: Array<number> = []
  for (let edit = 0; edit < EDITS; edit++) {
    const marker = `edit-${process.pid}-${edit}-${Date.now()}`
    const started = performance.now()
    writeFileSync(file, source(marker))
    for (;;) {
      const reply = await get(url)
      if (reply.body.includes(marker)) break
      if (performance.now() - started > 10_000) throw new Error(`no fresh bytes from ${url} within 10 s`)
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
    times.push(performance.now() - started)
    await new Promise((resolve) => setTimeout(resolve, 150))
  }
  return median(times)
}

const shown = (name: string, headers: http.IncomingHttpHeaders): Record<string, string> => {
  const result: Record<string, string> = {}
  for (const [key, value] of Object.entries(headers)) {
    if (key === "date" || key === "connection" || key === "keep-alive" || value === undefined) continue
    result[key] = Array.isArray(value) ? value.join(", ") : value
  }
  if (result["etag"] === undefined) throw new Error(`${name} sent no etag`)
  return result
}

export const benchHotPath = async (): Promise<Array<BenchRow>> => {
  if (!hasWrk()) {
    process.stderr.write("bench-hot-path: wrk not found, skipping (apt-get install wrk)\n")
    return [{ name: "hot path (wrk)", value: "skipped: wrk is not installed (apt-get install wrk)" }]
  }
  const work = mkdtempSync(join(tmpdir(), "mtc-bench-hot-"))
  const ourRealm = join(work, "ours")
  const viteRoot = join(work, "vite")
  mkdirSync(ourRealm)
  writeFileSync(join(ourRealm, "mod.ts"), source("initial"))
  cpSync(ourRealm, viteRoot, { recursive: true })
  const children: Array<ChildProcess> = []
  const server = await startServer({ realmDir: ourRealm, store: "memory" })
  try {
    const ourUrl = `${server.url}/mod.ts`
    for (let i = 0; i < 3; i++) await get(ourUrl) // transpiled, first L1 hit (router), then the fast path
    const ours = await get(ourUrl)
    const headers = shown("serve", ours.headers)
    writeFileSync(join(work, "body.js"), ours.body)
    writeFileSync(join(work, "headers.json"), JSON.stringify(headers))
    const bare = await spawnListening("./bare-hot-server.ts", [join(work, "body.js"), join(work, "headers.json")])
    children.push(bare.child)
    const vite = await spawnListening("./vite-dev-server.ts", [viteRoot])
    children.push(vite.child)
    const viteUrl = `${vite.url}/mod.ts`
    const viteReply = await get(viteUrl)
    if (viteReply.status !== 200) throw new Error(`vite answered ${viteReply.status}`)
    const viteEtag = shown("vite", viteReply.headers)["etag"] ?? ""
    const bareUrl = `${bare.url}/mod.ts`
    const bareCheck = await get(bareUrl)
    if (!bareCheck.body.equals(ours.body)) throw new Error("the bare server sends other bytes")
    process.stderr.write(
      `bench-hot-path: body ${ours.body.length} B (vite ${viteReply.body.length} B, ` +
        `source map in vite's body: ${viteReply.body.includes("sourceMappingURL")})\n`
    )

    const targets = [
      { name: "serve (fast path)", url: ourUrl, etag: headers["etag"] ?? "" },
      { name: "bare node:http", url: bareUrl, etag: headers["etag"] ?? "" },
      { name: "vite dev", url: viteUrl, etag: viteEtag }
    ]
    const results = new Map<string, Array<WrkResult>>()
    const record = (key: string, result: WrkResult) => {
      if (result.errors > 0) process.stderr.write(`bench-hot-path: ${key}: ${result.errors} errors\n`)
      results.set(key, [...(results.get(key) ?? []), result])
    }
    for (const target of targets) wrk(target.url) // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of targets) {
        record(`${target.name}|hit`, wrk(target.url))
        record(`${target.name}|304`, wrk(target.url, { "if-none-match": target.etag }))
      }
    }
    const rps = (key: string) => median((results.get(key) ?? []).map((r) => r.rps))
    const p99 = (key: string) => median((results.get(key) ?? []).map((r) => r.p99ms))
    const rows: Array<BenchRow> = []
    for (const kind of ["hit", "304"] as const) {
      for (const target of targets) {
        const key = `${target.name}|${kind}`
        rows.push({
          name: `${target.name}, warm ${kind === "hit" ? "hits" : "304s"} (wrk -t1 -c32 -d4s; req/s / p99, median of ${ROUNDS})`,
          value: `${rps(key).toFixed(0)} / ${p99(key).toFixed(2)} ms`
        })
      }
      rows.push({ name: `serve / bare node:http, ${kind}`, value: `${(rps(`serve (fast path)|${kind}`) / rps(`bare node:http|${kind}`)).toFixed(2)}x` })
      rows.push({ name: `serve / vite dev, ${kind}`, value: `${(rps(`serve (fast path)|${kind}`) / rps(`vite dev|${kind}`)).toFixed(2)}x` })
    }

    // The same edit with the watcher's part taken out: write, invalidate through the API, then time one GET
    // (the transpile of the new source on the request path).
    const afterInvalidate: Array<number> = []
    for (let edit = 0; edit < EDITS; edit++) {
      const marker = `api-${edit}-${Date.now()}`
      writeFileSync(join(ourRealm, "mod.ts"), source(marker))
      await request(server.url, "/_cache/invalidate?path=/mod.ts", { method: "POST" })
      const started = performance.now()
      const reply = await get(ourUrl)
      afterInvalidate.push(performance.now() - started)
      if (!reply.body.includes(marker)) throw new Error("stale bytes after invalidate")
      await new Promise((resolve) => setTimeout(resolve, 150))
    }
    const ourEdit = await editToFresh(join(ourRealm, "mod.ts"), ourUrl)
    const viteEdit = await editToFresh(join(viteRoot, "mod.ts"), viteUrl)
    rows.push({ name: `serve, edit to fresh bytes (ms, median of ${EDITS})`, value: ourEdit.toFixed(1) })
    rows.push({ name: `vite dev, edit to fresh bytes (ms, median of ${EDITS})`, value: viteEdit.toFixed(1) })
    rows.push({
      name: `serve, one GET right after an API invalidate (ms, median of ${EDITS}: the transpile)`,
      value: median(afterInvalidate).toFixed(1)
    })
    return rows
  } finally {
    for (const child of children) await stop(child)
    await server.stop()
    rmSync(work, { recursive: true, force: true })
  }
}

if (import.meta.main) {
  console.table(await benchHotPath())
}
