/**
 * Edits of a realm directory that a fleet of real `serve` processes watches, measured the way
 * an operator would: each process's transpile count (`/_cache/stats`) before and after, every
 * process polled until it serves the new bytes (and never the old ones after that), and the
 * time the last process became fresh (printed, never asserted).
 *
 * Modules carry a stamp `[name:vN]` in a string, so that a response body tells which version
 * of the source it was transpiled from (no stamp is a substring of another).
 */
import { renameSync, utimesSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { stats } from "./load.ts"
import { eventually, request, type ServerProcess, sleep, startServer } from "./server.ts"

/** The stamp of version `version` of module `name`, as it appears in the transpiled bytes. */
export const stampOf = (name: string, version: number): string => `[${name}:v${version}]`

/** A small TypeScript module (types to strip) whose output carries its stamp. */
export const moduleSource = (name: string, version: number): string =>
  [
    `export const stamp: string = "${stampOf(name, version)}"`,
    `export interface Shape { readonly n: number }`,
    `export const value = (shape: Shape): number => shape.n + ${version}`,
    ""
  ].join("\n")

/** The file name of module `name` (`m3` is `m3.ts`), and its request path. */
export const fileOf = (name: string): string => `${name}.ts`
export const urlOf = (name: string): string => `/${fileOf(name)}`

/** Each process's transpile count, in fleet order. */
export const transpilesOf = async (servers: ReadonlyArray<ServerProcess>): Promise<Array<number>> =>
  (await Promise.all(servers.map(stats))).map((s) => s.transpiles)

/**
 * Waits until the fleet is quiet: no load in flight anywhere, and the transpile counts the
 * same on two reads 200 ms apart (a transpile answers before its L2 write commits).
 */
export const quiet = async (servers: ReadonlyArray<ServerProcess>, timeoutMs = 20_000): Promise<Array<number>> => {
  let last: string | undefined
  return eventually(async () => {
    const all = await Promise.all(servers.map(stats))
    const counts = all.map((s) => s.transpiles)
    const key = counts.join(",")
    const settled = all.every((s) => s.inFlight === 0) && key === last
    last = key
    if (settled) return counts
    await sleep(175)
    return undefined
  }, timeoutMs, "the fleet is quiet (nothing in flight, transpile counts steady)")
}

/** The `module_cache_invalidations_total` of a process, by source. */
export const invalidationsOf = async (server: ServerProcess): Promise<Record<"api" | "watcher" | "peer", number>> => {
  const response = await request(server.url, "/_cache/metrics")
  if (response.status !== 200) throw new Error(`metrics: ${response.status} ${response.body}`)
  const counts = { api: 0, watcher: 0, peer: 0 }
  for (const line of response.body.split("\n")) {
    const match = /^module_cache_invalidations_total\{([^}]*)\} (\S+)$/.exec(line)
    if (match === null) continue
    const source = /source="([^"]*)"/.exec(match[1]!)?.[1]
    if (source === "api" || source === "watcher" || source === "peer") counts[source] += Number(match[2])
  }
  return counts
}

/**
 * Waits (at most `timeoutMs`) until every process counted one more invalidation from `source`
 * than in `before`. Soft: returns whether they all did, so that a change in what is counted
 * never fails a test by itself (the caller then waits out the rest of the bound).
 */
export const awaitInvalidations = async (
  servers: ReadonlyArray<ServerProcess>,
  before: ReadonlyArray<Record<"api" | "watcher" | "peer", number>>,
  source: "api" | "watcher" | "peer",
  timeoutMs: number
): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const now = await Promise.all(servers.map(invalidationsOf))
    if (now.every((counts, i) => counts[source] > before[i]![source])) return true
    if (Date.now() > deadline) return false
    await sleep(50)
  }
}

/** One GET of a module, which must answer 200. */
const get = async (server: ServerProcess, url: string): Promise<string> => {
  const response = await request(server.url, url)
  if (response.status !== 200) throw new Error(`GET ${server.url}${url}: ${response.status} ${response.body.slice(0, 300)}`)
  return response.body
}

/** GETs every module on every process once (concurrently per process); each must carry its stamp. */
export const warm = async (
  servers: ReadonlyArray<ServerProcess>,
  versions: ReadonlyMap<string, number>
): Promise<void> => {
  await Promise.all(servers.map(async (server, s) => {
    await Promise.all(Array.from(versions, async ([name, version]) => {
      const body = await get(server, urlOf(name))
      if (!body.includes(stampOf(name, version))) {
        throw new Error(`process ${s} serves ${name} without ${stampOf(name, version)}: ${body.slice(0, 300)}`)
      }
    }))
  }))
}

/** What {@link pollFresh} saw. */
export interface Freshness {
  /** Per process: ms from the edit until it served the new bytes of every edited module. */
  readonly perProcess: Array<number>
  /** The last process's. */
  readonly lastMs: number
  /** Bodies served after that process had served the new bytes of that module, that were not new (must be none). */
  readonly regressions: Array<string>
  /** The new bytes of each module, as the first process to serve them served them. */
  readonly bodies: Map<string, string>
}

/**
 * Polls every process (every 25 ms, the edited modules not fresh there yet, concurrently)
 * until each serves `stampOf(name, version)` for every edited module; throws after
 * `timeoutMs`. `startedAt` is the edit's `performance.now()`.
 */
export const pollFresh = async (
  servers: ReadonlyArray<ServerProcess>,
  edited: ReadonlyMap<string, number>,
  startedAt: number,
  timeoutMs: number
): Promise<Freshness> => {
  const bodies = new Map<string, string>()
  const regressions: Array<string> = []
  const perProcess = await Promise.all(servers.map(async (server, s) => {
    const pending = new Set(edited.keys())
    await eventually(async () => {
      await Promise.all(Array.from(pending, async (name) => {
        const body = await get(server, urlOf(name))
        if (body.includes(stampOf(name, edited.get(name)!))) {
          pending.delete(name)
          if (!bodies.has(name)) bodies.set(name, body)
        }
      }))
      return pending.size === 0 ? true : undefined
    }, timeoutMs, `process ${s} serves the new bytes of ${Array.from(pending).join(", ")}`)
    const ms = performance.now() - startedAt
    // Once fresh, never old again (checked again, every module, right away).
    for (const name of edited.keys()) {
      const body = await get(server, urlOf(name))
      if (!body.includes(stampOf(name, edited.get(name)!))) regressions.push(`process ${s} ${name}: ${body.slice(0, 120)}`)
    }
    return ms
  }))
  return { perProcess, lastMs: Math.max(...perProcess), regressions, bodies }
}

/**
 * After freshness: `rounds` rounds (`gapMs` apart) of a GET of every module of `expected` on every
 * process. Returns the answers that differ from the expected bytes (must be none).
 */
export const confirm = async (
  servers: ReadonlyArray<ServerProcess>,
  expected: ReadonlyMap<string, string>,
  rounds = 3,
  gapMs = 200
): Promise<Array<string>> => {
  const wrong: Array<string> = []
  for (let round = 0; round < rounds; round++) {
    if (round > 0) await sleep(gapMs)
    await Promise.all(servers.map(async (server, s) => {
      await Promise.all(Array.from(expected, async ([name, bytes]) => {
        const body = await get(server, urlOf(name))
        if (body !== bytes) wrong.push(`round ${round} process ${s} ${name}: ${body.slice(0, 120)}`)
      }))
    }))
  }
  return wrong
}

/** The transpiles an edit cost, process by process and in all. */
export interface EditCost {
  readonly perProcess: Array<number>
  readonly total: number
}

export const costOf = (before: ReadonlyArray<number>, after: ReadonlyArray<number>): EditCost => {
  const perProcess = after.map((n, i) => n - before[i]!)
  return { perProcess, total: perProcess.reduce((sum, n) => sum + n, 0) }
}

/** A line for the log: `3 (1+1+1)`. */
export const describeCost = (cost: EditCost): string => `${cost.total} (${cost.perProcess.join("+")})`

// -----------------------------------------------------------------------------
// Writing the realm
// -----------------------------------------------------------------------------

let saves = 0

/**
 * An editor's atomic save of version `version` of module `name`: the text to a temp file next
 * to the module, then a rename over it. A watcher only ever reads the old or the new bytes.
 */
export const saveAtomically = (realm: string, name: string, version: number): void => {
  const target = path.join(realm, fileOf(name))
  const temp = `${target}.tmp-${process.pid}-${saves++}`
  writeFileSync(temp, moduleSource(name, version))
  renameSync(temp, target)
}

/**
 * Writes version `version` of module `name` in place (open with O_TRUNC, then write), as many
 * editors and `git checkout` do: a watcher that read the file at the first event could read it
 * empty, an edit of its own (to "" and back).
 */
export const writeInPlace = (realm: string, name: string, version: number): void =>
  writeFileSync(path.join(realm, fileOf(name)), moduleSource(name, version))

/** Moves a module's modification time on (a `touch`), its bytes unchanged. */
export const touch = (realm: string, name: string, at = new Date()): void =>
  utimesSync(path.join(realm, fileOf(name)), at, at)

/**
 * The environment of a fleet of `serve --store pg` processes: generous connect and session
 * timeouts (2 cores shared with other test files).
 */
export const fleetServeEnv = (fleetSize: number, databaseUrl: string, extra: Record<string, string> = {}) => ({
  DATABASE_URL: databaseUrl,
  MTC_PG_CONNECT_TIMEOUT: "5 seconds",
  MTC_SESSION_TIMEOUT: "10 seconds",
  MTC_FLEET_SIZE: String(fleetSize),
  ...extra
})

/** One transpile worker per process; the standard pipeline on Babel. */
const fleetServeArgs = ["--engine", "babel", "--transpile-workers", "1"]

/** Starts `count` `serve --store pg` processes on one realm at once; how long that took. */
export const startFleetServers = async (realm: string, count: number, env: Record<string, string>) => {
  const started = performance.now()
  const servers = await Promise.all(
    Array.from({ length: count }, () => startServer({ realmDir: realm, store: "pg", env, args: fleetServeArgs, timeoutMs: 120_000 }))
  )
  return { servers, ms: performance.now() - started }
}
