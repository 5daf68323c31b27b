/**
 * A soak of three `serve --store pg` processes on one database: a mixed load over many
 * modules (mostly reads, an edit every couple of seconds) with a small L1, so that L1
 * evicts all the time. Sampled every few seconds: each server's RSS, its heap after a full
 * GC (through the preload test/support/memory-probe.ts, on SIGUSR2), its `/_cache/stats`,
 * and the database's session count.
 *
 * Bounded for CI: `SOAK_SECONDS` (default 60) sets the work, counted, not timed: one edit
 * per 2 s and one sample per 3 s of it (28 edits and 20 samples at 60). The load runs until
 * the editor and the sampler are done, so a slower machine soaks longer rather than doing
 * less. Set it higher for a longer run.
 */
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase } from "./support/database.ts"
import {
  advisoryLockCount,
  databaseOf,
  describeSamples,
  liveMemory,
  median,
  memoryProbeEnv,
  pidOf,
  rssOf,
  type Sample,
  sample,
  sessionCount,
  type Stats,
  stats,
  steadyLoad,
  until
} from "./support/load.ts"
import { makeRealm, removeRealms, type ServerProcess, sleep, startServer, stopAll } from "./support/server.ts"

const soakSeconds = Number(process.env.SOAK_SECONDS ?? "60")
const moduleCount = 200
const l1MaxBytes = 256 * 1024
const poolSize = 4
const serverCount = 3
const sampleEveryMs = 3000
const editEveryMs = 2000

/** About 3 KiB of TypeScript; its transpiled form about 2.5 KiB, so 200 of them overflow L1. */
const moduleSource = (i: number, version: number): string => {
  const lines = [`export const version: number = ${version}`, `export const id: string = "m${i}"`]
  for (let j = 0; j < 30; j++) lines.push(`export function f${j}(a: number, b: string): string { return b + (a * ${j}) }`)
  return `${lines.join("\n")}\n`
}
const modulePath = (i: number) => `/mods/m${i}.ts`
const versionOf = (body: string): number | undefined => {
  const match = /export const version = (\d+)/.exec(body)
  return match?.[1] === undefined ? undefined : Number(match[1])
}

let dbUrl: string
let database: string
let realm: string
let servers: Array<ServerProcess> = []
let probeDir: string

beforeAll(async () => {
  dbUrl = freshDatabase("soak")
  probeDir = mkdtempSync(path.join(tmpdir(), "mtc-soak-memory-"))
  database = databaseOf(dbUrl)
  const files: Record<string, string> = {}
  for (let i = 0; i < moduleCount; i++) files[`mods/m${i}.ts`] = moduleSource(i, 0)
  realm = makeRealm(files, "mtc-soak-")
  // Generous connect and session timeouts, as in test/ServeFleet.test.ts: the soak asserts
  // that nothing falls back, and the short defaults trip spuriously on a busy machine.
  const env = {
    DATABASE_URL: dbUrl,
    MTC_PG_CONNECT_TIMEOUT: "5 seconds",
    MTC_SESSION_TIMEOUT: "10 seconds",
    MTC_L1_MAX_BYTES: String(l1MaxBytes),
    MTC_PG_POOL_SIZE: String(poolSize),
    ...memoryProbeEnv(probeDir)
  }
  servers = await Promise.all(Array.from({ length: serverCount }, () => startServer({ realmDir: realm, store: "pg", env })))
}, 120_000)

afterAll(async () => {
  await stopAll()
  try {
    await until(() => sessionCount(database) === 0, 15_000, "every session closed")
    expect(advisoryLockCount(database)).toBe(0)
  } finally {
    dropDatabase(dbUrl)
    removeRealms()
    rmSync(probeDir, { recursive: true, force: true })
  }
}, 60_000)

interface Probe {
  readonly t: number
  readonly rss: ReadonlyArray<number>
  /** Heap used after a full GC. */
  readonly heap: ReadonlyArray<number>
  readonly stats: ReadonlyArray<Stats>
  readonly sessions: number
}

interface Edit {
  readonly path: string
  readonly version: number
  /** When each server was first seen answering the new version (performance.now()). */
  readonly confirmedAt: Array<number>
  readonly lagMs: number
}

const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1)

describe("soak", () => {
  it(`${serverCount} servers, ${moduleCount} modules, L1 of ${l1MaxBytes / 1024} KiB, ${soakSeconds} s of mixed load`, async () => {
    // Some random state, seeded, so that a failure can be replayed.
    let seed = 12345
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed / 0x7fffffff
    }
    const durationMs = soakSeconds * 1000
    const editCount = Math.floor((durationMs - 3000) / editEveryMs)
    const probeCount = Math.floor(durationMs / sampleEveryMs)
    const coverage = moduleCount * servers.length
    const started = performance.now()

    // Load: 8 workers, each one GET at a time; a quarter of the modules get 3/4 of the reads.
    // It ends when the editor and the sampler are done (durationMs is only a safety net).
    const load = steadyLoad({
      servers,
      concurrency: 8,
      durationMs: durationMs * 5,
      maxRequests: 2_000_000,
      timeoutMs: 10_000,
      pick: (n) => {
        // First every module once on every server, so that the counts below (every module
        // transpiled, L1 filled to its bound) do not depend on how fast the machine is.
        if (n < coverage) return { server: n % servers.length, path: modulePath(Math.floor(n / servers.length)) }
        const hot = random() < 0.75
        const i = Math.floor(random() * (hot ? moduleCount / 4 : moduleCount))
        return { server: Math.floor(random() * servers.length), path: modulePath(i) }
      }
    })

    // Sampler: every few seconds, RSS (read before the probe's GC), heap after GC, stats, sessions.
    const probes: Array<Probe> = []
    const sampler = (async () => {
      while (probes.length < probeCount) {
        const all = await Promise.all(servers.map(stats))
        probes.push({
          t: performance.now() - started,
          rss: servers.map((s) => rssOf(pidOf(s))),
          heap: (await Promise.all(servers.map((s) => liveMemory(pidOf(s), probeDir)))).map((m) => m.heapUsed),
          stats: all,
          sessions: sessionCount(database)
        })
        await sleep(sampleEveryMs)
      }
    })()

    // Editor: every couple of seconds, a new version of some module, then wait until every
    // server answers it (the watchers and peer invalidations did their work).
    const edits: Array<Edit> = []
    const versions = new Array<number>(moduleCount).fill(0)
    const editor = (async () => {
      while (edits.length < editCount) {
        await sleep(editEveryMs)
        const i = Math.floor(random() * moduleCount)
        const version = ++versions[i]!
        const p = modulePath(i)
        const writtenAt = performance.now()
        // An atomic save (as editors make them): a write in place can be read half done, and a
        // module read while its file is empty is rightly served empty until the watcher catches up.
        const file = path.join(realm, "mods", `m${i}.ts`)
        writeFileSync(`${file}.tmp`, moduleSource(i, version))
        renameSync(`${file}.tmp`, file)
        const confirmedAt = new Array<number>(servers.length).fill(0)
        await until(async () => {
          for (let s = 0; s < servers.length; s++) {
            if (confirmedAt[s] !== 0) continue
            const answer = await sample(servers, s, p)
            if (answer.status === 200 && versionOf(answer.body) === version) confirmedAt[s] = performance.now()
          }
          return confirmedAt.every((at) => at !== 0)
        }, 10_000, `edit ${version} of ${p} served by every server`, 25)
        edits.push({ path: p, version, confirmedAt, lagMs: Math.max(...confirmedAt) - writtenAt })
      }
    })()

    await editor
    await sampler
    await until(() => load.sent() >= coverage, 120_000, "the load covered every module on every server")
    load.stop()
    const samples = await load.done
    // The servers' counters once every request finished.
    const final = await Promise.all(servers.map(stats))
    const elapsed = (performance.now() - started) / 1000

    // The figures first, so that they show even when an assertion below fails.
    const maxOf = (values: ReadonlyArray<number>) => values.reduce((m, v) => Math.max(m, v), -Infinity)
    const minOf = (values: ReadonlyArray<number>) => values.reduce((m, v) => Math.min(m, v), Infinity)
    const sum = (field: keyof Stats) => final.reduce((total, s) => total + Number(s[field]), 0)
    const outcomes: Record<string, number> = {}
    for (const s of samples) outcomes[s.outcome ?? `status ${s.status}`] = (outcomes[s.outcome ?? `status ${s.status}`] ?? 0) + 1
    const lags = edits.map((e) => e.lagMs)
    const l1Max = maxOf([...probes.flatMap((p) => p.stats), ...final].map((s) => s.l1Bytes))
    const sessions = probes.map((p) => p.sessions)
    const cap = serverCount * (poolSize + 2)
    const third = Math.max(1, Math.floor(probes.length / 3))
    const memory = servers.map((_, s) => {
      const rss = probes.map((p) => p.rss[s]!)
      const heap = probes.map((p) => p.heap[s]!)
      return {
        rss,
        heap,
        rssFirst: median(rss.slice(0, third)),
        rssLast: median(rss.slice(-third)),
        heapFirst: median(heap.slice(0, third)),
        heapLast: median(heap.slice(-third))
      }
    })
    console.log([
      `soak: ${serverCount} servers, ${moduleCount} modules, ${elapsed.toFixed(0)} s, ${probes.length} samples`,
      `  requests ${samples.length} (${(samples.length / elapsed).toFixed(0)} req/s), outcomes ${JSON.stringify(outcomes)}, max latency ${maxOf(samples.map((s) => s.ms)).toFixed(0)} ms`,
      `  edits ${edits.length}, each served by every server within max ${maxOf([0, ...lags]).toFixed(0)} ms (median ${median(lags).toFixed(0)} ms)`,
      `  RSS MiB per server, first-third median -> last-third median (max): ${memory.map((m) => `${mib(m.rssFirst)}->${mib(m.rssLast)} (${mib(maxOf(m.rss))})`).join(", ")}`,
      `  heap after GC MiB per server, first third -> last third: ${memory.map((m) => `${mib(m.heapFirst)}->${mib(m.heapLast)}`).join(", ")}`,
      `  connections min ${minOf(sessions)} max ${maxOf(sessions)} (cap ${cap}), series ${sessions.join(" ")}`,
      `  l1Bytes max ${l1Max} of ${l1MaxBytes}, l1Entries at the end ${final.map((s) => s.l1Entries).join("/")}`,
      `  transpiles ${sum("transpiles")} (${final.map((s) => s.transpiles).join("+")}), l2 hits ${sum("l2Hits")}, fallbacks ${sum("fallbacks")}, persist failures ${sum("persistFailures")}`
    ].join("\n"))
    if (process.env.SOAK_VERBOSE) {
      for (const [s, m] of memory.entries()) {
        console.log(`server ${s} RSS: ${m.rss.map(mib).join(" ")}\nserver ${s} heap: ${m.heap.map(mib).join(" ")}`)
      }
    }

    // Every request answered, with a module's bytes.
    const failed = samples.filter((s) => s.status !== 200 || versionOf(s.body) === undefined)
    expect(failed, describeSamples(failed)).toHaveLength(0)

    // Edits are reflected: every edit was served by every server (the editor waited for it),
    // and no server went back to an older version once it was seen serving the new one.
    expect(edits).toHaveLength(editCount)
    const stale: Array<Sample> = []
    for (const edit of edits) {
      for (const s of samples) {
        if (s.path !== edit.path || s.at <= edit.confirmedAt[s.server]!) continue
        if ((versionOf(s.body) ?? -1) < edit.version) stale.push(s)
      }
    }
    expect(stale, describeSamples(stale)).toHaveLength(0)

    // L1 stays within its bound, and the bound was reached: it evicted all along.
    expect(l1Max).toBeLessThanOrEqual(l1MaxBytes)
    expect(l1Max).toBeGreaterThan(l1MaxBytes / 2)
    for (const s of final) expect(s.l1Entries).toBeLessThan(moduleCount)
    expect(sum("l2Hits")).toBeGreaterThan(0)

    // Connections: never above what the fleet may open (the pool plus the LISTEN and lock
    // sessions of each server), and flat once warm: no leak, no churn that ratchets up.
    expect(probes).toHaveLength(probeCount)
    expect(maxOf(sessions)).toBeLessThanOrEqual(cap)
    const steady = sessions.slice(2)
    expect(maxOf(steady) - minOf(steady)).toBeLessThanOrEqual(serverCount * 2)
    expect(maxOf(steady)).toBeLessThanOrEqual(maxOf(sessions.slice(0, 3)) + serverCount)

    // Memory. RSS: the last third's median at most 1.5 times the first third's. V8 and Babel
    // settle in the first seconds and L1 is bounded at 256 KiB, so RSS has no reason to keep
    // growing; a leak of even 1 KiB per request (about 80 MiB over a minute at this rate)
    // breaks the bound, while heap sizing and GC timing move RSS by far less.
    // The heap after a full GC is the finer signal: at most 8 MiB more in the last third
    // (about 100 bytes per request over a minute) - JIT code and caches add about 1 MiB.
    for (const [s, m] of memory.entries()) {
      expect(m.rssLast, `server ${s} RSS ${mib(m.rssFirst)} -> ${mib(m.rssLast)} MiB`).toBeLessThanOrEqual(m.rssFirst * 1.5)
      expect(m.heapLast - m.heapFirst, `server ${s} heap ${mib(m.heapFirst)} -> ${mib(m.heapLast)} MiB`)
        .toBeLessThanOrEqual(8 * 1024 * 1024)
    }

    // Transpiles: each module once, plus each edit's new version (a few times at most: every
    // server's watcher invalidates the same edit, so a read between two of those
    // invalidations may transpile it again). Nothing fell back, nothing failed to persist.
    expect(sum("transpiles")).toBeGreaterThanOrEqual(moduleCount)
    expect(sum("transpiles")).toBeLessThanOrEqual(moduleCount + serverCount * edits.length + 10)
    expect(sum("fallbacks")).toBe(0)
    expect(sum("persistFailures")).toBe(0)
  }, (soakSeconds * 3 + 120) * 1000)
})
