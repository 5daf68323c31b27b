/**
 * Two versions of the server on one L2, as a deploy has them, with real `serve` and `warm`
 * processes: v1 runs `--engine native`, v2 `--engine babel` (two pipeline fingerprints), both
 * with one `--realm-url`.
 *
 * - The restart sequence: v1 transpiles M, `warm` with v2 transpiles M (a pre-warm that
 *   touches nothing v1 reads), and from then on every restart of either version preloads M
 *   and transpiles 0. On Postgres, and on PGlite (one process at a time on its data directory).
 * - A concurrent herd on 2 old and 2 new processes: exactly one transpile per module per version.
 * - An edit during a mixed fleet reaches both versions, and a restart of either never serves
 *   the old bytes.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase } from "./support/database.ts"
import { describeSamples, herd, type Sample, stats, until } from "./support/load.ts"
import {
  makeRealm,
  removeRealms,
  request,
  runCli,
  type ServerProcess,
  startServer,
  stopAll
} from "./support/server.ts"

const moduleCount = 24
/** The realm URLs of the two realms: one for the restart sequences, one for the mixed fleet. */
const restartRealmUrl = "https://realms.test/deploy-restart/"
const fleetRealmUrl = "https://realms.test/deploy-fleet/"
const v1 = ["--engine", "native"] as const
const v2 = ["--engine", "babel"] as const

const moduleSource = (i: number, version = 1): string =>
  [
    `export const version: number = ${version}`,
    `export const id: string = "m${i}"`,
    `export function f(a: number): number { return a + ${i} }`,
    ""
  ].join("\n")

const pathsOf = (prefix: string) => Array.from({ length: moduleCount }, (_, i) => `/${prefix}/m${i}.ts`)

let restartRealm: string
let fleetRealm: string
let dbUrl: string
let dataRoot: string

beforeAll(() => {
  dbUrl = freshDatabase("deploys")
  const files = (prefixes: ReadonlyArray<string>) =>
    Object.fromEntries(prefixes.flatMap((prefix) =>
      Array.from({ length: moduleCount }, (_, i) => [`${prefix}/m${i}.ts`, moduleSource(i)] as const)
    ))
  restartRealm = makeRealm(files(["restart"]), "mtc-deploys-restart-")
  fleetRealm = makeRealm(files(["herd", "edit"]), "mtc-deploys-fleet-")
  dataRoot = mkdtempSync(path.join(tmpdir(), "mtc-deploys-data-"))
})

afterAll(async () => {
  await stopAll()
  dropDatabase(dbUrl)
  removeRealms()
  rmSync(dataRoot, { recursive: true, force: true })
}, 60_000)

/** Every path answered 200 by a server; the samples. */
const getAll = async (server: ServerProcess, paths: ReadonlyArray<string>): Promise<Array<Sample>> => {
  const samples = await herd([server], paths, 1)
  const failed = samples.filter((s) => s.status !== 200)
  expect(failed, describeSamples(failed)).toHaveLength(0)
  return samples
}

/** How a store is chosen for these processes. */
interface StoreUnderTest {
  readonly name: string
  readonly realm: string
  readonly store: "pg" | "pglite"
  /** The flags of every command on it (the store's and the realm URL), `--store` included. */
  readonly args: ReadonlyArray<string>
  readonly env: Record<string, string>
}

const postgres = (realm: string, realmUrl: string): StoreUnderTest => ({
  name: "postgres",
  realm,
  store: "pg",
  args: ["--store", "pg", "--realm-url", realmUrl],
  env: { DATABASE_URL: dbUrl, MTC_PG_CONNECT_TIMEOUT: "5 seconds", MTC_SESSION_TIMEOUT: "10 seconds" }
})

/** PGlite: one process at a time on its data directory. */
const pglite = (realm: string, realmUrl: string): StoreUnderTest => ({
  name: "pglite",
  realm,
  store: "pglite",
  args: ["--store", "pglite", "--data-dir", path.join(dataRoot, "pglite"), "--realm-url", realmUrl],
  env: {}
})

/** Starts cut short: no JIT warm-up (these tests count transpiles, not time). */
const start = (store: StoreUnderTest, version: ReadonlyArray<string>) =>
  startServer({
    realmDir: store.realm,
    store: store.store,
    args: [...store.args.slice(2), ...version],
    env: { MTC_WARMUP_REQUESTS: "0", ...store.env }
  })

/** A server of `version` serves the restart realm; returns what it preloaded and transpiled for it. */
const serveOnce = async (store: StoreUnderTest, version: ReadonlyArray<string>) => {
  const server = await start(store, version)
  try {
    const before = await stats(server)
    const samples = await getAll(server, pathsOf("restart"))
    const after = await stats(server)
    return {
      preloaded: before.preloadedEntries,
      transpiles: after.transpiles,
      outcomes: new Set(samples.map((s) => s.outcome)),
      etags: new Map(samples.map((s) => [s.path, s.etag])),
      fingerprint: after.fingerprint,
      versions: after.versions ?? []
    }
  } finally {
    expect(await server.stop()).toBe(0)
  }
}

describe.each([["postgres", postgres], ["pglite", pglite]] as const)("two versions on one L2 (%s)", (_, storeOf) => {
  it("the restart sequence: M transpiles, a pre-warm of M, then 0 transpiles with M preloaded on every restart of either version", async () => {
    const store = storeOf(restartRealm, restartRealmUrl)
    const first = await serveOnce(store, v1)
    expect(first.transpiles).toBe(moduleCount)

    // The pre-warm of v2, while (on Postgres) nothing stops v1 from serving.
    const warm = await runCli(["warm", store.realm, ...store.args, ...v2], { env: store.env, timeoutMs: 120_000 })
    expect(warm.code, warm.stderr).toBe(0)
    expect(warm.stdout).toContain(`ok: ${moduleCount} (transpiled ${moduleCount})`)

    const sequence = [v1, v2, v1]
    const runs = []
    for (const version of sequence) runs.push(await serveOnce(store, version))
    for (const [i, run] of runs.entries()) {
      expect(run.preloaded, `restart ${i} (${sequence[i]!.join(" ")})`).toBe(moduleCount)
      expect(run.transpiles, `restart ${i} (${sequence[i]!.join(" ")})`).toBe(0)
      expect([...run.outcomes]).toEqual(["l1"])
    }
    // Two versions, two outputs: the same bytes within a version, other ETags across versions.
    expect(runs[0]!.fingerprint).not.toBe(runs[1]!.fingerprint)
    expect(runs[2]!.etags).toEqual(first.etags)
    for (const [p, etag] of first.etags) expect(runs[1]!.etags.get(p)).not.toBe(etag)
    // Stats list both versions in L2, with their rows, ours marked.
    const listed = runs[1]!.versions
    expect(listed.map((version) => [version.fingerprint, version.rows, version.current]).sort()).toEqual(
      [[runs[0]!.fingerprint, moduleCount, false], [runs[1]!.fingerprint, moduleCount, true]].sort()
    )
    expect(listed.every((version) => version.bytes > 0 && !Number.isNaN(Date.parse(version.lastReadAt)))).toBe(true)
  }, 240_000)
})

describe("a mixed fleet on Postgres: 2 old and 2 new processes", () => {
  let fleet: Array<ServerProcess> = []
  const store = () => postgres(fleetRealm, fleetRealmUrl)
  const versionOf = (i: number) => (i < 2 ? v1 : v2)

  beforeAll(async () => {
    fleet = await Promise.all([0, 1, 2, 3].map((i) => start(store(), versionOf(i))))
  }, 120_000)

  afterAll(async () => {
    await Promise.all(fleet.map((server) => server.stop()))
  }, 60_000)

  it("a concurrent herd makes exactly one transpile per module per version", async () => {
    const paths = pathsOf("herd")
    const before = await Promise.all(fleet.map(stats))
    const samples = await herd(fleet, paths, 10)
    const failed = samples.filter((s) => s.status !== 200)
    expect(failed, describeSamples(failed)).toHaveLength(0)
    const after = await Promise.all(fleet.map(stats))
    const made = after.map((s, i) => s.transpiles - before[i]!.transpiles)
    expect(made[0]! + made[1]!, `old fleet transpiles ${made.join("+")}`).toBe(moduleCount)
    expect(made[2]! + made[3]!, `new fleet transpiles ${made.join("+")}`).toBe(moduleCount)
    expect(after.map((s) => s.fallbacks)).toEqual([0, 0, 0, 0])
    // Within a version every server answers the same bytes under one ETag; across versions the ETags differ.
    for (const p of paths) {
      const old = new Set(samples.filter((s) => s.path === p && s.server < 2).map((s) => s.etag))
      const next = new Set(samples.filter((s) => s.path === p && s.server >= 2).map((s) => s.etag))
      expect(old.size, p).toBe(1)
      expect(next.size, p).toBe(1)
      expect([...old][0]).not.toBe([...next][0])
    }
  }, 180_000)

  it("an edit reaches both versions, and a restart of either never serves the old bytes", async () => {
    const paths = pathsOf("edit")
    const edited = "/edit/m3.ts"
    await herd(fleet, paths, 1)
    // Every process holds the module in L1.
    for (const server of fleet) expect((await request(server.url, edited)).headers["x-module-cache"]).toBe("l1")
    writeFileSync(path.join(fleetRealm, "edit", "m3.ts"), moduleSource(3, 2))
    const edit = performance.now()
    await until(async () => {
      const answers = await Promise.all(fleet.map((server) => request(server.url, edited)))
      return answers.every((answer) => answer.status === 200 && answer.body.includes("version = 2"))
    }, 10_000, "every process of both versions serves the edit")
    console.log(`mixed fleet: an edit reached both versions in ${(performance.now() - edit).toFixed(0)} ms`)
    // Restart one process of each version: neither preloads nor serves the old bytes.
    for (const index of [0, 2]) {
      expect(await fleet[index]!.stop()).toBe(0)
      fleet[index] = await start(store(), versionOf(index))
      const answer = await request(fleet[index]!.url, edited)
      expect(answer.status).toBe(200)
      expect(answer.body).toContain("version = 2")
      expect(answer.body).not.toContain("version = 1")
    }
  }, 180_000)
})
