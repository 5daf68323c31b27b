/**
 * The pipelines side by side:
 *
 * - the cost per KiB of an Ember-style `.gts` (a `@tracked` component whose template uses
 *   imported components and helpers) under `standard`, `ember` and `boxel`;
 * - warming a generated realm of 300 Ember modules with the CLI (`warm --store memory`,
 *   a process of its own), against the same pipeline's plugins called directly with Babel
 *   in one thread, one module after another (how Boxel's realm server runs them).
 *
 * The loop is timed twice, and both speed-ups are printed. "JIT-warm": in this process,
 * after one untimed pass over the whole realm (the original baseline). "JIT-cold": a fresh
 * process, timed on its first pass, after loading the plugins and transpiling the same two
 * tiny modules a transpile worker transpiles before it reports ready. The second is the
 * like-for-like baseline of `warm`'s reported time: that excludes process start, plugin
 * loading and the workers' start, but its workers meet the realm's code JIT-cold (the first
 * pass over a realm costs 2-3x the later ones). Neither loop times reading the files.
 *
 * Standalone: `npx node scratchpad/bench-pipelines.ts`. A combined bench imports `benchPipelines`.
 */
import { transformAsync } from "@babel/core"
import { Preprocessor } from "content-tag"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import type { BenchRow } from "./bench-l1.ts"

const root = resolve(fileURLToPath(new URL("..", import.meta.url)))

// -----------------------------------------------------------------------------
// Sources
// -----------------------------------------------------------------------------

/** An Ember component: `@tracked` state, an action, a template using imported components and helpers. */
const componentBlock = (i: number): string => `
import Component${i} from "@glimmer/component"
import { tracked as tracked${i} } from "@glimmer/tracking"
import { on as on${i} } from "@ember/modifier"
import { Badge as Badge${i} } from "./badge.gts"
import { format as format${i} } from "./helpers.ts"
import type { Model${i} } from "./models.ts"

interface Signature${i} {
  Args: { title: string; model: Model${i}; items: ReadonlyArray<{ id: number; label: string }> }
}

export class List${i} extends Component${i}<Signature${i}> {
  @tracked${i} selected: number | undefined = undefined
  @tracked${i} expanded = false

  toggle = (): void => {
    this.expanded = !this.expanded
  }

  get total(): number {
    return this.args.items.length
  }

  <template>
    <section class="list-${i}">
      <h2>{{@title}} <Badge${i} @label={{format${i} this.total}} /></h2>
      <button type="button" {{on${i} "click" this.toggle}}>toggle</button>
      {{#if this.expanded}}
        <ul>
          {{#each @items as |item|}}
            <li data-id={{item.id}}>{{format${i} item.label}}</li>
          {{/each}}
        </ul>
      {{/if}}
    </section>
  </template>
}
`

/** Repeats numbered blocks until the source reaches `bytes`. */
const generate = (block: (i: number) => string, bytes: number): string => {
  let source = ""
  for (let i = 0; Buffer.byteLength(source) < bytes; i++) source += block(i)
  return source
}

/** A Boxel card: `field` decorators on plain and `declare` fields, an async task, scoped CSS, fetch and import(). */
const cardModule = (i: number): string => `
import { field, contains, linksTo, CardDef, Component } from "https://cardstack.com/base/card-api"
import StringField from "https://cardstack.com/base/string"
import { task } from "ember-concurrency"
import { Person${i % 7} } from "./person-${i % 7}.gts"
import { shout } from "./helpers.ts"

export class Card${i} extends CardDef {
  @field title = contains(StringField)
  @field declare subtitle: string
  @field owner = linksTo(() => Person${i % 7})

  load = task(async () => {
    const response = await fetch("./data-${i}.json")
    return response.json()
  })

  more() {
    return import("./more-${i}.ts")
  }

  static isolated = class Isolated extends Component<typeof Card${i}> {
    <template>
      <article class="card">
        <h1>{{shout @model.title}}</h1>
        <p>{{@model.subtitle}}</p>
      </article>
      <style scoped>
        .card { padding: 1rem; border: 1px solid #ccc; }
        h1 { font-size: 1.4rem; }
      </style>
    </template>
  }
}
`

/**
 * A realm of `count` Ember modules: components (`.gts`), cards, helpers (`.ts`) and
 * template-only badges, in a few directories. Returns the directory.
 */
export const generateEmberRealm = (count: number, withCards: boolean): string => {
  const dir = mkdtempSync(join(tmpdir(), "mtc-ember-realm-"))
  const write = (name: string, source: string) => {
    const file = join(dir, name)
    mkdirSync(join(file, ".."), { recursive: true })
    writeFileSync(file, source)
  }
  for (let i = 0; i < count; i++) {
    const folder = `area-${i % 10}`
    switch (i % 4) {
      case 0:
        write(`${folder}/list-${i}.gts`, componentBlock(i) + componentBlock(i + 1000))
        break
      case 1:
        write(`${folder}/card-${i}.gts`, withCards ? cardModule(i) : componentBlock(i))
        break
      case 2:
        write(
          `${folder}/helpers-${i}.ts`,
          `export interface Options${i} { readonly upper?: boolean }\n` +
            `export const format${i} = (value: unknown, options: Options${i} = {}): string => {\n` +
            `  const text = String(value)\n  return options.upper ? text.toUpperCase() : text\n}\n` +
            `export function shout${i}(text: string): string {\n  return text.toUpperCase() + "!"\n}\n`
        )
        break
      default:
        write(`${folder}/badge-${i}.gts`, `export const Badge${i} = <template><span class="badge">{{@label}}</span></template>\n`)
    }
  }
  return dir
}

// -----------------------------------------------------------------------------
// Measurements
// -----------------------------------------------------------------------------

const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const listFiles = (dir: string): Array<string> => {
  const out: Array<string> = []
  const walk = (at: string) => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const full = join(at, entry.name)
      if (entry.isDirectory()) walk(full)
      else out.push(full)
    }
  }
  walk(dir)
  return out.sort()
}


/** The cost per KiB of a 16 KiB `.gts` under each pipeline. */
const costPerKiB = async (rows: Array<BenchRow>) => {
  const source = generate(componentBlock, 16 * 1024)
  const kib = Buffer.byteLength(source) / 1024
  for (const pipeline of BabelTranspiler.pipelineNames) {
    const transpiler = await Effect.runPromise(BabelTranspiler.make({ pipeline }))
    const once = async () => {
      const start = performance.now()
      await Effect.runPromise(transpiler.transpile({ path: "/bench/list.gts", source }))
      return performance.now() - start
    }
    const cold = await once()
    const warmUntil = performance.now() + 500
    for (let i = 0; i < 5 || performance.now() < warmUntil; i++) await once()
    const times: Array<number> = []
    for (let i = 0; i < 15; i++) times.push(await once())
    const ms = median(times)
    rows.push({ name: `${pipeline}: .gts ${kib.toFixed(0)} KiB cold first call`, value: `${cold.toFixed(1)} ms` })
    rows.push({ name: `${pipeline}: .gts ${kib.toFixed(0)} KiB (median of 15)`, value: `${ms.toFixed(2)} ms, ${(ms / kib).toFixed(3)} ms/KiB` })
  }
}

/**
 * The baseline: the pipeline's plugins called directly, content-tag then Babel's
 * `transformAsync`, one module after another in this thread. Milliseconds for the realm.
 */
const directLoop = async (pipeline: BabelTranspiler.PipelineName, files: ReadonlyArray<string>, dir: string) => {
  const loaded = await Effect.runPromise(BabelTranspiler.pipelineOf({ pipeline }))
  const preprocessor = new Preprocessor()
  const transpileAll = async (sources: ReadonlyArray<{ readonly path: string; readonly source: string }>) => {
    for (const { path, source } of sources) {
      const kind = BabelTranspiler.moduleKindOf(path)
      if (kind === undefined) continue
      const code = kind === "gts" || kind === "gjs" ? preprocessor.process(source, { filename: path }).code : source
      await transformAsync(code, {
        babelrc: false,
        configFile: false,
        sourceType: "module",
        filename: path,
        compact: false,
        highlightCode: false,
        plugins: loaded.plugins()[kind]
      })
    }
  }
  // What a transpile worker transpiles before it reports ready (TranspileWorker's warm-up inputs).
  await transpileAll([
    { path: "/__warm_up__.ts", source: "const typed: number = 1\nexport default typed\n" },
    { path: "/__warm_up__.gts", source: "export default <template>warm</template>\n" }
  ])
  const sources = files.map((file) => ({ path: `/${file.slice(dir.length + 1)}`, source: readFileSync(file, "utf8") }))
  const start = performance.now()
  await transpileAll(sources)
  return performance.now() - start
}

/** {@link directLoop}'s first pass in a fresh process (this module run with `--cold-loop`). */
const coldLoop = (pipeline: BabelTranspiler.PipelineName, dir: string): number => {
  const result = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--cold-loop", pipeline, dir], {
    cwd: root,
    encoding: "utf8"
  })
  const ms = /^cold-loop (\d+(?:\.\d+)?)$/m.exec(result.stdout)
  if (result.status !== 0 || ms === null) throw new Error(`cold loop failed (${result.status}):\n${result.stdout}\n${result.stderr}`)
  return Number(ms[1])
}

/** `warm <dir> --store memory --pipeline P`: the elapsed time it reports, and the process's wall time. */
const cliWarm = (pipeline: BabelTranspiler.PipelineName, dir: string) => {
  const start = performance.now()
  const result = spawnSync(process.execPath, [join(root, "src", "bin.ts"), "warm", dir, "--store", "memory", "--pipeline", pipeline], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" }
  })
  const wall = performance.now() - start
  const reported = /warmed (\d+) modules? in (\d+\.\d+) s/.exec(result.stdout)
  if (result.status !== 0 || reported === null) {
    throw new Error(`warm failed (${result.status}):\n${result.stdout}\n${result.stderr}`)
  }
  return { modules: Number(reported[1]), ms: Number(reported[2]) * 1000, wall }
}

/** Warming 300-module Ember and Boxel realms through the CLI vs the plugins in a loop. */
const warmRealm = async (rows: Array<BenchRow>) => {
  for (const pipeline of ["ember", "boxel"] as const) {
    const dir = generateEmberRealm(300, pipeline === "boxel")
    try {
      const files = listFiles(dir)
      const bytes = files.reduce((total, file) => total + readFileSync(file).byteLength, 0)
      await directLoop(pipeline, files, dir) // warm-up: plugin loading and the JIT
      const loops = [await directLoop(pipeline, files, dir), await directLoop(pipeline, files, dir), await directLoop(pipeline, files, dir)]
      // Alternated, so that a change of load in between weighs on both sides alike.
      const warms: Array<ReturnType<typeof cliWarm>> = []
      const colds: Array<number> = []
      for (let round = 0; round < 3; round++) {
        colds.push(coldLoop(pipeline, dir))
        warms.push(cliWarm(pipeline, dir))
      }
      const loop = median(loops)
      const cold = median(colds)
      const warm = median(warms.map((w) => w.ms))
      const wall = median(warms.map((w) => w.wall))
      rows.push({
        name: `${pipeline}: realm of ${files.length} modules (${(bytes / 1024).toFixed(0)} KiB), plugins in a loop, one thread, JIT-warm (median of 3)`,
        value: `${loop.toFixed(0)} ms`
      })
      rows.push({
        name: `${pipeline}: same loop, JIT-cold: first pass of a fresh process (median of 3)`,
        value: `${cold.toFixed(0)} ms (${colds.map((c) => c.toFixed(0)).join(", ")})`
      })
      rows.push({
        name: `${pipeline}: same realm, CLI warm --store memory, reported (median of 3)`,
        value: `${warm.toFixed(0)} ms (${warms.map((w) => w.ms.toFixed(0)).join(", ")}; process wall ${wall.toFixed(0)} ms)`
      })
      rows.push({ name: `${pipeline}: warm speed-up over the JIT-warm loop (loop / warm)`, value: `${(loop / warm).toFixed(2)}x` })
      rows.push({ name: `${pipeline}: warm speed-up over the JIT-cold loop (cold loop / warm)`, value: `${(cold / warm).toFixed(2)}x` })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** Every pipeline measurement. */
export const benchPipelines = async (): Promise<Array<BenchRow>> => {
  const rows: Array<BenchRow> = []
  await costPerKiB(rows)
  await warmRealm(rows)
  return rows
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)

if (isMain && process.argv[2] === "--cold-loop") {
  const [pipeline, dir] = [process.argv[3] as BabelTranspiler.PipelineName, process.argv[4] ?? ""]
  console.log(`cold-loop ${(await directLoop(pipeline, listFiles(dir), dir)).toFixed(1)}`)
} else if (isMain) {
  const rows = await benchPipelines()
  const width = Math.max(...rows.map((r) => r.name.length))
  for (const row of rows) console.log(`${row.name.padEnd(width)}  ${row.value}`)
}
