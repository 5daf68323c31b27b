/**
 * Two real `serve --store pg` processes mounting the same two realms (`/a/` and `/b/`, one
 * `--realm-url-base`, so both name the realms alike) on one Postgres database behave as one
 * fleet per realm:
 * - a concurrent herd over every module of both realms costs exactly one transpile per module
 *   across the fleet, counted per realm;
 * - an invalidation of realm A on one process reaches the other (its A modules leave L1, and
 *   the next herd transpiles each A module once more in the fleet), an edit in A reaches both,
 *   and neither drops anything of realm B: B's modules stay L1 hits on both processes.
 */
import { writeFileSync } from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freshDatabase } from "./support/database.ts"
import {
  describeSamples,
  endFleet,
  herd,
  outcomes,
  type Sample,
  sample,
  stats,
  type Stats,
  totalTranspiles,
  until
} from "./support/load.ts"
import { jsonOf, makeRealm, request, type ServerProcess, startServer } from "./support/server.ts"

const moduleCount = 10
const perModulePerServer = 20
const realmUrlBase = "https://realms-fleet.test"

const moduleSource = (realm: string, i: number, version = 1): string => {
  const lines = [`export const version: number = ${version}`, `export const id: string = "${realm}${i}"`]
  for (let j = 0; j < 40; j++) {
    lines.push(`export function f${j}(a: number, b: string): { n: number; s: string } { return { n: a + ${j}, s: b } }`)
  }
  return `${lines.join("\n")}\n`
}

const pathsOf = (mount: "/a/" | "/b/") => Array.from({ length: moduleCount }, (_, i) => `${mount}m${i}.ts`)

let dbUrl: string
let dirA: string
let dirB: string
let servers: Array<ServerProcess> = []

const realmFiles = (realm: string): Record<string, string> =>
  Object.fromEntries(Array.from({ length: moduleCount }, (_, i) => [`m${i}.ts`, moduleSource(realm, i)]))

beforeAll(async () => {
  dbUrl = freshDatabase("realms_fleet")
  dirA = makeRealm(realmFiles("a"), "mtc-realms-fleet-a-")
  dirB = makeRealm(realmFiles("b"), "mtc-realms-fleet-b-")
  const env = { DATABASE_URL: dbUrl, MTC_PG_CONNECT_TIMEOUT: "5 seconds", MTC_SESSION_TIMEOUT: "10 seconds" }
  const args = ["--realm", `/a/=${dirA}`, "--realm", `/b/=${dirB}`, "--realm-url-base", realmUrlBase]
  servers = await Promise.all([startServer({ store: "pg", args, env }), startServer({ store: "pg", args, env })])
}, 120_000)

afterAll(() => endFleet(dbUrl, { noLocksLeft: true }), 60_000)

/** A realm's figures in a process's stats. */
const realmOf = (s: Stats, mount: string) => {
  const figures = s.realms?.[mount]
  if (figures === undefined) throw new Error(`no realm ${mount} in stats: ${JSON.stringify(s.realms)}`)
  return figures
}

/** The transpiles of one realm summed over the fleet. */
const realmTranspiles = async (mount: string): Promise<number> =>
  (await Promise.all(servers.map(stats))).reduce((sum, s) => sum + (realmOf(s, mount).transpiles ?? 0), 0)

const checkHerd = (samples: ReadonlyArray<Sample>, paths: ReadonlyArray<string>) => {
  const failed = samples.filter((s) => s.status !== 200)
  expect(failed, describeSamples(failed)).toHaveLength(0)
  expect(samples).toHaveLength(paths.length * perModulePerServer * servers.length)
  expect(samples.filter((s) => s.outcome === "fallback"), JSON.stringify(outcomes(samples))).toHaveLength(0)
  for (const p of paths) {
    const mine = samples.filter((s) => s.path === p)
    expect(new Set(mine.map((s) => s.etag)).size, `${p}: one ETag from both servers`).toBe(1)
    expect(new Set(mine.map((s) => s.body)).size, `${p}: identical bodies`).toBe(1)
    expect(mine.filter((s) => s.outcome === "transpiled").length, `${p}: transpiled once`).toBe(1)
  }
}

/** GETs every path on every server until each answers `x-module-cache: l1` (polls, with a deadline). */
const untilAllL1 = (paths: ReadonlyArray<string>, what: string) =>
  until(async () => {
    const samples = await herd(servers, paths, 1)
    return samples.every((s) => s.status === 200 && s.outcome === "l1")
  }, 10_000, what)

describe("two serve processes mounting the same two realms on Postgres", () => {
  it("both mount /a/ and /b/ under the same realm URLs", async () => {
    for (const server of servers) {
      const s = await stats(server)
      expect(s).toMatchObject({ store: "postgres", coordinator: "postgres", transpiles: 0 })
      expect(realmOf(s, "/a/").realmUrl).toBe(`${realmUrlBase}/a/`)
      expect(realmOf(s, "/b/").realmUrl).toBe(`${realmUrlBase}/b/`)
    }
  })

  it(`a herd of ${perModulePerServer} GETs per module per server over both realms: one transpile per module across the fleet`, async () => {
    const paths = [...pathsOf("/a/"), ...pathsOf("/b/")]
    const samples = await herd(servers, paths, perModulePerServer)
    checkHerd(samples, paths)
    for (const p of paths) {
      const [, realm, file] = /^\/(a|b)\/m(\d+)\.ts$/.exec(p)!
      expect(samples.find((s) => s.path === p)?.body).toContain(`export const id = "${realm}${file}"`)
    }
    expect(await totalTranspiles(servers)).toBe(2 * moduleCount)
    expect(await realmTranspiles("/a/")).toBe(moduleCount)
    expect(await realmTranspiles("/b/")).toBe(moduleCount)
    const perServer = await Promise.all(servers.map(stats))
    expect(perServer.map((s) => s.fallbacks)).toEqual([0, 0])
    console.log(
      `realms fleet herd: ${samples.length} GETs, transpiles ${perServer.map((s) => s.transpiles).join("+")} ` +
        `(a ${perServer.map((s) => realmOf(s, "/a/").transpiles).join("+")}, b ${perServer.map((s) => realmOf(s, "/b/").transpiles).join("+")}), ` +
        `outcomes ${JSON.stringify(outcomes(samples))}`
    )
  }, 120_000)

  it("an invalidation of realm A on one process reaches the other and drops nothing of realm B", async () => {
    const pathsA = pathsOf("/a/")
    const pathsB = pathsOf("/b/")
    // Both realms are hot on both processes.
    await untilAllL1([...pathsA, ...pathsB], "every module of both realms is an L1 hit on both processes")
    const before = await Promise.all(servers.map(stats))
    for (const s of before) {
      expect(realmOf(s, "/a/").modules).toBe(moduleCount)
      expect(realmOf(s, "/b/").modules).toBe(moduleCount)
    }
    const transpilesB = await realmTranspiles("/b/")

    // One module of A, whose path B has too: the peer drops A's, and B's stays on both.
    const one = await request(servers[0]!.url, "/_cache/invalidate?realm=/a/&path=/m1.ts", { method: "POST" })
    expect(one.status).toBe(200)
    expect(jsonOf(one)).toMatchObject({ invalidated: "module", mount: "/a/", paths: ["m1.ts"] })
    await until(async () => realmOf(await stats(servers[1]!), "/a/").modules === moduleCount - 1, 10_000, "process 2 dropped /a/m1.ts")
    for (const s of await Promise.all(servers.map(stats))) expect(realmOf(s, "/b/").modules).toBe(moduleCount)
    const sameName = await herd(servers, ["/b/m1.ts"], 1)
    expect(sameName.map((s) => `${s.status} ${s.outcome}`)).toEqual(["200 l1", "200 l1"])

    const response = await request(servers[0]!.url, "/_cache/invalidate?realm=/a/", { method: "POST" })
    expect(response.status).toBe(200)
    expect(jsonOf(response)).toMatchObject({ invalidated: "realm", mount: "/a/", realmUrl: `${realmUrlBase}/a/` })

    // The peer drops its A modules from L1 (the NOTIFY); nothing of B leaves either L1.
    await until(async () => realmOf(await stats(servers[1]!), "/a/").modules === 0, 10_000, "process 2 dropped realm A's L1 entries")
    for (const s of await Promise.all(servers.map(stats))) {
      expect(realmOf(s, "/a/").modules).toBe(0)
      expect(realmOf(s, "/b/").modules).toBe(moduleCount)
    }
    // B answers from L1 on both processes, fast path included (nothing was requested of B since).
    const hitsB = await herd(servers, pathsB, 1)
    expect(hitsB.map((s) => `${s.server} ${s.path} ${s.status} ${s.outcome}`)).toEqual(
      hitsB.map((s) => `${s.server} ${s.path} 200 l1`)
    )
    // A is cold again in the whole fleet (its rows were wiped): the next herd transpiles each A module once.
    const transpilesA = await realmTranspiles("/a/")
    const samples = await herd(servers, pathsA, perModulePerServer)
    checkHerd(samples, pathsA)
    expect((await realmTranspiles("/a/")) - transpilesA).toBe(moduleCount)
    expect(await realmTranspiles("/b/")).toBe(transpilesB)
  }, 120_000)

  it("an edit in realm A reaches both processes, and B's modules stay L1 hits on both", async () => {
    const pathsB = pathsOf("/b/")
    await untilAllL1([...pathsOf("/a/"), ...pathsB], "both realms hot again")
    const transpilesB = await realmTranspiles("/b/")
    writeFileSync(path.join(dirA, "m3.ts"), moduleSource("a", 3, 2))
    await until(async () => {
      const answers = await Promise.all(servers.map((_, i) => sample(servers, i, "/a/m3.ts")))
      return answers.every((s) => s.status === 200 && s.body.includes("export const version = 2"))
    }, 10_000, "both processes serve the edited module's new bytes")
    const hitsB = await herd(servers, pathsB, 1)
    expect(hitsB.map((s) => `${s.server} ${s.path} ${s.status} ${s.outcome}`)).toEqual(
      hitsB.map((s) => `${s.server} ${s.path} 200 l1`)
    )
    for (const s of await Promise.all(servers.map(stats))) expect(realmOf(s, "/b/").modules).toBe(moduleCount)
    expect(await realmTranspiles("/b/")).toBe(transpilesB)
  }, 120_000)
})
