/**
 * Where a `serve` process's memory goes (issue 38, "find out first"). A realm of 300 TypeScript
 * modules (the graph realm of the reload benches) is served by one `serve` per variant, with
 * `memory-thread-probe.ts` preloaded in every thread. For each variant, after start and after a
 * cold load of every module, it prints:
 * - the process's RSS, split by `/proc/<pid>/smaps_rollup` into anonymous and file-backed memory;
 * - per thread (main, transpile workers, PGlite's worker), V8's physical heap size and its
 *   `external` and `arrayBuffers`.
 * and once the workers above the floor left (idle timeout 2 s here).
 * Baselines in the same run: a bare `node` process, a bare PGlite with our settings and schema
 * (the embedded store's floor), and stock Vite 7's dev server over the same realm.
 * `realms`: the cost of a realm, 200 realms of 20 modules against one realm of the same 4000.
 *
 *   node scratchpad/memory-breakdown.ts [modules=300]
 *   (MEMORY_VARIANTS=node,pglite-bare,vite,memory,memory-v8,memory-1,memory-0,memory-babel,
 *    pglite,pglite-restart,realms picks some; MEMORY_REALMS=200)
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
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

/** The threads still running: each writes its figures every 250 ms, and a gone one stops. */
const threadsOf = (dir: string, pid: number): Array<ThreadFigures> =>
  readdirSync(dir)
    .filter((name) => name.startsWith(`${pid}-`) && name.endsWith(".json"))
    .map((name) => JSON.parse(readFileSync(path.join(dir, name), "utf8")) as ThreadFigures & { readonly at: number })
    .filter((figures) => Date.now() - figures.at < 1000)
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
/** Node's flags of `npm run cli` (package.json): what the README's `serve` runs with. */
const cliFlags = ["--max-semi-space-size=4"]

const serveVariant = async (
  label: string,
  realm: string,
  args: ReadonlyArray<string>,
  modules: ReadonlyArray<string>,
  nodeFlags: ReadonlyArray<string> = cliFlags,
  /** Whether `realm` is mounted at `/` (false: `args` mounts the realms). */
  positional = true
) => {
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-memory-"))
  const port = nextPort++
  const child: ChildProcess = spawn(process.execPath, [...nodeFlags, path.join(root, "src", "bin.ts"), "serve", ...(positional ? [realm] : []), "--port", String(port), ...args], {
    env: {
      ...process.env,
      NODE_OPTIONS: `--import ${probe}`,
      MTC_MEMORY_BREAKDOWN_DIR: dir,
      MTC_ADMIN_TOKEN: "memory-breakdown-admin-token-0123456789",
      MTC_TRANSPILE_IDLE_TIMEOUT: "2 seconds"
    },
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
    // Workers above the floor leave after MTC_TRANSPILE_IDLE_TIMEOUT (2 s here, 30 s by default).
    await sleep(3000)
    report(`${label}, once idle workers left`, child.pid!, dir)
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

/**
 * The floor of the embedded store: a bare PGlite with our settings and schema, in the main
 * thread of a process that loads nothing else. A first process makes the data directory (our
 * migrations, through the store); the one measured opens it again, as a restart does.
 */
const barePglite = async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-memory-"))
  const data = mkdtempSync(path.join(tmpdir(), "mtc-memory-pglite-"))
  const migrate = `
    import { Effect } from "effect"
    import * as SqlTranspileStore from "./src/store/SqlTranspileStore.ts"
    await Effect.runPromise(Effect.scoped(SqlTranspileStore.makePglite({ dataDir: ${JSON.stringify(data)}, worker: false })))
  `
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", migrate], { cwd: root, stdio: ["ignore", "ignore", "inherit"] })
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`migrating a bare PGlite exited ${code}`))))
  })
  const script = `
    import { openHere } from "./src/store/PgliteWorker.ts"
    const db = await openHere(${JSON.stringify(data)})
    await db.query("SELECT count(*) FROM module_transpile_cache")
    setInterval(() => {}, 1000)
  `
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: `--import ${probe}`, MTC_MEMORY_BREAKDOWN_DIR: dir },
    stdio: ["ignore", "ignore", "inherit"]
  })
  await sleep(4000)
  report("bare PGlite (our settings and schema), reopened", child.pid!, dir)
  child.kill("SIGTERM")
  await new Promise((resolve) => child.once("exit", resolve))
  rmSync(dir, { recursive: true, force: true })
  rmSync(data, { recursive: true, force: true })
}

/** The RSS of a process's children (Vite's esbuild service), in bytes. */
const childrenRss = (pid: number): number => {
  try {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean)
    return children.reduce((sum, child) => sum + rssOf(Number(child)).rss, 0)
  } catch {
    return 0
  }
}

/** Stock Vite 7's dev server over the same realm (scratchpad/vite-dev-server.ts --stock): the baseline. */
const viteVariant = async (realm: string, modules: ReadonlyArray<string>) => {
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-memory-"))
  const child = spawn(process.execPath, [path.join(root, "scratchpad", "vite-dev-server.ts"), realm, "--stock"], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: `--import ${probe}`, MTC_MEMORY_BREAKDOWN_DIR: dir },
    stdio: ["ignore", "pipe", "inherit"]
  })
  try {
    const base = await new Promise<string>((resolve, reject) => {
      let output = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        output += chunk.toString()
        const match = /listening on (http:\/\/\S+?)\/?\n/.exec(output)
        if (match?.[1] !== undefined) resolve(match[1])
      })
      child.once("exit", (code) => reject(new Error(`vite exited ${code}`)))
    })
    await sleep(1500)
    report("vite 7 dev server (stock), after start", child.pid!, dir)
    console.log(`${"".padEnd(44)} (its esbuild service, not counted: ${mib(childrenRss(child.pid!))} MiB)`)
    const queue = [...modules]
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
        const response = await fetch(`${base}/${next}`)
        if (!response.ok) throw new Error(`vite ${next}: ${response.status}`)
        await response.arrayBuffer()
      }
    }))
    await sleep(1500)
    report(`vite 7 dev server (stock), after a cold load of ${modules.length}`, child.pid!, dir)
    console.log(`${"".padEnd(44)} (its esbuild service, not counted: ${mib(childrenRss(child.pid!))} MiB)`)
  } finally {
    child.kill("SIGTERM")
    await new Promise((resolve) => child.once("exit", resolve))
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * The cost of a realm: one process serving REALMS realms of 20 modules each (`--realm /rNNN/=DIR`),
 * against one serving a single realm holding the same files under the same paths (`/rNNN/mJ.ts`),
 * both on the memory store. RSS after start and after every module was requested once.
 */
const realmsVariant = async (realms: number, perRealm = 20) => {
  const base = mkdtempSync(path.join(tmpdir(), "mtc-memory-realms-"))
  const names = Array.from({ length: realms }, (_, i) => `r${String(i).padStart(3, "0")}`)
  for (const [i, name] of names.entries()) {
    mkdirSync(path.join(base, name))
    for (let j = 0; j < perRealm; j++) {
      writeFileSync(
        path.join(base, name, `m${j}.ts`),
        `import { value as next } from "./m${(j + 1) % perRealm}.ts"\nexport const value: number = ${i * 1000 + j}\nexport const after = (): number => next + value\n`
      )
    }
  }
  const paths = names.flatMap((name) => Array.from({ length: perRealm }, (_, j) => `${name}/m${j}.ts`))
  try {
    await serveVariant(`${realms} realms x ${perRealm} modules (memory)`, base, [
      "--store",
      "memory",
      ...names.flatMap((name) => ["--realm", `/${name}/=${path.join(base, name)}`])
    ], paths, cliFlags, false)
    await serveVariant(`1 realm of the same ${paths.length} modules (memory)`, base, ["--store", "memory"], paths)
  } finally {
    rmSync(base, { recursive: true, force: true })
  }
}

/**
 * The variants, by name; `MEMORY_VARIANTS=vite,memory,pglite` runs some of them (default: all).
 * `pglite-restart` opens the data directory `pglite` made: a restart, with no initdb.
 */
const variants = ["node", "pglite-bare", "vite", "memory", "memory-v8", "memory-1", "memory-0", "memory-babel", "pglite", "pglite-restart", "realms"] as const
const chosen = new Set((process.env["MEMORY_VARIANTS"] ?? variants.join(",")).split(",").map((v) => v.trim()))

const main = async () => {
  const realm = mkdtempSync(path.join(tmpdir(), "mtc-memory-realm-"))
  const graph = writeGraphRealm(realm, count)
  console.log(`memory breakdown: ${count} modules, node ${process.version}`)
  const run = (name: (typeof variants)[number]) => chosen.has(name)
  if (run("node")) await bareNode()
  if (run("pglite-bare")) await barePglite()
  if (run("vite")) await viteVariant(realm, graph.modules)
  if (run("memory")) await serveVariant("memory, native engine (default workers)", realm, ["--store", "memory"], graph.modules)
  if (run("memory-v8")) await serveVariant("memory, without npm run cli's V8 flags", realm, ["--store", "memory"], graph.modules, [])
  if (run("memory-1")) await serveVariant("memory, native, 1 worker", realm, ["--store", "memory", "--transpile-workers", "1"], graph.modules)
  if (run("memory-0")) await serveVariant("memory, native, 0 workers (in process)", realm, ["--store", "memory", "--transpile-workers", "0"], graph.modules)
  if (run("memory-babel")) await serveVariant("memory, babel engine (default workers)", realm, ["--store", "memory", "--engine", "babel"], graph.modules)
  const dataDir = mkdtempSync(path.join(tmpdir(), "mtc-memory-data-"))
  if (run("pglite") || run("pglite-restart")) {
    await serveVariant("pglite, native (default workers), first start", realm, ["--store", "pglite", "--data-dir", dataDir], graph.modules)
  }
  if (run("pglite-restart")) {
    await serveVariant("pglite, native, restart (rows in L2)", realm, ["--store", "pglite", "--data-dir", dataDir], graph.modules)
  }
  if (existsSync(dataDir)) rmSync(dataDir, { recursive: true, force: true })
  rmSync(realm, { recursive: true, force: true })
  if (run("realms")) await realmsVariant(Number(process.env["MEMORY_REALMS"] ?? 200))
}

await main()
