/**
 * Real `transpile-cache` processes for tests: start `serve` on a realm, wait until it is
 * healthy, send raw HTTP requests (paths are sent exactly as given, so traversal attempts
 * reach the server un-normalised), run other CLI commands, and stop every child.
 *
 * Children run `src/bin.ts` on this process's Node binary (the pinned Node 22 that runs
 * vitest): the same as `npx node src/bin.ts ...` without npm's wrapper processes in between,
 * so signals reach the server itself.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/** The repository root. */
export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
/** The CLI entry point. */
export const binPath = path.join(root, "src", "bin.ts")

const children = new Set<ChildProcess>()

/**
 * The admin token every server started here gets (as `MTC_ADMIN_TOKEN`) unless its `env`
 * sets another (an empty one makes the server generate its own). {@link request} sends it
 * to `/_cache/*` unless told otherwise.
 */
export const testAdminToken = "test-admin-token-0123456789abcdef"

/** The `Authorization` header carrying {@link testAdminToken}. */
export const adminAuthorization = `Bearer ${testAdminToken}`

const killAllSync = () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  }
}
process.once("exit", killAllSync)

// -----------------------------------------------------------------------------
// Realms
// -----------------------------------------------------------------------------

/** A file of a temporary realm: its text, or a symlink target. */
export type RealmEntry = string | { readonly symlink: string }

const tempDirs: Array<string> = []

/** Makes a temporary realm directory with the given files (paths relative to it). */
export const makeRealm = (files: Record<string, RealmEntry>, prefix = "mtc-realm-"): string => {
  const dir = mkdtempSync(path.join(tmpdir(), prefix))
  tempDirs.push(dir)
  for (const [name, entry] of Object.entries(files)) writeEntry(dir, name, entry)
  return dir
}

/** Writes (or replaces) one file of a realm. */
export const writeEntry = (dir: string, name: string, entry: RealmEntry): void => {
  const file = path.join(dir, name)
  mkdirSync(path.dirname(file), { recursive: true })
  if (typeof entry === "string") writeFileSync(file, entry)
  else symlinkSync(entry.symlink, file)
}

/** Removes the temporary realms made so far. */
export const removeRealms = (): void => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true })
}

// -----------------------------------------------------------------------------
// Processes
// -----------------------------------------------------------------------------

/** A running `serve` process. */
export interface ServerProcess {
  /** `http://127.0.0.1:PORT`, without a trailing slash. */
  readonly url: string
  readonly port: number
  readonly child: ChildProcess
  /** Everything the process wrote so far (stdout and stderr). */
  readonly output: () => string
  /** Sends a signal and waits for the exit; resolves to the exit code (or the signal name). */
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | string | null>
}

export interface StartOptions {
  /** The positional realm (mounted at `/`); omitted when `args` mounts the realms (`--realm MOUNT=DIR`). */
  readonly realmDir?: string | undefined
  readonly store?: "memory" | "pglite" | "pg" | undefined
  readonly args?: ReadonlyArray<string> | undefined
  readonly env?: Record<string, string> | undefined
  /** How long to wait for the listening line and a healthy answer (default 60 s). */
  readonly timeoutMs?: number | undefined
  /** The port to listen on (default 0: a free one). */
  readonly port?: number | undefined
  /** The working directory of the process (default the repository root). */
  readonly cwd?: string | undefined
}

const spawnCli = (args: ReadonlyArray<string>, env: Record<string, string> | undefined, cwd = root) => {
  const child = spawn(process.execPath, [binPath, ...args], {
    cwd,
    env: { ...process.env, NO_COLOR: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.add(child)
  child.once("exit", () => children.delete(child))
  let output = ""
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8")
  })
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8")
  })
  return { child, output: () => output }
}

const exited = (child: ChildProcess): Promise<number | string | null> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode ?? child.signalCode)
    child.once("exit", (code, signal) => resolve(code ?? signal))
  })

const listening = /listening on (http:\/\/[^\s/]+)\//

/** Starts `serve [realmDir] --port <port, default 0> --store <store>` and waits until `/_cache/health` answers 200. */
export const startServer = async (options: StartOptions): Promise<ServerProcess> => {
  const args = ["serve", ...(options.realmDir === undefined ? [] : [options.realmDir]), "--port", String(options.port ?? 0), "--store", options.store ?? "memory", ...(options.args ?? [])]
  const { child, output } = spawnCli(args, { MTC_ADMIN_TOKEN: testAdminToken, ...options.env }, options.cwd)
  const deadline = Date.now() + (options.timeoutMs ?? 60_000)
  let url: string | undefined
  while (url === undefined) {
    const match = listening.exec(output())
    if (match?.[1] !== undefined) url = match[1]
    else if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`serve exited (${child.exitCode ?? child.signalCode}) before listening:\n${output()}`)
    } else if (Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`serve did not log its URL in time:\n${output()}`)
    } else await sleep(50)
  }
  const port = Number(new URL(url).port)
  while ((await request(url, "/_cache/health").catch(() => undefined))?.status !== 200) {
    if (Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`serve at ${url} never became healthy:\n${output()}`)
    }
    await sleep(50)
  }
  return {
    url,
    port,
    child,
    output,
    stop: async (signal = "SIGTERM") => {
      const done = exited(child)
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000)
      try {
        return await done
      } finally {
        clearTimeout(timer)
      }
    }
  }
}

/** The result of a finished CLI command. */
export interface CliResult {
  readonly code: number | string | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a CLI command to completion (killed after `timeoutMs`, default 60 s). */
export const runCli = async (
  args: ReadonlyArray<string>,
  options: { readonly env?: Record<string, string>; readonly timeoutMs?: number; readonly cwd?: string } = {}
): Promise<CliResult> => {
  const child = spawn(process.execPath, [binPath, ...args], {
    cwd: options.cwd ?? root,
    env: { ...process.env, NO_COLOR: "1", ...options.env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.add(child)
  child.once("exit", () => children.delete(child))
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8")
  })
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8")
  })
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000)
  const code = await new Promise<number | string | null>((resolve) => child.once("close", (c, s) => resolve(c ?? s)))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

/** Kills every child still running (SIGTERM, then SIGKILL after 5 s). */
export const stopAll = async (): Promise<void> => {
  await Promise.all(Array.from(children, async (child) => {
    const done = exited(child)
    child.kill("SIGTERM")
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000)
    await done
    clearTimeout(timer)
  }))
}

// -----------------------------------------------------------------------------
// HTTP
// -----------------------------------------------------------------------------

/** A response as the tests see it. */
export interface RawResponse {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
  /** The body's bytes as sent (not decoded). */
  readonly bytes: Buffer
}

/**
 * Sends one request with the path exactly as given (no URL normalisation, unlike fetch).
 * A request to `/_cache/*` carries {@link adminAuthorization} unless its headers name an
 * `authorization` of their own, or `admin` is false.
 */
export const request = (
  base: string,
  rawPath: string,
  options: {
    readonly method?: string
    readonly headers?: Record<string, string>
    readonly admin?: boolean
    /** A request body, sent with its content-length. */
    readonly body?: string
  } = {}
): Promise<RawResponse> =>
  new Promise((resolve, reject) => {
    const target = new URL(base)
    const headers = options.admin !== false && rawPath.startsWith("/_cache/") &&
        !Object.keys(options.headers ?? {}).some((name) => name.toLowerCase() === "authorization")
      ? { authorization: adminAuthorization, ...options.headers }
      : options.headers
    const req = http.request({
      host: target.hostname,
      port: target.port,
      method: options.method ?? "GET",
      path: rawPath,
      headers,
      agent: false
    }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => chunks.push(chunk))
      res.on("end", () => {
        const bytes = Buffer.concat(chunks)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: bytes.toString("utf8"), bytes })
      })
      res.on("error", reject)
    })
    req.setTimeout(30_000, () => req.destroy(new Error(`timeout: ${options.method ?? "GET"} ${rawPath}`)))
    req.on("error", reject)
    req.end(options.body)
  })

/** Parses a JSON body into an object (or fails the test with the body). */
export const jsonOf = (response: RawResponse): Record<string, unknown> => {
  const parsed: unknown = JSON.parse(response.body)
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`not a JSON object: ${response.body}`)
  }
  return { ...parsed }
}

/** Whether `port` can be bound on 127.0.0.1 right now (bound, then closed). */
const canBind = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = createServer()
    server.once("error", () => resolve(false))
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
  })

/**
 * A TCP port free on 127.0.0.1 right now, for a server that is started on it later. Chosen
 * below the kernel's ephemeral range (32768 and up), so that no other test's connection or
 * port-0 listener is handed it meanwhile: a fleet restarted behind nginx keeps its ports.
 */
export const freePort = async (): Promise<number> => {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    if (await canBind(port)) return port
  }
  throw new Error("no free port between 20000 and 32000")
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `check` every 25 ms until it returns a value, or throws after `timeoutMs`. */
export const eventually = async <A>(
  check: () => Promise<A | undefined>,
  timeoutMs: number,
  what: string
): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`)
    await sleep(25)
  }
}
