/**
 * Starts and stops under load, for the tests of `serve`'s start window and drain:
 *
 * - {@link RawConnection}: one TCP connection on which requests are written as raw bytes and
 *   responses read one at a time (status, headers, body), and whose close is seen;
 * - {@link hammerPort}: clients that connect to a port from the moment it opens (retrying on
 *   `ECONNREFUSED`) and send requests at once, each with a bounded wait for its answer;
 * - {@link startGatedServer}: a `serve` process whose transpiles wait at a gate (./gated-serve.ts);
 * - {@link keepAliveLoad}: a continuous load over keep-alive connections that counts failures
 *   and the worst latency;
 * - {@link rollingRestart}: replaces each process of a fleet in turn (SIGTERM, wait for its
 *   exit, start a new one on the same port).
 */
import { type ChildProcess, fork } from "node:child_process"
import * as http from "node:http"
import { connect, type Socket } from "node:net"
import { fileURLToPath } from "node:url"
import { stats, type Stats } from "./load.ts"
import { root, type ServerProcess, sleep, testAdminToken } from "./server.ts"

// -----------------------------------------------------------------------------
// Raw connections
// -----------------------------------------------------------------------------

/** A response read from a {@link RawConnection}. */
export interface RawResponse {
  readonly status: number
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/** Why a connection attempt failed: the error's code (`ECONNREFUSED`, ...). */
const codeOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "code" in error ? String(error.code) : String(error)

/**
 * One TCP connection to 127.0.0.1: requests are written as given, responses (with a
 * `content-length`, as every answer of `serve` has) read in order.
 */
export class RawConnection {
  private buffer: Buffer = Buffer.alloc(0)
  private waiter: (() => void) | undefined
  private ended = false
  private failure: Error | undefined
  /** Resolves when the connection is closed (by either side, or reset). */
  readonly closed: Promise<void>

  readonly socket: Socket

  private constructor(socket: Socket) {
    this.socket = socket
    socket.on("data", (chunk: Buffer) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
      this.wake()
    })
    socket.on("end", () => {
      this.ended = true
      this.wake()
    })
    socket.on("error", (error) => {
      this.failure = error
      this.wake()
    })
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()))
  }

  /** Connects, or fails with the connect error (e.g. `ECONNREFUSED`). */
  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, "127.0.0.1")
      socket.once("connect", () => {
        socket.off("error", reject)
        resolve(new RawConnection(socket))
      })
      socket.once("error", reject)
    })
  }

  /** Whether the server has closed its side, or the connection is gone. */
  get isClosed(): boolean {
    return this.ended || this.failure !== undefined || this.socket.destroyed
  }

  /** Writes bytes as given. */
  write(text: string): void {
    this.socket.write(text)
  }

  /** Writes a GET of `path` (keep-alive unless `close`). */
  get(path: string, options: { readonly close?: boolean; readonly headers?: Record<string, string> } = {}): void {
    const extra = Object.entries(options.headers ?? {}).map(([name, value]) => `${name}: ${value}\r\n`).join("")
    this.write(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${options.close === true ? "connection: close\r\n" : ""}${extra}\r\n`)
  }

  /** The next response; fails if the connection ends first or none is complete within `timeoutMs`. */
  async response(timeoutMs: number): Promise<RawResponse> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const parsed = this.take()
      if (parsed !== undefined) return parsed
      if (this.failure !== undefined) throw this.failure
      if (this.ended) throw new Error("the connection ended before a whole response")
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no answer within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiter = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
  }

  /** Whether a response (or part of one) has arrived and not been read. */
  get hasData(): boolean {
    return this.buffer.length > 0
  }

  destroy(): void {
    this.socket.destroy()
  }

  private wake(): void {
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.()
  }

  private take(): RawResponse | undefined {
    const head = this.buffer.indexOf("\r\n\r\n")
    if (head === -1) return undefined
    const lines = this.buffer.toString("latin1", 0, head).split("\r\n")
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1] ?? 0)
    const headers: Record<string, string> = {}
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":")
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    const length = Number(headers["content-length"] ?? 0)
    const end = head + 4 + length
    if (this.buffer.length < end) return undefined
    const body = this.buffer.toString("utf8", head + 4, end)
    this.buffer = this.buffer.subarray(end)
    return { status, headers, body }
  }
}

// -----------------------------------------------------------------------------
// The start window
// -----------------------------------------------------------------------------

/** What a {@link hammerPort} run saw. */
export interface HammerResult {
  /** Requests written on a connection that the port accepted. */
  readonly sent: number
  /** Of those, answered with a whole response of the expected status. */
  readonly answered: number
  /** Connection attempts refused before the port opened. */
  readonly refused: number
  /** Every request that was sent and not answered as expected, described. */
  readonly failures: ReadonlyArray<string>
}

/**
 * Hammers `port` from now on: `concurrency` clients each connect (retrying every `retryMs` (default 10) on
 * `ECONNREFUSED`, so the first connections land the moment the port opens), then send up to
 * `perConnection` GETs one after the other on that keep-alive connection (the last one with
 * `connection: close`), then connect again, until `requests` were sent in all. Every request
 * must be answered with status 200 within `timeoutMs`; anything else is a failure. `stop`
 * ends it early (a process that failed to start).
 */
export const hammerPort = (port: number, options: {
  readonly paths: ReadonlyArray<string>
  readonly requests: number
  readonly concurrency?: number
  readonly perConnection?: number
  readonly timeoutMs?: number
  readonly retryMs?: number
}): { readonly done: Promise<HammerResult>; readonly stop: () => void } => {
  const perConnection = options.perConnection ?? 4
  const timeoutMs = options.timeoutMs ?? 10_000
  let sent = 0
  let answered = 0
  let refused = 0
  let stopped = false
  const failures: Array<string> = []
  const client = async () => {
    while (!stopped && sent < options.requests) {
      let connection: RawConnection
      try {
        connection = await RawConnection.open(port)
      } catch (error) {
        if (codeOf(error) !== "ECONNREFUSED") failures.push(`connect: ${codeOf(error)}`)
        refused++
        await sleep(options.retryMs ?? 10)
        continue
      }
      try {
        for (let i = 0; i < perConnection && !stopped && sent < options.requests; i++) {
          const path = options.paths[sent % options.paths.length]!
          const close = i === perConnection - 1
          sent++
          connection.get(path, { close })
          try {
            const response = await connection.response(timeoutMs)
            if (response.status === 200) answered++
            else failures.push(`${path}: status ${response.status} ${response.body.slice(0, 200)}`)
            if (response.headers["connection"] === "close") break
          } catch (error) {
            failures.push(`${path}: ${error instanceof Error ? error.message : String(error)}`)
            break
          }
        }
      } finally {
        connection.destroy()
      }
    }
  }
  const done = Promise.all(Array.from({ length: options.concurrency ?? 16 }, client))
    .then((): HammerResult => ({ sent, answered, refused, failures }))
  return {
    done,
    stop: () => {
      stopped = true
    }
  }
}

// -----------------------------------------------------------------------------
// A serve process with gated transpiles
// -----------------------------------------------------------------------------

const gatedServePath = fileURLToPath(new URL("./gated-serve.ts", import.meta.url))

/** A running ./gated-serve.ts process. */
export interface GatedServer {
  readonly url: string
  readonly port: number
  readonly child: ChildProcess
  readonly output: () => string
  /** Resolves once transpiles of all of `paths` have entered the gate. */
  readonly started: (paths: ReadonlyArray<string>) => Promise<void>
  /** Lets every held transpile go on. */
  readonly release: () => void
  /** Resolves with the exit code (or signal) once the process has exited. */
  readonly exited: Promise<number | string | null>
}

/** Starts ./gated-serve.ts on `realmDir` and waits for its listening line. */
export const startGatedServer = async (realmDir: string, timeoutMs = 60_000): Promise<GatedServer> => {
  const child = fork(gatedServePath, [], {
    cwd: root,
    env: { ...process.env, NO_COLOR: "1", REALM_DIR: realmDir, MTC_ADMIN_TOKEN: testAdminToken },
    execPath: process.execPath,
    stdio: ["ignore", "pipe", "pipe", "ipc"]
  })
  let output = ""
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8")
  })
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8")
  })
  const entered = new Set<string>()
  const wakers = new Set<() => void>()
  child.on("message", (message: unknown) => {
    if (typeof message === "object" && message !== null && "started" in message) {
      entered.add(String(message.started))
      for (const wake of wakers) wake()
    }
  })
  const exited = new Promise<number | string | null>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal)))
  const deadline = Date.now() + timeoutMs
  let url: string | undefined
  while (url === undefined) {
    url = /listening on (http:\/\/[^\s/]+)\//.exec(output)?.[1]
    if (url !== undefined) break
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`gated serve exited early:\n${output}`)
    if (Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`gated serve did not listen in time:\n${output}`)
    }
    await sleep(25)
  }
  return {
    url,
    port: Number(new URL(url).port),
    child,
    output: () => output,
    started: (paths) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if (paths.every((path) => entered.has(path))) {
            wakers.delete(check)
            resolve()
          }
        }
        wakers.add(check)
        check()
      }),
    release: () => {
      child.send("release")
    },
    exited
  }
}

// -----------------------------------------------------------------------------
// Continuous load
// -----------------------------------------------------------------------------

/** What a {@link keepAliveLoad} saw. */
export interface LoadSummary {
  readonly requests: number
  /** Requests that failed (an error, a status other than 200, or no answer within the timeout), described. */
  readonly failures: ReadonlyArray<string>
  /** The slowest answer, in milliseconds. */
  readonly worstMs: number
  /** Answers slower than 1 s. */
  readonly overOneSecond: number
}

/**
 * A continuous load on `url`: `concurrency` clients, each sending one GET at a time (of `paths`,
 * round robin) over keep-alive connections (Node's agent), until `stop`. A request not answered
 * within `timeoutMs` is destroyed and counted as a failure, so a hung request fails the test.
 */
export const keepAliveLoad = (options: {
  readonly url: string
  readonly paths: ReadonlyArray<string>
  readonly concurrency?: number
  readonly timeoutMs?: number
}): {
  /** Requests answered or failed so far. */
  readonly requests: () => number
  /** Resolves once `count` more requests (from now) have finished. */
  readonly after: (count: number) => Promise<void>
  readonly stop: () => Promise<LoadSummary>
} => {
  const target = new URL(options.url)
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.concurrency ?? 8 })
  const timeoutMs = options.timeoutMs ?? 5_000
  const failures: Array<string> = []
  let requests = 0
  let worstMs = 0
  let overOneSecond = 0
  let stopped = false
  const waiters = new Set<() => void>()
  const one = (path: string) =>
    new Promise<void>((resolve) => {
      const started = performance.now()
      const finish = (failure?: string) => {
        const ms = performance.now() - started
        if (ms > worstMs) worstMs = ms
        if (ms > 1000) overOneSecond++
        if (failure !== undefined) failures.push(`${path}: ${failure}`)
        requests++
        for (const wake of waiters) wake()
        resolve()
      }
      const req = http.get({ host: target.hostname, port: target.port, path, agent }, (res) => {
        res.resume()
        res.on("end", () => finish(res.statusCode === 200 ? undefined : `status ${res.statusCode}`))
        res.on("error", (error) => finish(error.message))
      })
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
      req.on("error", (error) => finish(error.message))
    })
  let next = 0
  const client = async () => {
    while (!stopped) await one(options.paths[next++ % options.paths.length]!)
  }
  const clients = Promise.all(Array.from({ length: options.concurrency ?? 8 }, client))
  return {
    requests: () => requests,
    after: (count) =>
      new Promise<void>((resolve) => {
        const goal = requests + count
        const check = () => {
          if (requests >= goal || stopped) {
            waiters.delete(check)
            resolve()
          }
        }
        waiters.add(check)
        check()
      }),
    stop: async () => {
      stopped = true
      await clients
      agent.destroy()
      return { requests, failures, worstMs, overOneSecond }
    }
  }
}

// -----------------------------------------------------------------------------
// Rolling restarts
// -----------------------------------------------------------------------------

/** One process replaced by {@link rollingRestart}. */
export interface Replaced {
  readonly port: number
  /** Its `/_cache/stats` just before its SIGTERM. */
  readonly lastStats: Stats
  /** Its exit code (or signal). */
  readonly exit: number | string | null
}

/**
 * Replaces each process of `fleet` in turn, in place: reads its stats, SIGTERMs it, waits for
 * its exit, starts a new one on the same port with `start`, then waits for `between` (e.g. some
 * requests of a load reaching the fleet) before the next one.
 */
export const rollingRestart = async (
  fleet: Array<ServerProcess>,
  start: (port: number, index: number) => Promise<ServerProcess>,
  between: () => Promise<void> = () => Promise.resolve()
): Promise<Array<Replaced>> => {
  const replaced: Array<Replaced> = []
  for (let index = 0; index < fleet.length; index++) {
    const old = fleet[index]!
    const lastStats = await stats(old)
    const exit = await old.stop("SIGTERM")
    replaced.push({ port: old.port, lastStats, exit })
    fleet[index] = await start(old.port, index)
    await between()
  }
  return replaced
}
