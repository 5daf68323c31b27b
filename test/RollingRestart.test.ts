/**
 * A rolling deploy behind Debian's nginx, on one real Postgres, under continuous load: three
 * `serve` processes of v1 (`--engine native`), each replaced in turn by one of v2 (`--engine
 * babel`: another pipeline fingerprint) on the same port (SIGTERM, wait for its exit, start).
 * Nothing fails and nothing hangs (every request is answered within the load's 5 s client
 * timeout), every process exits 0, and the old fleet makes exactly M transpiles. The new fleet
 * makes none when `warm` pre-warmed v2 before the roll (every new process starts with M
 * preloaded), and exactly M when not (coalesced across the new processes, beside the old ones).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase } from "./support/database.ts"
import { stats } from "./support/load.ts"
import { type Nginx, startNginx } from "./support/nginx.ts"
import { keepAliveLoad, rollingRestart } from "./support/restarts.ts"
import {
  freePort,
  makeRealm,
  removeRealms,
  request,
  runCli,
  type ServerProcess,
  startServer,
  stopAll
} from "./support/server.ts"

let databaseUrl: string
let nginx: Nginx | undefined

beforeAll(() => {
  databaseUrl = freshDatabase("rolling")
})
afterEach(async () => {
  await nginx?.stop()
  nginx = undefined
  await stopAll()
})
afterAll(() => {
  dropDatabase(databaseUrl)
  removeRealms()
})

/** M modules of a few KiB of TypeScript, importing one another. */
const moduleCount = 24
const realmFiles = (): Record<string, string> => {
  const files: Record<string, string> = {}
  for (let i = 0; i < moduleCount; i++) {
    const imports = i === 0 ? "" : `import { value${i - 1} } from "./m${i - 1}.ts"\n`
    const body = Array.from({ length: 60 }, (_, j) => `export const c${i}_${j}: number = ${i * 1000 + j}\n`).join("")
    files[`m${i}.ts`] = `${imports}export const value${i}: string = "m${i}"\n${body}`
  }
  return files
}

const v1 = ["--engine", "native"] as const
const v2 = ["--engine", "babel"] as const

describe("a rolling deploy behind nginx", () => {
  it.each([
    { prewarm: true, newFleetTranspiles: 0 },
    { prewarm: false, newFleetTranspiles: moduleCount }
  ])("3 processes replaced in turn by a new version under load (pre-warmed: $prewarm): 0 failed, 0 hung, exit 0, old fleet M transpiles, new fleet $newFleetTranspiles", async ({ prewarm, newFleetTranspiles }) => {
    const realm = makeRealm(realmFiles())
    const realmUrl = `https://realm.test/${prewarm ? "prewarmed" : "cold"}/`
    const paths = Array.from({ length: moduleCount }, (_, i) => `/m${i}.ts`)
    const storeArgs = ["--realm-url", realmUrl, "--transpile-workers", "1"]
    const start = (version: ReadonlyArray<string>) => (port: number) =>
      startServer({
        realmDir: realm,
        store: "pg",
        port,
        args: [...storeArgs, ...version],
        env: { DATABASE_URL: databaseUrl },
        timeoutMs: 120_000
      })
    const ports = [await freePort(), await freePort(), await freePort()]
    const fleet: Array<ServerProcess> = []
    for (const port of ports) fleet.push(await start(v1)(port))
    nginx = await startNginx({ upstreams: ports })

    // Every process answers every module once: the first transpiles M, the others read L2.
    for (const path of paths) expect((await request(fleet[0]!.url, path)).status).toBe(200)
    await Promise.all(fleet.slice(1).flatMap((server) => paths.map((path) => request(server.url, path))))

    const load = keepAliveLoad({ url: nginx.url, paths, concurrency: 6, timeoutMs: 5_000 })
    await load.after(300)
    if (prewarm) {
      // The new version is warmed against the fleet's Postgres while the old fleet serves.
      const warm = await runCli(["warm", realm, "--store", "pg", ...storeArgs, ...v2], {
        env: { DATABASE_URL: databaseUrl },
        timeoutMs: 120_000
      })
      expect(warm.code, warm.stderr).toBe(0)
      expect(warm.stdout).toContain(`ok: ${moduleCount} (transpiled ${moduleCount})`)
    }
    // Each new process takes traffic before the next old one stops.
    const replaced = await rollingRestart(fleet, start(v2), () => load.after(300))
    await load.after(300)
    const summary = await load.stop()

    expect(summary.failures, nginx.errorLog()).toEqual([])
    expect(summary.requests).toBeGreaterThan(1200)
    expect(replaced.map((process) => process.exit)).toEqual([0, 0, 0])
    // The old fleet made M transpiles in all; the pre-warm (or the new fleet) made v2's.
    expect(replaced.reduce((sum, process) => sum + process.lastStats.transpiles, 0)).toBe(moduleCount)
    const after = await Promise.all(fleet.map(stats))
    expect(after.reduce((sum, s) => sum + s.transpiles, 0)).toBe(newFleetTranspiles)
    expect(after.map((s) => s.fallbacks)).toEqual([0, 0, 0])
    if (prewarm) expect(after.map((s) => s.preloadedEntries)).toEqual([moduleCount, moduleCount, moduleCount])
    // Every new process served part of the load, and both versions' rows are in L2.
    for (const s of after) expect(s.l1Hits).toBeGreaterThan(0)
    expect((after[0]!.versions ?? []).map((version) => version.rows)).toEqual([moduleCount, moduleCount])
    console.log(`rolling deploy (pre-warmed: ${prewarm}): ${summary.requests} requests, ${summary.failures.length} failed, worst ${summary.worstMs.toFixed(0)} ms, ${summary.overOneSecond} over 1 s, transpiles old ${moduleCount} new ${newFleetTranspiles}`)
  }, 600_000)
})
