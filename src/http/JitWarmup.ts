/**
 * A start's JIT warm-up: before the server listens, it answers requests for preloaded
 * modules on a throwaway listener of its own, over loopback, so that V8 has compiled the
 * JavaScript of the serving path (Node's HTTP parser and writer, the {@link FastPath}) before
 * the first client's request, rather than during the first clients' loads.
 *
 * The throwaway server is built by the same function as the real one, with the same fast
 * path, whose answers are not counted while it warms up ({@link FastPathHandler.warming}); it
 * is closed before the real server listens. Nothing in the cache changes: every answer is an
 * L1 hit, peeked. It is only an optimization: a warm-up that fails or takes too long ends
 * early, and the server starts all the same.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { Server } from "node:http"
import { type AddressInfo, connect } from "node:net"
import type { FastPathHandler } from "./FastPath.ts"

/** Requests a warm-up sends by default: enough for V8 to optimize the serving path. */
export const defaultRequests = 1000

/** `MTC_WARMUP_REQUESTS`: the requests of a start's warm-up (default {@link defaultRequests}; 0 turns it off). */
export const requestsConfig: Config.Config<number> = Config.Int("MTC_WARMUP_REQUESTS").pipe(
  Config.withDefault(defaultRequests)
)

/** Keep-alive connections the warm-up's requests share. */
const connections = 8

/** The most a warm-up may take; past it, the server starts without the rest. */
const deadline = Duration.seconds(5)

/** What a warm-up did. */
export interface WarmupSummary {
  /** Responses read. */
  readonly requests: number
  /** Of those, answered by the fast path (the others, if any, got a 503: their path had no route). */
  readonly fastPath: number
  readonly millis: number
}

/**
 * Sends `requests` GETs, round robin over `paths` (every third one conditional, for the 304
 * path), to a server made by `makeServer` whose fast path is `fast`, listening on
 * `127.0.0.1:0`, and closes it. Nothing when `paths` is empty or `requests` is 0.
 */
export const warmUp = Effect.fn("RealmServer.warmUp")(function*(
  makeServer: () => Server,
  fast: FastPathHandler,
  paths: ReadonlyArray<string>,
  requests: number
) {
  yield* Effect.annotateCurrentSpan({ "mtc.warmup.requests": requests, "mtc.warmup.paths": paths.length })
  if (paths.length === 0 || requests <= 0) return { requests: 0, fastPath: 0, millis: 0 } satisfies WarmupSummary
  const started = performance.now()
  const before = fast.warmupAnswered
  const answered = yield* listen(makeServer, fast).pipe(
    Effect.flatMap((port) => Effect.promise((signal) => send(port, paths, requests, signal))),
    Effect.scoped,
    Effect.timeoutOption(deadline),
    Effect.map(Option.getOrElse(() => 0)),
    Effect.catch(() => Effect.succeed(0))
  )
  const summary: WarmupSummary = { requests: answered, fastPath: fast.warmupAnswered - before, millis: performance.now() - started }
  fast.warmupMillis = summary.millis
  yield* Effect.annotateCurrentSpan({ "mtc.warmup.answered": summary.requests, "mtc.warmup.fast_path": summary.fastPath })
  return summary
})

/**
 * The throwaway server, listening on a free loopback port, with `fast` warming; with the
 * scope, `fast` counts again and the server is closed with its connections.
 */
const listen = (makeServer: () => Server, fast: FastPathHandler) =>
  Effect.acquireRelease(
    Effect.callback<Server, Error>((resume) => {
      const server = makeServer()
      // What the fast path does not answer reaches no router here.
      server.on("request", (request, response) => {
        if (!fast.handle(request, response)) response.writeHead(503, { "content-length": 0 }).end()
      })
      server.once("error", (error) => resume(Effect.fail(error)))
      server.listen(0, "127.0.0.1", () => {
        fast.warming = true
        resume(Effect.succeed(server))
      })
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        fast.warming = false
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((server) => (server.address() as AddressInfo).port))

/**
 * Sends the requests over {@link connections} keep-alive connections, one at a time on each
 * (as a browser loads a module graph), from raw sockets that only find where each response
 * ends: the client costs little, so the warm-up's time is mostly the server's. Resolves with
 * the number of responses read.
 */
const send = (port: number, paths: ReadonlyArray<string>, requests: number, signal: AbortSignal) => {
  let next = 0
  let answered = 0
  const requestOf = (index: number) =>
    // Every third request conditional, for the 304 path.
    `GET ${paths[index % paths.length]} HTTP/1.1\r\nhost: 127.0.0.1\r\n${index % 3 === 2 ? "if-none-match: *\r\n" : ""}\r\n`
  const connection = () =>
    new Promise<void>((resolve) => {
      const socket = connect({ port, host: "127.0.0.1", signal })
      let pending: Buffer = Buffer.alloc(0)
      const ask = () => {
        if (next >= requests) return socket.end()
        socket.write(requestOf(next++))
      }
      socket.on("connect", ask).on("data", (chunk: Buffer) => {
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
        for (;;) {
          const head = pending.indexOf("\r\n\r\n")
          if (head === -1) return
          const length = /content-length: *(\d+)/i.exec(pending.toString("latin1", 0, head))
          const end = head + 4 + (length === null ? 0 : Number(length[1]))
          if (pending.length < end) return
          pending = pending.subarray(end)
          answered++
          ask()
        }
      }).on("error", () => resolve()).on("close", () => resolve())
    })
  return Promise.all(Array.from({ length: connections }, connection)).then(() => answered)
}
