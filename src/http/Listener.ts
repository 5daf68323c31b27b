/**
 * When the realm server accepts connections, and how it stops, as nginx's and Envoy's listeners
 * do it: a listener accepts only once what answers is ready, and draining is a state of its own.
 *
 * **Start.** {@link serve} attaches the request handler, then calls `listen`, in one turn of the
 * event loop: the port opens only once the router can answer. A client that comes earlier is
 * refused (`ECONNREFUSED`, which clients and proxies retry or send elsewhere) instead of being
 * accepted by a port that never answers it. (The platform's `NodeHttpServer` listens when its
 * layer is built and attaches the router later, in `serve`: requests that arrive in between hang.)
 *
 * **Drain.** Closing the scope of {@link serve} (what `serve` does on SIGTERM or SIGINT):
 * 1. the listening socket closes: no connection is accepted any more;
 * 2. idle keep-alive connections, and connections that have sent nothing yet, are closed at once (after the event loop's next poll phase, so
 *    that a request already on its way is read, and answered), so that a proxy does not send on them;
 * 3. long-lived responses end (the hooks of {@link Listener.onDrain}: event streams);
 * 4. every request received (or whose first bytes had arrived) is answered, with
 *    `connection: close`, and its connection closes after that response; a connection whose
 *    response had already gone out with `keep-alive` is closed as soon as it is idle;
 * 5. past the drain timeout, the connections still open are closed.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as HttpServerError from "effect/http/HttpServerError"
import { type IncomingMessage, type RequestListener, type Server, ServerResponse } from "node:http"
import { type AddressInfo, Server as NetServer, type Socket } from "node:net"

/** How long a drain waits for the requests it accepted by default. */
export const defaultDrainTimeout: Duration.Duration = Duration.seconds(10)

/**
 * `MTC_HTTP_DRAIN_TIMEOUT`: how long a stopping server waits for the requests it accepted to be
 * answered before it closes their connections (default {@link defaultDrainTimeout}).
 */
export const drainTimeoutConfig: Config.Config<Duration.Duration> = Config.Duration("MTC_HTTP_DRAIN_TIMEOUT").pipe(
  Config.withDefault(defaultDrainTimeout)
)

/** How often a drain closes the connections that became idle since (keep-alive answers sent before it began). */
const sweepMillis = 20

/** The drain state of one server, and the response class that obeys it. */
export class Listener {
  /** Set once the drain begins: every response whose head is not written yet closes its connection. */
  draining = false
  /** The open connections: the drain closes those that have not sent a byte yet, as it closes idle ones. */
  readonly sockets = new Set<Socket>()
  /** Called when the drain begins (to end long-lived responses, such as event streams). */
  private readonly drainHooks: Array<() => void> = []
  /**
   * The response class to give Node's `createServer({ ServerResponse })`: while {@link draining},
   * its head says `connection: close` and Node closes the connection after it.
   */
  readonly ServerResponse: typeof ServerResponse

  constructor() {
    const listener = this
    const writeHead = ServerResponse.prototype.writeHead
    class DrainingResponse<Request extends IncomingMessage = IncomingMessage> extends ServerResponse<Request> {}
    // Every head goes through writeHead, an implicit one (`end()` alone) too.
    DrainingResponse.prototype.writeHead = function(this: ServerResponse, ...args: Array<unknown>) {
      if (listener.draining) this.shouldKeepAlive = false
      return Reflect.apply(writeHead, this, args)
    } as ServerResponse["writeHead"]
    this.ServerResponse = DrainingResponse
  }

  /** Calls `hook` when the drain begins. */
  onDrain(hook: () => void): void {
    this.drainHooks.push(hook)
  }

  /** Marks the drain as begun and calls the hooks. */
  beginDrain(): void {
    this.draining = true
    for (const hook of this.drainHooks) hook()
  }
}

/** Where {@link serve} listens, and how long its drain may take. */
export interface ServeOptions {
  readonly port: number
  readonly host: string
  readonly drainTimeout: Duration.Input
}

/**
 * Attaches `handler` to `server` (made with `listener.ServerResponse`), then listens; the address
 * it listens on. Closing the scope drains (see the module's doc): it returns once every
 * connection is closed, or the drain timeout has passed and the rest were closed.
 */
export const serve = (
  listener: Listener,
  server: Server,
  handler: RequestListener,
  options: ServeOptions
): Effect.Effect<AddressInfo, HttpServerError.ServeError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<AddressInfo, HttpServerError.ServeError>((resume) => {
      server.on("request", handler)
      server.on("connection", (socket: Socket) => {
        listener.sockets.add(socket)
        socket.once("close", () => listener.sockets.delete(socket))
      })
      const onError = (cause: Error) => {
        server.off("request", handler)
        resume(Effect.fail(new HttpServerError.ServeError({ cause })))
      }
      server.once("error", onError)
      server.listen({ port: options.port, host: options.host }, () => {
        server.off("error", onError)
        resume(Effect.succeed(server.address() as AddressInfo))
      })
    }),
    () => drain(listener, server, Duration.toMillis(Duration.fromInputUnsafe(options.drainTimeout)))
  )

/** Stops accepting, answers what was accepted, closes every connection; at most `timeoutMillis`, then closes the rest. */
const drain = (listener: Listener, server: Server, timeoutMillis: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    listener.beginDrain()
    let over = false
    let sweep: ReturnType<typeof setInterval> | undefined
    const deadline = setTimeout(() => server.closeAllConnections(), timeoutMillis)
    const end = () => {
      over = true
      clearInterval(sweep)
      clearTimeout(deadline)
    }
    // A request whose bytes reached the socket but were not read yet would look idle: the first
    // sweep waits for the event loop's next poll phase, which reads them (and the request is then
    // answered, with `connection: close`).
    setImmediate(() =>
      setImmediate(() => {
        if (over) return
        const closeIdle = () => {
          server.closeIdleConnections()
          // Node counts a connection that never sent a byte (a browser's or a balancer's spare one)
          // as busy, not idle: it would hold the drain until the headers timeout.
          for (const socket of listener.sockets) if (socket.bytesRead === 0) socket.destroy()
        }
        closeIdle()
        sweep = setInterval(closeIdle, sweepMillis)
      })
    )
    // net.Server's close: the listening socket closes and, once no connection is left, it calls
    // back. (http.Server's own close would also destroy the idle-looking connections at once.)
    NetServer.prototype.close.call(server, () => {
      end()
      resume(Effect.void)
    })
    return Effect.sync(() => {
      end()
      server.closeAllConnections()
    })
  })
