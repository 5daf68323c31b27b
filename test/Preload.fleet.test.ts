/**
 * A new `serve --store pg` process joining a running fleet starts warm: it preloads the
 * realm's rows from Postgres before it listens, answers every module from L1 without a
 * transpile or an L2 read, and coalesces with the running process as before.
 */
import { afterAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase } from "./support/database.ts"
import { describeSamples, herd, outcomes, stats, totalTranspiles } from "./support/load.ts"
import { makeRealm, removeRealms, request, startServer, stopAll } from "./support/server.ts"

const moduleCount = 20
const source = (i: number) =>
  `export const id: string = "m${i}"\nexport function f(a: number): number { return a + ${i} }\n`

// Made at collection: an unreachable Postgres fails this file, never skips it.
const dbUrl = freshDatabase("preload_fleet")

afterAll(async () => {
  await stopAll()
  dropDatabase(dbUrl)
  removeRealms()
}, 60_000)

describe("preload in a Postgres fleet", () => {
  it("a new process joining the fleet starts warm, and still coalesces with the others", async () => {
    const files: Record<string, string> = {}
    for (let i = 0; i < moduleCount; i++) files[`warm/m${i}.ts`] = source(i)
    // Requested only at the end (made now: a file created during the herd would be invalidated by the watchers).
    const fresh = Array.from({ length: 5 }, (_, i) => `/fresh/n${i}.ts`)
    for (const [i, p] of fresh.entries()) files[p.slice(1)] = source(100 + i)
    const realm = makeRealm(files, "mtc-preload-fleet-")
    const paths = Array.from({ length: moduleCount }, (_, i) => `/warm/m${i}.ts`)
    const env = { DATABASE_URL: dbUrl, MTC_PG_CONNECT_TIMEOUT: "5 seconds", MTC_SESSION_TIMEOUT: "10 seconds" }

    const running = await startServer({ realmDir: realm, store: "pg", env })
    for (const p of paths) expect((await request(running.url, p)).headers["x-module-cache"], p).toBe("transpiled")
    // The rows are committed once the running process has no load in flight.
    for (let i = 0; i < 100 && (await stats(running)).inFlight > 0; i++) await new Promise((r) => setTimeout(r, 50))

    const joining = await startServer({ realmDir: realm, store: "pg", env })
    expect(await stats(joining)).toMatchObject({ preloadedEntries: moduleCount, transpiles: 0 })
    for (const p of paths) {
      const response = await request(joining.url, p)
      expect(response.status).toBe(200)
      expect(response.headers["x-module-cache"], p).toBe("l1")
      expect(response.body).toContain(`"m${p.match(/m(\d+)/)![1]}"`)
    }
    expect(await stats(joining)).toMatchObject({ transpiles: 0, l2Hits: 0, l1Hits: moduleCount, fallbacks: 0 })

    // Cold modules, requested by both at once: one transpile each in the whole fleet.
    const before = await totalTranspiles([running, joining])
    const samples = await herd([running, joining], fresh, 10)
    const failed = samples.filter((s) => s.status !== 200)
    expect(failed, describeSamples(failed)).toHaveLength(0)
    expect(samples.filter((s) => s.outcome === "fallback"), JSON.stringify(outcomes(samples))).toHaveLength(0)
    expect((await totalTranspiles([running, joining])) - before).toBe(fresh.length)
  }, 120_000)
})
