/**
 * Reading realm files (`FileSystemSources`): the main-thread CPU, the process CPU, the async
 * file-system requests and the system calls per module read, for the current implementation
 * and a baseline (the same file at `MTC_BENCH_SOURCES_BASE`, default the commit before the
 * synchronous reads), side by side in one run.
 *
 * - "read by key": `RealmFiles.read` of a canonical path with no resolution at hand (what
 *   `warm` and the preload's source check do);
 * - "miss": `RealmFiles.resolve` of an extensionless request path (four candidates tried),
 *   then the read of what it found with `CurrentResolution` (what a server's miss does).
 *
 * 300 modules of about 2 KiB, three directories deep in the realm, read 8 at a time; medians
 * over rounds, the implementations taking turns. Main-thread CPU is `process.threadCpuUsage`,
 * process CPU is `process.cpuUsage` (it includes libuv's threadpool). Async requests are
 * counted with `async_hooks` (FSREQ and FILEHANDLE resources). System calls come from
 * `strace -f -c` of a child process doing 300 reads, minus one doing none (when strace is
 * installed).
 *
 * The baseline is the file as `git show` prints it, written under the repository's ignored
 * `tmp/` with its relative imports pointed back at `src/`.
 * Run: npx node scratchpad/bench-sources.ts
 */
import { createHook } from "node:async_hooks"
import { execFileSync, spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Effect } from "effect"
import { moduleKey } from "../src/domain/Domain.ts"
import type * as Current from "../src/realm/FileSystemSources.ts"
import { type BenchRow, median } from "./bench-l1.ts"

const MODULES = 300
const CONCURRENCY = 8
const ROUNDS = Number(process.env["SOURCES_ROUNDS"] ?? 9)
const BASE = process.env["MTC_BENCH_SOURCES_BASE"] ?? "0a03df1"

const repo = fileURLToPath(new URL("..", import.meta.url))
const modulePaths = Array.from({ length: MODULES }, (_, i) => `app/components/part${i % 10}/m${i}.ts`)

type Implementation = typeof Current

/** A realm of {@link MODULES} modules in a new temporary directory. */
const makeRealm = (): string => {
  const realm = mkdtempSync(path.join(tmpdir(), "mtc-bench-sources-"))
  for (const [i, modulePath] of modulePaths.entries()) {
    const file = path.join(realm, modulePath)
    mkdirSync(path.dirname(file), { recursive: true })
    writeFileSync(file, `export const value${i}: number = ${i}\n`.repeat(70))
  }
  return realm
}

/** The baseline `FileSystemSources` (and the `PathRules` it imported), or undefined without git. */
const loadBaseline = async (): Promise<Implementation | undefined> => {
  const dir = path.join(repo, "tmp", `bench-sources-${process.pid}`, "server")
  try {
    mkdirSync(dir, { recursive: true })
    for (const name of ["FileSystemSources.ts", "PathRules.ts"]) {
      const source = execFileSync("git", ["-C", repo, "show", `${BASE}:src/server/${name}`], { encoding: "utf8" })
      writeFileSync(path.join(dir, name), source.replace(/from "\.\.\/(domain|internal)\//g, `from "../../../src/$1/`))
    }
    return (await import(pathToFileURL(path.join(dir, "FileSystemSources.ts")).href)) as Implementation
  } catch (error) {
    process.stderr.write(`bench-sources: no baseline at ${BASE}: ${String(error)}\n`)
    return undefined
  } finally {
    rmSync(path.dirname(dir), { recursive: true, force: true })
  }
}

type Files = Current.RealmFiles["Service"]

/** One pass over every module, {@link CONCURRENCY} at a time. */
const passes = {
  "read by key": (_impl: Implementation, files: Files) =>
    Effect.forEach(modulePaths, (modulePath) => files.read(moduleKey(files.realmUrl, modulePath)), {
      concurrency: CONCURRENCY,
      discard: true
    }),
  miss: (impl: Implementation, files: Files) =>
    Effect.suspend(() => {
      files.changed() // forget the resolutions: each one is a miss's
      return Effect.forEach(modulePaths, (modulePath) =>
        Effect.flatMap(files.resolve(`/${modulePath.slice(0, -3)}`), (resolved) =>
          Effect.provideService(files.read(moduleKey(files.realmUrl, resolved.path)), impl.CurrentResolution, resolved)), {
        concurrency: CONCURRENCY,
        discard: true
      })
    })
} as const

type Pass = keyof typeof passes

interface Sample {
  readonly thread: number
  readonly process: number
  readonly wall: number
}

/** µs per read of one pass: main thread, process, wall. */
const measure = async (run: Effect.Effect<void, unknown>): Promise<Sample> => {
  const thread = process.threadCpuUsage()
  const cpu = process.cpuUsage()
  const started = process.hrtime.bigint()
  await Effect.runPromise(run)
  const wall = Number(process.hrtime.bigint() - started) / 1000
  const threadUsed = process.threadCpuUsage(thread)
  const cpuUsed = process.cpuUsage(cpu)
  return {
    thread: (threadUsed.user + threadUsed.system) / MODULES,
    process: (cpuUsed.user + cpuUsed.system) / MODULES,
    wall: wall / MODULES
  }
}

/** Async file-system requests (FSREQ*, FILEHANDLE*) per read of one pass. */
const asyncRequests = async (run: Effect.Effect<void, unknown>): Promise<number> => {
  let count = 0
  const hook = createHook({
    init: (_id, type) => {
      if (type.startsWith("FSREQ") || type.startsWith("FILEHANDLE")) count++
    }
  })
  hook.enable()
  try {
    await Effect.runPromise(run)
  } finally {
    hook.disable()
  }
  return count / MODULES
}

/** The file-system calls among the system calls strace reports (the rest is threads, memory, the event loop). */
const fileSystemCalls = new Set([
  "openat",
  "open",
  "close",
  "read",
  "pread64",
  "readlink",
  "readlinkat",
  "statx",
  "newfstatat",
  "fstat",
  "lstat",
  "stat",
  "getdents64"
])

interface SystemCalls {
  readonly all: number
  readonly fileSystem: number
}

/** System calls per read of one pass, by strace of a child process (300 reads minus none), or undefined. */
const systemCalls = (implementation: string, pass: Pass, realm: string): SystemCalls | undefined => {
  const counted = (reads: boolean): SystemCalls | undefined => {
    const out = path.join(realm, "..", `strace-${process.pid}-${implementation}-${reads}.txt`)
    const child = spawnSync("strace", [
      "-f",
      "-c",
      "-o",
      out,
      process.execPath,
      fileURLToPath(import.meta.url),
      "--child",
      implementation,
      pass,
      realm,
      reads ? "1" : "0"
    ], { encoding: "utf8" })
    if (child.status !== 0) return undefined
    const table = readFileSync(out, "utf8")
    rmSync(out, { force: true })
    let all = 0
    let fileSystem = 0
    // "% time  seconds  usecs/call  calls  [errors]  syscall"
    for (const line of table.split("\n")) {
      const fields = line.trim().split(/\s+/)
      const name = fields.at(-1)
      if (fields.length < 5 || name === undefined || name === "total" || !/^\d/.test(fields[0]!)) continue
      const calls = Number(fields[3])
      all += calls
      if (fileSystemCalls.has(name)) fileSystem += calls
    }
    return { all, fileSystem }
  }
  const none = counted(false)
  const reads = counted(true)
  return none === undefined || reads === undefined ? undefined : {
    all: (reads.all - none.all) / MODULES,
    fileSystem: (reads.fileSystem - none.fileSystem) / MODULES
  }
}

const hasStrace = (): boolean => spawnSync("strace", ["-V"]).status === 0

const loadCurrent = async (): Promise<Implementation> =>
  (await import("../src/realm/FileSystemSources.ts")) as Implementation

const implementations = async (): Promise<Array<[string, Implementation]>> => {
  const baseline = await loadBaseline()
  const current = await loadCurrent()
  return baseline === undefined ? [["current", current]] : [["baseline", baseline], ["current", current]]
}

export const benchSources = async (): Promise<Array<BenchRow>> => {
  const realm = makeRealm()
  try {
    const loaded = await Promise.all((await implementations()).map(async ([name, impl]) =>
      [name, impl, await Effect.runPromise(impl.make({ realmDir: realm }))] as const
    ))
    const rows: Array<BenchRow> = []
    for (const pass of Object.keys(passes) as Array<Pass>) {
      const samples = new Map<string, Array<Sample>>(loaded.map(([name]) => [name, []]))
      for (const [, impl, files] of loaded) await Effect.runPromise(passes[pass](impl, files)) // warm up
      for (let round = 0; round < ROUNDS; round++) {
        for (const [name, impl, files] of loaded) samples.get(name)!.push(await measure(passes[pass](impl, files)))
      }
      for (const [name, impl, files] of loaded) {
        const taken = samples.get(name)!
        const requests = await asyncRequests(passes[pass](impl, files))
        const calls = hasStrace() ? systemCalls(name, pass, realm) : undefined
        const label = `${pass}, ${name}`
        rows.push(
          { name: `${label}: main-thread CPU (µs/read, median of ${ROUNDS})`, value: median(taken.map((s) => s.thread)).toFixed(1) },
          { name: `${label}: process CPU (µs/read)`, value: median(taken.map((s) => s.process)).toFixed(1) },
          { name: `${label}: wall (µs/read, ${CONCURRENCY} at a time)`, value: median(taken.map((s) => s.wall)).toFixed(1) },
          { name: `${label}: async fs requests per read`, value: requests.toFixed(1) },
          {
            name: `${label}: file-system system calls per read (strace -f)`,
            value: calls === undefined ? "n/a" : calls.fileSystem.toFixed(1)
          },
          { name: `${label}: all system calls per read (strace -f)`, value: calls === undefined ? "n/a" : calls.all.toFixed(1) }
        )
      }
    }
    return rows
  } finally {
    rmSync(realm, { recursive: true, force: true })
  }
}

/** The child process strace counts: one implementation, one pass over the realm (or none). */
const child = async ([implementation, pass, realm, reads]: ReadonlyArray<string | undefined>) => {
  const impl = implementation === "current"
    ? await loadCurrent()
    : implementation === "baseline"
    ? await loadBaseline()
    : undefined
  if (impl === undefined || realm === undefined || !(pass === "read by key" || pass === "miss")) {
    throw new Error(`usage: --child baseline|current "read by key"|miss REALM 0|1`)
  }
  const files = await Effect.runPromise(impl.make({ realmDir: realm }))
  if (reads === "1") await Effect.runPromise(passes[pass](impl, files))
}

if (import.meta.main) {
  const at = process.argv.indexOf("--child")
  if (at === -1) console.table(await benchSources())
  else await child(process.argv.slice(at + 1))
}
