/**
 * What taking the runtime plugins from a host's `node_modules` costs the `boxel` pipeline
 * (`--host-packages`): loading the pipeline, and transpiling a Boxel card, with the packages
 * installed beside this one against a host-like directory with ember-concurrency 4 (its
 * transform run on Babel 8 through the version-check adapter) and with 5.
 *
 * Each variant runs in a fresh process (`--variant`), in 3 interleaved rounds (medians are
 * printed): the pipeline's load time is its first `BabelTranspiler.make` and first module,
 * then a module of 8 Boxel cards (about 5 KiB) is transpiled 20 times untimed and 100 times
 * timed (in-process, one after another). Standalone: `npx node scratchpad/bench-host-packages.ts`.
 */
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"

const root = resolve(fileURLToPath(new URL("..", import.meta.url)))

const imports = `import { field, contains, CardDef, Component } from "https://cardstack.com/base/card-api"
import StringField from "https://cardstack.com/base/string"
import { task, restartableTask, timeout } from "ember-concurrency"
import { shout } from "./helpers.ts"
`

const card = (i: number): string => `
export class Card${i} extends CardDef {
  @field title = contains(StringField)
  @field declare subtitle: string
  load = task(async () => {
    const response = await fetch("./data-${i}.json")
    return response.json()
  })
  search = restartableTask(async (term: string) => {
    await timeout(100)
    return (await import("./search.ts")).run(term)
  })
  static isolated = class Isolated extends Component<typeof Card${i}> {
    <template>
      <article class="card"><h1>{{shout @model.title}}</h1><p>{{@model.subtitle}}</p></article>
      <style scoped>.card { padding: 1rem; }</style>
    </template>
  }
}
`

const source = imports + [0, 1, 2, 3, 4, 5, 6, 7].map(card).join("")

const runVariant = async (hostPackages: string | undefined): Promise<void> => {
  const options = { pipeline: "boxel" as const, ...(hostPackages === undefined ? {} : { hostPackages }) }
  const loadStart = performance.now()
  const transpiler = await Effect.runPromise(BabelTranspiler.make(options))
  const first = await Effect.runPromise(transpiler.transpile({ path: "card.gts", source }))
  const loadMs = performance.now() - loadStart
  for (let i = 0; i < 20; i++) await Effect.runPromise(transpiler.transpile({ path: `w${i}.gts`, source }))
  const start = performance.now()
  const n = 100
  for (let i = 0; i < n; i++) await Effect.runPromise(transpiler.transpile({ path: `c${i}.gts`, source }))
  const perModule = (performance.now() - start) / n
  console.log(JSON.stringify({ loadMs, perModuleMs: perModule, kib: Buffer.byteLength(source) / 1024, runtime: first.dependencyKeys.filter((k) => k.startsWith("ember-concurrency")) }))
}

const variantIndex = process.argv.indexOf("--variant")
if (variantIndex >= 0) {
  const host = process.argv[variantIndex + 1]
  await runVariant(host === "bundled" ? undefined : host)
} else {
  const dir = mkdtempSync(join(tmpdir(), "mtc-bench-host-"))
  try {
    const hostOf = (ec: string): string => {
      const modules = join(dir, ec, "node_modules")
      mkdirSync(modules, { recursive: true })
      symlinkSync(join(root, "node_modules", ec), join(modules, "ember-concurrency"))
      for (const name of ["decorator-transforms", "ember-source"]) symlinkSync(join(root, "node_modules", name), join(modules, name))
      return modules
    }
    const variants: ReadonlyArray<readonly [string, string]> = [
      ["bundled (ember-concurrency 5)", "bundled"],
      ["--host-packages, ember-concurrency 4", hostOf("ember-concurrency-4")],
      ["--host-packages, ember-concurrency 5", hostOf("ember-concurrency")]
    ]
    interface Run {
      readonly loadMs: number
      readonly perModuleMs: number
      readonly kib: number
      readonly runtime: ReadonlyArray<string>
    }
    const runs = new Map<string, Array<Run>>()
    for (let round = 0; round < 3; round++) {
      for (const [label, host] of variants) {
        const result = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--variant", host], { cwd: root, encoding: "utf8" })
        if (result.status !== 0) throw new Error(result.stderr)
        const run: Run = JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "{}")
        runs.set(label, [...(runs.get(label) ?? []), run])
      }
    }
    const median = (values: ReadonlyArray<number>): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN
    console.log("| boxel pipeline | load + first module (ms) | per module (ms) | ms/KiB | ember-concurrency imports |")
    console.log("|---|---|---|---|---|")
    for (const [label] of variants) {
      const all = runs.get(label) ?? []
      const perModule = median(all.map((run) => run.perModuleMs))
      console.log(
        `| ${label} | ${median(all.map((run) => run.loadMs)).toFixed(0)} | ${perModule.toFixed(2)} | ${
          (perModule / (all[0]?.kib ?? 1)).toFixed(2)
        } | ${all[0]?.runtime.join(", ")} |`
      )
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
