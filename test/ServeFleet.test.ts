/**
 * Three real `serve --store pg` processes on one realm directory and one Postgres database
 * behave as one fleet: a concurrent herd of GETs over cold modules costs exactly one
 * transpile, and one compression, per module in total, and every server answers the same
 * bytes under the same ETag in every content coding.
 */
import { writeFileSync } from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freshDatabase, psql } from "./support/database.ts"
import { describeSamples, endFleet, herd, outcomes, type Sample, stats, totalTranspiles, until } from "./support/load.ts"
import { jsonOf, makeRealm, request, type ServerProcess, sleep, startServer } from "./support/server.ts"

const moduleCount = 10
const perModulePerServer = 40

/**
 * A module of `functions` typed functions: 60 make about 5 KiB (a transpile of a few
 * milliseconds), 2000 about 150 KiB (hundreds of milliseconds of Babel on a busy machine).
 */
const moduleSource = (i: number, version = 1, functions = 60): string => {
  const lines = [`export const version: number = ${version}`, `export const id: string = "m${i}"`]
  for (let j = 0; j < functions; j++) {
    lines.push(`export function f${j}(a: number, b: string): { n: number; s: string } { return { n: a + ${j}, s: b } }`)
  }
  return `${lines.join("\n")}\n`
}

const modulePaths = (prefix: string) => Array.from({ length: moduleCount }, (_, i) => `/${prefix}/m${i}.ts`)

let dbUrl: string
let realm: string
let servers: Array<ServerProcess> = []

beforeAll(async () => {
  dbUrl = freshDatabase("serve_fleet")
  const files: Record<string, string> = {}
  for (const prefix of ["herd", "edit"]) {
    for (let i = 0; i < moduleCount; i++) files[`${prefix}/m${i}.ts`] = moduleSource(i)
  }
  for (let i = 0; i < moduleCount; i++) files[`large/m${i}.ts`] = moduleSource(i, 1, 2000)
  realm = makeRealm(files, "mtc-serve-fleet-")
  // Generous connect and session timeouts: these tests are about coalescing, and on a 2-core
  // machine shared with other work the default 1 s / 2 s can trip spuriously (the bug shown by
  // the last test, which runs its own servers with the defaults).
  const env = { DATABASE_URL: dbUrl, MTC_PG_CONNECT_TIMEOUT: "5 seconds", MTC_SESSION_TIMEOUT: "10 seconds" }
  // Migrations are safe when processes start at once: start them together.
  servers = await Promise.all([1, 2, 3].map(() => startServer({ realmDir: realm, store: "pg", env })))
}, 120_000)

// Nothing of the fleet remains once it exited.
afterAll(() => endFleet(dbUrl, { noLocksLeft: true }), 60_000)

const checkHerd = (samples: ReadonlyArray<Sample>, paths: ReadonlyArray<string>) => {
  const failed = samples.filter((s) => s.status !== 200)
  expect(failed, describeSamples(failed)).toHaveLength(0)
  expect(samples).toHaveLength(paths.length * perModulePerServer * servers.length)
  // Nobody fell back to a local transpile: every loser was served by the winner.
  expect(samples.filter((s) => s.outcome === "fallback"), JSON.stringify(outcomes(samples))).toHaveLength(0)
  for (const p of paths) {
    const mine = samples.filter((s) => s.path === p)
    // One ETag per coding, the same from every server: the identity one, and `-br`/`-gzip` of it.
    const etags = new Set(mine.map((s) => s.etag))
    const identity = mine.find((s) => s.encoding === "identity")?.etag
    expect(identity, `${p}: an identity answer`).toBeDefined()
    for (const s of mine) {
      expect(s.etag, `${p}: ${s.encoding}`).toBe(s.encoding === "identity" ? identity : `${identity!.slice(0, -1)}-${s.encoding}"`)
    }
    expect(etags.size, `${p}: one ETag per coding from every server`).toBe(new Set(mine.map((s) => s.encoding)).size)
    expect(new Set(mine.map((s) => s.server)).size).toBe(servers.length)
    expect(new Set(mine.map((s) => s.body)).size, `${p}: identical bodies`).toBe(1)
    expect(mine.filter((s) => s.outcome === "transpiled").length, `${p}: transpiled once`).toBe(1)
  }
}

/** Each round's Accept-Encoding: none, a browser's, gzip only (Fastly's default). */
const acceptEncodings = (round: number): Record<string, string> =>
  [{}, { "accept-encoding": "gzip, deflate, br, zstd" }, { "accept-encoding": "gzip" }][round % 3]!

/** The sum over the servers of a counter's samples in `/_cache/metrics`. */
const metricTotal = async (name: string): Promise<number> => {
  let total = 0
  for (const server of servers) {
    const text = (await request(server.url, "/_cache/metrics")).body
    for (const line of text.split("\n")) if (line.startsWith(name)) total += Number(line.split(" ").pop())
  }
  return total
}

describe("a fleet of three serve processes on Postgres", () => {
  it("both serve the same realm URL over the Postgres store and coordinator", async () => {
    const [a, b] = await Promise.all(servers.map(stats))
    expect(a).toMatchObject({ store: "postgres", coordinator: "postgres", transpiles: 0 })
    expect(b).toMatchObject({ store: "postgres", coordinator: "postgres", transpiles: 0 })
    const realmUrls = await Promise.all(servers.map(async (s) => jsonOf(await request(s.url, "/_cache/stats")).realmUrl))
    expect(realmUrls[0]).toBe(realmUrls[1])
  })

  it(`a herd of ${perModulePerServer} GETs per module per server over ${moduleCount} cold modules: one transpile and one compression per module`, async () => {
    const paths = modulePaths("herd")
    const before = await totalTranspiles(servers)
    const started = performance.now()
    const samples = await herd(servers, paths, perModulePerServer, acceptEncodings)
    const elapsed = performance.now() - started
    checkHerd(samples, paths)
    expect((await totalTranspiles(servers)) - before).toBe(moduleCount)
    // Every coding was asked for and sent: br to the browser's rounds, gzip to Fastly's.
    expect(new Set(samples.map((s) => s.encoding))).toEqual(new Set(["identity", "br", "gzip"]))
    // Each module version was compressed once in the fleet, with its transpile: in stats and in the metrics.
    const compressions = (await Promise.all(servers.map(stats))).reduce((sum, s) => sum + (s.compressions ?? 0), 0)
    expect(compressions).toBe(moduleCount)
    expect(await metricTotal("module_cache_compressions_total")).toBe(moduleCount)
    // Each row carries both forms, and a form of every size under its body's.
    expect(psql(`SELECT count(*) FROM module_transpile_cache WHERE canonical_path LIKE 'herd/%'
      AND octet_length(body_br) < octet_length(body) AND octet_length(body_gzip) < octet_length(body)`, dbUrl)).toBe(String(moduleCount))
    // ...and its source map, made in the same transpile: one per version in the fleet, none left unmapped.
    expect(psql(`SELECT count(*) FROM module_transpile_cache WHERE canonical_path LIKE 'herd/%'
      AND source_map::json->>'version' = '3' AND body LIKE '%//# sourceMappingURL=%.map?_v=%'`, dbUrl)).toBe(String(moduleCount))
    expect(await metricTotal("module_cache_unmapped_total")).toBe(0)
    // Every body is real transpiled output.
    expect(samples[0]!.body).toContain("export function f0(a, b)")
    const perServer = await Promise.all(servers.map(stats))
    console.log(
      `serve fleet herd: ${samples.length} GETs in ${elapsed.toFixed(0)} ms, transpiles ${perServer.map((s) => s.transpiles).join("+")}, outcomes ${JSON.stringify(outcomes(samples))}`
    )
  }, 120_000)

  it("after edits, a new herd transpiles each new version once and both servers agree on the new ETag", async () => {
    const paths = modulePaths("edit")
    const first = await herd(servers, paths, 2)
    expect(first.every((s) => s.status === 200 && s.body.includes("version = 1"))).toBe(true)
    const oldEtags = new Map(first.map((s) => [s.path, s.etag]))
    for (let i = 0; i < moduleCount; i++) writeFileSync(path.join(realm, "edit", `m${i}.ts`), moduleSource(i, 2))
    // Both watchers invalidate every edited module (each tombstones its row): wait until every
    // row is a tombstone and the generations stopped moving, so that the herd below is cold.
    const rowState = () =>
      psql(`SELECT count(*) FILTER (WHERE body IS NULL) || ':' || sum(generation) FROM module_transpile_cache
        WHERE canonical_path LIKE 'edit/%'`, dbUrl)
    await until(() => rowState().startsWith(`${moduleCount}:`), 10_000, "every edited row is tombstoned")
    let state = rowState()
    for (;;) {
      await sleep(500)
      const next = rowState()
      if (next === state) break
      state = next
    }
    const before = await totalTranspiles(servers)
    const samples = await herd(servers, paths, perModulePerServer)
    checkHerd(samples, paths)
    expect(samples.every((s) => s.body.includes("version = 2"))).toBe(true)
    for (const p of paths) expect(samples.find((s) => s.path === p)?.etag).not.toBe(oldEtags.get(p))
    expect((await totalTranspiles(servers)) - before).toBe(moduleCount)
  }, 120_000)

  // Regression: with the default timeouts, the time a process spends blocked in synchronous
  // Babel transpiles used to count against its lock queries and connects. One "timed out",
  // the lock session was dropped (releasing every lock of the process) and the queued keys
  // fell back to local transpiles. Lock queries now have their own generous bound
  // (MTC_LOCK_TIMEOUT) and retry once on a fresh session.
  it("with the default timeouts, a herd over large (~150 KiB) cold modules costs one transpile per module, with no fallback", async () => {
    const env = { DATABASE_URL: dbUrl }
    const fleet = await Promise.all([startServer({ realmDir: realm, store: "pg", env }), startServer({ realmDir: realm, store: "pg", env })])
    try {
      const paths = modulePaths("large")
      const before = await totalTranspiles(fleet)
      const samples = await herd(fleet, paths, perModulePerServer)
      const perServer = await Promise.all(fleet.map(stats))
      console.log(
        `serve fleet herd over large modules (default timeouts): transpiles ${perServer.map((s) => s.transpiles).join("+")} (before ${before}), fallbacks ${perServer.map((s) => s.fallbacks).join("+")}, outcomes ${JSON.stringify(outcomes(samples))}`
      )
      expect(perServer.map((s) => s.fallbacks)).toEqual([0, 0])
      expect((await totalTranspiles(fleet)) - before).toBe(moduleCount)
      expect(samples.every((s) => s.status === 200)).toBe(true)
    } finally {
      await Promise.all(fleet.map((s) => s.stop()))
    }
  }, 180_000)
})
