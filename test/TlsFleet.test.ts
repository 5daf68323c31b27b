/**
 * A fleet of two real `serve --store pg` processes on a Postgres that accepts only TLS
 * (`hostssl`, a certificate from a CA made by the test), connecting with
 * `sslmode=verify-full&sslrootcert=...`: every connection of the fleet is encrypted, a cold
 * herd costs exactly one transpile per module, and an edit reaches both processes.
 */
import { writeFileSync } from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { describeSamples, herd, outcomes, totalTranspiles, until } from "./support/load.ts"
import { makeRealm, removeRealms, request, type ServerProcess, startServer, stopAll } from "./support/server.ts"
import { startTlsCluster, type TlsCluster } from "./support/tlsPostgres.ts"

const moduleCount = 8
const perModulePerServer = 20

const moduleSource = (i: number, version = 1): string => {
  const lines = [`export const version: number = ${version}`, `export const id: string = "m${i}"`]
  for (let j = 0; j < 40; j++) lines.push(`export function f${j}(a: number): number { return a + ${j} }`)
  return `${lines.join("\n")}\n`
}

const paths = Array.from({ length: moduleCount }, (_, i) => `/m${i}.ts`)

let cluster: TlsCluster
let realm: string
let servers: Array<ServerProcess> = []

beforeAll(async () => {
  cluster = await startTlsCluster()
  cluster.psql("CREATE DATABASE fleet")
  const files: Record<string, string> = {}
  for (let i = 0; i < moduleCount; i++) files[`m${i}.ts`] = moduleSource(i)
  realm = makeRealm(files, "mtc-tls-fleet-")
  const env = {
    DATABASE_URL: cluster.url({ database: "fleet", params: { sslmode: "verify-full", sslrootcert: cluster.files.ca } }),
    MTC_PG_CONNECT_TIMEOUT: "5 seconds",
    MTC_SESSION_TIMEOUT: "10 seconds"
  }
  servers = await Promise.all([startServer({ realmDir: realm, store: "pg", env }), startServer({ realmDir: realm, store: "pg", env })])
}, 120_000)

afterAll(async () => {
  try {
    await stopAll()
  } finally {
    cluster?.stop()
    removeRealms()
  }
}, 60_000)

/** `application_name:ssl` of every connection of the fleet to its database. */
const fleetConnections = () =>
  cluster.psql(`SELECT a.application_name || ':' || s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
    WHERE a.datname = 'fleet' AND a.application_name LIKE 'module-transpile-cache:%' ORDER BY 1`).split("\n").filter((l) => l !== "")

describe("a fleet of two serve processes over TLS (verify-full)", () => {
  it("a cold herd: exactly one transpile per module, one ETag per module from both; every connection encrypted", async () => {
    const before = await totalTranspiles(servers)
    const samples = await herd(servers, paths, perModulePerServer)
    const failed = samples.filter((s) => s.status !== 200)
    expect(failed, describeSamples(failed)).toHaveLength(0)
    expect(samples.filter((s) => s.outcome === "fallback"), JSON.stringify(outcomes(samples))).toHaveLength(0)
    for (const p of paths) {
      const mine = samples.filter((s) => s.path === p)
      expect(new Set(mine.map((s) => s.etag)).size, `${p}: one ETag`).toBe(1)
      expect(mine.filter((s) => s.outcome === "transpiled").length, `${p}: transpiled once`).toBe(1)
    }
    expect((await totalTranspiles(servers)) - before).toBe(moduleCount)
    const connections = fleetConnections()
    // Each process holds its fleet session (LISTEN, locks) and its pool connection here.
    expect(connections.filter((c) => c.includes(":listen:"))).toHaveLength(2)
    expect(connections.filter((c) => c.endsWith(":true"))).toEqual(connections)
  }, 120_000)

  it("an edit reaches both processes, which then answer the same bytes under the same ETag", async () => {
    const target = "/m0.ts"
    const first = await Promise.all(servers.map((s) => request(s.url, target)))
    expect(first.map((r) => r.body.includes("version = 1"))).toEqual([true, true])
    writeFileSync(path.join(realm, "m0.ts"), moduleSource(0, 2))
    await until(async () => {
      const answers = await Promise.all(servers.map((s) => request(s.url, target)))
      return answers.every((r) => r.status === 200 && r.body.includes("version = 2"))
    }, 10_000, "both servers answer the edited module")
    const after = await Promise.all(servers.map((s) => request(s.url, target)))
    expect(after[0]?.headers.etag).toBe(after[1]?.headers.etag)
    expect(after[0]?.headers.etag).not.toBe(first[0]?.headers.etag)
    expect(after[0]?.body).toBe(after[1]?.body)
  }, 60_000)
})
