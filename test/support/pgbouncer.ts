/**
 * A real PgBouncer (Debian's `pgbouncer`) in transaction mode in front of the test
 * Postgres, on a free port of its own, with its config, auth file and logs in a temp dir.
 * Root cannot run it, so it runs as the `postgres` user then (via `-u`).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { which } from "./prerequisites.ts"
import { freePort } from "./server.ts"

export interface PgBouncer {
  readonly port: number
  /** `url` with its host and port swapped for the pooler's. */
  readonly urlFor: (url: string) => string
  /** Stops PgBouncer (SIGINT: immediate shutdown, server connections closed). */
  readonly stop: () => Promise<void>
  /** Starts it again on the same port. */
  readonly start: () => Promise<void>
  /** Stops it for good and removes its directory. */
  readonly close: () => Promise<void>
}

const waitForPort = async (port: number, deadline: number): Promise<void> => {
  const { connect } = await import("node:net")
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1")
      socket.once("connect", () => {
        socket.destroy()
        resolve(true)
      })
      socket.once("error", () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`pgbouncer did not listen on ${port}`)
}

/** Starts PgBouncer in transaction mode in front of 127.0.0.1:5432 (trust auth). */
export const startPgBouncer = async (options: { readonly poolSize?: number } = {}): Promise<PgBouncer> => {
  const binary = which("pgbouncer")
  if (binary === undefined) throw new Error("pgbouncer is not installed (Debian package `pgbouncer`; npm test installs it)")
  const dir = mkdtempSync(join(tmpdir(), "mtc-pgbouncer-"))
  chmodSync(dir, 0o777)
  const port = await freePort()
  writeFileSync(join(dir, "userlist.txt"), `"postgres" ""\n`)
  writeFileSync(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      "* = host=127.0.0.1 port=5432",
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      `unix_socket_dir =`,
      "auth_type = trust",
      `auth_file = ${join(dir, "userlist.txt")}`,
      "pool_mode = transaction",
      `default_pool_size = ${options.poolSize ?? 10}`,
      "max_client_conn = 500",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "server_reset_query =",
      ""
    ].join("\n")
  )
  chmodSync(join(dir, "pgbouncer.ini"), 0o644)
  chmodSync(join(dir, "userlist.txt"), 0o644)
  let child: ChildProcess | undefined
  const start = async () => {
    const args = process.getuid?.() === 0 ? ["-u", "postgres", join(dir, "pgbouncer.ini")] : [join(dir, "pgbouncer.ini")]
    const spawned = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    spawned.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child = spawned
    try {
      await waitForPort(port, Date.now() + 10_000)
    } catch (error) {
      spawned.kill("SIGKILL")
      throw new Error(`${String(error)}: ${stderr}`)
    }
  }
  const stop = async () => {
    const running = child
    child = undefined
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return
    const exited = new Promise<void>((resolve) => running.once("exit", () => resolve()))
    running.kill("SIGINT")
    const timer = setTimeout(() => running.kill("SIGKILL"), 5_000)
    await exited
    clearTimeout(timer)
  }
  await start()
  return {
    port,
    urlFor: (url) => {
      const parsed = new URL(url)
      parsed.hostname = "127.0.0.1"
      parsed.port = String(port)
      return parsed.toString()
    },
    stop,
    start,
    close: async () => {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
