/**
 * No request lost at start or stop, on real processes:
 *
 * - **the start window**: the port is hammered from the moment it opens, over several starts,
 *   and every request a process accepted is answered (it listens only once its router is
 *   attached);
 * - **the drain on SIGTERM**: it stops accepting, closes idle keep-alive connections (and those that sent nothing) at once,
 *   answers every request it had accepted (held at a gate meanwhile) with `connection: close`,
 *   and exits 0.
 */
import { afterAll, afterEach, describe, expect, it } from "vitest"
import { hammerPort, RawConnection, startGatedServer } from "./support/restarts.ts"
import { stats } from "./support/load.ts"
import { freePort, makeRealm, removeRealms, startServer, stopAll } from "./support/server.ts"

afterEach(async () => {
  await stopAll()
})
afterAll(() => removeRealms())

/** Resolves once connecting to `port` is refused: the process no longer accepts. */
const refused = async (port: number): Promise<void> => {
  for (;;) {
    const connection = await RawConnection.open(port).catch((error: unknown) => error)
    if (!(connection instanceof RawConnection)) return
    connection.destroy()
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

describe("start window", () => {
  it("every request sent to a starting process, from the moment its port opens, is answered (5 starts, 1000 requests)", async () => {
    const realm = makeRealm({
      "a.ts": "export const a: number = 1\n",
      "lib/b.ts": "import { a } from \"../a.ts\"\nexport const b = a + 1\n",
      "style.css": "body { color: red }\n"
    })
    const paths = ["/a.ts", "/lib/b.ts", "/style.css", "/_cache/health", "/lib/b"]
    const starts = 5
    const perStart = 200
    let sent = 0
    for (let start = 0; start < starts; start++) {
      const port = await freePort()
      // The clients connect before the process exists, and retry until its port opens.
      const hammer = hammerPort(port, { paths, requests: perStart, concurrency: 16, timeoutMs: 10_000 })
      const server = await startServer({ realmDir: realm, store: "memory", port }).catch((error: unknown) => {
        hammer.stop()
        throw error
      })
      const result = await hammer.done
      expect(result.failures, `start ${start}`).toEqual([])
      expect(result.refused, `start ${start}: the clients came before the port opened`).toBeGreaterThan(0)
      expect(result.answered).toBe(perStart)
      sent += result.sent
      expect(await server.stop("SIGTERM")).toBe(0)
    }
    expect(sent).toBe(starts * perStart)
  }, 600_000)
})

describe("drain on SIGTERM", () => {
  it("stops accepting, closes idle keep-alive connections, answers what it accepted with connection: close, exits 0", async () => {
    const realm = makeRealm({
      "a.ts": "export const a = 1\n",
      "b.ts": "export const b = 2\n",
      "style.css": "body { color: red }\n"
    })
    const server = await startGatedServer(realm)

    // An idle keep-alive connection: answered once, then quiet.
    const idle = await RawConnection.open(server.port)
    idle.get("/style.css")
    const first = await idle.response(10_000)
    expect(first.status).toBe(200)
    expect(first.headers["connection"]).toBe("keep-alive")

    // A request whose headers have begun to arrive, but not ended: the server has it.
    const partial = await RawConnection.open(server.port)
    partial.write("GET /style.css HTTP/1.1\r\nhost: 127.0.0.1\r\n")

    // Two keep-alive requests held at the transpile gate: accepted, not answered.
    const held = await Promise.all([RawConnection.open(server.port), RawConnection.open(server.port)])
    held[0]!.get("/a.ts")
    held[1]!.get("/b.ts")
    await server.started(["a.ts", "b.ts"])

    // A connection that has sent nothing (a browser's or a balancer's spare one): Node does not
    // count it as idle, and it used to hold the drain until the headers timeout (10 s).
    const silent = await RawConnection.open(server.port)

    server.child.kill("SIGTERM")
    // It stops accepting, and the idle connection is closed without waiting for the others.
    await refused(server.port)
    await idle.closed
    const silentClosed = await Promise.race([
      silent.closed.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5000))
    ])
    expect(silentClosed).toBe(true)
    expect(held.map((connection) => connection.isClosed || connection.hasData)).toEqual([false, false])

    // The request that was arriving is answered, and told that the connection closes.
    partial.write("\r\n")
    const late = await partial.response(10_000)
    expect(late.status).toBe(200)
    expect(late.headers["connection"]).toBe("close")
    await partial.closed

    server.release()
    for (const [connection, name] of [[held[0]!, "a"], [held[1]!, "b"]] as const) {
      const response = await connection.response(10_000)
      expect(response.status).toBe(200)
      expect(response.body).toContain(`export const ${name} =`)
      expect(response.headers["connection"]).toBe("close")
      await connection.closed
    }
    expect(await server.exited).toBe(0)
  }, 120_000)

  it("serve: a cold transpile in flight at SIGTERM is answered with connection: close, idle connections close, exit 0", async () => {
    // About 0.5 MiB of TypeScript through Babel: its transpile takes a while.
    const big = Array.from({ length: 16_000 }, (_, i) => `export const v${i}: number = ${i}\n`).join("")
    const realm = makeRealm({ "big.ts": big, "style.css": "body { color: red }\n" })
    const server = await startServer({ realmDir: realm, store: "memory", args: ["--engine", "babel"] })

    const idle = await RawConnection.open(server.port)
    idle.get("/style.css")
    expect((await idle.response(10_000)).headers["connection"]).toBe("keep-alive")

    const slow = await RawConnection.open(server.port)
    slow.get("/big.ts")
    // The load is in flight in the server before the signal.
    while ((await stats(server)).inFlight === 0) {
      if (slow.hasData) throw new Error("the transpile ended before the signal could be sent: use a bigger module")
    }
    const exit = server.stop("SIGTERM")
    await idle.closed
    const response = await slow.response(60_000)
    expect(response.status).toBe(200)
    expect(response.body).toContain("export const v15999 = 15999")
    expect(response.headers["connection"]).toBe("close")
    await slow.closed
    expect(await exit).toBe(0)
    expect(server.output()).not.toMatch(/Error|defect/i)
  }, 120_000)
})
