/**
 * Unit tests of the modules the Babel transpiler is made of: module kinds, the compiled
 * module, content-tag, error positions (source maps read by @jridgewell/trace-mapping),
 * the options and what they select, and one Babel run.
 */
import { parse } from "@babel/parser"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { hashSource, javascriptContentType } from "../src/domain/Domain.ts"
import { TranspileError } from "../src/domain/Errors.ts"
import * as Babel from "../src/transpiler/Babel.ts"
import { dependencyKeysOf, javascriptModule } from "../src/transpiler/CompiledModule.ts"
import * as ContentTag from "../src/transpiler/ContentTag.ts"
import { fingerprintFor, fingerprintOfPipeline } from "../src/transpiler/Fingerprint.ts"
import { hasTemplates, isDeclarationFile, moduleKindOf, supportedExtensions } from "../src/transpiler/ModuleKind.ts"
import * as Standard from "../src/transpiler/pipelines/Standard.ts"
import {
  fromThrown,
  inModuleSource,
  inTemplate,
  originalPosition,
  toTranspileError
} from "../src/transpiler/TranspileErrors.ts"
import { engineOf, optionsConfig, pipelineOf } from "../src/transpiler/TranspilerOptions.ts"

const fields = (error: TranspileError) => ({ message: error.message, line: error.line, column: error.column })

describe("ModuleKind", () => {
  it("maps extensions to kinds, case-insensitively, and nothing else", () => {
    expect(supportedExtensions).toEqual([".ts", ".mts", ".gts", ".js", ".mjs", ".gjs"])
    expect(["a.ts", "a.MTS", "a.gts", "a.js", "a.mjs", "a.GJS"].map(moduleKindOf)).toEqual(["ts", "ts", "gts", "js", "js", "gjs"])
    expect(moduleKindOf("a.json")).toBeUndefined()
    expect(moduleKindOf("toString")).toBeUndefined()
  })

  it("knows declaration files and the kinds with templates", () => {
    expect([isDeclarationFile("x.d.ts"), isDeclarationFile("x.D.MTS"), isDeclarationFile("x.ts")]).toEqual([true, true, false])
    expect((["ts", "gts", "js", "gjs"] as const).map(hasTemplates)).toEqual([false, true, false, true])
  })
})

describe("CompiledModule", () => {
  it("serves JavaScript with the source's hash", () => {
    expect(javascriptModule("src", "body", ["a"])).toEqual({
      body: "body",
      headers: { "content-type": javascriptContentType },
      dependencyKeys: ["a"],
      sourceHash: hashSource("src")
    })
  })

  it("reads the specifiers of Boxel's loader imports", () => {
    const ast = parse(
      [
        `import.meta.loader.import(new URL("./card", import.meta.url).href)`,
        "import.meta.loader.import(`bare`)",
        `import.meta.loader.import(dynamic)`
      ].join("\n"),
      { sourceType: "module" }
    )
    expect(dependencyKeysOf(ast)).toEqual(["./card", "bare"])
  })
})

describe("ContentTag", () => {
  it("turns templates into calls with a source map, and lists them", () => {
    const contentTag = ContentTag.make()
    const source = "const x = 1\nexport default <template>hi {{x}}</template>\n"
    const processed = contentTag.process(source, "a.gjs")
    expect(processed.code).toContain("template_")
    expect(JSON.parse(processed.map)).toMatchObject({ version: 3 })
    expect(contentTag.templates(source, "a.gjs").map((t) => t.contents)).toEqual(["hi {{x}}"])
  })

  it("throws a parse error it can be told by, and keeps working", () => {
    const contentTag = ContentTag.make()
    let thrown: unknown
    try {
      contentTag.process("export default <template>hi\n", "b.gjs")
    } catch (cause) {
      thrown = cause
    }
    expect(ContentTag.parseErrorPattern.test(String((thrown as { message?: unknown }).message))).toBe(true)
    expect(contentTag.process("export default <template>ok</template>\n", "c.gjs").code).toContain("template_")
  })
})

describe("TranspileErrors", () => {
  // line 1: col 0 -> 1:0, col 4 -> 1:4; line 2: col 0 -> 2:4, col 4 -> 2:10
  const map = JSON.stringify({ version: 3, sources: ["a"], names: [], mappings: "AAAA,IAAI;AACA,IAAM" })

  it("maps through a source map: the last mapping at or before the column, else the line's first", () => {
    expect(originalPosition(map, 1, 0)).toEqual({ line: 1, column: 0 })
    expect(originalPosition(map, 2, 100)).toEqual({ line: 2, column: 10 })
    expect(originalPosition(map, 0, 0)).toBeUndefined()
    expect(originalPosition(map, 3, 0)).toBeUndefined()
    // a segment without a source maps nothing: the first mapping of the line answers
    const sourceless = JSON.stringify({ version: 3, sources: ["a"], names: [], mappings: "A,EACE" })
    expect(originalPosition(sourceless, 1, 0)).toEqual({ line: 2, column: 2 })
  })

  it("moves an error into the module's source, or drops a position that has no mapping", () => {
    const error = new TranspileError({ path: "a.gts", message: "Unexpected (2:5)", line: 2, column: 5 })
    expect(fields(inModuleSource(error, undefined))).toEqual({ message: "Unexpected (2:5)", line: 2, column: 5 })
    expect(fields(inModuleSource(error, { code: "", map }))).toEqual({ message: "Unexpected (2:10)", line: 2, column: 10 })
    const unmapped = new TranspileError({ path: "a.gts", message: "Unexpected (9:0)", line: 9, column: 0 })
    expect(fields(inModuleSource(unmapped, { code: "", map }))).toEqual({ message: "Unexpected", line: undefined, column: undefined })
  })

  it("reads positions from Babel's loc, its message, its code frame, or content-tag's message", () => {
    expect(fields(toTranspileError("a.ts", Object.assign(new Error("/x/a.ts: Bad (3:4)"), { loc: { line: 3, column: 4 } }))))
      .toEqual({ message: "Bad (3:4)", line: 3, column: 4 })
    expect(fields(toTranspileError("a.ts", new Error("a.ts: Bad (5:6)")))).toEqual({ message: "Bad (5:6)", line: 5, column: 6 })
    expect(fields(toTranspileError("a.ts", new Error("a.ts: Scope problem\n  1 | ok\n> 2 | let x\n    |     ^"))))
      .toEqual({ message: "Scope problem (2:4)", line: 2, column: 4 })
    expect(
      fields(toTranspileError("a.gts", { message: "Parse Error at a.gts:2:9: 2:10", source_code: "  × Expression expected" }))
    ).toEqual({ message: "Expression expected (2:8)", line: 2, column: 8 })
    expect(fields(toTranspileError("a.ts", ""))).toEqual({ message: "transpile failed", line: undefined, column: undefined })
  })

  it("keeps an error already made", () => {
    const error = new TranspileError({ path: "a.ts", message: "kept" })
    expect(fromThrown("a.ts", { code: "", map })(error)).toBe(error)
  })

  it("points a template compiler error without a position at its template", () => {
    const source = "const a = 1\nexport default <template>\n  {{#if}}\n</template>\n"
    const templates = ContentTag.make().templates(source, "a.gjs")
    const error = new TranspileError({ path: "a.gjs", message: "scoped CSS failed:" })
    expect(fields(inTemplate(error, source, () => templates, new Error("scoped CSS failed"))))
      .toEqual({ message: "scoped CSS failed (2:15)", line: 2, column: 15 })
    const positioned = new TranspileError({ path: "a.gjs", message: "x (1:0)", line: 1, column: 0 })
    expect(inTemplate(positioned, source, () => templates, undefined)).toBe(positioned)
    const unparsable = () => {
      throw new Error("no templates")
    }
    expect(inTemplate(error, source, unparsable, undefined)).toBe(error)
  })
})

describe("TranspilerOptions", () => {
  it.effect("select the pipeline, and the engine that runs it", () =>
    Effect.gen(function*() {
      const standard = yield* pipelineOf({})
      expect(standard.name).toBe("standard")
      expect(engineOf(standard, {})).toBe("native")
      expect(engineOf(standard, { engine: "babel" })).toBe("babel")
      const ember = yield* pipelineOf({ pipeline: "ember" })
      expect(engineOf(ember, { engine: "native" })).toBe("babel")
      expect(yield* fingerprintFor({ engine: "babel" })).toBe(fingerprintOfPipeline(standard, "babel"))
      expect(fingerprintOfPipeline(standard, "babel")).not.toBe(fingerprintOfPipeline(standard, "native"))
    }))

  it.effect("fail with a PipelineLoadError for an ember-source without a template compiler", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(pipelineOf({ pipeline: "boxel", emberSource: "/nonexistent/ember-source" }))
      expect(error._tag).toBe("PipelineLoadError")
      expect(error.pipeline).toBe("boxel")
      expect(error.message).toContain("not an ember-source directory")
    }))

  it.effect("are read from the environment", () =>
    Effect.gen(function*() {
      const options = yield* optionsConfig.parse(
        ConfigProvider.fromEnv({ env: { MTC_PIPELINE: "ember", MTC_ENGINE: "babel", MTC_EMBER_SOURCE: "/e" } })
      )
      expect(options).toEqual({ maxSourceBytes: 8 * 1024 * 1024, pipeline: "ember", engine: "babel", sourceMaps: true, emberSource: "/e" })
    }))
})

describe("Babel", () => {
  it("runs a pipeline over a module, and reports its errors in the module's own source", () => {
    const pipeline = Standard.make()
    const { map, module } = Babel.run(pipeline, {
      path: "a.ts",
      source: `import { b } from "./b"\nexport const a: number = b\n`,
      kind: "ts",
      preprocessed: undefined,
      sourceMaps: false
    })
    expect(map).toBeUndefined()
    expect(module.dependencyKeys).toEqual(["./b"])
    expect(module.body).not.toContain(": number")
    const source = "let x = 1\nexport default <template>{{x}}</template>\nlet x = 2\n"
    const preprocessed = ContentTag.make().process(source, "a.gjs")
    let thrown: unknown
    try {
      Babel.run(pipeline, { path: "a.gjs", source, kind: "gjs", preprocessed, sourceMaps: true })
    } catch (cause) {
      thrown = cause
    }
    expect(thrown).toBeInstanceOf(TranspileError)
    expect((thrown as TranspileError).line).toBe(3)
  })
})
