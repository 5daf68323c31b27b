/**
 * Where a `serve` process's memory goes (issue 38, "find out first"). A realm of 300 TypeScript
 * modules (the graph realm of the reload benches) is served by one `serve` per variant, with
 * `memory-thread-probe.ts` preloaded in every thread. For each variant, after start and after a
 * cold load of every module, it prints:
 * - the process's RSS, split by `/proc/<pid>/smaps_rollup` into anonymous and file-backed memory;
 * - per thread (main, transpile workers, PGlite's worker), V8's physical heap size and its
 *   `external` and `arrayBuffers`.
 * Baselines in the same run: a bare `node` process, and a bare PGlite with our schema.
 *
 *   node scratchpad/memory-breakdown.ts [modules=300]
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { writeGraphRealm } from "../test/support/graph-realm.ts"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const probe = path.join(root, "scratchpad", "memory-thread-probe.ts")
const count = Number(process.argv[2] ?? 300)
const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface ThreadFigures {
  readonly threadId: number
  readonly main: boolean
  readonly physical: number
  readonly external: number
  readonly arrayBuffers: number
}

/** RSS, anonymous and file-backed memory of a process, in bytes. */
const rssOf = (pid: number) => {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8")
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(rollup)?.[1] ?? 0) * 1024
  return { rss: field("Rss"), anonymous: field("Anonymous"), file: field("Rss") - field("Anonymous") }
}

const threadsOf = (dir: string, pid: number): Array<ThreadFigures> =>
  readdirSync(dir)
    .filter((name) => name.startsWith(`${pid}-`) && name.endsWith(".json"))
    .map((name) => JSON.parse(readFileSync(path.join(dir, name), "utf8")) as ThreadFigures)
    .sort((a, b) => a.threadId - b.threadId)

const report = (label: string, pid: number, dir: string) => {
  const { anonymous, file, rss } = rssOf(pid)
  const threads = threadsOf(dir, pid)
  const heaps = threads.map((t) =>
    `${t.main ? "main" : `t${t.threadId}`} heap ${mib(t.physical)} ext ${mib(t.external)} ab ${mib(t.arrayBuffers)}`
  )
  const heapSum = threads.reduce((sum, t) => sum + t.physical, 0)
  console.log(
    `${label.padEnd(44)} RSS ${mib(rss).padStart(6)} MiB (anon ${mib(anonymous)}, file ${mib(file)}); ` +
      `${threads.length} threads, V8 heaps ${mib(heapSum)} MiB: ${heaps.join(" | ")}`
  )
}

const waitFor = async (url: string, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      if ((await fetch(url)).ok) return
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer`)
    await sleep(100)
  }
}

let nextPort = 24_600
const serveVariant = async (label: string, realm: string, args: ReadonlyArray<string>, modules: ReadonlyArray<string>) => {
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-memory-"))
  const port = nextPort++
  const child: ChildProcess = spawn(process.execPath, [path.join(root, "src", "bin.ts"), "serve", realm, "--port", String(port), ...args], {
    env: { ...process.env, NODE_OPTIONS: `--import ${probe}`, MTC_MEMORY_BREAKDOWN_DIR: dir, MTC_ADMIN_TOKEN: "memory-breakdown-admin-token-0123456789" },
    stdio: ["ignore", "ignore", "inherit"]
  })
  try {
    const base = `http://127.0.0.1:${port}`
    await waitFor(`${base}/_cache/health`, 60_000)
    await sleep(1500)
    report(`${label}, after start`, child.pid!, dir)
    const queue = [...modules]
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
        const response = await fetch(`${base}/${next}`)
        if (!response.ok) throw new Error(`${next}: ${response.status}`)
        await response.arrayBuffer()
      }
    }))
    await sleep(1500)
    report(`${label}, after a cold load of ${modules.length}`, child.pid!, dir)
  } finally {
    child.kill("SIGTERM")
    await new Promise((resolve) => child.once("exit", resolve))
    rmSync(dir, { recursive: true, force: true })
  }
}

/** A process that only waits, with the probe: the floor of a Node process. */
const bareNode = async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-memory-"))
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], {
    env: { ...process.env, NODE_OPTIONS: `--import ${probe}`, MTC_MEMORY_BREAKDOWN_DIR: dir },
    stdio: "ignore"
  })
  await sleep(1500)
  report("bare node", child.pid!, dir)
  child.kill("SIGTERM")
  await new Promise((resolve) => child.once("exit", resolve))
  rmSync(dir, { recursive: true, force: true })
}

/** A bare PGlite (in this thread, no worker) with our migrations: the floor of the embedded store. */
const barePglite = async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-memory-"))
  const data = mkdtempSync(path.join(tmpdir(), "mtc-memory-pglite-"))
  const script = `
    import { PGlite } from "@electric-sql/pglite"
    const db = await PGlite.create(${JSON.stringify(data)})
    await db.exec("CREATE TABLE t (k text primary key, body text)")
    setInterval(() => {}, 1000)
  `
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: `--import ${probe}`, MTC_MEMORY_BREAKDOWN_DIR: dir },
    stdio: ["ignore", "ignore", "inherit"]
  })
  await sleep(4000)
  report("bare PGlite (one table)", child.pid!, dir)
  child.kill("SIGTERM")
  await new Promise((resolve) => child.once("exit", resolve))
  rmSync(dir, { recursive: true, force: true })
  rmSync(data, { recursive: true, force: true })
}

const main = async () => {
  const realm = mkdtempSync(path.join(tmpdir(), "mtc-memory-realm-"))
  const graph = writeGraphRealm(realm, count)
  console.log(`memory breakdown: ${count} modules, node ${process.version}`)
  await bareNode()
  await barePglite()
  await serveVariant("memory, native engine (default workers)", realm, ["--store", "memory"], graph.modules)
  await serveVariant("memory, native, 1 worker", realm, ["--store", "memory", "--transpile-workers", "1"], graph.modules)
  await serveVariant("memory, native, 0 workers (in process)", realm, ["--store", "memory", "--transpile-workers", "0"], graph.modules)
  await serveVariant("memory, babel engine (default workers)", realm, ["--store", "memory", "--engine", "babel"], graph.modules)
  const dataDir = mkdtempSync(path.join(tmpdir(), "mtc-memory-data-"))
  await serveVariant("pglite, native (default workers)", realm, ["--store", "pglite", "--data-dir", dataDir], graph.modules)
  if (existsSync(dataDir)) rmSync(dataDir, { recursive: true, force: true })
  rmSync(realm, { recursive: true, force: true })
}

await main()
