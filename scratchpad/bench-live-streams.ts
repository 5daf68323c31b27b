/**
 * Live event streams (issue 37): what 1000 idle streams cost a `serve` process.
 *
 * One `serve --store memory` process on a realm of one 12 KiB TypeScript module, warm. Rounds
 * alternate: warm hits of the module (`wrk -t1 -c32 -d4s`) with no stream open, then with
 * STREAMS (default 1000) idle `/_cache/events` streams open (held by this process, one socket
 * each), then closed again. Prints the median of each and their ratio, and the server's RSS
 * (VmRSS) before and with the streams, and how long one change takes to reach all of them.
 *
 * Needs `wrk` (`apt-get install wrk`); says so and stops without it.
 * Run: npx node scratchpad/bench-live-streams.ts (BENCH_ROUNDS=3 STREAMS=1000)
 */
import { readFileSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import { join } from "node:path"
import { makeRealm, request, startServer, stopAll } from "../test/support/server.ts"
import { median } from "./bench-l1.ts"
import { twelveKiB } from "./bench-hot-path.ts"
import { hasWrk, wrkRate } from "./wrk-graph.ts"

const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 3)
const STREAMS = Number(process.env["STREAMS"] ?? 1000)
const WRK_ARGS = ["-t1", "-c32", "-d4s"]

if (!hasWrk()) {
  console.log("wrk is missing: apt-get install wrk")
  process.exit(1)
}

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024

interface OpenStream {
  readonly request: http.ClientRequest
  events: number
}

/** Opens `count` streams; resolves once each got its first bytes. */
const openStreams = (port: number, count: number) =>
  Promise.all(Array.from({ length: count }, () =>
    new Promise<OpenStream>((resolve, reject) => {
      const agent = new http.Agent({ keepAlive: false })
      const req = http.get({ host: "127.0.0.1", port, path: "/_cache/events", agent }, (res) => {
        const stream: OpenStream = { request: req, events: 0 }
        res.on("data", (chunk: Buffer) => {
          if (chunk.includes("event: change")) stream.events++
          else resolve(stream)
        })
        res.on("error", () => {})
      })
      req.on("error", reject)
    })))

const realm = makeRealm({ "hot.ts": twelveKiB() })
const server = await startServer({ realmDir: realm, store: "memory", env: { MTC_MAX_CONNECTIONS: String(STREAMS + 512) } })
const pid = server.child.pid!
const url = `${server.url}/hot.ts`
await request(server.url, "/hot.ts")
wrkRate(url, ["-t1", "-c8", "-d2s"])

const without: Array<number> = []
const withStreams: Array<number> = []
const rssBefore: Array<number> = []
const rssWith: Array<number> = []
const fanOut: Array<number> = []
for (let round = 0; round < ROUNDS; round++) {
  without.push(wrkRate(url, WRK_ARGS))
  rssBefore.push(rssMiB(pid))
  const streams = await openStreams(server.port, STREAMS)
  await new Promise((resolve) => setTimeout(resolve, 500))
  rssWith.push(rssMiB(pid))
  withStreams.push(wrkRate(url, WRK_ARGS))
  // One change, to every stream.
  const started = performance.now()
  writeFileSync(join(realm, "hot.ts"), `${twelveKiB()}\n// round ${round}\n`)
  while (streams.some((stream) => stream.events === 0)) await new Promise((resolve) => setTimeout(resolve, 5))
  fanOut.push(performance.now() - started)
  for (const stream of streams) stream.request.destroy()
  await new Promise((resolve) => setTimeout(resolve, 500))
  await request(server.url, "/hot.ts")
  await request(server.url, "/hot.ts")
}

const fmt = (n: number) => n.toFixed(0)
console.log(`warm hits of a 12 KiB module, wrk ${WRK_ARGS.join(" ")}, ${ROUNDS} rounds (median)`)
console.log(`  no stream open:        ${fmt(median(without))} req/s  (${without.map(fmt).join(", ")})`)
console.log(`  ${STREAMS} idle streams:    ${fmt(median(withStreams))} req/s  (${withStreams.map(fmt).join(", ")})`)
console.log(`  ratio:                 ${(median(withStreams) / median(without)).toFixed(3)}x`)
console.log(`server RSS: ${median(rssBefore).toFixed(1)} MiB without, ${median(rssWith).toFixed(1)} MiB with ${STREAMS} streams (+${(median(rssWith) - median(rssBefore)).toFixed(1)} MiB, ${((median(rssWith) - median(rssBefore)) * 1024 / STREAMS).toFixed(1)} KiB per stream)`)
console.log(`an edit on disk reached all ${STREAMS} streams in ${fmt(median(fanOut))} ms (median; ${fanOut.map(fmt).join(", ")}; includes the watcher's 25 ms quiet time)`)
await server.stop()
await stopAll()
