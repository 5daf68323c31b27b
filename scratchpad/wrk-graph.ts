/**
 * One load of a module graph with `wrk`: every path requested exactly once, `concurrency`
 * requests at a time over keep-alive connections, timed from the first request to the last
 * response. A native load generator, so that the measurement is the server's time and not a
 * Node client's on the same two cores.
 *
 * wrk has no "n requests" mode; its Lua script hands out the paths in order, counts the
 * responses (and their `x-module-cache` outcomes) and stops at the last one, reading a
 * monotonic clock through LuaJIT's FFI. Once every path is handed out, the other connections
 * idle (wrk's `delay()`) rather than send more: extra requests would compete with the graph's
 * last responses, more so on a server whose 404 costs more than its hit. Should one slip
 * through anyway, it asks for the probe path, which must not answer 200 (`probes` counts them).
 * Only 200s count, so a module that fails shows as a load that does not finish. Needs `wrk`
 * (`apt-get install wrk`).
 */
import { execFileSync, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** Whether `wrk` is on the PATH. */
export const hasWrk = (): boolean => {
  try {
    execFileSync("wrk", ["--version"], { stdio: "ignore" })
    return true
  } catch (error) {
    // wrk --version exits 1 after printing its version
    return typeof error === "object" && error !== null && "status" in error && error.status === 1
  }
}

/** Requests per second `wrk` (with `args`, e.g. `-t1 -c32 -d4s`) gets from one URL; throws on any non-2xx/3xx answer. */
export const wrkRate = (url: string, args: ReadonlyArray<string>, headers: Record<string, string> = {}): number => {
  const out = execFileSync("wrk", [...args, ...Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]), url], { encoding: "utf8" })
  const errors = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1]
  if (errors !== undefined) throw new Error(`wrk ${url}: ${errors} non-2xx answers`)
  return Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? "0")
}

/** The result of one graph load. */
export interface GraphLoad {
  /** First request to last response, in milliseconds. */
  readonly ms: number
  /** Responses by `x-module-cache` header ("none" when absent). */
  readonly outcomes: Record<string, number>
  /** Requests for the probe path sent before the last response (0 unless wrk raced the idling). */
  readonly probes: number
}

const script = (paths: ReadonlyArray<string>, probe: string) => `
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } mtc_timespec;
int clock_gettime(int clock, mtc_timespec *ts);
]]
local ts = ffi.new("mtc_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local paths = { ${paths.map((p) => JSON.stringify(p)).join(", ")} }
local probe = ${JSON.stringify(probe)}
verified = false
issued = 0
answered = 0
started = 0
granted = 0
probes = 0
outcomes = {}
-- A connection asks here before each request (but the first): it goes at once while paths
-- are left that no other connection was granted, and otherwise idles until wrk is stopped,
-- so that no probe competes with the graph's last responses.
function delay()
  if issued + granted < #paths then
    granted = granted + 1
    return 0
  end
  return 3600000
end
function request()
  -- wrk calls request() once on this state to check the script before any connection
  if not verified then
    verified = true
    return wrk.format("GET", probe)
  end
  if issued == 0 then started = now() end
  if granted > 0 then granted = granted - 1 end
  issued = issued + 1
  local path = paths[issued]
  if path == nil then
    probes = probes + 1
    path = probe
  end
  return wrk.format("GET", path)
end
function response(status, headers, body)
  if answered >= #paths or status ~= 200 then return end
  answered = answered + 1
  local outcome = headers["x-module-cache"] or headers["X-Module-Cache"] or "none"
  outcomes[outcome] = (outcomes[outcome] or 0) + 1
  if answered == #paths then
    local parts = {}
    for k, v in pairs(outcomes) do table.insert(parts, string.format("%q:%d", k, v)) end
    io.write(string.format("MTC_GRAPH {\\"ms\\":%.3f,\\"answered\\":%d,\\"probes\\":%d,\\"outcomes\\":{%s}}\\n",
      now() - started, answered, probes, table.concat(parts, ",")))
    io.flush()
    wrk.thread:stop()
  end
end
`

/**
 * Loads every path once from `base` (e.g. `http://127.0.0.1:PORT`), `concurrency` at a time.
 * `probe` is a cheap path that does not answer 200 for connections that ask after the last one. wrk's main thread
 * sleeps for its whole `-d`, so it is interrupted (SIGINT) as soon as the last response is in.
 */
export const loadGraphWithWrk = (
  base: string,
  paths: ReadonlyArray<string>,
  options: {
    readonly concurrency: number
    readonly probe: string
    readonly timeoutSeconds?: number
    /** Headers every request carries (`accept-encoding`, say). */
    readonly headers?: Record<string, string>
  }
): Promise<GraphLoad> => {
  const dir = mkdtempSync(join(tmpdir(), "mtc-wrk-graph-"))
  const file = join(dir, "graph.lua")
  writeFileSync(file, script(paths, options.probe))
  const seconds = options.timeoutSeconds ?? 60
  // One thread: one Lua state, so the paths are handed out by one counter.
  const headers = Object.entries(options.headers ?? {}).flatMap(([name, value]) => ["-H", `${name}: ${value}`])
  const child = spawn("wrk", ["-t1", `-c${options.concurrency}`, `-d${seconds}s`, "--timeout", `${seconds}s`, ...headers, "-s", file, base], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  return new Promise<GraphLoad>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk
      const line = out.split("\n").find((l) => l.startsWith("MTC_GRAPH ") && l.endsWith("}"))
      if (line === undefined) return
      child.kill("SIGINT")
      const parsed = JSON.parse(line.slice("MTC_GRAPH ".length)) as GraphLoad
      resolve({ ms: parsed.ms, outcomes: parsed.outcomes, probes: parsed.probes })
    })
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (out += chunk))
    child.on("error", reject)
    child.on("exit", () => reject(new Error(`wrk ended before ${paths.length} responses:\n${out}`)))
  }).finally(() => rmSync(dir, { recursive: true, force: true }))
}
