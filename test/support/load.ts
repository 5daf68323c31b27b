/**
 * Load, measurement and Postgres probes for tests that drive real `serve` processes:
 * herds of concurrent GETs, a steady bounded load, `/_cache/stats`, RSS from /proc, the
 * sessions and advisory locks a database holds, and raw-socket requests whose bytes are
 * sent exactly as given.
 */
import { Schema } from "effect"
import { StatsBody } from "../../src/http/RealmServer.ts"
import { readFileSync } from "node:fs"
import { connect } from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import { expect } from "vitest"
import { dropDatabase, psql } from "./database.ts"
import { jsonOf, removeRealms, request, type ServerProcess, sleep, stopAll } from "./server.ts"

// -----------------------------------------------------------------------------
// Requests
// -----------------------------------------------------------------------------

/** One GET as a load generator saw it. */
export interface Sample {
  readonly server: number
  readonly path: string
  /** 0 when the request itself failed (connection refused or reset, timeout). */
  readonly status: number
  readonly outcome: string | undefined
  readonly etag: string | undefined
  /** The body, decoded from its `content-encoding` (br or gzip) when it had one. */
  readonly body: string
  /** The answer's `content-encoding` (`identity` when none). */
  readonly encoding: string
  readonly ms: number
  readonly error?: string
  /** When the request started, in `performance.now()` milliseconds. */
  readonly at: number
}

/** GETs one path, never throwing: a failed request is a sample with status 0. */
export const sample = async (
  servers: ReadonlyArray<{ readonly url: string }>,
  server: number,
  path: string,
  options: { readonly timeoutMs?: number; readonly headers?: Record<string, string> } = {}
): Promise<Sample> => {
  const at = performance.now()
  try {
    const response = await withTimeout(
      request(servers[server]!.url, path, options.headers === undefined ? {} : { headers: options.headers }),
      options.timeoutMs ?? 30_000
    )
    const outcome = response.headers["x-module-cache"]
    const etag = response.headers.etag
    const encoding = response.headers["content-encoding"] ?? "identity"
    return {
      server,
      path,
      status: response.status,
      outcome: typeof outcome === "string" ? outcome : undefined,
      etag: typeof etag === "string" ? etag : undefined,
      body: decodedBody(encoding, response.bytes),
      encoding,
      ms: performance.now() - at,
      at
    }
  } catch (error) {
    return {
      server,
      path,
      status: 0,
      outcome: undefined,
      etag: undefined,
      body: "",
      encoding: "identity",
      ms: performance.now() - at,
      error: String(error),
      at
    }
  }
}

const withTimeout = <A>(promise: Promise<A>, ms: number): Promise<A> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
    promise.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error) => {
        clearTimeout(timer)
        reject(error)
      }
    )
  })

/** An answer's body as text, decoded from its content coding. */
const decodedBody = (encoding: string, bytes: Buffer): string =>
  (encoding === "br" ? brotliDecompressSync(bytes) : encoding === "gzip" ? gunzipSync(bytes) : bytes).toString("utf8")

/**
 * A herd: `k` concurrent GETs of every path on every server, all started at once.
 * `servers` may include a server that is about to die; its samples are kept (status 0).
 * `headers` gives the request headers of each round (none by default).
 */
export const herd = (
  servers: ReadonlyArray<{ readonly url: string }>,
  paths: ReadonlyArray<string>,
  k: number,
  headers?: (round: number) => Record<string, string>
): Promise<Array<Sample>> => {
  const all: Array<Promise<Sample>> = []
  for (let round = 0; round < k; round++) {
    const options = headers === undefined ? {} : { headers: headers(round) }
    for (const path of paths) for (let s = 0; s < servers.length; s++) all.push(sample(servers, s, path, options))
  }
  return Promise.all(all)
}

/** A compact description of some samples, for assertion messages. */
export const describeSamples = (samples: ReadonlyArray<Sample>, limit = 10): string =>
  samples.slice(0, limit).map((s) =>
    `server ${s.server} ${s.path}: ${s.status} ${s.outcome ?? ""} ${s.ms.toFixed(0)}ms ${s.error ?? s.body.slice(0, 200)}`
  ).join("\n")

/** How many samples had each outcome. */
export const outcomes = (samples: ReadonlyArray<Sample>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const s of samples) {
    const key = s.status === 200 ? (s.outcome ?? "raw") : `status ${s.status}`
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}

/**
 * A steady load: `concurrency` workers, each sending one GET at a time chosen by `pick`,
 * until `durationMs` passed or `maxRequests` were sent (or `stop()` is called).
 */
export const steadyLoad = (options: {
  readonly servers: ReadonlyArray<{ readonly url: string }>
  readonly concurrency: number
  readonly durationMs: number
  readonly maxRequests: number
  /** The next request: which server and which path. */
  readonly pick: (n: number) => { readonly server: number; readonly path: string }
  readonly timeoutMs?: number
}): {
  readonly done: Promise<Array<Sample>>
  readonly stop: () => void
  readonly sent: () => number
  /** The samples finished so far. */
  readonly samples: () => ReadonlyArray<Sample>
} => {
  const samples: Array<Sample> = []
  const deadline = Date.now() + options.durationMs
  let sent = 0
  let stopped = false
  const worker = async () => {
    while (!stopped && Date.now() < deadline && sent < options.maxRequests) {
      const { server, path } = options.pick(sent++)
      samples.push(await sample(options.servers, server, path, { timeoutMs: options.timeoutMs ?? 30_000 }))
    }
  }
  const done = Promise.all(Array.from({ length: options.concurrency }, worker)).then(() => samples)
  return {
    done,
    stop: () => {
      stopped = true
    },
    sent: () => sent,
    samples: () => samples
  }
}

// -----------------------------------------------------------------------------
// Server state
// -----------------------------------------------------------------------------

/** The body of `/_cache/stats`. */
export type Stats = StatsBody

export const stats = async (server: { readonly url: string }): Promise<Stats> => {
  const response = await request(server.url, "/_cache/stats")
  if (response.status !== 200) throw new Error(`stats: ${response.status} ${response.body}`)
  return Schema.decodeUnknownSync(StatsBody)(jsonOf(response))
}

/** The sum of `transpiles` over servers. */
export const totalTranspiles = async (servers: ReadonlyArray<{ readonly url: string }>): Promise<number> =>
  (await Promise.all(servers.map(stats))).reduce((sum, s) => sum + s.transpiles, 0)

/** The resident set size of a process, in bytes (from /proc/<pid>/status). */
export const rssOf = (pid: number): number => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
  if (match?.[1] === undefined) throw new Error(`no VmRSS for ${pid}`)
  return Number(match[1]) * 1024
}

/** The process id of a `serve` child (the Node process itself: the helper spawns no wrapper). */
export const pidOf = (server: ServerProcess): number => {
  const pid = server.child.pid
  if (pid === undefined) throw new Error("server has no pid")
  return pid
}

// -----------------------------------------------------------------------------
// Postgres probes
// -----------------------------------------------------------------------------

/** The database name of a Postgres URL. */
export const databaseOf = (url: string): string => new URL(url).pathname.slice(1)

/** Sessions connected to a database (other than psql's own). */
export const sessionCount = (database: string): number =>
  Number(psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = '${database}' AND pid <> pg_backend_pid()`))

/** Advisory locks held in a database. */
export const advisoryLockCount = (database: string): number =>
  Number(psql(`SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
    WHERE l.locktype = 'advisory' AND d.datname = '${database}'`))

/** Terminates every backend of a database (a simulated Postgres restart); returns how many. */
export const terminateAll = (database: string): number =>
  Number(psql(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = '${database}' AND pid <> pg_backend_pid()`))

/** Waits until `check` holds, polling every `everyMs`; throws with `what` after `timeoutMs`. */
export const until = async (check: () => boolean | Promise<boolean>, timeoutMs: number, what: string, everyMs = 50) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`)
    await sleep(everyMs)
  }
}

/**
 * The end of a file's fleet of `serve` processes on the database at `dbUrl`: stops them, waits
 * until their sessions closed (and, with `noLocksLeft`, checks that no advisory lock is left),
 * then drops the database and the realms, whatever failed.
 */
export const endFleet = async (dbUrl: string, options: { readonly noLocksLeft: boolean }) => {
  const database = databaseOf(dbUrl)
  await stopAll()
  try {
    await until(() => sessionCount(database) === 0, 10_000, "the fleet's sessions closed")
    if (options.noLocksLeft) expect(advisoryLockCount(database)).toBe(0)
  } finally {
    dropDatabase(dbUrl)
    removeRealms()
  }
}

// -----------------------------------------------------------------------------
// Raw sockets
// -----------------------------------------------------------------------------

/** What came back on a raw socket: the status line's code (0 when none) and the whole text. */
export interface RawReply {
  readonly status: number
  readonly text: string
}

/**
 * Sends bytes exactly as given on a fresh TCP connection and reads until the server closes
 * it (send `Connection: close`) or `timeoutMs` passes.
 */
export const rawRequest = (url: string, bytes: Buffer | string, timeoutMs = 10_000): Promise<RawReply> =>
  new Promise((resolve, reject) => {
    const target = new URL(url)
    const socket = connect(Number(target.port), target.hostname)
    const chunks: Array<Buffer> = []
    const finish = () => {
      clearTimeout(timer)
      const text = Buffer.concat(chunks).toString("latin1")
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      resolve({ status: match?.[1] === undefined ? 0 : Number(match[1]), text })
    }
    const timer = setTimeout(() => {
      socket.destroy()
      finish()
    }, timeoutMs)
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("end", finish)
    socket.on("error", (error) => {
      clearTimeout(timer)
      if (chunks.length > 0) finish()
      else reject(error)
    })
    socket.write(bytes)
  })

/** The median of some numbers. */
export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  if (sorted.length === 0) return 0
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

// -----------------------------------------------------------------------------
// Live heap (test/support/memory-probe.ts)
// -----------------------------------------------------------------------------

/** The preload that answers SIGUSR2 with the heap after a full GC. */
export const memoryProbePath = fileURLToPath(new URL("./memory-probe.ts", import.meta.url))

/** The environment that loads the memory probe into a child, writing into `dir`. */
export const memoryProbeEnv = (dir: string): Record<string, string> => ({
  NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${memoryProbePath}`.trim(),
  MTC_MEMORY_PROBE_DIR: dir
})

/** What the memory probe reports. */
export interface MemoryReport {
  readonly rss: number
  readonly heapUsed: number
  readonly heapTotal: number
  readonly external: number
  readonly arrayBuffers: number
  readonly count: number
}

const readReport = (file: string): MemoryReport | undefined => {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as MemoryReport
  } catch {
    return undefined
  }
}

/** Asks a child with the memory probe for its memory after a full GC. */
export const liveMemory = async (pid: number, dir: string, timeoutMs = 10_000): Promise<MemoryReport> => {
  const file = path.join(dir, `${pid}.json`)
  const before = readReport(file)?.count ?? 0
  process.kill(pid, "SIGUSR2")
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const report = readReport(file)
    if (report !== undefined && report.count > before) return report
    if (Date.now() > deadline) throw new Error(`no memory report from ${pid} within ${timeoutMs} ms`)
    await sleep(20)
  }
}
