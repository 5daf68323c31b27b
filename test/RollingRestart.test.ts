/**
 * A rolling restart behind Debian's nginx, on one real Postgres, under continuous load: three
 * `serve` processes, each replaced in turn (SIGTERM, wait for its exit, a new one on the same
 * port). Nothing fails and nothing hangs (every request is answered within the load's 5 s
 * client timeout), every process exits 0, and the fleet transpiles each module exactly once:
 * the new processes start from L2 with every module preloaded.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase } from "./support/database.ts"
import { stats } from "./support/load.ts"
import { type Nginx, startNginx } from "./support/nginx.ts"
import { keepAliveLoad, rollingRestart } from "./support/restarts.ts"
import { freePort, makeRealm, removeRealms, request, type ServerProcess, startServer, stopAll } from "./support/server.ts"

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

describe("rolling restart behind nginx", () => {
  it("3 processes replaced in turn under load: 0 failed, 0 hung, exit 0, exactly M transpiles in the fleet", async () => {
    const realm = makeRealm(realmFiles())
    const paths = Array.from({ length: moduleCount }, (_, i) => `/m${i}.ts`)
    const start = (port: number) =>
      startServer({
        realmDir: realm,
        store: "pg",
        port,
        args: ["--realm-url", "https://realm.test/", "--engine", "native", "--transpile-workers", "1"],
        env: { DATABASE_URL: databaseUrl },
        timeoutMs: 120_000
      })
    const ports = [await freePort(), await freePort(), await freePort()]
    const fleet: Array<ServerProcess> = []
    for (const port of ports) fleet.push(await start(port))
    nginx = await startNginx({ upstreams: ports })

    // Every process answers every module once: the first transpiles M, the others read L2.
    for (const path of paths) expect((await request(fleet[0]!.url, path)).status).toBe(200)
    await Promise.all(fleet.slice(1).flatMap((server) => paths.map((path) => request(server.url, path))))
    const warm = await Promise.all(fleet.map(stats))
    expect(warm.reduce((sum, s) => sum + s.transpiles, 0)).toBe(moduleCount)

    const load = keepAliveLoad({ url: nginx.url, paths, concurrency: 6, timeoutMs: 5_000 })
    await load.after(300)
    // Each new process takes traffic before the next old one stops.
    const replaced = await rollingRestart(fleet, start, () => load.after(300))
    await load.after(300)
    const summary = await load.stop()

    expect(summary.failures, nginx.errorLog()).toEqual([])
    expect(summary.requests).toBeGreaterThan(1200)
    expect(replaced.map((process) => process.exit)).toEqual([0, 0, 0])
    // The old fleet made M transpiles in all, the new one none: it started from L2.
    expect(replaced.reduce((sum, process) => sum + process.lastStats.transpiles, 0)).toBe(moduleCount)
    const after = await Promise.all(fleet.map(stats))
    expect(after.map((s) => s.transpiles)).toEqual([0, 0, 0])
    expect(after.map((s) => s.preloadedEntries)).toEqual([moduleCount, moduleCount, moduleCount])
    // Every new process served part of the load.
    for (const s of after) expect(s.l1Hits).toBeGreaterThan(0)
    console.log(`rolling restart: ${summary.requests} requests, ${summary.failures.length} failed, worst ${summary.worstMs.toFixed(0)} ms, ${summary.overOneSecond} over 1 s`)
  }, 600_000)
})
