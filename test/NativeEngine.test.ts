/**
 * The native engine (oxc) of the `standard` pipeline against Babel's: on every standard
 * fixture and on extra cases, the same exports, the same evaluated values, the same
 * dependency keys, and the same typed errors with positions.
 */
import { codeOf } from "../src/transpiler/SourceMaps.ts"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import { parseSync } from "oxc-parser"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import * as Oxc from "../src/transpiler/engines/Oxc.ts"
import { TranspileError } from "../src/domain/Errors.ts"
import type { Transpiler } from "../src/domain/Transpiler.ts"

const fixturesDir = fileURLToPath(new URL("./fixtures/transpiler/", import.meta.url))

/** Every module fixture, under the path it is transpiled as (`x.ts.txt` as `x.ts`). */
const fixtures: ReadonlyArray<{ readonly path: string; readonly source: string }> = readdirSync(fixturesDir)
  .filter((name) => name !== "README.md")
  .map((name) => ({ path: `cards/${name.replace(/\.ts\.txt$/, ".ts")}`, source: readFileSync(join(fixturesDir, name), "utf8") }))

/** Extra modules: `.gts` with templates and type-only imports, TypeScript constructs, decorators, errors. */
const extras: ReadonlyArray<{ readonly path: string; readonly source: string }> = [
  {
    path: "cards/typed.gts",
    source: [
      `import Component from "@glimmer/component"`,
      `import type { ComponentLike } from "@glint/template"`,
      `import { type Helper, format } from "./helpers"`,
      `import Icon from "./icon.gts"`,
      `import Badge from "./badge.gts"`,
      `import Unused from "./unused.gts"`,
      `import Mentioned from "./mentioned.gts"`,
      `import AsType from "./as-type.gts"`,
      `import AsTypeToo from "./as-type-too.gts"`,
      `let b: typeof Badge | undefined`,
      `let t: AsType | undefined`,
      `let u: AsTypeToo | undefined`,
      `export const Row: ComponentLike = <template><Icon /> {{format @x}} <Badge /> Mentioned AsTypeToo <AsType /></template>`,
      `export default class Card extends Component<{ h: Helper }> {`,
      `  declare helper: Helper`,
      `  count = 1`,
      `  <template><Row /></template>`,
      `}`
    ].join("\n")
  },
  {
    path: "cards/values.ts",
    source: [
      `export enum Color { Red, Green = "green", Blue = 4 }`,
      `export const enum Flag { A = 1 }`,
      `export namespace NS { export const inner = 2 }`,
      `export class Point { declare tag: string; x: number; constructor(public y: number, private z = 3) { this.x = y + z } }`,
      `export const p = new Point(1)`,
      `export const fields = Object.keys(new Point(2))`,
      `export const asserted = (<number>(1 as unknown)) satisfies number`,
      `export const flag = Flag.A`,
      `export function generic<T>(x: T): T { return x }`,
      `export default abstract class Base { abstract m(): void; static s = "s" }`
    ].join("\n")
  },
  {
    path: "cards/decorated.ts",
    source: [
      `const log: Array<string> = []`,
      `function dec(_v: unknown, c: ClassFieldDecoratorContext) { log.push(String(c.name)) }`,
      `export class A { @dec x = 1; declare y: number; accessor z = 2 }`,
      `export const seen = (new A(), log)`
    ].join("\n")
  },
  { path: "cards/types.d.ts", source: "export declare const x: number\n" },
  { path: "cards/blank.gts", source: "  \n\t\n" },
  { path: "cards/unicode-error.ts", source: `export const s = "éé€😀"; let x = ;\n` },
  { path: "cards/error-after-template.gts", source: `const A = <template>hi</template>\nexport function f(a: number {\n}\n` },
  { path: "cards/deep.ts", source: `export const x = ${"(".repeat(20_000)}1${")".repeat(20_000)}\n` },
  { path: "cards/deep-enough.ts", source: `export const x: number = ${"[".repeat(200)}1${"]".repeat(200)}.flat(Infinity)[0]\n` },
  { path: "cards/decorator-on-declare.ts", source: "class A {\n  @tracked declare x: number\n}\n" },
  { path: "cards/reexports.ts", source: `export type { T } from "./t"\nexport { type U, v } from "./v"\nexport * as all from "./all"\nimport "./side"\n` }
]

const make = (engine: BabelTranspiler.EngineName): Transpiler["Service"] =>
  Effect.runSync(BabelTranspiler.make({ pipeline: "standard", engine }))

const native = make("native")
const babel = make("babel")

type Outcome =
  | { readonly ok: true; readonly body: string; readonly dependencyKeys: ReadonlyArray<string> }
  | { readonly ok: false; readonly error: TranspileError }

const run = (t: Transpiler["Service"], path: string, source: string): Outcome =>
  Effect.runSync(
    t.transpile({ path, source }).pipe(
      Effect.map((m): Outcome => ({ ok: true, body: m.body, dependencyKeys: m.dependencyKeys })),
      Effect.catch((error) => {
        if (!(error instanceof TranspileError)) return Effect.die(error)
        return Effect.succeed<Outcome>({ ok: false, error })
      })
    )
  )

/** The names a compiled module exports, sorted. */
const exportNames = (body: string): ReadonlyArray<string> => {
  const { module } = parseSync("m.js", body, { sourceType: "module" })
  const names: Array<string> = []
  for (const record of module.staticExports) {
    for (const entry of record.entries) {
      names.push(entry.exportName.kind === "Default" ? "default" : entry.exportName.name ?? `*${entry.moduleRequest?.value ?? ""}`)
    }
  }
  return names.sort()
}

const stubsDir = mkdtempSync(join(tmpdir(), "mtc-native-"))
let counter = 0

/**
 * Evaluates a compiled module with every import replaced by a stub module that exports
 * the imported names as no-op functions, and describes its exports: values as JSON,
 * functions and classes by name, arity and the names of their own and prototype members.
 */
const evaluate = async (body: string): Promise<Record<string, unknown>> => {
  const { module } = parseSync("m.js", body, { sourceType: "module" })
  const bytes = Buffer.from(body, "utf8")
  const replacements: Array<{ start: number; end: number; url: string }> = []
  const stub = (names: ReadonlyArray<string>): string => {
    const file = join(stubsDir, `stub-${counter++}.mjs`)
    // a decorator gets a context object and returns nothing; anything else called gets a function
    const body = "{ return typeof arguments[1] === 'object' && arguments[1] !== null && 'kind' in arguments[1] ? undefined : function () {} }"
    const lines = [`function stub() ${body}`]
    for (const name of new Set(names)) {
      lines.push(name === "default" ? "export default stub" : `export function ${name}() ${body}`)
    }
    writeFileSync(file, lines.join("\n"))
    return pathToFileURL(file).href
  }
  for (const record of module.staticImports) {
    const names = record.entries.flatMap((e) => e.importName.kind === "Default" ? ["default"] : e.importName.kind === "Name" && e.importName.name ? [e.importName.name] : [])
    replacements.push({ start: record.moduleRequest.start, end: record.moduleRequest.end, url: stub(names) })
  }
  for (const record of module.staticExports) {
    for (const entry of record.entries) {
      if (entry.moduleRequest === null) continue
      const names = entry.importName.kind === "Name" && entry.importName.name ? [entry.importName.name] : []
      replacements.push({ start: entry.moduleRequest.start, end: entry.moduleRequest.end, url: stub(names) })
    }
  }
  replacements.sort((a, b) => b.start - a.start)
  let code = bytes
  for (const r of replacements) {
    code = Buffer.concat([code.subarray(0, r.start), Buffer.from(JSON.stringify(r.url)), code.subarray(r.end)])
  }
  const file = join(stubsDir, `module-${counter++}.mjs`)
  writeFileSync(file, code)
  const loaded: Record<string, unknown> = await import(pathToFileURL(file).href)
  const describe = (value: unknown): unknown => {
    if (typeof value === "function") {
      return {
        function: value.name,
        length: value.length,
        own: Object.getOwnPropertyNames(value).sort(),
        prototype: typeof value.prototype === "object" && value.prototype !== null ? Object.getOwnPropertyNames(value.prototype).sort() : null
      }
    }
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      return { object: Object.getPrototypeOf(value)?.constructor?.name, entries: Object.entries(value).map(([k, v]) => [k, describe(v)]) }
    }
    return value
  }
  return Object.fromEntries(Object.keys(loaded).sort().map((key) => [key, describe(loaded[key])]))
}

describe("native engine against Babel (standard pipeline)", () => {
  for (const { path, source } of [...fixtures, ...extras]) {
    it(`${path}: same exports, values, dependency keys and errors`, async () => {
      const a = run(native, path, source)
      const b = run(babel, path, source)
      if (!a.ok || !b.ok) {
        expect(a.ok).toBe(b.ok)
        if (!a.ok && !b.ok) {
          // the same typed error at the same position (the wording is each parser's own)
          expect({ tag: a.error._tag, path: a.error.path, line: a.error.line, column: a.error.column }).toEqual({
            tag: b.error._tag,
            path: b.error.path,
            line: b.error.line,
            column: b.error.column
          })
          // a syntax error has a position (Babel's stack overflow on cards/deep.ts has none, in both engines)
          if (b.error.line !== undefined) expect(a.error.message).toMatch(new RegExp(`\\(${a.error.line}:${a.error.column}\\)$`))
          else expect(path).toBe("cards/deep.ts")
        }
        return
      }
      expect(a.dependencyKeys).toEqual(b.dependencyKeys)
      expect(exportNames(a.body)).toEqual(exportNames(b.body))
      if (a.body === "" || b.body === "") {
        expect(a.body).toBe(b.body)
        return
      }
      expect(await evaluate(a.body)).toEqual(await evaluate(b.body))
    })
  }

  it("keeps the imports a template uses and drops the type-only ones, as Babel does", () => {
    const typed = extras[0]
    if (typed === undefined) throw new Error("no fixture")
    const a = run(native, typed.path, typed.source)
    if (!a.ok) throw a.error
    expect(a.dependencyKeys).toEqual([
      "@ember/template-compiler",
      "@glimmer/component",
      "./helpers",
      "./icon.gts",
      "./badge.gts",
      "./mentioned.gts",
      "./as-type.gts"
    ])
    expect(a.body).not.toContain("__mtc_keep_template_locals__")
  })

  it("compiles with oxc where it can, and hands decorated modules to Babel", () => {
    const body = (t: Transpiler["Service"], name: string) => {
      const fixture = [...fixtures, ...extras].find((f) => f.path === `cards/${name}`)
      if (fixture === undefined) throw new Error(`no fixture ${name}`)
      const outcome = run(t, fixture.path, fixture.source)
      if (!outcome.ok) throw outcome.error
      // the code, without the comment naming its map (which names each engine's version)
      return codeOf(outcome.body)
    }
    // oxc indents with tabs, Babel with two spaces
    expect(body(native, "typescript.ts")).toMatch(/^\t/m)
    expect(body(babel, "typescript.ts")).not.toMatch(/^\t/m)
    expect(body(native, "typed.gts")).toMatch(/^\t/m)
    // component.gts has `@tracked`: Babel compiles it
    expect(body(native, "component.gts")).toBe(body(babel, "component.gts"))
    expect(body(native, "decorators.ts")).toBe(body(babel, "decorators.ts"))
  })

  it("reads the same dependency keys with es-module-lexer as with oxc-parser's module records, and as Babel", () => {
    const tricky = [
      `// import "./in-a-comment"`,
      `const s = "import('./in-a-string')"`,
      `const t = \`\${1} import("./in-a-template")\``,
      `const r = /import("\\.\\/in-a-regex")/`,
      `export const f = () => import(\`./template\`)`,
      `export const g = (x) => import(x)`,
      `export const h = () => import("./escaped\\u0041")`,
      `import "./side"`,
      `export * from "./all"`,
      `export { k } from "./k"`,
      `import d, { e } from "./d"`,
      `console.log(import.meta.url, d, e)`
    ].join("\n")
    const modules = [...fixtures, ...extras, { path: "cards/tricky.js", source: tricky }]
    let compared = 0
    for (const { path, source } of modules) {
      const a = run(native, path, source)
      if (!a.ok || a.body === "") continue
      const lexed = Oxc.dependencyKeysByLexer(a.body)
      expect(lexed).toEqual(Oxc.dependencyKeysOfModuleRecords(a.body, parseSync("m.js", a.body, { sourceType: "module" }).module))
      compared++
    }
    expect(compared).toBeGreaterThan(8)
    const b = run(babel, "cards/tricky.js", tricky)
    if (!b.ok) throw b.error
    expect(Oxc.dependencyKeysByLexer(tricky)).toEqual(b.dependencyKeys)
    expect(b.dependencyKeys).toEqual(["./template", "./escapedA", "./side", "./all", "./k", "./d"])
  })

  it("has its own fingerprint, with the engine's version; Babel's is unchanged", () => {
    expect(native.fingerprint).not.toBe(babel.fingerprint)
    expect(native.fingerprint).toBe(BabelTranspiler.pipelineFingerprint())
    expect(BabelTranspiler.pipelineVersions()["oxc-transform"]).toMatch(/^\d+\.\d+\.\d+/)
    expect(babel.fingerprint).toBe(
      BabelTranspiler.fingerprintOf({
        versions: Object.fromEntries(Object.entries(BabelTranspiler.pipelineVersions()).filter(([k]) => !(k in Oxc.versions()))),
        config: Object.fromEntries(Object.entries(BabelTranspiler.pipelineConfig).filter(([k]) => k !== "engine"))
      })
    )
    // ember and boxel always run Babel: the engine option does not change them
    const ember = (engine: BabelTranspiler.EngineName) => Effect.runSync(BabelTranspiler.fingerprintFor({ pipeline: "ember", engine }))
    expect(ember("native")).toBe(ember("babel"))
  })

  it("runs in a worker thread", async () => {
    const worker = new Worker(
      `const { transformSync } = require("oxc-transform");
       const { parseSync } = require("oxc-parser");
       const r = transformSync("a.ts", "import type { T } from './t'; export const x: number = 1", { sourceType: "module" });
       require("node:worker_threads").parentPort.postMessage({ code: r.code, imports: parseSync("a.js", r.code).module.staticImports.length });`,
      { eval: true }
    )
    const message = await new Promise((resolve, reject) => {
      worker.once("message", resolve)
      worker.once("error", reject)
    })
    await worker.terminate()
    expect(message).toEqual({ code: "export const x = 1;\n", imports: 0 })
  })
})

process.on("exit", () => rmSync(stubsDir, { recursive: true, force: true }))
