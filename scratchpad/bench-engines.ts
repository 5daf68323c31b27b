/**
 * Engines of the `standard` pipeline, side by side in one run:
 *
 * 1. Cost per KiB of stripping 300 TypeScript modules of about 4 KiB in one thread: Babel
 *    (the `standard` pipeline with `engine: "babel"`), the native engine as the transpiler
 *    runs it (oxc-transform plus oxc-parser's import records), and the bare engines
 *    oxc-transform, swc and esbuild.
 * 2. Cold load of a 300-module TypeScript graph, 16 requests at a time, from a fresh server:
 *    `serve --store memory` with the native engine and with Babel, against the Vite 7 dev
 *    server (`esbuild.sourcemap` off) on the same realm directory. The load generator is
 *    `wrk` (scratchpad/wrk-graph.ts): a Node client on the same two cores was slower than
 *    the servers it measured (300 L1 hits took it about 100 ms).
 *
 * Standalone: `npx node scratchpad/bench-engines.ts`. `scratchpad/bench.ts` imports `benchEngines`.
 */
import { transformSync as swcTransform } from "@swc/core"
import { Effect } from "effect"
import { transformSync as esbuildTransform } from "esbuild"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { transformSync as oxcTransform } from "oxc-transform"
import { createServer } from "vite"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import { startServer } from "../test/support/server.ts"
import type { BenchRow } from "./bench-l1.ts"
import { hasWrk, loadGraphWithWrk } from "./wrk-graph.ts"

const MODULES = 300
const CONCURRENCY = 16
const RUNS = 3

/** A TypeScript module of about 4 KiB importing the next one (types and a value), as realm code does. */
export const moduleSource = (i: number): string => {
  const next = (i + 1) % MODULES
  const blocks = Array.from({ length: 6 }, (_, k) => `
export interface Item${k}<T> {
  readonly id: number
  readonly value: T
  readonly tags: ReadonlyArray<string>
}
export type Pair${k}<A, B> = readonly [A, B]
export class Store${k}<T extends { id: number }> {
  declare readonly shape: Shape${next} | undefined
  count: number = 0
  #items: Map<number, T> = new Map()
  add(item: T): this {
    this.#items.set(item.id, item)
    this.count = this.#items.size as number
    return this
  }
  get(id: number): T | undefined {
    return this.#items.get(id) satisfies T | undefined
  }
}
export function pair${k}<A, B>(a: A, b: B): Pair${k}<A, B> {
  return [a, b] as const
}
export enum Kind${k} { A = "a", B = "b" }
`).join("")
  return `import type { Shape${next} } from "./m${next}.ts"\nimport { value${next} } from "./m${next}.ts"\n` +
    `export const value${i}: number = ${i}\nexport const sum${i} = (): number => value${next} + ${i}\n${blocks}`
}

const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

const sources = Array.from({ length: MODULES }, (_, i) => ({ path: `m${i}.ts`, source: moduleSource(i) }))
const totalKiB = sources.reduce((n, s) => n + Buffer.byteLength(s.source), 0) / 1024

/** Milliseconds to run `f` over every module, median of 5 after a warm-up pass. */
const timeAll = (f: (path: string, source: string) => void): number => {
  for (const { path, source } of sources) f(path, source)
  const times: Array<number> = []
  for (let run = 0; run < 5; run++) {
    const start = performance.now()
    for (const { path, source } of sources) f(path, source)
    times.push(performance.now() - start)
  }
  return median(times)
}

const perKiB = (): Array<BenchRow> => {
  const babel = Effect.runSync(BabelTranspiler.make({ engine: "babel" }))
  const native = Effect.runSync(BabelTranspiler.make({ engine: "native" }))
  const viaService = (t: typeof babel) => (path: string, source: string) => {
    Effect.runSync(t.transpile({ path, source }))
  }
  const engines: Array<[string, (path: string, source: string) => void]> = [
    ["Babel 8 (standard pipeline, engine babel)", viaService(babel)],
    ["native (standard pipeline, engine native: oxc-transform + es-module-lexer)", viaService(native)],
    ["oxc-transform transformSync", (path, source) => {
      oxcTransform(path, source, { sourceType: "module", typescript: { onlyRemoveTypeImports: false } })
    }],
    ["swc transformSync", (path, source) => {
      swcTransform(source, {
        filename: path,
        jsc: { parser: { syntax: "typescript" }, target: "esnext" },
        module: { type: "es6" },
        sourceMaps: false
      })
    }],
    ["esbuild transformSync", (_path, source) => {
      esbuildTransform(source, { loader: "ts", format: "esm", sourcemap: false })
    }]
  ]
  const rows: Array<BenchRow> = []
  let babelMs = Number.NaN
  for (const [name, f] of engines) {
    const ms = timeAll(f)
    if (Number.isNaN(babelMs)) babelMs = ms
    rows.push({
      name: `${MODULES} TS modules (${totalKiB.toFixed(0)} KiB), one thread: ${name}`,
      value: `${ms.toFixed(1)} ms, ${(ms / totalKiB).toFixed(4)} ms/KiB, ${(babelMs / ms).toFixed(1)}x Babel`
    })
  }
  return rows
}

/** Gets every module once, `CONCURRENCY` at a time, with wrk (scratchpad/wrk-graph.ts); the time in ms. */
const loadAll = async (base: string): Promise<number> =>
  (await loadGraphWithWrk(base, sources.map((s) => `/${s.path}`), { concurrency: CONCURRENCY, probe: "/_not_a_module.ts" })).ms

const coldLoad = async (): Promise<Array<BenchRow>> => {
  if (!hasWrk()) {
    process.stderr.write("bench-engines: wrk not found, skipping the cold loads (apt-get install wrk)\n")
    return [{ name: "cold loads", value: "skipped: wrk is not installed (apt-get install wrk)" }]
  }
  const realm = mkdtempSync(join(tmpdir(), "mtc-bench-engines-"))
  for (const { path, source } of sources) writeFileSync(join(realm, path), source)
  const rows: Array<BenchRow> = []
  const results: Record<string, Array<number>> = { native: [], "native-inline": [], babel: [], vite: [], "native-warm": [], "vite-warm": [] }
  try {
    for (let run = 0; run < RUNS; run++) {
      for (const variant of ["native", "native-inline", "babel"] as const) {
        const env = variant === "native-inline"
          ? { MTC_ENGINE: "native", MTC_TRANSPILE_WORKERS: "0" }
          : { MTC_ENGINE: variant }
        const server = await startServer({ realmDir: realm, store: "memory", env })
        try {
          results[variant]?.push(await loadAll(server.url))
          // the same 300 requests again: every module an L1 hit, the floor without transpiling
          if (variant === "native") results["native-warm"]?.push(await loadAll(server.url))
        } finally {
          await server.stop()
        }
      }
      const vite = await createServer({
        root: realm,
        configFile: false,
        logLevel: "silent",
        clearScreen: false,
        esbuild: { sourcemap: false },
        optimizeDeps: { noDiscovery: true, include: [] },
        server: { host: "127.0.0.1", port: 0, strictPort: false, hmr: false, ws: false }
      })
      await vite.listen()
      try {
        const address = vite.httpServer?.address()
        if (address === null || typeof address !== "object" || address === undefined) throw new Error("vite has no address")
        results.vite?.push(await loadAll(`http://127.0.0.1:${address.port}`))
        results["vite-warm"]?.push(await loadAll(`http://127.0.0.1:${address.port}`))
      } finally {
        await vite.close()
      }
    }
  } finally {
    rmSync(realm, { recursive: true, force: true })
  }
  const vite = median(results.vite ?? [])
  for (const [name, label] of [["native", "serve --store memory, engine native"], [
    "native-inline",
    "serve --store memory, engine native, no worker pool (MTC_TRANSPILE_WORKERS=0)"
  ], ["babel", "serve --store memory, engine babel"], ["native-warm", "serve, engine native, second pass (all L1 hits)"], [
    "vite-warm",
    "Vite 7 dev server, second pass (its transform cache)"
  ], [
    "vite",
    "Vite 7 dev server (esbuild, sourcemap off)"
  ]] as const) {
    const times = results[name] ?? []
    rows.push({
      name: name.endsWith("-warm")
        ? `${MODULES} TS modules x ${CONCURRENCY} concurrent, after the cold load: ${label}`
        : `cold load ${MODULES} TS modules x ${CONCURRENCY} concurrent, fresh server: ${label}`,
      value: `median ${median(times).toFixed(0)} ms (${times.map((t) => t.toFixed(0)).join(", ")})` +
        (name === "vite" ? "" : `, ${(median(times) / vite).toFixed(2)}x Vite's time`)
    })
  }
  return rows
}

/** The engines bench: cost per KiB, then the cold loads. */
export const benchEngines = async (): Promise<Array<BenchRow>> => [...perKiB(), ...(await coldLoad())]

if (resolve(process.argv[1] ?? "") === fileURLToPath(import.meta.url)) {
  console.table(await benchEngines())
}
