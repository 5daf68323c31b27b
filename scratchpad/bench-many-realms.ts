/**
 * Many realms in one process (issue 24), on Postgres, with real `serve` processes:
 *
 * 1. **Scale.** One `serve --store pg` with 200 realms of 20 modules each (`--realm /rNNN/=DIR`
 *    x 200, `--realm-url-base`), a connection budget of 2 (`MTC_PG_MAX_CONNECTIONS=2`) on a
 *    bench database of its own. A pass over all 4000 modules (wrk, 16 at a time, every answer
 *    must be a 200), then a second (warm) pass. Reports the peak of the database's sessions
 *    (sampled every 20 ms from pg_stat_activity, from before the start to the end: only this
 *    process connects to that database), `connections.open` of `/_cache/stats`, and VmRSS after
 *    the start and after each pass.
 * 2. **Cold load of one realm, side by side.** The same realm's 20 modules loaded cold (wrk,
 *    16 at a time) in the 200-realm process and in a one-realm process (same store kind,
 *    a database of its own), interleaved, ROUNDS rounds; before each load the realm is
 *    invalidated (`POST /_cache/invalidate?realm=`: L1 dropped and the L2 rows wiped, so the
 *    load transpiles all 20). Medians, and the many-realm speed relative to one-realm.
 * 3. **Isolation.** Two realms mounted at run time into the 200-realm process
 *    (`POST /_cache/realms`): `/hot/` (20 modules) and `/big/` (300 modules). Hot's modules are
 *    warmed, then wrk requests them (rotating, -c8, 2 ms between a connection's requests) for
 *    HITS_SECONDS while `/big/` is loaded cold over and over (invalidate, then 300 modules 16
 *    at a time); wrk's p99 with and without the herd. Afterwards every hot module must still be
 *    an L1 hit (`HEAD`, `x-module-cache: l1`). Then the same in a process of just those two
 *    realms whose L1 bound (MTC_L1_MAX_BYTES, SMALL_L1) is far below `/big/`'s bytes: the herd
 *    overflows L1, and fairness keeps hot's share.
 *
 * Run: npx node scratchpad/bench-many-realms.ts   (DATABASE_URL as for the tests; env
 * MANY_REALMS=200, MANY_MODULES=20, MANY_ROUNDS=15, HITS_SECONDS=10, ISO_ROUNDS=3, SMALL_L1=393216,
 * MANY_PRIORITY=-10 to run the bench's processes ahead of other work on a shared machine,
 * HERD_CONCURRENCY=16 for big's herd, MANY_PARTS=small to run only the small-L1 isolation part)
 */
import { execFile } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { baseUrl, dropDatabase, freshDatabase } from "../test/support/database.ts"
import { liveMemory, median, memoryProbeEnv, pidOf, rssOf, stats } from "../test/support/load.ts"
import { sampleConnections } from "../test/support/simulation.ts"
import { adminAuthorization, request, type ServerProcess, startServer, stopAll } from "../test/support/server.ts"
import { hasWrk, loadGraphWithWrk } from "./wrk-graph.ts"

const REALMS = Number(process.env["MANY_REALMS"] ?? 200)
const MODULES = Number(process.env["MANY_MODULES"] ?? 20)
const ROUNDS = Number(process.env["MANY_ROUNDS"] ?? 15)
const HITS_SECONDS = Number(process.env["HITS_SECONDS"] ?? 10)
const BIG = 300
const ISO_ROUNDS = Number(process.env["ISO_ROUNDS"] ?? 3)
const SMALL_L1 = Number(process.env["SMALL_L1"] ?? 384 * 1024)
const CONCURRENCY = 16
/** Requests at a time of big's cold herd in the isolation part. */
const HERD_CONCURRENCY = Number(process.env["HERD_CONCURRENCY"] ?? CONCURRENCY)
/** `small` runs only the last part (isolation in a two-realm process with a small L1). */
const ONLY_SMALL = process.env["MANY_PARTS"] === "small"
const realmUrlBase = "https://many-realms.bench"
const probe = "/_cache/no-such-route"

/**
 * With MANY_PRIORITY=-10 (as root), this process's nice level before it starts anything: the
 * `serve` processes, wrk and psql inherit it (the transpile workers stay 10 levels below their
 * process), so that other work on a shared machine competes less. Postgres keeps its own.
 */
const PRIORITY = process.env["MANY_PRIORITY"]
if (PRIORITY !== undefined) os.setPriority(Number(PRIORITY))

if (!hasWrk()) throw new Error("wrk is needed: apt-get install -y wrk")

/** A module of about 3 KiB of TypeScript. */
const moduleSource = (realm: string, i: number, modules: number): string => {
  const lines = [
    `import { f0 as next } from "./m${(i + 1) % modules}.ts"`,
    `import type { Shape } from "./m${(i + 2) % modules}.ts"`,
    `export interface Shape { readonly id: number; readonly name: string }`,
    `export const realm: string = ${JSON.stringify(realm)}`
  ]
  for (let j = 0; lines.join("\n").length < 3000; j++) {
    lines.push(`export function f${j}(input: Shape, n: number): { id: number; total: number } { return { id: input.id, total: n + ${j} + ${i} } }`)
  }
  lines.push(`export const uses = next`)
  return `${lines.join("\n")}\n`
}

const root = mkdtempSync(join(tmpdir(), "mtc-bench-many-realms-"))
const makeRealmDir = (name: string, modules: number): string => {
  const dir = join(root, name)
  mkdirSync(dir, { recursive: true })
  for (let i = 0; i < modules; i++) writeFileSync(join(dir, `m${i}.ts`), moduleSource(name, i, modules))
  return dir
}
const pathsOf = (mount: string, modules: number) => Array.from({ length: modules }, (_, i) => `${mount}m${i}.ts`)

const names = Array.from({ length: REALMS }, (_, i) => `r${String(i).padStart(3, "0")}`)
const dirs = new Map(names.map((name) => [name, makeRealmDir(name, MODULES)]))
const hotDir = makeRealmDir("hot", MODULES)
const bigDir = makeRealmDir("big", BIG)

const loadavg = () => os.loadavg().map((n) => n.toFixed(1)).join(" ")
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
const adminUrlOf = (url: string) => {
  const admin = new URL(url)
  admin.pathname = "/postgres"
  return admin.toString()
}
const databaseOf = (url: string) => new URL(url).pathname.slice(1)

const invalidateRealm = async (server: ServerProcess, mount: string) => {
  const response = await request(server.url, `/_cache/invalidate?realm=${mount}`, { method: "POST" })
  if (response.status !== 200) throw new Error(`invalidate ${mount}: ${response.status} ${response.body}`)
}

/** Loads paths once with wrk (16 at a time); throws unless every one answered 200. */
const load = async (server: ServerProcess, paths: ReadonlyArray<string>, concurrency = CONCURRENCY) => {
  const result = await loadGraphWithWrk(server.url, paths, { concurrency, probe, timeoutSeconds: 900 })
  const answered = Object.values(result.outcomes).reduce((sum, n) => sum + n, 0)
  if (answered !== paths.length) throw new Error(`only ${answered} of ${paths.length} answered 200`)
  return result
}

/** What wrk's `--latency` reported for a run of hits. */
interface HitsRun {
  readonly requests: number
  readonly rps: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly bad: number
  /** Answers by `x-module-cache` (or status). */
  readonly outcomes: Record<string, number>
}

const toMs = (value: string, unit: string) =>
  Number(value) * (unit === "us" ? 0.001 : unit === "ms" ? 1 : unit === "s" ? 1000 : unit === "m" ? 60_000 : NaN)

/** wrk over `paths` in rotation: `connections` keep-alive connections, each waiting `delayMs` between its requests. */
const hits = (base: string, paths: ReadonlyArray<string>, seconds: number, connections = 8, delayMs = 2): Promise<HitsRun> => {
  const file = join(root, `hits-${Date.now()}.lua`)
  writeFileSync(file, `
local paths = { ${paths.map((p) => JSON.stringify(p)).join(", ")} }
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  i = 0
  counts = {}
end
function request()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
function delay()
  return ${delayMs}
end
function response(status, headers, body)
  local outcome = headers["x-module-cache"] or headers["X-Module-Cache"] or ("status " .. status)
  counts[outcome] = (counts[outcome] or 0) + 1
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for outcome, n in pairs(thread:get("counts")) do
      io.write(string.format("MTC_OUTCOME %s=%d\\n", outcome, n))
    end
  end
end
`)
  return new Promise((resolve, reject) => {
    execFile("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "--timeout", "10s", "-s", file, base], (error, stdout) => {
      if (error) return reject(error)
      const pct = (p: string) => {
        const match = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(stdout)
        if (match === null) throw new Error(`no ${p}% in wrk's output:\n${stdout}`)
        return toMs(match[1]!, match[2]!)
      }
      const max = /^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)/m.exec(stdout)
      const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? NaN)
      const bad = Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0) +
        (/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout)?.slice(1).reduce((s, n) => s + Number(n), 0) ?? 0)
      const outcomes: Record<string, number> = {}
      for (const match of stdout.matchAll(/^MTC_OUTCOME (.+)=(\d+)$/gm)) outcomes[match[1]!] = Number(match[2])
      resolve({
        requests,
        rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN),
        p50: pct("50"),
        p90: pct("90"),
        p99: pct("99"),
        max: max === null ? NaN : toMs(max[1]!, max[2]!),
        bad,
        outcomes
      })
    })
  })
}
const showHits = (run: HitsRun) =>
  `${run.requests} hits (${run.rps.toFixed(0)}/s), p50 ${run.p50.toFixed(2)} ms, p90 ${run.p90.toFixed(2)} ms, p99 ${run.p99.toFixed(2)} ms, max ${run.max.toFixed(1)} ms, non-200/errors ${run.bad}, outcomes ${JSON.stringify(run.outcomes)}`

/** How many of `paths` answer a HEAD with `x-module-cache: l1`. */
const l1Count = async (server: ServerProcess, paths: ReadonlyArray<string>) => {
  let n = 0
  for (const p of paths) {
    const response = await request(server.url, p, { method: "HEAD" })
    if (response.status === 200 && response.headers["x-module-cache"] === "l1") n++
  }
  return n
}

/** Warms hot's modules (three GETs each) and checks each is an L1 hit. */
const warm = async (server: ServerProcess, paths: ReadonlyArray<string>) => {
  for (let i = 0; i < 3; i++) for (const p of paths) await request(server.url, p)
  const n = await l1Count(server, paths)
  if (n !== paths.length) throw new Error(`only ${n} of ${paths.length} hot modules are L1 hits after warming`)
}

/** wrk hits on hot, alone and while big is loaded cold over and over, ISO_ROUNDS times; then checks hot is still in L1. */
const isolation = async (server: ServerProcess, label: string) => {
  const hotPaths = pathsOf("/hot/", MODULES)
  const bigPaths = pathsOf("/big/", BIG)
  await warm(server, hotPaths)
  const quiet: Array<HitsRun> = []
  const during: Array<HitsRun> = []
  const herdLoads: Array<number> = []
  for (let round = 0; round < ISO_ROUNDS; round++) {
    quiet.push(await hits(server.url, hotPaths, Math.max(3, Math.floor(HITS_SECONDS / 2))))
    console.log(`  ${label}: hot hits, no herd:          ${showHits(quiet.at(-1)!)} (load ${loadavg()})`)
    let running = true
    const transpiled: Array<number> = []
    const loads: Array<number> = []
    const herd = (async () => {
      while (running) {
        await invalidateRealm(server, "/big/")
        const result = await load(server, bigPaths, HERD_CONCURRENCY)
        loads.push(result.ms)
        transpiled.push(result.outcomes["transpiled"] ?? 0)
      }
    })()
    during.push(await hits(server.url, hotPaths, HITS_SECONDS))
    running = false
    await herd
    herdLoads.push(...loads)
    console.log(`  ${label}: hot hits during big's herd: ${showHits(during.at(-1)!)} (load ${loadavg()})`)
    console.log(`  ${label}:   big's cold loads meanwhile: ${loads.length} x ${BIG} modules (transpiled ${transpiled.join(", ")}), median ${median(loads).toFixed(0)} ms`)
  }
  const s = await stats(server)
  const still = await l1Count(server, hotPaths)
  const p99s = { quiet: median(quiet.map((r) => r.p99)), during: median(during.map((r) => r.p99)) }
  const notL1 = during.reduce((sum, r) => sum + Object.entries(r.outcomes).filter(([k]) => k !== "l1").reduce((n, [, v]) => n + v, 0), 0)
  console.log(
    `  ${label}: median p99 ${p99s.quiet.toFixed(2)} ms alone, ${p99s.during.toFixed(2)} ms during the herd; ${notL1} hot answers during the herds were not l1; ` +
      `afterwards ${still}/${hotPaths.length} hot modules answer x-module-cache: l1; ` +
      `L1 ${mib(s.l1Bytes ?? 0)} of ${mib(s.l1MaxBytes ?? 0)}, hot ${s.realms?.["/hot/"]?.modules} modules, big ${s.realms?.["/big/"]?.modules} modules in L1`
  )
  return { p99s, still, notL1 }
}

const main = async () => {
  const many = freshDatabase("bench_many_realms")
  const one = freshDatabase("bench_one_realm")
  const small = freshDatabase("bench_small_l1")
  const env = (url: string, extra: Record<string, string> = {}) => ({ DATABASE_URL: url, MTC_PG_MAX_CONNECTIONS: "2", ...extra })
  let cleaned: Promise<void> | undefined
  const cleanup = () =>
    cleaned ??= stopAll().then(() => {
      for (const url of [many, one, small]) dropDatabase(url)
      rmSync(root, { recursive: true, force: true })
    })
  // Interrupted (Ctrl-C, a timeout): the servers, the bench databases and the realms still go.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => void cleanup().finally(() => process.exit(130)))
  }
  try {
    console.log(`bench-many-realms: ${REALMS} realms x ${MODULES} modules (~3 KiB TypeScript each), Postgres at ${new URL(baseUrl).host}, budget 2, nice ${os.getPriority()}`)

    // -------------------------------------------------------------------------
    // 1. Scale
    const summary: Array<string> = []
    if (!ONLY_SMALL) await scaleColdIsolation()
    async function scaleColdIsolation() {
    // -------------------------------------------------------------------------
    const sampler = await sampleConnections(adminUrlOf(many), databaseOf(many), 20)
    const args = [...names.flatMap((name) => ["--realm", `/${name}/=${dirs.get(name)}`]), "--realm-url-base", realmUrlBase]
    const startedAt = performance.now()
    const probeDir = join(root, "probe")
    mkdirSync(probeDir)
    const server = await startServer({ store: "pg", args, env: env(many, memoryProbeEnv(probeDir)), timeoutMs: 300_000 })
    const heap = async () => {
      const report = await liveMemory(pid, probeDir)
      return `heap used after a full GC ${mib(report.heapUsed)} (external ${mib(report.external)})`
    }
    const startMs = performance.now() - startedAt
    const pid = pidOf(server)
    const rssStart = rssOf(pid)
    const atStart = await stats(server)
    console.log(`scale: started in ${startMs.toFixed(0)} ms with ${Object.keys(atStart.realms ?? {}).length} realms; VmRSS ${mib(rssStart)}, ${await heap()} (load ${loadavg()})`)
    const allPaths = names.flatMap((name) => pathsOf(`/${name}/`, MODULES))
    const pass = await load(server, allPaths)
    const rssPass = rssOf(pid)
    const afterPass = await stats(server)
    console.log(
      `scale: cold pass over ${allPaths.length} modules: every answer a 200, in ${(pass.ms / 1000).toFixed(1)} s (${(allPaths.length / (pass.ms / 1000)).toFixed(0)}/s), ` +
        `outcomes ${JSON.stringify(pass.outcomes)}; transpiles ${afterPass.transpiles}, fallbacks ${afterPass.fallbacks}; ` +
        `L1 ${mib(afterPass.l1Bytes ?? 0)} in ${afterPass.l1Entries} entries; VmRSS ${mib(rssPass)}, ${await heap()}`
    )
    const statsTimes: Array<number> = []
    for (let i = 0; i < 5; i++) {
      const at = performance.now()
      const response = await request(server.url, "/_cache/stats")
      statsTimes.push(performance.now() - at)
      if (response.status !== 200) throw new Error(`stats: ${response.status}`)
    }
    const listAt = performance.now()
    const listed = await request(server.url, "/_cache/realms")
    console.log(
      `scale: GET /_cache/stats with ${REALMS} realms (their L2 rows and bytes included) median ${median(statsTimes).toFixed(0)} ms ` +
        `[${statsTimes.map((t) => t.toFixed(0)).join(", ")}]; GET /_cache/realms ${listed.status} in ${(performance.now() - listAt).toFixed(0)} ms`
    )
    const warmPass = await load(server, allPaths)
    const rssWarm = rssOf(pid)
    const realmsServed = Object.values((await stats(server)).realms ?? {}).filter((r) => r.modules === MODULES).length
    console.log(
      `scale: warm pass: every answer a 200, in ${(warmPass.ms / 1000).toFixed(2)} s (${(allPaths.length / (warmPass.ms / 1000)).toFixed(0)}/s), outcomes ${JSON.stringify(warmPass.outcomes)}; ` +
        `${realmsServed} realms with all ${MODULES} modules in L1; VmRSS ${mib(rssWarm)}, ${await heap()}`
    )

    // -------------------------------------------------------------------------
    // 2. Cold load of one realm, side by side
    // -------------------------------------------------------------------------
    const chosen = names[Math.floor(REALMS / 2)]!
    const mount = `/${chosen}/`
    const single = await startServer({
      store: "pg",
      args: ["--realm", `${mount}=${dirs.get(chosen)}`, "--realm-url-base", realmUrlBase],
      env: env(one)
    })
    const singleRssStart = rssOf(pidOf(single))
    const realmPaths = pathsOf(mount, MODULES)
    const coldLoad = async (target: ServerProcess) => {
      await invalidateRealm(target, mount)
      const result = await load(target, realmPaths)
      if (result.outcomes["transpiled"] !== MODULES) throw new Error(`not cold: ${JSON.stringify(result.outcomes)}`)
      return result.ms
    }
    // One load each first, not counted (the one-realm process has served nothing yet).
    await coldLoad(single)
    await coldLoad(server)
    const times = { many: [] as Array<number>, one: [] as Array<number> }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (["many", "one"] as const) : (["one", "many"] as const)
      for (const which of order) times[which].push(await coldLoad(which === "many" ? server : single))
    }
    const manyMedian = median(times.many)
    const oneMedian = median(times.one)
    console.log(
      `cold load of ${mount} (${MODULES} modules, ${CONCURRENCY} at a time), ${ROUNDS} interleaved rounds: ` +
        `${REALMS}-realm process median ${manyMedian.toFixed(1)} ms [${times.many.map((t) => t.toFixed(0)).join(", ")}], ` +
        `one-realm process median ${oneMedian.toFixed(1)} ms [${times.one.map((t) => t.toFixed(0)).join(", ")}]; ` +
        `many-realm speed ${(oneMedian / manyMedian).toFixed(2)}x of one-realm (load ${loadavg()})`
    )
    console.log(`  one-realm process: VmRSS ${mib(singleRssStart)} after the start, ${mib(rssOf(pidOf(single)))} after its ${ROUNDS + 1} cold loads`)
    await single.stop()

    // -------------------------------------------------------------------------
    // 3. Isolation, in the 200-realm process (realms mounted at run time)
    // -------------------------------------------------------------------------
    for (const [name, dir] of [["hot", hotDir], ["big", bigDir]] as const) {
      const mounted = await postJson(server, "/_cache/realms", { mount: `/${name}/`, dir })
      if (mounted.status !== 201) throw new Error(`mount /${name}/: ${mounted.status} ${mounted.body}`)
    }
    console.log(`isolation in the ${REALMS}-realm process (default L1), /hot/ and /big/ mounted at run time:`)
    const inMany = await isolation(server, `${REALMS + 2} realms`)
    const final = await stats(server)
    const rssEnd = rssOf(pid)
    await server.stop()
    const peak = await sampler.stop()
    console.log(
      `scale: the ${REALMS}-realm process's sessions on its database: peak ${peak.peak} over ${peak.samples} samples (start to exit); ` +
        `connections.open ${atStart.connections?.open} at start, ${afterPass.connections?.open} after the pass, ${final.connections?.open} at the end ` +
        `(budget ${final.connections?.budget}, pool ${final.connections?.poolSize}, refusals ${final.connections?.refusals}); VmRSS at the end ${mib(rssEnd)}`
    )
    summary.push(
      `  connections: peak ${peak.peak} (budget 2); RSS start ${mib(rssStart)}, after cold pass ${mib(rssPass)}, after warm pass ${mib(rssWarm)}, end ${mib(rssEnd)}`,
      `  cold load ratio (one-realm ms / many-realm ms, medians): ${(oneMedian / manyMedian).toFixed(2)}x`,
      `  hot median p99, ${REALMS + 2} realms: ${inMany.p99s.quiet.toFixed(2)} ms alone, ${inMany.p99s.during.toFixed(2)} ms during big's herd (${inMany.still}/${MODULES} still l1, ${inMany.notL1} non-l1 hot answers)`
    )

    }

    // -------------------------------------------------------------------------
    // 4. Isolation with an L1 bound the herd overflows
    // -------------------------------------------------------------------------
    const smallSampler = await sampleConnections(adminUrlOf(small), databaseOf(small), 20)
    const two = await startServer({
      store: "pg",
      args: ["--realm", `/hot/=${hotDir}`, "--realm", `/big/=${bigDir}`, "--realm-url-base", "https://two-realms.bench"],
      env: env(small, { MTC_L1_MAX_BYTES: String(SMALL_L1) })
    })
    console.log(`isolation with L1 bound ${(SMALL_L1 / 1024).toFixed(0)} KiB (big's ${BIG} modules overflow it), /hot/ and /big/ only:`)
    const inSmall = await isolation(two, "small L1")
    await two.stop()
    const smallPeak = await smallSampler.stop()
    console.log(`  small L1: sessions peak ${smallPeak.peak}`)

    console.log("\nsummary:")
    for (const line of summary) console.log(line)
    console.log(`  hot median p99, small L1: ${inSmall.p99s.quiet.toFixed(2)} ms alone, ${inSmall.p99s.during.toFixed(2)} ms during big's herd (${inSmall.still}/${MODULES} still l1, ${inSmall.notL1} non-l1 hot answers)`)
  } finally {
    await cleanup()
  }
}

/** POSTs a JSON body to an admin route (with the test admin token). */
const postJson = (server: ServerProcess, path: string, body: unknown) =>
  fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: adminAuthorization },
    body: JSON.stringify(body)
  }).then(async (response) => ({ status: response.status, body: await response.text() }))

await main()
