import { codeOf } from "../src/transpiler/SourceMaps.ts"
import { parse } from "@babel/parser"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer } from "effect"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import { defaultMaxSourceBytes, hashSource, javascriptContentType } from "../src/domain/Domain.ts"
import { SourceTooLargeError, TranspileError } from "../src/domain/Errors.ts"
import { Transpiler } from "../src/domain/Transpiler.ts"

const fixturesDir = fileURLToPath(new URL("./fixtures/transpiler/", import.meta.url))

/** Reads a fixture by its module name; TypeScript fixtures are stored as `<name>.ts.txt` (see the README there). */
const fixture = (name: string): string =>
  readFileSync(`${fixturesDir}${name.endsWith(".ts") ? `${name}.txt` : name}`, "utf8")

/** Parses JavaScript as a plain ES module: no TypeScript, no JSX, no decorators. */
const parsesAsModule = (body: string): void => {
  parse(body, { sourceType: "module" })
}

/** The fields of a TranspileError (its `message` is not an own property), failing if it is another error. */
const transpileErrorFields = (error: unknown) => {
  if (!(error instanceof TranspileError)) throw new Error(`expected a TranspileError, got ${String(error)}`)
  return { _tag: error._tag, path: error.path, message: error.message, line: error.line, column: error.column }
}

// These tests pin Babel's own output and messages; test/NativeEngine.test.ts compares the native engine with it.
const transpiler = BabelTranspiler.make({ engine: "babel" })

const transpileFixture = (name: string, path = `cards/${name}`) =>
  Effect.gen(function*() {
    const t = yield* transpiler
    const source = fixture(name)
    const module = yield* t.transpile({ path, source })
    return { module, source }
  })

describe("BabelTranspiler", () => {
  describe("TypeScript", () => {
    it.effect("strips types, interfaces, type-only imports and declare fields", () =>
      Effect.gen(function*() {
        const { module, source } = yield* transpileFixture("typescript.ts")
        expect(() => parsesAsModule(module.body)).not.toThrow()
        expect(module.dependencyKeys).toEqual([
          "https://cardstack.com/base/card-api",
          "https://cardstack.com/base/string",
          "./side-effect.ts",
          "./everything",
          "./helpers"
        ])
        expect(module.body).not.toMatch(/\binterface\b|\bdeclare\b|\bimplements\b|OnlyAType|types-only|<string>/)
        expect(module.body).toContain("#items = []")
        expect(module.headers).toEqual({ "content-type": javascriptContentType })
        expect(module.sourceHash).toBe(hashSource(source))
      }))

    it.effect("parses `<T>value` assertions as TypeScript, not JSX", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        const module = yield* t.transpile({ path: "a.ts", source: "export const n = <number>(1 as unknown)\n" })
        expect(codeOf(module.body)).toBe("export const n = 1;")
      }))

    it.effect("treats .mts as TypeScript", () =>
      Effect.gen(function*() {
        const ts = yield* transpileFixture("typescript.ts")
        const mts = yield* transpileFixture("typescript.ts", "cards/typescript.mts")
        // the same module but for its file name, which its map and the comment naming it carry
        const { body: mtsBody, sourceMap: mtsMap, ...mtsRest } = mts.module
        const { body: tsBody, sourceMap: tsMap, ...tsRest } = ts.module
        expect(mtsRest).toEqual(tsRest)
        expect(codeOf(mtsBody)).toBe(codeOf(tsBody))
        expect(mtsBody).toMatch(/\/\/# sourceMappingURL=typescript\.mts\.map\?_v=[0-9a-f]{16}$/)
        expect(JSON.parse(mtsMap!).mappings).toBe(JSON.parse(tsMap!).mappings)
      }))
  })

  describe("decorators (2023-11)", () => {
    it.effect("compiles class, method and field decorators in .ts", () =>
      Effect.gen(function*() {
        const { module } = yield* transpileFixture("decorators.ts")
        expect(() => parsesAsModule(module.body)).not.toThrow()
        expect(module.dependencyKeys).toEqual(["@glimmer/tracking", "@ember/object", "@ember/service", "./registry.ts"])
        expect(module.body).not.toMatch(/@(tracked|action|service|registered)\b/)
        expect(module.body).toContain("_applyDecs")
        expect(module.body).not.toContain("owner")
      }))

    it.effect("compiles class, method and field decorators in .js", () =>
      Effect.gen(function*() {
        const { module } = yield* transpileFixture("decorators.js")
        expect(() => parsesAsModule(module.body)).not.toThrow()
        expect(module.dependencyKeys).toEqual(["@glimmer/tracking", "@ember/object", "./registry.js"])
        expect(module.body).not.toMatch(/@(tracked|action|registered)\b/)
        expect(module.body).toContain("_applyDecs")
      }))

    it.effect("a decorator on a declare field is a TranspileError with its position", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        const error = yield* Effect.flip(
          t.transpile({ path: "cards/bad.ts", source: "class A {\n  @tracked declare x: number\n}\n" })
        )
        expect(error).toBeInstanceOf(TranspileError)
        expect(error).toMatchObject({ _tag: "TranspileError", path: "cards/bad.ts", line: 2, column: 2 })
      }))
  })

  describe("plugin errors", () => {
    it.effect("an error with only a code frame (a scope check) gets its position from the frame", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        const source = [
          `import type { S } from "./s"`,
          `import { tracked } from "x"`,
          `class A { @tracked a = 1 }`,
          `import { tracked } from "x"`,
          `class B { @tracked b = 1 }`
        ].join("\n")
        const error = yield* Effect.flip(t.transpile({ path: "cards/dup.ts", source }))
        expect(transpileErrorFields(error)).toEqual({
          _tag: "TranspileError",
          path: "cards/dup.ts",
          message: `Duplicate declaration "tracked" (4:9)`,
          line: 4,
          column: 9
        })
      }))
  })

  describe("content-tag", () => {
    it.effect("compiles a .gts component, keeping the imports its template uses", () =>
      Effect.gen(function*() {
        const { module } = yield* transpileFixture("component.gts")
        expect(() => parsesAsModule(module.body)).not.toThrow()
        expect(module.dependencyKeys).toEqual([
          "@ember/template-compiler",
          "@glimmer/component",
          "@glimmer/tracking",
          "@ember/modifier",
          "./greeting.gts"
        ])
        expect(module.body).not.toMatch(/<template>|Signature|ComponentLike|@glint/)
      }))

    it.effect("compiles a .gjs component", () =>
      Effect.gen(function*() {
        const { module } = yield* transpileFixture("component.gjs")
        expect(() => parsesAsModule(module.body)).not.toThrow()
        expect(module.dependencyKeys).toEqual(["@ember/template-compiler", "@ember/modifier", "./greeting.gjs"])
        expect(module.body).not.toContain("<template>")
      }))

    it.effect("a content-tag syntax error is a TranspileError, and the preprocessor still works after it", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        const error = yield* Effect.flip(t.transpile({ path: "cards/syntax-error.gts", source: fixture("syntax-error.gts") }))
        expect(error).toBeInstanceOf(TranspileError)
        expect(transpileErrorFields(error)).toEqual({
          _tag: "TranspileError",
          path: "cards/syntax-error.gts",
          message: "Expression expected (8:12)",
          line: 8,
          column: 12
        })
        const module = yield* t.transpile({ path: "cards/component.gts", source: fixture("component.gts") })
        expect(module.dependencyKeys).toContain("@ember/template-compiler")
      }))

    it.effect("a Babel error in a .gts points at the module's own source, not content-tag's output", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        const source = [
          `import Component from "@glimmer/component"`,
          ``,
          `export class X extends Component {`,
          `  @foo declare y: number`,
          `  <template>hi</template>`,
          `}`
        ].join("\n")
        const error = yield* Effect.flip(t.transpile({ path: "cards/x.gts", source }))
        expect(transpileErrorFields(error)).toEqual({
          _tag: "TranspileError",
          path: "cards/x.gts",
          message: "Decorators can't be used with a declare field. (4:2)",
          line: 4,
          column: 2
        })
      }))

    it("originalPosition maps generated positions back through a source map", () => {
      const map = JSON.stringify({ version: 3, sources: ["a"], names: [], mappings: "AAAA,IAAI;AACA,IAAM" })
      expect(BabelTranspiler.originalPosition(map, 1, 3)).toEqual({ line: 1, column: 0 })
      expect(BabelTranspiler.originalPosition(map, 1, 9)).toEqual({ line: 1, column: 4 })
      expect(BabelTranspiler.originalPosition(map, 2, 2)).toEqual({ line: 2, column: 4 })
      expect(BabelTranspiler.originalPosition(map, 2, 5)).toEqual({ line: 2, column: 10 })
      expect(BabelTranspiler.originalPosition(map, 3, 0)).toBeUndefined()
    })

    it.effect("an unterminated <template> is a TranspileError", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        const error = yield* Effect.flip(t.transpile({ path: "x.gjs", source: "export default <template>hi\n" }))
        expect(transpileErrorFields(error)).toEqual({
          _tag: "TranspileError",
          path: "x.gjs",
          message: "Unexpected eof (1:28)",
          line: 1,
          column: 28
        })
      }))
  })

  describe("dependency keys", () => {
    it.effect("include literal dynamic imports and exclude computed ones, deduplicated in order", () =>
      Effect.gen(function*() {
        const { module } = yield* transpileFixture("dynamic-imports.ts")
        expect(module.dependencyKeys).toEqual([
          "./loader.ts",
          "./literal.ts",
          "./template-literal.ts",
          "https://cardstack.com/base/lazy"
        ])
      }))

    it("are read from an AST", () => {
      const ast = parse(
        [
          `import a from "a"`,
          `import type { T } from "typed"`,
          `export * as ns from "ns"`,
          `export { b } from "b"`,
          `export const local = 1`,
          `import("a"); import(\`t\`); import(\`x\${a}\`); import(name); import("late")`
        ].join("\n"),
        { sourceType: "module", plugins: ["typescript"] }
      )
      expect(BabelTranspiler.dependencyKeysOf(ast)).toEqual(["a", "ns", "b", "t", "late"])
    })
  })

  describe("empty sources", () => {
    it.effect("whitespace-only is an empty module", () =>
      Effect.gen(function*() {
        const { module, source } = yield* transpileFixture("whitespace.ts")
        expect(module).toEqual({
          body: "",
          headers: { "content-type": javascriptContentType },
          dependencyKeys: [],
          sourceHash: hashSource(source)
        })
      }))

    it.effect("the empty string is an empty module, in every kind", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        for (const path of ["a.ts", "a.gts", "a.gjs", "a.js"]) {
          const module = yield* t.transpile({ path, source: "" })
          expect(module.body).toBe("")
          expect(module.dependencyKeys).toEqual([])
        }
      }))
  })

  describe("errors", () => {
    it.effect("a Babel syntax error is a TranspileError with path, line and column", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        const error = yield* Effect.flip(t.transpile({ path: "cards/syntax-error.ts", source: fixture("syntax-error.ts") }))
        expect(error).toBeInstanceOf(TranspileError)
        expect(transpileErrorFields(error)).toEqual({
          _tag: "TranspileError",
          path: "cards/syntax-error.ts",
          message: `Unexpected token, expected "," (3:33)`,
          line: 3,
          column: 33
        })
      }))

    it.effect("a source over the limit fails with SourceTooLargeError, counted in UTF-8 bytes", () =>
      Effect.gen(function*() {
        const t = yield* BabelTranspiler.make({ maxSourceBytes: 10, engine: "babel" })
        // 6 characters, 12 bytes: over the limit though shorter than it in UTF-16 units
        const error = yield* Effect.flip(t.transpile({ path: "big.ts", source: "éééééé" }))
        expect(error).toBeInstanceOf(SourceTooLargeError)
        expect({ ...error }).toEqual({ _tag: "SourceTooLargeError", path: "big.ts", size: 12, limit: 10 })
        // size is checked before parsing: an oversize syntax error is still SourceTooLargeError
        const oversizeBroken = yield* Effect.flip(t.transpile({ path: "big.ts", source: "let x = ;;;;;" }))
        expect(oversizeBroken._tag).toBe("SourceTooLargeError")
        const atLimit = yield* t.transpile({ path: "ok.ts", source: "let x = 1;" })
        expect(codeOf(atLimit.body)).toBe("let x = 1;")
      }))

    it.effect("an unsupported extension is a TranspileError", () =>
      Effect.gen(function*() {
        const t = yield* transpiler
        const error = yield* Effect.flip(t.transpile({ path: "styles/site.css", source: "body { color: red }" }))
        expect(error).toBeInstanceOf(TranspileError)
        expect(error._tag).toBe("TranspileError")
        expect(error.message).toContain(`".css"`)
        const noExtension = yield* Effect.flip(t.transpile({ path: "README", source: "x" }))
        expect(noExtension.message).toContain("unsupported module extension")
      }))
  })

  describe("fingerprint", () => {
    const parts = {
      versions: { "@babel/core": "8.1.3", "content-tag": "4.2.0" },
      config: { a: 1, nested: { x: [1, 2], y: "z" } }
    }

    it("is stable for the same parts, whatever the key order", () => {
      const fingerprint = BabelTranspiler.fingerprintOf(parts)
      expect(fingerprint).toMatch(/^[0-9a-f]{64}$/)
      expect(BabelTranspiler.fingerprintOf(parts)).toBe(fingerprint)
      expect(
        BabelTranspiler.fingerprintOf({
          config: { nested: { y: "z", x: [1, 2] }, a: 1 },
          versions: { "content-tag": "4.2.0", "@babel/core": "8.1.3" }
        })
      ).toBe(fingerprint)
    })

    it("changes when a version or an option changes", () => {
      const fingerprint = BabelTranspiler.fingerprintOf(parts)
      const changed = [
        { ...parts, versions: { ...parts.versions, "@babel/core": "8.1.4" } },
        { ...parts, versions: { ...parts.versions, "content-tag": "4.2.1" } },
        { ...parts, versions: { ...parts.versions, "@babel/plugin-proposal-decorators": "8.0.2" } },
        { ...parts, config: { ...parts.config, a: 2 } },
        { ...parts, config: { ...parts.config, nested: { x: [2, 1], y: "z" } } }
      ].map(BabelTranspiler.fingerprintOf)
      expect(new Set([fingerprint, ...changed]).size).toBe(changed.length + 1)
    })

    it("covers the installed versions of Babel, both plugins and content-tag", () => {
      const require = createRequire(import.meta.url)
      const versions = BabelTranspiler.pipelineVersions()
      for (const name of ["@babel/core", "@babel/plugin-transform-typescript", "@babel/plugin-proposal-decorators"]) {
        expect(versions[name]).toBe((require(`${name}/package.json`) as { version: string }).version)
      }
      expect(versions["content-tag"]).toBe(
        (JSON.parse(readFileSync(new URL("../node_modules/content-tag/package.json", import.meta.url), "utf8")) as {
          version: string
        }).version
      )
    })

    it.effect("is the transpiler's fingerprint, the same for every instance", () =>
      Effect.gen(function*() {
        const a = yield* BabelTranspiler.make()
        const b = yield* BabelTranspiler.make({ maxSourceBytes: 1 })
        expect(a.fingerprint).toBe(BabelTranspiler.pipelineFingerprint())
        expect(a.fingerprint).toBe(
          BabelTranspiler.fingerprintOf({
            versions: BabelTranspiler.pipelineVersions(),
            config: BabelTranspiler.pipelineConfig
          })
        )
        expect(b.fingerprint).toBe(a.fingerprint)
        expect(
          BabelTranspiler.fingerprintOf({
            versions: BabelTranspiler.pipelineVersions(),
            config: { ...BabelTranspiler.pipelineConfig, transpiler: BabelTranspiler.pipelineConfig.transpiler + 1 }
          })
        ).not.toBe(a.fingerprint)
      }))
  })

  describe("layers", () => {
    it.effect("layer provides the Transpiler", () =>
      Effect.gen(function*() {
        const t = yield* Transpiler
        const module = yield* t.transpile({ path: "a.js", source: `import "x"` })
        expect(module.dependencyKeys).toEqual(["x"])
      }).pipe(Effect.provide(BabelTranspiler.layer())))

    it.effect("layerConfig reads MTC_MAX_SOURCE_BYTES", () =>
      Effect.gen(function*() {
        const t = yield* Transpiler
        const error = yield* Effect.flip(t.transpile({ path: "a.js", source: "export const abc = 1" }))
        expect({ ...error }).toEqual({ _tag: "SourceTooLargeError", path: "a.js", size: 20, limit: 16 })
      }).pipe(
        Effect.provide(
          BabelTranspiler.layerConfig.pipe(
            Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { MTC_MAX_SOURCE_BYTES: "16" } })))
          )
        )
      ))

    it.effect("layerConfig defaults to 8 MiB", () =>
      Effect.gen(function*() {
        expect(defaultMaxSourceBytes).toBe(8 * 1024 * 1024)
        const t = yield* Transpiler
        const big = `export const s = "${"x".repeat(1024 * 1024)}"\n`
        const module = yield* t.transpile({ path: "a.js", source: big })
        expect(module.body.length).toBeGreaterThan(1024 * 1024)
        const error = yield* Effect.flip(t.transpile({ path: "a.js", source: "x".repeat(8 * 1024 * 1024 + 1) }))
        expect(error).toMatchObject({ _tag: "SourceTooLargeError", limit: 8 * 1024 * 1024 })
      }).pipe(
        Effect.provide(
          BabelTranspiler.layerConfig.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} }))))
        )
      ))
  })
})
