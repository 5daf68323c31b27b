/**
 * An HTTP proxy in front of a server that records every exchange as the server answered it
 * (a browser reports a revalidated module to the page as a `200`, so statuses are taken
 * on the wire). Used by the browser tests and benches.
 */
import * as http from "node:http"
import type { Page } from "playwright-core"

/** One request as the server answered it. */
export interface Exchange {
  /** The path, without the query. */
  readonly path: string
  /** The query, with its `?` (empty when none). */
  readonly search: string
  readonly ifNoneMatch: string | undefined
  readonly status: number
  readonly etag: string | undefined
  readonly cache: string | undefined
  readonly cacheControl: string | undefined
}

/** A running recorder: its URL, the exchanges so far (in order of answer), and `close`. */
export interface Recorder {
  readonly url: string
  readonly exchanges: Array<Exchange>
  readonly close: () => Promise<void>
}

/** Starts a recording proxy in front of `target` (`http://host:port`). */
export const startRecorder = (target: string): Promise<Recorder> =>
  new Promise((resolve) => {
    const upstream = new URL(target)
    const exchanges: Array<Exchange> = []
    const proxy = http.createServer((req, res) => {
      const forward = http.request({
        host: upstream.hostname,
        port: upstream.port,
        path: req.url,
        method: req.method,
        headers: req.headers
      }, (answer) => {
        const header = (name: string) => {
          const value = answer.headers[name]
          return typeof value === "string" ? value : undefined
        }
        const url = new URL(req.url ?? "/", target)
        exchanges.push({
          path: url.pathname,
          search: url.search,
          ifNoneMatch: typeof req.headers["if-none-match"] === "string" ? req.headers["if-none-match"] : undefined,
          status: answer.statusCode ?? 0,
          etag: header("etag"),
          cache: header("x-module-cache"),
          cacheControl: header("cache-control")
        })
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      })
      forward.on("error", () => res.destroy())
      req.pipe(forward)
    })
    proxy.listen(0, "127.0.0.1", () => {
      const address = proxy.address()
      const port = address !== null && typeof address === "object" ? address.port : 0
      resolve({
        url: `http://127.0.0.1:${port}`,
        exchanges,
        close: () =>
          new Promise((done) => {
            proxy.closeAllConnections()
            proxy.close(() => done())
          })
      })
    })
  })

/** Collects what a page reports as errors (uncaught exceptions and `console.error`), as they come. */
export const pageErrors = (page: Page): Array<string> => {
  const errors: Array<string> = []
  page.on("pageerror", (error) => errors.push(error.message))
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text())
  })
  return errors
}
