/**
 * A TCP proxy the test controls, standing between the code under test and Postgres:
 * `cut` drops every connection and refuses new ones (the database "goes away"), `restore`
 * lets connections through again.
 */
import { createServer, connect, type Server, type Socket } from "node:net"

export interface Proxy {
  readonly port: number
  /** A Postgres URL through the proxy for the given database URL. */
  readonly urlFor: (databaseUrl: string) => string
  readonly cut: () => void
  readonly restore: () => void
  readonly close: () => Promise<void>
  readonly connections: () => number
}

export const startProxy = (target: { host: string; port: number }): Promise<Proxy> =>
  new Promise((resolve) => {
    const sockets = new Set<Socket>()
    let open = true
    const server: Server = createServer((client) => {
      if (!open) {
        client.destroy()
        return
      }
      const upstream = connect(target.port, target.host)
      sockets.add(client)
      sockets.add(upstream)
      const drop = () => {
        client.destroy()
        upstream.destroy()
        sockets.delete(client)
        sockets.delete(upstream)
      }
      client.on("error", drop).on("close", drop)
      upstream.on("error", drop).on("close", drop)
      client.pipe(upstream)
      upstream.pipe(client)
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve({
        port,
        urlFor: (databaseUrl) => {
          const url = new URL(databaseUrl)
          url.hostname = "127.0.0.1"
          url.port = String(port)
          return url.toString()
        },
        cut: () => {
          open = false
          for (const socket of sockets) socket.destroy()
          sockets.clear()
        },
        restore: () => {
          open = true
        },
        connections: () => sockets.size / 2,
        close: () =>
          new Promise<void>((done) => {
            open = false
            for (const socket of sockets) socket.destroy()
            server.close(() => done())
          })
      })
    })
  })
