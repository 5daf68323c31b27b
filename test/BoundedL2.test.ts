/**
 * L2 stays bounded against hostile or buggy invalidations, on real server processes:
 * invalidating made-up paths writes nothing, realm-wide wipes touch only live rows, the
 * scheduled prune and the byte cap run while requests do, and PGlite's data directory
 * stays small (it checkpoints).
 */
import { randomBytes } from "node:crypto"
import { readdirSync, realpathSync, statSync } from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { afterAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"
import {
  eventually,
  makeRealm,
  removeRealms,
  request,
  type ServerProcess,
  startServer,
  stopAll,
  writeEntry
} from "./support/server.ts"

const databaseUrl = freshDatabase("bounded_l2")
afterAll(async () => {
  await stopAll()
  removeRealms()
  dropDatabase(databaseUrl)
})

const moduleCount = 50

const fiftyModules = (): Record<string, string> => {
  const files: Record<string, string> = {}
  for (let i = 0; i < moduleCount; i++) files[`m/mod${i}.ts`] = `export const value${i}: number = ${i}\n`
  return files
}

const paths = Array.from({ length: moduleCount }, (_, i) => `/m/mod${i}.ts`)

/** Runs `task` over `items`, `width` at a time. */
const inParallel = async <A>(items: ReadonlyArray<A>, width: number, task: (item: A) => Promise<void>) => {
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) await task(items[next++]!)
  }))
}

const requestAll = (server: ServerProcess, some: ReadonlyArray<string> = paths) =>
  inParallel(some, 8, async (p) => {
    const response = await request(server.url, p)
    expect(response.status, p).toBe(200)
  })

/**
 * 1000 invalidations of random paths that name no module, and 20 realm-wide wipes, each
 * followed by reading ten of the modules again (in turn, so every module is rewritten).
 */
const abuse = async (server: ServerProcess) => {
  const randomPaths = Array.from({ length: 1000 }, () => `nope/${randomBytes(6).toString("hex")}.ts`)
  await inParallel(randomPaths, 8, async (p) => {
    const response = await request(server.url, `/_cache/invalidate?path=${encodeURIComponent(p)}`, { method: "POST" })
    expect(response.status, p).toBe(200)
    expect(JSON.parse(response.body)).toMatchObject({ invalidated: "module", paths: [] })
  })
  for (let round = 0; round < 20; round++) {
    const wipe = await request(server.url, "/_cache/invalidate", { method: "POST" })
    expect(wipe.status).toBe(200)
    await requestAll(server, paths.slice((round % 5) * 10, (round % 5) * 10 + 10))
  }
}

const directoryBytes = (dir: string): number => {
  let total = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) total += directoryBytes(full)
    else if (entry.isFile()) total += statSync(full).size
  }
  return total
}

describe("bounded L2", () => {
  it("Postgres: 1000 made-up invalidations and 20 wipes over 50 modules leave at most 150 rows", async () => {
    const realm = makeRealm(fiftyModules())
    const server = await startServer({ realmDir: realm, store: "pg", env: { DATABASE_URL: databaseUrl } })
    await requestAll(server)
    await abuse(server)
    const rows = Number(psql("SELECT count(*) FROM module_transpile_cache", databaseUrl))
    console.log(`postgres rows after abuse: ${rows}`)
    expect(rows).toBeLessThanOrEqual(150)
    expect(rows).toBeGreaterThanOrEqual(moduleCount)
    expect(await server.stop()).toBe(0)
  }, 180_000)

  it("PGlite: the same abuse grows the data directory by at most 32 MiB", async () => {
    const realm = makeRealm(fiftyModules())
    const dataDir = path.join(realm, ".transpile-cache")
    const env = { MTC_PRUNE_INTERVAL: "500 millis" }
    const server = await startServer({ realmDir: realm, store: "pglite", env })
    await requestAll(server)
    const before = directoryBytes(dataDir)
    await abuse(server)
    // Let one more prune (with its checkpoint) run.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const after = directoryBytes(dataDir)
    console.log(`pglite data dir: ${(before / 2 ** 20).toFixed(1)} MiB -> ${(after / 2 ** 20).toFixed(1)} MiB`)
    expect(after - before).toBeLessThanOrEqual(32 * 2 ** 20)
    expect(await server.stop()).toBe(0)
  }, 180_000)

  it("prune and the byte cap run while requests do, and no stale byte is served", async () => {
    const realm = makeRealm(fiftyModules())
    // Prune every 100 ms, tombstones after 200 ms, and a cap that holds about ten modules.
    const env = {
      DATABASE_URL: databaseUrl,
      MTC_PRUNE_INTERVAL: "100 millis",
      MTC_PRUNE_TOMBSTONE_AGE: "200 millis",
      MTC_L2_MAX_BYTES: "3000",
      MTC_L1_MAX_BYTES: "0"
    }
    const server = await startServer({ realmDir: realm, store: "pg", env })
    const realmUrl = `${pathToFileURL(realpathSync(realm)).href}/`
    let version = 0
    const stop = Date.now() + 4000
    const editor = (async () => {
      while (Date.now() < stop) {
        version++
        writeEntry(realm, "m/mod0.ts", `export const value0: number = ${1000 + version}\n`)
        await new Promise((resolve) => setTimeout(resolve, 150))
      }
    })()
    const readers = Array.from({ length: 4 }, async () => {
      while (Date.now() < stop) {
        for (const p of paths.slice(0, 20)) {
          const response = await request(server.url, p)
          expect(response.status, p).toBe(200)
        }
      }
    })
    await Promise.all([editor, ...readers])
    // Once the last edit settled, every read serves it.
    const last = 1000 + version
    await eventually(async () => ((await request(server.url, "/m/mod0.ts")).body.includes(`${last}`) ? true : undefined), 5000, "last edit")
    for (let i = 0; i < 20; i++) expect((await request(server.url, "/m/mod0.ts")).body).toContain(`${last}`)
    // The cap held: the live bytes of the realm are within it (after the next prune).
    await eventually(async () => {
      const live = Number(psql(
        `SELECT COALESCE(sum(octet_length(body)), 0) FROM module_transpile_cache
         WHERE body IS NOT NULL AND realm_url = '${realmUrl}'`,
        databaseUrl
      ))
      return live <= 3000 ? true : undefined
    }, 5000, "live bytes within the cap")
    expect(await server.stop()).toBe(0)
  }, 120_000)
})
