/**
 * Faults of a real fleet: `serve --store pg` processes while Postgres goes away (a cut
 * TCP proxy), while every backend of the database is terminated (a simulated restart),
 * and while one of them is SIGKILLed in the middle of a herd.
 *
 * What must hold: no request fails, warm modules keep answering from L1 and cold ones
 * through a local transpile within about a second; once Postgres is back the fleet
 * reconnects, flushes L1 (invalidations may have been missed) and coalesces again (one
 * transpile per module for a new cold herd); nothing of a dead or stopped process stays
 * in Postgres (no session, no advisory lock).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"
import {
  advisoryLockCount,
  databaseOf,
  describeSamples,
  herd,
  outcomes,
  pidOf,
  type Sample,
  sample,
  sessionCount,
  steadyLoad,
  terminateAll,
  totalTranspiles,
  until
} from "./support/load.ts"
import { type Proxy, startProxy } from "./support/proxy.ts"
import { makeRealm, removeRealms, type ServerProcess, sleep, startServer, stopAll } from "./support/server.ts"

let dbUrl: string
let database: string
let proxy: Proxy

beforeAll(async () => {
  dbUrl = freshDatabase("faults")
  database = databaseOf(dbUrl)
  proxy = await startProxy({ host: "127.0.0.1", port: Number(new URL(dbUrl).port || 5432) })
})

afterAll(async () => {
  await stopAll()
  await proxy.close()
  dropDatabase(dbUrl)
  removeRealms()
})

// After every test: once the fleet exited, nothing of it remains in Postgres.
afterEach(async () => {
  await stopAll()
  proxy.restore()
  await until(() => sessionCount(database) === 0, 15_000, "every session of the fleet closed")
  expect(advisoryLockCount(database)).toBe(0)
}, 60_000)

/**
 * Knobs for the outage tests: a quick heartbeat and a short persist retry schedule, so that
 * an outage is noticed and written off quickly. The connect and session timeouts stay
 * generous: the proxy's cut and pg_terminate_backend both close sockets, so nothing waits
 * for those timeouts here, while short ones trip spuriously on a 2-core machine shared with
 * other work (see the bug shown in test/ServeFleet.test.ts) and would make the
 * "one transpile per module" checks flaky.
 */
const faultEnv = (databaseUrl: string): Record<string, string> => ({
  DATABASE_URL: databaseUrl,
  MTC_PG_CONNECT_TIMEOUT: "5 seconds",
  MTC_SESSION_TIMEOUT: "10 seconds",
  MTC_HEARTBEAT: "200 millis",
  MTC_PERSIST_RETRIES: "2",
  MTC_PERSIST_RETRY_BASE: "50 millis"
})

/** The backend pids of the fleet's LISTEN sessions. */
const listenPids = (): Array<string> =>
  psql(`SELECT pid FROM pg_stat_activity WHERE datname = '${database}'
    AND application_name LIKE 'module-transpile-cache:listen:%' ORDER BY pid`).split("\n").filter((l) => l !== "")

/** Waits until every server has a LISTEN session that is not one of `before`. */
const untilListenReplaced = (before: ReadonlyArray<string>, count: number) =>
  until(() => {
    const now = listenPids()
    return now.length === count && now.every((pid) => !before.includes(pid))
  }, 20_000, "every LISTEN session reconnected")

/** A small module (a transpile of a few milliseconds) that says which it is. */
const moduleSource = (name: string): string => {
  const lines = [`export const name: string = ${JSON.stringify(name)}`]
  for (let j = 0; j < 20; j++) lines.push(`export function f${j}(a: number): number { return a + ${j} }`)
  return `${lines.join("\n")}\n`
}

/** A realm with modules `<group>/m<i>.ts` for every group. */
const realmWith = (groups: Record<string, number>, source = moduleSource) => {
  const files: Record<string, string> = {}
  const paths: Record<string, Array<string>> = {}
  for (const [group, count] of Object.entries(groups)) {
    paths[group] = []
    for (let i = 0; i < count; i++) {
      const file = `${group}/m${i}.ts`
      files[file] = source(file)
      paths[group]!.push(`/${file}`)
    }
  }
  return { dir: makeRealm(files, "mtc-faults-"), paths }
}

const startFleet = (count: number, realmDir: string, env: Record<string, string>) =>
  Promise.all(Array.from({ length: count }, () => startServer({ realmDir, store: "pg", env })))

/** Every sample answered 200 with the module's own bytes. */
const expectAllServed = (samples: ReadonlyArray<Sample>) => {
  const failed = samples.filter((s) => s.status !== 200 || !s.body.includes(`"${s.path.slice(1)}"`))
  expect(failed, describeSamples(failed)).toHaveLength(0)
}

/**
 * Waits until the whole fleet coalesces again: a probe herd over one cold module gives one
 * transpile and no fallback. Each probe uses a module of its own. Returns how many probes it took.
 */
const untilCoalescing = async (servers: ReadonlyArray<ServerProcess>, probes: ReadonlyArray<string>) => {
  for (const [n, probe] of probes.entries()) {
    const before = await totalTranspiles(servers)
    const samples = await herd(servers, [probe], 5)
    expectAllServed(samples)
    const transpiles = (await totalTranspiles(servers)) - before
    if (transpiles === 1 && !samples.some((s) => s.outcome === "fallback")) return n + 1
    await sleep(200)
  }
  throw new Error(`the fleet did not coalesce again after ${probes.length} probes`)
}

/** A new cold herd: exactly one transpile per module across the fleet, one ETag per module. */
const expectOneTranspilePerModule = async (servers: ReadonlyArray<ServerProcess>, paths: ReadonlyArray<string>) => {
  const before = await totalTranspiles(servers)
  const samples = await herd(servers, paths, 10)
  expectAllServed(samples)
  expect(samples.filter((s) => s.outcome === "fallback"), JSON.stringify(outcomes(samples))).toHaveLength(0)
  for (const p of paths) expect(new Set(samples.filter((s) => s.path === p).map((s) => s.etag)).size).toBe(1)
  expect((await totalTranspiles(servers)) - before).toBe(paths.length)
  return samples
}

/**
 * Each server answered a warm module from below L1 at least once after the fault: nothing
 * else drops a warm entry here (no edits, no invalidations, a large L1), so L1 was flushed
 * when the LISTEN connection came back. Seen among `seen` (the flush came during the load)
 * or by asking again (it comes later).
 */
const expectL1Flushed = async (
  servers: ReadonlyArray<ServerProcess>,
  warm: ReadonlyArray<string>,
  seen: ReadonlyArray<Sample>
) => {
  for (const [i, server] of servers.entries()) {
    if (seen.some((s) => s.server === i && warm.includes(s.path) && s.status === 200 && s.outcome !== "l1")) continue
    await until(async () => {
      const answer = await sample([server], 0, warm[0]!)
      expect(answer.status).toBe(200)
      return answer.outcome !== "l1"
    }, 15_000, `server ${i} flushed its L1`)
  }
}

/**
 * Runs a load of warm and cold GETs, 6 at a time: `before` requests, then `after` more,
 * with `fault` made to happen as the first of the `after` requests is sent, so that
 * requests are in flight across it. The work is bounded by count, never by time, so a
 * faster machine does not run out of cold modules: every odd request is a cold module
 * requested nowhere else (the realm needs `(before + after) / 2` of them), round robin over
 * the servers. `after` holds the samples of the requests sent after the fault.
 */
const loadAround = async (options: {
  readonly servers: ReadonlyArray<ServerProcess>
  readonly warm: ReadonlyArray<string>
  readonly cold: ReadonlyArray<string>
  readonly before: number
  readonly after: number
  readonly fault: () => void
}) => {
  const total = options.before + options.after
  if (options.before % 2 !== 0 || options.cold.length < total / 2) {
    throw new Error(`loadAround: an even \`before\` and ${total / 2} cold modules needed, ${options.cold.length} given`)
  }
  let nextCold = 0
  let faultAt = Number.POSITIVE_INFINITY
  const load = steadyLoad({
    servers: options.servers,
    concurrency: 6,
    // Only a safety net: the load ends after `total` requests (checked below).
    durationMs: 100_000,
    maxRequests: total,
    timeoutMs: 10_000,
    pick: (n) => {
      if (n === options.before) {
        faultAt = performance.now()
        options.fault()
      }
      const server = n % options.servers.length
      if (n % 2 === 1) return { server, path: options.cold[nextCold++]! }
      return { server, path: options.warm[n % options.warm.length]! }
    }
  })
  const samples = await load.done
  expect(samples).toHaveLength(total)
  const after = samples.filter((s) => s.at >= faultAt)
  expect(after).toHaveLength(options.after)
  return { samples, after }
}

/** The longest latency of some samples. */
const maxMs = (list: ReadonlyArray<Sample>) => list.reduce((max, s) => Math.max(max, s.ms), 0)

const summarize = (label: string, samples: ReadonlyArray<Sample>, after: ReadonlyArray<Sample>) =>
  console.log(
    `${label}: ${samples.length} requests (${after.length} after the fault), max latency ${maxMs(samples).toFixed(0)} ms overall, ${maxMs(after).toFixed(0)} ms after the fault; outcomes after the fault ${JSON.stringify(outcomes(after))}`
  )

describe("faults of a serve fleet on Postgres", () => {
  it("Postgres cut under load: every request answers (warm from L1, cold by a local transpile) within about a second; after restore the fleet reconnects, flushes L1 and coalesces again", async () => {
    const realm = realmWith({ warm: 8, cold: 150, probe: 20, fresh: 10 })
    const servers = await startFleet(3, realm.dir, faultEnv(proxy.urlFor(dbUrl)))
    const warm = realm.paths["warm"]!
    // Warm every module on every server.
    expectAllServed(await herd(servers, warm, 2))
    for (const p of warm) {
      for (const s of servers) expect((await sample([s], 0, p)).outcome, p).toBe("l1")
    }
    const before = listenPids()
    expect(before).toHaveLength(3)

    const { after, samples } = await loadAround({
      servers,
      warm,
      cold: realm.paths["cold"]!,
      before: 60,
      after: 240,
      fault: () => proxy.cut()
    })
    summarize("postgres cut", samples, after)
    expectAllServed(samples)
    const warmAfter = after.filter((s) => s.path.startsWith("/warm/"))
    const coldAfter = after.filter((s) => s.path.startsWith("/cold/"))
    expect(warmAfter).toHaveLength(120)
    // Every cold request after the fault asked for a module nobody had asked for before.
    expect(coldAfter).toHaveLength(120)
    expect(new Set(coldAfter.map((s) => s.path)).size).toBe(coldAfter.length)
    // Warm modules never left L1.
    expect(warmAfter.filter((s) => s.outcome !== "l1"), describeSamples(warmAfter.filter((s) => s.outcome !== "l1")))
      .toHaveLength(0)
    // Cold modules were transpiled locally; most of them through the store fallback.
    expect(coldAfter.filter((s) => !["fallback", "transpiled", "coalesced"].includes(s.outcome ?? "")))
      .toHaveLength(0)
    expect(coldAfter.filter((s) => s.outcome === "fallback").length).toBeGreaterThan(coldAfter.length / 2)
    // Nobody waited for a coalescing deadline or a connect that hangs.
    expect(maxMs(after)).toBeLessThan(2500)

    proxy.restore()
    // Each LISTEN session is back...
    await untilListenReplaced(before, 3)
    // ...and flushed L1: a warm module answers from below L1 once.
    await expectL1Flushed(servers, warm, [])
    const probes = await untilCoalescing(servers, realm.paths["probe"]!)
    const fresh = await expectOneTranspilePerModule(servers, realm.paths["fresh"]!)
    console.log(`postgres cut: coalescing again after ${probes} probe herd(s); fresh herd outcomes ${JSON.stringify(outcomes(fresh))}`)
  }, 120_000)

  it("Postgres restarted (every backend terminated) under load: every request answers; the fleet reconnects, flushes L1 and coalesces again", async () => {
    const realm = realmWith({ warm: 8, cold: 150, probe: 20, fresh: 10 })
    const servers = await startFleet(3, realm.dir, faultEnv(dbUrl))
    const warm = realm.paths["warm"]!
    expectAllServed(await herd(servers, warm, 2))
    const before = listenPids()
    expect(before).toHaveLength(3)

    let terminated = 0
    const { after, samples } = await loadAround({
      servers,
      warm,
      cold: realm.paths["cold"]!,
      before: 60,
      after: 240,
      fault: () => {
        terminated = terminateAll(database)
      }
    })
    summarize("backends terminated", samples, after)
    // The pool, LISTEN and lock sessions of three servers at least.
    expect(terminated).toBeGreaterThanOrEqual(6)
    expectAllServed(samples)
    expect(maxMs(after)).toBeLessThan(2500)
    const warmAfter = after.filter((s) => s.path.startsWith("/warm/"))
    expect(warmAfter).toHaveLength(120)

    // New LISTEN backends for every server.
    await untilListenReplaced(before, 3)
    await expectL1Flushed(servers, warm, after)
    const probes = await untilCoalescing(servers, realm.paths["probe"]!)
    await expectOneTranspilePerModule(servers, realm.paths["fresh"]!)
    console.log(`backends terminated (${terminated}): coalescing again after ${probes} probe herd(s)`)
  }, 120_000)

  // BUG (src/fleet/PgFleet.ts, lockQuery/currentSession): the lock session is only found dead when
  // it is next used. After a restart the LISTEN sessions are back within a second, but the
  // first tryLock of every process then fails on the dead lock session, and that key falls
  // back to a local transpile: one duplicate transpile per process per restart, even long
  // after the fleet reconnected. Expected to fail until that is fixed.
  it("Postgres restarted while idle: once every LISTEN session is back, the first cold herd costs one transpile per module", async () => {
    const realm = realmWith({ warm: 1, fresh: 10 })
    const servers = await startFleet(3, realm.dir, faultEnv(dbUrl))
    expectAllServed(await herd(servers, realm.paths["warm"]!, 2))
    const before = listenPids()
    expect(terminateAll(database)).toBeGreaterThanOrEqual(6)
    await untilListenReplaced(before, 3)
    await expectL1Flushed(servers, realm.paths["warm"]!, [])
    // The outcomes of the herd are in the failure message of the fallback assertion.
    await expectOneTranspilePerModule(servers, realm.paths["fresh"]!)
  }, 120_000)

  it("a server SIGKILLed during a herd: its peers' requests all finish 200, and nothing of any of them stays in Postgres", async () => {
    // Large modules, so that the herd is still transpiling when the kill lands.
    const large = (name: string) => {
      const lines = [`export const name: string = ${JSON.stringify(name)}`]
      for (let j = 0; j < 3000; j++) lines.push(`export function f${j}(a: number, b: string): { n: number; s: string } { return { n: a + ${j}, s: b } }`)
      return `${lines.join("\n")}\n`
    }
    const realm = realmWith({ big: 6 }, large)
    const paths = realm.paths["big"]!
    // Babel, not the native engine (which strips these in milliseconds): the locks are held for a while.
    // Workers at the process's own priority: at the default nice 10, while another test file keeps
    // both cores busy, the peers' workers got a tenth of a core and 11 of 12 transpiles ran past 30 s.
    const servers = await startFleet(3, realm.dir, { ...faultEnv(dbUrl), MTC_ENGINE: "babel", MTC_TRANSPILE_NICE: "0" })
    const [victim, ...peers] = servers as [ServerProcess, ...Array<ServerProcess>]
    const victimPid = pidOf(victim)
    // The fleet session (LISTEN and the advisory locks) of the victim.
    const victimLocks = () =>
      Number(psql(`SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND a.datname = '${database}'
        AND a.application_name = 'module-transpile-cache:listen:${victimPid}'`))
    const victimSessions = () =>
      Number(psql(`SELECT count(*) FROM pg_stat_activity WHERE datname = '${database}'
        AND application_name LIKE '%:${victimPid}'`))

    // The victim asks first, alone, so that it surely wins locks (in a herd of all three it may win
    // none); the peers join once it holds one, and it is killed mid-transpile.
    const victimHerding = herd([victim], paths, 5)
    await until(() => victimLocks() > 0, 30_000, "the victim holds an advisory lock", 10)
    const peersHerding = herd(peers, paths, 5)
    victim.child.kill("SIGKILL")
    const killedAt = performance.now()
    const peerSamples = await peersHerding
    const elapsed = performance.now() - killedAt
    const victimSamples = await victimHerding
    const failed = peerSamples.filter((s) => s.status !== 200)
    expect(failed, describeSamples(failed)).toHaveLength(0)
    expect(peerSamples).toHaveLength(paths.length * 5 * peers.length)
    for (const p of paths) {
      expect(new Set(peerSamples.filter((s) => s.path === p).map((s) => s.etag)).size, p).toBe(1)
    }
    // The victim's requests that were cut off failed at the socket, not with an error answer.
    expect(victimSamples.filter((s) => s.status !== 200 && s.status !== 0)).toHaveLength(0)
    console.log(
      `SIGKILL mid-herd: peers answered ${peerSamples.length} requests, the last ${elapsed.toFixed(0)} ms after the kill; victim answered ${victimSamples.filter((s) => s.status === 200).length} of ${victimSamples.length}; peer outcomes ${JSON.stringify(outcomes(peerSamples))}`
    )
    // Postgres closes the dead process's sessions and with them its locks, while the peers run on.
    await until(() => victimSessions() === 0, 15_000, "the victim's sessions closed")
    expect(victimLocks()).toBe(0)
    expect(await victim.stop()).toBe("SIGKILL")

    // The peers exit gracefully, and leave nothing behind.
    for (const peer of peers) expect(await peer.stop("SIGTERM")).not.toBe("SIGKILL")
    await until(() => sessionCount(database) === 0, 15_000, "every session closed")
    expect(advisoryLockCount(database)).toBe(0)
    expect(peers.every((p) => !/defect|Unhandled/i.test(p.output()))).toBe(true)
  }, 180_000)
})
