/**
 * A preload for bench servers (`node --import ./scratchpad/count-sql.ts src/bin.ts serve ...`):
 * counts the SQL a process sends and, on demand, profiles its main thread.
 *
 * - **Postgres**: every frontend message written to a socket is parsed (type byte + length),
 *   per connection, named by the `application_name` of its startup message. A statement is an
 *   Execute (`E`) or a simple Query (`Q`); a round trip is a Sync (`S`) or a simple Query, the
 *   points where the client waits for the server (pipelined ones may overlap).
 * - **PGlite**: every `PGlite.query` / `exec` call on the main thread is a statement (and a
 *   round trip through the WebAssembly Postgres, on the event loop); the time inside them is
 *   summed. With PGlite in its worker thread, the `Query` messages posted to it are counted
 *   (no time: it runs off the event loop).
 *
 * On SIGUSR2 the counts so far are written as JSON to `MTC_BENCH_COUNT_FILE` (with a sequence
 * number). With `MTC_BENCH_PROFILE_DIR` set, the first SIGUSR2 also starts the V8 CPU profiler
 * and the second stops it, writing `<dir>/<pid>.cpuprofile`: a profile of exactly the window
 * between the two signals.
 */
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector"
import * as net from "node:net"
import { join } from "node:path"
import { isMainThread, Worker } from "node:worker_threads"
import { PGlite } from "@electric-sql/pglite"

interface Counts {
  statements: number
  roundTrips: number
  messages: Record<string, number>
  /** Statements run (Bind of a parsed statement, or a simple Query), by text, with counts. */
  parsed: Record<string, number>
  /** Prepared statement names to their text. */
  prepared: Map<string, string>
}
const byConnection = new Map<string, Counts>()
const countsOf = (name: string): Counts => {
  let counts = byConnection.get(name)
  if (counts === undefined) {
    counts = { statements: 0, roundTrips: 0, messages: {}, parsed: {}, prepared: new Map() }
    byConnection.set(name, counts)
  }
  return counts
}
const pglite = { statements: 0, millis: 0, texts: {} as Record<string, number> }

/** The first words of a statement, to group them. */
const shape = (text: string): string => text.replace(/\s+/g, " ").trim().slice(0, 90)

interface Parser {
  started: boolean
  name: string
  pending: Buffer
}
const parsers = new WeakMap<net.Socket, Parser>()

const feed = (socket: net.Socket, chunk: Buffer) => {
  let parser = parsers.get(socket)
  if (parser === undefined) {
    parser = { started: false, name: "unknown", pending: Buffer.alloc(0) }
    parsers.set(socket, parser)
  }
  let data = parser.pending.length === 0 ? chunk : Buffer.concat([parser.pending, chunk])
  for (;;) {
    if (!parser.started) {
      if (data.length < 8) break
      const length = data.readInt32BE(0)
      if (data.length < length) break
      const code = data.readInt32BE(4)
      if (code === 196608) {
        // The startup message: key\0value\0 pairs.
        const fields = data.subarray(8, length).toString("utf8").split("\0")
        const at = fields.indexOf("application_name")
        parser.name = at >= 0 ? (fields[at + 1] ?? "unnamed").replace(/:\d+$/, "") : "unnamed"
        parser.started = true
      }
      data = data.subarray(length)
      continue
    }
    if (data.length < 5) break
    const type = String.fromCharCode(data[0]!)
    const length = data.readInt32BE(1)
    if (data.length < length + 1) break
    const counts = countsOf(parser.name)
    counts.messages[type] = (counts.messages[type] ?? 0) + 1
    if (type === "E" || type === "Q") counts.statements++
    if (type === "S" || type === "Q") counts.roundTrips++
    const body = data.subarray(5, length + 1)
    if (type === "P") {
      const nameEnd = body.indexOf(0)
      const textEnd = body.indexOf(0, nameEnd + 1)
      counts.prepared.set(body.subarray(0, nameEnd).toString("utf8"), shape(body.subarray(nameEnd + 1, textEnd).toString("utf8")))
    } else if (type === "B") {
      const portalEnd = body.indexOf(0)
      const nameEnd = body.indexOf(0, portalEnd + 1)
      const key = counts.prepared.get(body.subarray(portalEnd + 1, nameEnd).toString("utf8")) ?? "(unknown statement)"
      counts.parsed[key] = (counts.parsed[key] ?? 0) + 1
    } else if (type === "Q") {
      const key = shape(body.subarray(0, body.length - 1).toString("utf8"))
      counts.parsed[key] = (counts.parsed[key] ?? 0) + 1
    }
    data = data.subarray(length + 1)
  }
  parser.pending = Buffer.from(data)
}

const write = net.Socket.prototype.write
net.Socket.prototype.write = function(this: net.Socket, chunk: unknown, ...rest: Array<unknown>) {
  if (this.remotePort === 5432 && (chunk instanceof Uint8Array)) {
    try {
      feed(this, Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    } catch {
      // counting must never break the server
    }
  }
  return (write as (...args: Array<unknown>) => boolean).call(this, chunk, ...rest)
} as typeof net.Socket.prototype.write

// PGlite in its worker thread (src/store/PgliteWorker.ts): the statements the main thread posts.
const postMessage = Worker.prototype.postMessage
Worker.prototype.postMessage = function(this: Worker, message: unknown, ...rest: Array<unknown>) {
  if (typeof message === "object" && message !== null && (message as { _tag?: unknown })._tag === "Query") {
    pglite.statements++
    const text = shape(String((message as { sql?: unknown }).sql))
    pglite.texts[text] = (pglite.texts[text] ?? 0) + 1
  }
  return (postMessage as (...args: Array<unknown>) => void).call(this, message, ...rest)
}

// PGlite on this thread (MTC_PGLITE_WORKER=0); not in worker threads, whose counts this thread cannot see.
for (const method of isMainThread ? ["query", "exec"] as const : []) {
  const original = PGlite.prototype[method] as (...args: Array<unknown>) => Promise<unknown>
  ;(PGlite.prototype as unknown as Record<string, unknown>)[method] = async function(this: PGlite, ...args: Array<unknown>) {
    pglite.statements++
    const text = shape(String(args[0]))
    pglite.texts[text] = (pglite.texts[text] ?? 0) + 1
    const started = performance.now()
    try {
      return await original.apply(this, args)
    } finally {
      pglite.millis += performance.now() - started
    }
  }
}

let sequence = 0
const profileDir = process.env["MTC_BENCH_PROFILE_DIR"]
const session = profileDir === undefined || !isMainThread ? undefined : new Session()
if (session !== undefined) {
  session.connect()
  session.post("Profiler.enable")
  session.post("Profiler.setSamplingInterval", { interval: 200 })
}
if (isMainThread) process.on("SIGUSR2", () => {
  sequence++
  const file = process.env["MTC_BENCH_COUNT_FILE"]
  if (file !== undefined) {
    const pg = Object.fromEntries([...byConnection].map(([name, { prepared: _, ...counts }]) => [name, counts]))
    writeFileSync(file, JSON.stringify({ sequence, pg, pglite }))
  }
  if (session === undefined || profileDir === undefined) return
  if (sequence === 1) session.post("Profiler.start")
  else if (sequence === 2) {
    session.post("Profiler.stop", (error, result) => {
      if (error === null) writeFileSync(join(profileDir, `${process.pid}.cpuprofile`), JSON.stringify(result.profile))
    })
  }
})
