/**
 * The server as an attacker and an operator meet it, on real processes: the admin token and
 * CORS of `/_cache/*`, connection timeouts, and the operational failures (bad flags, an
 * uncreatable data directory, a stale lock, Postgres connection errors, signals).
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as DataDirLock from "../src/store/DataDirLock.ts"
import * as PgConnectError from "../src/store/PgConnectError.ts"
import { baseUrl } from "./support/database.ts"
import {
  makeRealm,
  removeRealms,
  request,
  runCli,
  type ServerProcess,
  startServer,
  stopAll,
  testAdminToken
} from "./support/server.ts"

afterAll(async () => {
  await stopAll()
  removeRealms()
})

describe("admin routes", () => {
  let server: ServerProcess
  beforeAll(async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n" })
    server = await startServer({ realmDir: realm, store: "memory", env: { MTC_HEADERS_TIMEOUT: "1 second" } })
  })

  it("refuse calls without the token, with another token, and from browser pages; accept the token", async () => {
    expect((await request(server.url, "/a.ts")).headers["x-module-cache"]).toBe("transpiled")
    const post = (headers: Record<string, string>, admin = true) =>
      request(server.url, "/_cache/invalidate", { method: "POST", headers, admin })

    const none = await post({}, false)
    expect(none.status).toBe(401)
    expect(none.headers["www-authenticate"]).toBe("Bearer")
    expect((await post({ authorization: "Bearer not-the-token-at-all" })).status).toBe(401)
    expect((await post({ authorization: `Basic ${testAdminToken}` })).status).toBe(401)
    expect((await request(server.url, "/_cache/stats", { admin: false })).status).toBe(401)
    // A page on another origin: a simple text/plain POST (no preflight), even with the token.
    const simple = await post({
      origin: "https://evil.test",
      "content-type": "text/plain",
      authorization: `Bearer ${testAdminToken}`
    })
    expect(simple.status).toBe(403)
    expect(simple.headers["access-control-allow-origin"]).toBeUndefined()
    // Its preflight is refused, without CORS headers.
    for (const p of ["/_cache/invalidate", "/_cache/stats"]) {
      const preflight = await request(server.url, p, {
        method: "OPTIONS",
        headers: {
          origin: "https://evil.test",
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization"
        }
      })
      expect(preflight.status, p).toBe(403)
      expect(preflight.headers["access-control-allow-origin"], p).toBeUndefined()
      expect(preflight.headers["access-control-allow-methods"], p).toBeUndefined()
    }
    // Nothing was invalidated so far.
    expect((await request(server.url, "/a.ts")).headers["x-module-cache"]).toBe("l1")

    const ok = await post({ authorization: `Bearer ${testAdminToken}` })
    expect(ok.status).toBe(200)
    expect(ok.headers["access-control-allow-origin"]).toBeUndefined()
    expect((await request(server.url, "/a.ts")).headers["x-module-cache"]).toBe("transpiled")
    // Modules keep their CORS.
    expect((await request(server.url, "/a.ts")).headers["access-control-allow-origin"]).toBe("*")
    // The token never reaches the log.
    expect(server.output()).not.toContain(testAdminToken)
  })

  it("closes idle and slow-header connections after the headers timeout", async () => {
    const port = server.port
    const closedAfter = (feed: (socket: net.Socket) => void) =>
      new Promise<number>((resolve, reject) => {
        const started = Date.now()
        const socket = net.connect(port, "127.0.0.1", () => feed(socket))
        socket.on("error", () => undefined)
        socket.on("close", () => resolve(Date.now() - started))
        setTimeout(() => {
          socket.destroy()
          reject(new Error("the server kept the connection open for 20 s"))
        }, 20_000)
      })
    const idle = closedAfter(() => undefined)
    let timer: NodeJS.Timeout | undefined
    const slow = closedAfter((socket) => {
      socket.write("GET /a.ts HTTP/1.1\r\nHost: x\r\n")
      timer = setInterval(() => socket.writable && socket.write("X-Slow: 1\r\n"), 200)
    })
    const [idleMs, slowMs] = await Promise.all([idle, slow])
    clearInterval(timer)
    console.log(`idle connection closed after ${idleMs} ms, slow headers after ${slowMs} ms (headers timeout 1 s)`)
    // The server still serves.
    expect((await request(server.url, "/a.ts")).status).toBe(200)
  }, 30_000)
})

describe("operations", () => {
  it("--port 99999 is a one-line error", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n" })
    const result = await runCli(["serve", realm, "--port", "99999", "--store", "memory"])
    expect(result.code).toBe(1)
    const lines = (result.stdout + result.stderr).trim().split("\n").filter((line) => line.trim() !== "")
    expect(lines.join("\n")).toContain("--port must be between 0 and 65535")
    expect(lines.join("\n")).not.toMatch(/\n\s+at /)
  })

  it("a data directory that cannot be created fails at once", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n" })
    const result = await runCli(["serve", realm, "--port", "0", "--store", "pglite", "--data-dir", "/proc/x/y"], {
      timeoutMs: 30_000
    })
    expect(result.code).toBe(1)
    expect(result.stdout + result.stderr).toContain("cannot lock /proc/x/y")
  })

  it("Postgres connection errors name their cause", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n" })
    const refusedUrl = new URL(baseUrl)
    refusedUrl.port = "1"
    const refused = await runCli(["serve", realm, "--port", "0", "--store", "pg"], {
      env: { DATABASE_URL: refusedUrl.toString() }
    })
    expect(refused.code).toBe(1)
    expect(refused.stdout + refused.stderr).toContain("Postgres refused the connection")

    const unknownUrl = new URL(baseUrl)
    unknownUrl.pathname = "/mtc_no_such_database_here"
    const unknown = await runCli(["serve", realm, "--port", "0", "--store", "pg"], {
      env: { DATABASE_URL: unknownUrl.toString() }
    })
    expect(unknown.code).toBe(1)
    expect(unknown.stdout + unknown.stderr).toContain("Postgres has no such database")
  })

  it("the classifier names authentication failures and timeouts by their codes and messages", () => {
    expect(PgConnectError.classify({ code: "28P01", message: "password authentication failed for user \"x\"" }))
      .toBe("authentication")
    expect(PgConnectError.classify({ message: "wrapped", cause: { code: "28000" } })).toBe("authentication")
    expect(PgConnectError.classify(new Error("Connection terminated due to connection timeout"))).toBe("timeout")
    expect(PgConnectError.classify({ errors: [{ code: "ECONNREFUSED" }] })).toBe("refused")
    expect(PgConnectError.classify({ code: "3D000" })).toBe("unknown database")
    expect(PgConnectError.classify(new Error("syntax error"))).toBeUndefined()
  })

  it("SIGINT stops the server gracefully with exit code 0", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n" })
    const server = await startServer({ realmDir: realm, store: "memory" })
    expect((await request(server.url, "/a.ts")).status).toBe(200)
    expect(await server.stop("SIGINT")).toBe(0)
  })
})

describe("watcher", () => {
  it("a lost watch (the realm directory replaced) invalidates only the modules whose content changed", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n", "b.ts": "export const b = 1\n" })
    const server = await startServer({ realmDir: realm, store: "memory" })
    for (const p of ["/a.ts", "/b.ts"]) {
      await request(server.url, p)
      expect((await request(server.url, p)).headers["x-module-cache"], p).toBe("l1")
    }
    // Replace the whole directory: a.ts the same, b.ts edited.
    const replacement = `${realm}-new`
    fs.mkdirSync(replacement)
    fs.writeFileSync(path.join(replacement, "a.ts"), "export const a = 1\n")
    fs.writeFileSync(path.join(replacement, "b.ts"), "export const b = 2\n")
    fs.renameSync(realm, `${realm}-old`)
    fs.renameSync(replacement, realm)
    const deadline = Date.now() + 15_000
    while (!server.output().includes("module(s) changed") && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    expect(server.output()).toContain("1 module(s) changed")
    const b = await request(server.url, "/b.ts")
    expect(b.body).toContain("b = 2")
    expect(b.headers["x-module-cache"]).toBe("transpiled")
    // a.ts was not invalidated: still in L1.
    expect((await request(server.url, "/a.ts")).headers["x-module-cache"]).toBe("l1")
    expect(await server.stop()).toBe(0)
    fs.rmSync(`${realm}-old`, { recursive: true, force: true })
  }, 60_000)
})

describe("data-directory lock", () => {
  const lockWith = (dataDir: string, info: Record<string, unknown>) =>
    fs.writeFileSync(DataDirLock.lockFileOf(dataDir), JSON.stringify({ host: os.hostname(), token: "t", ...info }))

  const acquire = (dataDir: string) => Effect.runPromise(Effect.exit(Effect.scoped(DataDirLock.acquire(dataDir))))

  it("records the holder's start time, and takes over a lock of a reused pid or of a zombie", async () => {
    const dataDir = path.join(makeRealm({}), "data")
    fs.mkdirSync(dataDir)
    // A live process with the pid in the lock, but started at another time: the pid was reused.
    const parent = process.ppid
    const started = DataDirLock.procStat(parent)?.startTime
    expect(started).toMatch(/^\d+$/)
    lockWith(dataDir, { pid: parent, startTime: String(Number(started) + 12345) })
    expect(Exit.isSuccess(await acquire(dataDir))).toBe(true)
    // The same process with its own start time holds the lock.
    lockWith(dataDir, { pid: parent, startTime: started })
    const held = await acquire(dataDir)
    expect(Exit.isFailure(held)).toBe(true)

    // A zombie: a shell's child that exited, never reaped (its parent exec'd into sleep).
    const shell = spawn("sh", ["-c", "sleep 0 & echo $!; exec sleep 5"], { stdio: ["ignore", "pipe", "ignore"] })
    const zombie = await new Promise<number>((resolve) =>
      shell.stdout.once("data", (chunk: Buffer) => resolve(Number(chunk.toString().trim())))
    )
    for (let i = 0; i < 100 && DataDirLock.procStat(zombie)?.state !== "Z"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    expect(DataDirLock.procStat(zombie)?.state).toBe("Z")
    lockWith(dataDir, { pid: zombie, startTime: DataDirLock.procStat(zombie)?.startTime })
    expect(Exit.isSuccess(await acquire(dataDir))).toBe(true)
    shell.kill("SIGKILL")

    // What acquire writes names the start time.
    const holding = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const lock = yield* DataDirLock.acquire(dataDir)
      return JSON.parse(fs.readFileSync(lock.lockFile, "utf8")) as unknown
    })))
    expect(holding).toMatchObject({ pid: process.pid, startTime: DataDirLock.procStat(process.pid)?.startTime })
  })
})
