/**
 * The `standard`, `ember` and `boxel` pipelines on Ember-style modules of our own making.
 * The output is evaluated, not only string-matched: the modules run in a real Node process
 * on ember-source's ESM runtime and decorator-transforms' runtime (see `support/evaluate.ts`).
 */
import { parse } from "@babel/parser"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import * as Coordinator from "../src/domain/Coordinator.ts"
import { SourceTooLargeError, TranspileError } from "../src/domain/Errors.ts"
import * as Invalidations from "../src/domain/Invalidations.ts"
import * as MemoryTranspileStore from "../src/store/MemoryTranspileStore.ts"
import * as ModuleCache from "../src/cache/ModuleCache.ts"
import * as ModuleSources from "../src/domain/ModuleSources.ts"
import { Transpiler } from "../src/domain/Transpiler.ts"
import { TranspileStore } from "../src/domain/TranspileStore.ts"
import { evaluate } from "./support/evaluate.ts"
import { idle, keyOf, realm } from "./support/world.ts"

type Pipeline = BabelTranspiler.PipelineName

/** Transpiles modules (path to source) under a pipeline; fails the test on any error. */
const build = (pipeline: Pipeline, sources: Readonly<Record<string, string>>) =>
  Effect.gen(function*() {
    const transpiler = yield* BabelTranspiler.make({ pipeline })
    const out: Record<string, string> = {}
    for (const [path, source] of Object.entries(sources)) {
      out[path] = (yield* transpiler.transpile({ path, source })).body
    }
    return out
  })

/** The TranspileError of a failing transpile (fails the test on success or another error). */
const failure = (pipeline: Pipeline, path: string, source: string, options: BabelTranspiler.BabelTranspilerOptions = {}) =>
  Effect.gen(function*() {
    const transpiler = yield* BabelTranspiler.make({ ...options, pipeline })
    const exit = yield* Effect.exit(transpiler.transpile({ path, source }))
    if (Exit.isSuccess(exit)) throw new Error(`${path} transpiled under ${pipeline}: ${exit.value.body}`)
    const error = Exit.findErrorOption(exit)
    if (error._tag === "None") throw new Error(`${path}: no typed error`)
    return error.value
  })

const fields = (error: unknown) => {
  if (!(error instanceof TranspileError)) throw new Error(`expected a TranspileError, got ${String(error)}`)
  return { message: error.message, line: error.line, column: error.column }
}

// -----------------------------------------------------------------------------
// An Ember realm
// -----------------------------------------------------------------------------

const emberRealm = {
  "types.ts": `export interface CounterSignature { Args: { start: number } }\nexport type Label = string\n`,
  "api.d.ts": `export declare function notAtRuntime(): void\nexport interface Api { x: number }\n`,
  "helpers.ts": `export const double = (n: number): number => n * 2\n`,
  "badge.gts": `export const Badge = <template><span class="badge">{{@label}}</span></template>\n`,
  "counter.gts": `import Component from "@glimmer/component"
import { tracked } from "@glimmer/tracking"
import { on } from "@ember/modifier"
import { Badge } from "./badge.gts"
import { double } from "./helpers.ts"
// named imports used only as types: they must not survive (types.ts exports no such values)
import { CounterSignature, Label } from "./types.ts"
import type { Api } from "./api.d.ts"

const label: Label = "count"
export const api: Api | undefined = undefined

export default class Counter extends Component<CounterSignature> {
  @tracked count = this.args.start
  @tracked declare note: string
  increment = () => {
    this.count++
  }
  <template>
    <Badge @label={{label}} />
    <button {{on "click" this.increment}}>{{this.count}} x2={{double this.count}}</button>
  </template>
}
`
}

const emberCheck = `
import "./realm/api.d.ts"
import Counter from "./realm/counter.gts"
import { Badge } from "./realm/badge.gts"
import { double } from "./realm/helpers.ts"
import { getComponentTemplate } from "@ember/component"
import { createCache, getValue } from "@glimmer/tracking/primitives/cache"

const counter = new Counter({}, { start: 3 })
const count = createCache(() => counter.count)
const before = getValue(count)
counter.increment()
const after = getValue(count)
const note = createCache(() => counter.note)
const noteBefore = getValue(note) ?? null
counter.note = "hi"
const noteAfter = getValue(note)
const template = getComponentTemplate(Counter)()
const scope = template.parsedLayout.scope()
console.log(JSON.stringify({
  before, after, noteBefore, noteAfter,
  scope: Object.keys(scope).sort(),
  badgeIsImported: scope.Badge === Badge,
  doubleIsImported: scope.double === double,
  doubled: scope.double(21),
  strict: template.parsedLayout.isStrictMode,
  wireFormat: Array.isArray(template.parsedLayout.block),
  badgeTemplate: getComponentTemplate(Badge)() !== undefined
}))
`

describe("ember pipeline", () => {
  it.effect("precompiles templates and legacy decorators; a @tracked component runs on ember-source's runtime", () =>
    Effect.gen(function*() {
      const built = yield* build("ember", emberRealm)
      const counter = built["counter.gts"] ?? ""
      // no runtime template compiler, no type-only import, the decorator runtime imported
      expect(counter).not.toContain("@ember/template-compiler")
      expect(counter).toContain(`from "@ember/template-factory"`)
      expect(counter).toContain(`from "decorator-transforms/runtime-esm"`)
      expect(counter).not.toMatch(/CounterSignature|Label|api\.d\.ts/)
      expect(built["api.d.ts"]).toBe("")
      const result = evaluate(built, emberCheck)
      expect(result).toEqual({
        before: 3,
        after: 4,
        noteBefore: null,
        noteAfter: "hi",
        scope: ["Badge", "double", "label", "on"],
        badgeIsImported: true,
        doubleIsImported: true,
        doubled: 42,
        strict: true,
        wireFormat: true,
        badgeTemplate: true
      })
    }), 60_000)

  it.effect("every error kind has its position in the module's source", () =>
    Effect.gen(function*() {
      // Babel syntax error
      expect(fields(yield* failure("ember", "a.ts", "let x = ;\n"))).toEqual({
        message: "Unexpected token (1:8)",
        line: 1,
        column: 8
      })
      // content-tag: an unterminated <template>
      expect(fields(yield* failure("ember", "b.gts", "const a = 1\nexport const C = <template>\n  <div>\n")))
        .toEqual({ message: "Unexpected eof (3:8)", line: 3, column: 8 })
      // Babel, in a .gts: mapped back through content-tag's source map
      expect(fields(yield* failure("ember", "c.gts", "let x = 1\nlet x = 2\nexport const C = <template>hi</template>\n")))
        .toEqual({ message: "Identifier 'x' has already been declared. (2:4)", line: 2, column: 4 })
      // a Handlebars parse error inside a template: the template's position plus Glimmer's
      const parseError = fields(yield* failure(
        "ember",
        "d.gts",
        "const a = 1\n\nexport const A = <template>ok</template>\nexport const C = <template>\n  <div>{{foo.bar}</div>\n</template>\n"
      ))
      expect(parseError.line).toBe(5)
      expect(parseError.column).toBeGreaterThanOrEqual(7)
      expect(parseError.column).toBeLessThanOrEqual(16)
      expect(parseError.message).toMatch(/^Template parse error: .*\(5:\d+\)$/)
      // a Glimmer syntax error (unclosed element), with its location
      expect(fields(yield* failure("ember", "e.gts", "const a = 1\nexport const C = <template>\n\n  <div></template>\n")))
        .toEqual({ message: "Unclosed element `div` (4:2)", line: 4, column: 2 })
      // a legacy decorator on a private field, which decorator-transforms leaves in place
      expect(fields(yield* failure("ember", "f.gts", "import { tracked } from '@glimmer/tracking'\nclass X { @tracked #x = 1 }\n")))
        .toEqual({ message: "this decorator cannot be compiled by the ember pipeline (2:10)", line: 2, column: 10 })
      // unsupported extension, source too large: no position to give
      expect(fields(yield* failure("ember", "g.coffee", "x = 1"))).toMatchObject({ line: undefined })
      const tooLarge = yield* failure("ember", "h.gts", "x".repeat(20), { maxSourceBytes: 10 })
      expect(tooLarge).toBeInstanceOf(SourceTooLargeError)
    }))

  it.effect("an ember-source directory without a template compiler fails to load", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(BabelTranspiler.make({ pipeline: "ember", emberSource: "/nonexistent/ember-source" }))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.findErrorOption(exit)
      expect(error._tag === "Some" && error.value._tag).toBe("PipelineLoadError")
    }))
})

// -----------------------------------------------------------------------------
// A Boxel realm
// -----------------------------------------------------------------------------

const boxelRealm = {
  "card-api.ts": `export interface FieldRecord { readonly initializer: (() => unknown) | undefined }
export const fields = new Map<string, FieldRecord>()

/** A legacy field decorator shaped like Boxel's: (target, key, { initializer }). */
export function field(target: object, key: string, descriptor: { initializer?: () => unknown }): PropertyDescriptor {
  fields.set(key, { initializer: descriptor.initializer })
  const values = new WeakMap<object, unknown>()
  return {
    configurable: true,
    enumerable: true,
    get(this: object) {
      return values.has(this) ? values.get(this) : descriptor.initializer?.()
    },
    set(this: object, value: unknown) {
      values.set(this, value)
    }
  }
}
export const contains = (kind: string) => ({ contains: kind })
export class CardDef {}
`,
  "card.gts": `import { field, contains, CardDef } from "./card-api.ts"
import { task } from "ember-concurrency"

export class Person extends CardDef {
  @field firstName = contains("string")
  @field declare nickname: string
  load = task(async () => {
    const response = await fetch("./data.json")
    return response
  })
  lazy() {
    return import("./lazy.ts")
  }
  remote() {
    return import("https://example.test/x.js")
  }
  named(name: string) {
    return import(name)
  }
  static isolated = <template>
    <h1 class="name">{{@model.firstName}}</h1>
    <style scoped>
      .name { color: rebeccapurple; }
    </style>
  </template>
}

export function localFetch(): string {
  const fetch = (url: string) => "local " + url
  return fetch("x")
}
`
}

const boxelCheck = `
import "decorator-transforms/globals"
const calls = []
globalThis.__boxelLoader = {
  fetch: (...args) => { calls.push(["fetch", ...args]); return Promise.resolve("fetched") },
  import: (...args) => { calls.push(["import", ...args]); return Promise.resolve("imported") }
}
const { Person, localFetch } = await import("./realm/card.gts")
const api = await import("./realm/card-api.ts")
const { getComponentTemplate } = await import("@ember/component")

const person = new Person()
const firstName = person.firstName
person.nickname = "Bob"
await person.lazy()
await person.remote()
await person.named("some-package")
const fetched = await person.load.perform()
const block = JSON.stringify(getComponentTemplate(Person.isolated)().parsedLayout.block)
const css = globalThis.__scopedCss ?? []
const attribute = /data-scopedcss-[0-9a-f]+-[0-9a-f]+/.exec(css[0] ?? "")?.[0]
console.log(JSON.stringify({
  fields: Array.from(api.fields.keys()),
  firstNameInitializer: api.fields.get("firstName")?.initializer?.() ?? null,
  nicknameInitializer: api.fields.get("nickname")?.initializer ?? null,
  firstName,
  nickname: person.nickname,
  fetched,
  calls: calls.map(([kind, target]) => [kind, String(target).replace(/^file:.*\\/realm\\//, "REALM/")]),
  localFetch: localFetch(),
  css: css.length,
  cssScoped: attribute !== undefined && css[0].includes(".name[" + attribute + "]"),
  templateHasAttribute: attribute !== undefined && block.includes(attribute)
}))
`

describe("boxel pipeline", () => {
  it.effect("a card with a legacy field decorator on plain and declare fields, scoped CSS and loader rewrites, evaluated", () =>
    Effect.gen(function*() {
      const built = yield* build("boxel", boxelRealm)
      const card = built["card.gts"] ?? ""
      expect(card).toContain("dt7948.g(") // the decorator-transforms global, as Boxel's host installs it
      expect(card).not.toMatch(/"block": "[^\n]*style/)
      expect(card).toMatch(/import "\.\/card\.gts\.[^"]+\.glimmer-scoped\.css";/)
      const result = evaluate(built, boxelCheck)
      expect(result).toEqual({
        fields: ["firstName", "nickname"],
        firstNameInitializer: { contains: "string" },
        nicknameInitializer: null,
        firstName: { contains: "string" },
        nickname: "Bob",
        fetched: "fetched",
        calls: [
          ["import", "REALM/lazy.ts"],
          ["import", "https://example.test/x.js"],
          ["import", "some-package"],
          ["fetch", "./data.json"]
        ],
        localFetch: "local x",
        css: 1,
        cssScoped: true,
        templateHasAttribute: true
      })
    }), 60_000)

  it.effect("dependency keys include the loader's imports and the scoped CSS module", () =>
    Effect.gen(function*() {
      const transpiler = yield* BabelTranspiler.make({ pipeline: "boxel" })
      const module = yield* transpiler.transpile({ path: "card.gts", source: boxelRealm["card.gts"] })
      expect(module.dependencyKeys).toEqual(expect.arrayContaining([
        "./card-api.ts",
        "./lazy.ts",
        "https://example.test/x.js",
        // the module Boxel's host provides, not ember-concurrency's public re-export of it
        "ember-concurrency/-private/async-arrow-runtime"
      ]))
      expect(module.dependencyKeys).not.toContain("ember-concurrency/async-arrow-runtime")
      expect(module.dependencyKeys.some((key) => key.endsWith(".glimmer-scoped.css"))).toBe(true)
      expect(module.dependencyKeys).not.toContain("some-package")
    }))

  it.effect("a nested <style scoped> is an error at its template", () =>
    Effect.gen(function*() {
      expect(fields(yield* failure("boxel", "n.gts", "const a = 1\nexport const C = <template>\n<div><style scoped>.x{}</style></div>\n</template>\n")))
        .toEqual({
          message: "<style> tags must be at the root of the template, they cannot be nested (2:17)",
          line: 2,
          column: 17
        })
    }))
})

// -----------------------------------------------------------------------------
// standard
// -----------------------------------------------------------------------------

describe("standard pipeline", () => {
  it.effect("a .gts drops imports used only as types and keeps those its templates use", () =>
    Effect.gen(function*() {
      const built = yield* build("standard", {
        "card.gts": `import { on } from "@ember/modifier"
import { Badge } from "./badge.gts"
import { CounterSignature } from "./types.ts"
import * as helpers from "./helpers.ts"
import { unused } from "./unused.ts"
export const sig: CounterSignature | undefined = undefined
export const C = <template><Badge /><button {{on "click" (helpers.noop)}}>x</button></template>
`,
        "types.d.ts": "export interface CounterSignature {}\n"
      })
      const body = built["card.gts"] ?? ""
      parse(body, { sourceType: "module" })
      expect(body).toContain(`import { on } from "@ember/modifier"`)
      expect(body).toContain(`import { Badge } from "./badge.gts"`)
      expect(body).toContain(`import * as helpers from "./helpers.ts"`)
      expect(body).toContain(`from "@ember/template-compiler"`) // standard keeps runtime templates
      expect(body).not.toContain("CounterSignature")
      expect(body).not.toContain("unused")
      expect(built["types.d.ts"]).toBe("")
    }))

  it.effect("an import used in types is kept only when a template really uses it (Glimmer's free names)", () =>
    Effect.gen(function*() {
      const built = yield* build("standard", {
        "card.gts": `import { Shape } from "./shape.ts"
import { Model } from "./model.ts"
export const shape: Shape | undefined = undefined
export const model: Model | undefined = undefined
export const C = <template><Shape @title="a Model" /> Model {{this.Model}}</template>
`
      })
      const body = built["card.gts"] ?? ""
      expect(body).toContain(`import { Shape } from "./shape.ts"`)
      expect(body).not.toContain("./model.ts")
    }))
})

// -----------------------------------------------------------------------------
// Fingerprints
// -----------------------------------------------------------------------------

describe("fingerprints", () => {
  it.effect("differ by pipeline, and are the same for the same options", () =>
    Effect.gen(function*() {
      const fingerprints = yield* Effect.forEach(BabelTranspiler.pipelineNames, (pipeline) =>
        Effect.map(BabelTranspiler.make({ pipeline }), (t) => t.fingerprint))
      expect(new Set(fingerprints).size).toBe(3)
      for (const pipeline of BabelTranspiler.pipelineNames) {
        const again = yield* BabelTranspiler.fingerprintFor({ pipeline, maxSourceBytes: 5 })
        expect(again).toBe(fingerprints[BabelTranspiler.pipelineNames.indexOf(pipeline)])
      }
      expect(fingerprints[0]).toBe(BabelTranspiler.pipelineFingerprint())
    }))

  it.effect("the ember pipeline's fingerprint names every plugin's version and the template compiler's", () =>
    Effect.gen(function*() {
      const pipeline = yield* BabelTranspiler.pipelineOf({ pipeline: "boxel" })
      const versions = BabelTranspiler.versionsOf(pipeline)
      expect(Object.keys(versions).sort()).toEqual([
        "@babel/core",
        "@babel/generator",
        "@babel/parser",
        "@babel/plugin-transform-typescript",
        "@glimmer/syntax",
        "babel-plugin-ember-template-compilation",
        "content-tag",
        "decorator-transforms",
        "ember-concurrency",
        "ember-source",
        "glimmer-scoped-css"
      ])
      const fingerprint = BabelTranspiler.fingerprintOf({ versions, config: BabelTranspiler.configOf(pipeline) })
      expect(fingerprint).toBe(yield* BabelTranspiler.fingerprintFor({ pipeline: "boxel" }))
      // another template compiler version is another fingerprint
      expect(BabelTranspiler.fingerprintOf({
        versions: { ...versions, "ember-source": "6.10.0" },
        config: BabelTranspiler.configOf(pipeline)
      })).not.toBe(fingerprint)
    }))
})

describe("L2 rows and pipelines", () => {
  it.effect("a row written under one pipeline is never served under another", () =>
    Effect.gen(function*() {
      const store = yield* MemoryTranspileStore.make
      const sources = ModuleSources.makeMemory([[keyOf("badge.gts"), emberRealm["badge.gts"]]])
      // a process of its own (a fresh L1) per pipeline, all over one L2
      const cacheOf = (pipeline: Pipeline) =>
        Effect.gen(function*() {
          const transpiler = yield* BabelTranspiler.make({ pipeline })
          return yield* ModuleCache.make({}).pipe(
            Effect.provideService(Transpiler, transpiler),
            Effect.provideService(ModuleSources.ModuleSources, sources.service),
            Effect.provideService(TranspileStore, store),
            Effect.provideService(Coordinator.Coordinator, Coordinator.none),
            Effect.provideService(Invalidations.Invalidations, Invalidations.none)
          )
        })
      const get = (pipeline: Pipeline) =>
        Effect.gen(function*() {
          const cache = yield* cacheOf(pipeline)
          const result = yield* cache.get(keyOf("badge.gts"))
          yield* idle(cache)
          return result
        })
      const ember = yield* get("ember")
      expect(ember.outcome).toBe("transpiled")
      expect(ember.module.body).toContain("createTemplateFactory")
      const emberAgain = yield* get("ember")
      expect(emberAgain.outcome).toBe("l2")
      expect(emberAgain.module.body).toBe(ember.module.body)
      for (const other of ["boxel", "standard"] as const) {
        const result = yield* get(other)
        expect(result.outcome, other).toBe("transpiled")
        expect(result.module.fingerprint).not.toBe(ember.module.fingerprint)
      }
      // and standard's own bytes were served, not ember's (here boxel's bytes happen to equal ember's)
      expect((yield* get("standard")).module.body).toContain("@ember/template-compiler")
      // Each pipeline keeps a row of its own beside the others' (versions side by side): none
      // overwrote another, so each is an L2 hit of its own bytes.
      expect((yield* get("standard")).outcome).toBe("l2")
      expect((yield* get("standard")).module.body).toContain("@ember/template-compiler")
      const emberLast = yield* get("ember")
      expect(emberLast.outcome).toBe("l2")
      expect(emberLast.module.body).toBe(ember.module.body)
      expect((yield* store.versions(realm)).length).toBe(3)
    }))
})
