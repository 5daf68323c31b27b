/**
 * Warm-hit HTTP throughput of `serve` against a bare node:http server serving the same bytes,
 * in the same run. Both are separate processes; the load comes from this one (keep-alive,
 * fixed concurrency, a fixed number of requests per round).
 * Run: npx node scratchpad/bench-http.ts
 */
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { startServer } from "../test/support/server.ts"
import { type BenchRow, median } from "./bench-l1.ts"

const REQUESTS = 5000
const CONCURRENCY = 16
const ROUNDS = 5

/** Requests per second for `REQUESTS` GETs of `url`, `CONCURRENCY` at a time. */
const load = async (url: string): Promise<number> => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  let sent = 0
  const one = () =>
    new Promise<void>((resolve, reject) => {
      http.get(url, { agent }, (response) => {
        if (response.statusCode !== 200) reject(new Error(`status ${response.statusCode}`))
        response.resume()
        response.on("end", () => resolve())
      }).on("error", reject)
    })
  const worker = async () => {
    while (sent < REQUESTS) {
      sent++
      await one()
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  const seconds = (performance.now() - started) / 1000
  agent.destroy()
  return REQUESTS / seconds
}

const startBare = (file: string): Promise<{ url: string; stop: () => void }> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(new URL("./bare-http-server.ts", import.meta.url)), file], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    child.stdout.on("data", (chunk: Buffer) => {
      const match = /listening on (http:\/\/[^\s/]+)\//.exec(chunk.toString())
      if (match?.[1]) resolve({ url: match[1], stop: () => child.kill("SIGTERM") })
    })
    child.once("exit", (code) => reject(new Error(`bare server exited ${code}`)))
  })

export const benchHttp = async (): Promise<Array<BenchRow>> => {
  const realm = mkdtempSync(join(tmpdir(), "mtc-bench-http-"))
  const bodyFile = join(realm, "..", `mtc-bench-http-body-${process.pid}.js`)
  writeFileSync(join(realm, "mod.ts"), Array.from({ length: 100 }, (_, i) => `export const v${i}: number = ${i}\n`).join(""))
  const server = await startServer({ realmDir: realm, store: "memory" })
  try {
    const warm = await fetch(`${server.url}/mod.ts`)
    writeFileSync(bodyFile, Buffer.from(await warm.arrayBuffer()))
    const bare = await startBare(bodyFile)
    try {
      const served: Array<number> = []
      const baseline: Array<number> = []
      await load(`${server.url}/mod.ts`) // warm-up
      await load(`${bare.url}/`)
      for (let round = 0; round < ROUNDS; round++) {
        served.push(await load(`${server.url}/mod.ts`))
        baseline.push(await load(`${bare.url}/`))
      }
      const s = median(served)
      const b = median(baseline)
      return [
        { name: `serve, warm L1 hits (req/s, median of ${ROUNDS}, c=${CONCURRENCY})`, value: s.toFixed(0) },
        { name: `bare node:http, same bytes (req/s, median of ${ROUNDS}, c=${CONCURRENCY})`, value: b.toFixed(0) },
        { name: "serve / bare throughput", value: (s / b).toFixed(2) + "x" }
      ]
    } finally {
      bare.stop()
    }
  } finally {
    await server.stop()
    rmSync(realm, { recursive: true, force: true })
    rmSync(bodyFile, { force: true })
  }
}

if (import.meta.main) {
  console.table(await benchHttp())
}
