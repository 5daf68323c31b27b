/**
 * Source maps (src/transpiler/SourceMaps.ts) from every pipeline and engine: read back through
 * a source-map library, a `throw` and each call site land on the exact line and column they
 * were written at, in a `.ts` below type-only blocks and in a `.gts` below a multi-line
 * `<template>`; a map that does not check is dropped, never served.
 */
import { parse } from "@babel/parser"
import { decode, encode, type SourceMapMappings } from "@jridgewell/sourcemap-codec"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { moduleVersion } from "../src/domain/Domain.ts"
import { moduleEtag } from "../src/http/Responses.ts"
import { versionOfEtag } from "../src/http/ImmutableUrls.ts"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import type { BabelTranspilerOptions } from "../src/transpiler/TranspilerOptions.ts"
import { codeOf, fits, servedMap, withSourceMap } from "../src/transpiler/SourceMaps.ts"
import { cardSource, measureSource, originalAt, originalOf, sourcePositionOf } from "./support/sourceMaps.ts"



const pipelines: ReadonlyArray<{ readonly name: string; readonly options: BabelTranspilerOptions }> = [
  { name: "standard, native", options: { pipeline: "standard", engine: "native" } },
  { name: "standard, Babel", options: { pipeline: "standard", engine: "babel" } },
  { name: "ember", options: { pipeline: "ember" } },
  { name: "boxel", options: { pipeline: "boxel" } }
]

const transpile = (options: BabelTranspilerOptions, path: string, source: string) =>
  Effect.flatMap(BabelTranspiler.make(options), (t) => Effect.map(t.transpile({ path, source }), (module) => ({ module, t })))

describe("source maps", () => {
  for (const { name, options } of pipelines) {
    it.effect(`${name}: a throw in a .ts and in a .gts lands on its own line and column`, () =>
      Effect.gen(function*() {
        for (const [path, source, needle] of [
          ["lib/measure.ts", measureSource, `throw new Error("ts-throw")`],
          ["lib/card.gts", cardSource, `throw new Error("gts-throw")`]
        ] as const) {
          const { module, t } = yield* transpile(options, path, source)
          const file = path.split("/").pop()!
          const version = moduleVersion(module.sourceHash, t.fingerprint)
          expect(module.body.endsWith(`\n//# sourceMappingURL=${file}.map?_v=${version}`)).toBe(true)
          const map = JSON.parse(module.sourceMap!) as Record<string, unknown>
          expect(map).toMatchObject({ version: 3, file, sources: [file], sourcesContent: [source] })
          expect(originalOf(module.body, module.sourceMap!, needle)).toEqual(sourcePositionOf(source, needle.replace(/;$/, "")))
        }
      }))
  }

  it.effect("the version in the comment is the module's immutable version (its ETag's first 16 hex digits)", () =>
    Effect.gen(function*() {
      const { module, t } = yield* transpile({}, "a.ts", measureSource)
      const version = versionOfEtag(moduleEtag({ sourceHash: module.sourceHash, fingerprint: t.fingerprint }))
      expect(module.body).toContain(`?_v=${version}`)
    }))

  it.effect("off: no map, no comment, the code as before, and another fingerprint", () =>
    Effect.gen(function*() {
      for (const { options } of pipelines) {
        const on = yield* transpile(options, "card.gts", cardSource)
        const off = yield* transpile({ ...options, sourceMaps: false }, "card.gts", cardSource)
        expect(off.module.sourceMap).toBeUndefined()
        expect(off.module.body).not.toContain("sourceMappingURL")
        expect(off.module.body).toBe(codeOf(on.module.body))
        expect(off.t.fingerprint).not.toBe(on.t.fingerprint)
        expect(off.t.sourceMaps).toBe(false)
        expect(yield* BabelTranspiler.fingerprintFor({ ...options, sourceMaps: false })).toBe(off.t.fingerprint)
      }
    }))

  it.effect("an empty module and a declaration file get no map", () =>
    Effect.gen(function*() {
      expect((yield* transpile({}, "e.ts", "  \n")).module).not.toHaveProperty("sourceMap")
      expect((yield* transpile({}, "t.d.ts", "export type T = 1\n")).module.body).toBe("")
    }))

  it("a map that points outside the code or the source is dropped, and the module is left as it is", () => {
    const module = { body: "a;\nb;", headers: {}, dependencyKeys: [], sourceHash: "h" }
    const valid = { version: 3, sources: ["x"], names: [], mappings: encode([[[0, 0, 0, 0]], [[0, 0, 1, 0]]]) }
    expect(servedMap("x.ts", "a\nb\n", module.body, valid)).toBeDefined()
    // generated line 3 of 2
    const threeLines = encode([[[0, 0, 0, 0]], [[0, 0, 1, 0]], [[0, 0, 1, 0]]])
    expect(withSourceMap(module, "x.ts", "a\nb\n", { ...valid, mappings: threeLines }, "v")).toBe(module)
    // generated column 9 of a 2-character line
    expect(withSourceMap(module, "x.ts", "a\nb\n", { ...valid, mappings: encode([[[9, 0, 0, 0]]]) }, "v")).toBe(module)
    // original line 40 of a 3-line source
    expect(withSourceMap(module, "x.ts", "a\nb\n", { ...valid, mappings: encode([[[0, 0, 39, 0]]]) }, "v")).toBe(module)
    // a second source, and a malformed mappings string
    expect(withSourceMap(module, "x.ts", "a\nb\n", { ...valid, sources: ["x", "y"] }, "v")).toBe(module)
    expect(withSourceMap(module, "x.ts", "a\nb\n", { ...valid, mappings: "!!" }, "v")).toBe(module)
    expect(withSourceMap(module, "x.ts", "a\nb\n", valid, "v").body).toBe("a;\nb;\n//# sourceMappingURL=x.ts.map?_v=v")
  })

  it("the one-pass check of a map agrees with decoding it, on valid maps, mangled ones and random text", () => {
    // The check as it reads with the source-map library: decode, then look at every segment.
    const reference = (mappings: string, generated: ReadonlyArray<number>, original: ReadonlyArray<number>): boolean => {
      if (!/^[A-Za-z0-9+/,;]*$/.test(mappings)) return false
      // A value's last digit ends it (below 32: A to f); the library would read on into the next segment.
      // Each segment holds 1, 4 or 5 values (the library would read a sixth as the next segment).
      const values = (segment: string) => segment.replace(/[g-z0-9+/]/g, "").length
      if (
        mappings.split(/[,;]/).some((segment) =>
          segment !== "" && (!/[A-Za-f]$/.test(segment) || ![1, 4, 5].includes(values(segment)))
        )
      ) return false
      let decoded: SourceMapMappings
      try {
        decoded = decode(mappings)
      } catch {
        return false
      }
      if (decoded.length > generated.length) return false
      return decoded.every((segments, line) =>
        segments.every((segment) => {
          if (!(segment[0] >= 0 && segment[0] <= generated[line]!)) return false
          if (segment.length === 1) return true
          const [, source, originalLine, originalColumn] = segment
          if (segment.length > 5 || source !== 0 || originalLine === undefined || originalColumn === undefined) return false
          return originalLine >= 0 && originalLine < original.length && originalColumn >= 0 && originalColumn <= original[originalLine]!
        })
      )
    }
    // A seeded generator: the same cases on every run.
    let seed = 7
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed % n
    }
    const generated = [12, 40, 0, 7, 25]
    const original = [10, 30, 5, 0, 18, 22]
    const digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/,;!"
    let valid = 0
    for (let i = 0; i < 4000; i++) {
      // Segments near the bounds (some over), as lines of decoded fields, then encoded.
      const lines = Array.from({ length: 1 + random(6) }, (_, line) =>
        Array.from({ length: random(4) }, () => {
          const column = random((generated[line] ?? 3) + 3)
          const shape = random(5)
          if (shape === 0) return [column] as [number]
          const fields: [number, number, number, number] = [column, random(9) === 0 ? 1 : 0, random(original.length + 1), random(32)]
          return shape === 4 ? [...fields, random(3)] as [number, number, number, number, number] : fields
        }).sort((a, b) => a[0] - b[0])
      )
      let mappings = encode(lines)
      // Some mangled: a character replaced, or cut short.
      if (random(4) === 0 && mappings.length > 0) {
        const at = random(mappings.length)
        mappings = random(2) === 0 ? mappings.slice(0, at) + digits[random(digits.length)] + mappings.slice(at + 1) : mappings.slice(0, at)
      }
      const expected = reference(mappings, generated, original)
      if (expected) valid++
      expect(fits(mappings, generated, original), mappings).toBe(expected)
    }
    // Both outcomes were exercised.
    expect(valid).toBeGreaterThan(200)
    expect(valid).toBeLessThan(3800)
  })
})

// -----------------------------------------------------------------------------
// Boxel-style modules: tasks, decorators, templates with helpers, scoped CSS
// -----------------------------------------------------------------------------

/** Boxel-style modules, each with throws and calls below decorators, tasks and templates. */
const boxelRealm: Readonly<Record<string, string>> = {
  "card.gts": `import { contains, field, CardDef, Component } from "https://cardstack.com/base/card-api"
import StringField from "https://cardstack.com/base/string"
import { task, restartableTask, timeout } from "ember-concurrency"
import { formatName } from "./helpers.ts"
import type { Signature } from "./types.ts"

export class Person extends CardDef {
  static displayName = "Person"
  @field firstName = contains(StringField)
  @field declare nickname: string
  load = task(async () => {
    const response = await fetch("./data.json")
    if (!response.ok) {
      throw new Error("card-load")
    }
    return response.json()
  })
  search = restartableTask({ maxConcurrency: 2 }, async (term: string) => {
    await timeout(250)
    return (await import("./search.ts")).run(term)
  })
  static isolated = class Isolated extends Component<Signature> {
    <template>
      <h1 class="name">{{formatName @model.firstName}}</h1>
      <p>
        {{@model.nickname}}
      </p>
      <style scoped>
        .name { color: rebeccapurple; }
      </style>
    </template>
    get shouted(): string {
      throw new Error("card-isolated")
    }
  }
  check(value: string | undefined): string {
    if (value === undefined) throw new Error("card-check")
    return formatName(value)
  }
}
`,
  "service.ts": `import Service, { service } from "@ember/service"
import { tracked } from "@glimmer/tracking"
import { action } from "@ember/object"
import { dropTask } from "ember-concurrency"
import type RouterService from "@ember/routing/router-service"

export default class Loader extends Service {
  @service declare router: RouterService
  @tracked declare status: string
  @tracked count = 0
  refresh = dropTask(async () => {
    const response = await fetch(new URL("/status", "https://example.test"))
    this.status = await response.text()
    if (this.status === "") throw new Error("service-refresh")
  })
  @action bump(by: number) {
    if (by < 0) {
      throw new Error("service-bump")
    }
    this.count = Math.max(this.count + by, 0)
  }
}
`,
  "counter.gts": `import Component from "@glimmer/component"
import { tracked } from "@glimmer/tracking"
import { on } from "@ember/modifier"
import { fn } from "@ember/helper"
import { enqueueTask } from "ember-concurrency"
import { shout } from "./helpers.ts"

export class Counter extends Component<{ Args: { label: string } }> {
  @tracked count = 0
  save = enqueueTask(async (by: number) => {
    this.count += by
    await fetch("/save", { method: "POST" })
    throw new Error("counter-save")
  })
  <template>
    <button class="counter" {{on "click" (fn this.save.perform 1)}}>
      {{shout @label}} {{this.count}}
    </button>
    <style scoped>.counter { font-weight: bold; }</style>
  </template>
  reset() {
    throw new Error("counter-reset")
  }
}
`
}

interface AstNode {
  readonly type: string
  readonly start?: number | null
  readonly [key: string]: unknown
}

const isNode = (u: unknown): u is AstNode => u !== null && typeof u === "object" && typeof (u as { type?: unknown }).type === "string"

/** Every node of a parsed program, depth first. */
const nodesOf = (root: unknown): Array<AstNode> => {
  const found: Array<AstNode> = []
  const stack: Array<unknown> = [root]
  while (stack.length > 0) {
    const node = stack.pop()
    if (Array.isArray(node)) stack.push(...node)
    else if (isNode(node)) {
      found.push(node)
      for (const [key, value] of Object.entries(node)) {
        if (key !== "loc" && value !== null && typeof value === "object") stack.push(value)
      }
    }
  }
  return found
}

/** The name a call's callee ends in (`fetch` of `import.meta.loader.fetch`), if it is a name. */
const calleeName = (callee: AstNode): string | undefined => {
  if (callee.type === "Identifier") return callee["name"] as string
  if (callee.type === "MemberExpression" && !callee["computed"] && isNode(callee["property"]) && callee["property"].type === "Identifier") {
    return callee["property"]["name"] as string
  }
  if (callee.type === "Import") return "import"
  return undefined
}

describe("source maps of Boxel-style modules (boxel pipeline)", () => {
  it.effect("every throw and every call of the source's own lands where it is written", () =>
    Effect.gen(function*() {
      const t = yield* BabelTranspiler.make({ pipeline: "boxel" })
      for (const [path, source] of Object.entries(boxelRealm)) {
        const module = yield* t.transpile({ path, source })
        const map = module.sourceMap!
        expect(map, path).toBeDefined()
        const code = codeOf(module.body)
        const sourceLines = source.split("\n")
        const textAt = (position: { readonly line: number; readonly column: number }) =>
          sourceLines[position.line - 1]!.slice(position.column)
        const throwsReached = new Set<number>()
        let calls = 0
        for (const node of nodesOf(parse(code, { sourceType: "module" }).program)) {
          if (node.type === "ThrowStatement") {
            const at = originalAt(code, map, node.start!)
            expect(textAt(at), `${path}: a throw at ${JSON.stringify(at)}`).toMatch(/^throw /)
            throwsReached.add(at.line)
          } else if (node.type === "CallExpression" && isNode(node["callee"])) {
            const name = calleeName(node["callee"])
            // Calls the pipeline adds (dt7948.g, buildTask, setComponentTemplate, ...) are not in the source.
            if (name === undefined || !source.includes(`${name}(`)) continue
            const at = originalAt(code, map, node.start!)
            // the call starts at its callee (or the bracket around it): its name follows on that line
            const written = textAt(at)
            expect(written.includes(`${name}(`), `${path}: a call of ${name} maps to ${JSON.stringify(at)}: ${written}`).toBe(true)
            calls++
          }
        }
        // every throw of the source is reached from the code
        const written = sourceLines.flatMap((line, i) => (/\bthrow new Error/.test(line) ? [i + 1] : []))
        expect([...throwsReached].sort((a, b) => a - b), path).toEqual(written)
        expect(calls, path).toBeGreaterThan(0)
      }
    }))
})
