/**
 * One Babel run of a pipeline's plugins over a module (after content-tag for a
 * `.gts`/`.gjs`), to the module served. Errors come out as {@link TranspileError}s in the
 * module's own source.
 *
 * @since 0.1.0
 */
import type { FileResult, InputOptions, types } from "@babel/core"
import { babelCore } from "./BabelCore.ts"
import type { TranspiledModule } from "../domain/Domain.ts"
import { TranspileError } from "../domain/Errors.ts"
import { dependencyKeysOf, javascriptModule } from "./CompiledModule.ts"
import type { Preprocessed } from "./ContentTag.ts"
import type { ModuleKind, Pipeline } from "./pipelines/Pipeline.ts"
import { parseMap, type RawSourceMap } from "./SourceMaps.ts"
import { fromThrown, inModuleSource } from "./TranspileErrors.ts"

/** Babel's options besides the file name and plugins (part of the fingerprint). */
export const babelOptions = {
  babelrc: false,
  configFile: false,
  browserslistConfigFile: false,
  sourceType: "module",
  sourceMaps: false,
  compact: false,
  highlightCode: false,
  ast: true,
  code: true
} as const satisfies InputOptions

/** A module to run: its path and source, its kind, content-tag's output when it ran, and whether to map it. */
interface BabelInput {
  readonly path: string
  readonly source: string
  readonly kind: ModuleKind
  readonly preprocessed: Preprocessed | undefined
  readonly sourceMaps: boolean
}

/** A module Babel compiled, and its source map back to the module's source when one was asked for. */
export interface Compiled {
  readonly module: TranspiledModule
  readonly map: RawSourceMap | undefined
}

/** The position of the first decorator left in a compiled AST, if any. */
const leftoverDecorator = (ast: types.Node): { readonly line: number; readonly column: number } | undefined => {
  let found: { readonly line: number; readonly column: number } | undefined
  babelCore().types.traverseFast(ast, (node) => {
    if (found === undefined && node.type === "Decorator") {
      found = node.loc ? { line: node.loc.start.line, column: node.loc.start.column } : { line: 1, column: 0 }
    }
  })
  return found
}

/**
 * The map Babel starts from: content-tag's (so Babel's map reaches the `.gts` source), else
 * none. Never a map the source names itself (`inputSourceMap: true` would read an inline one).
 */
const inputMapOf = (preprocessed: Preprocessed | undefined): NonNullable<InputOptions["inputSourceMap"]> => {
  const map = preprocessed === undefined ? undefined : parseMap(preprocessed.map)
  if (map === undefined) return false
  return { version: 3, file: "", sources: map.sources.map((s) => s ?? ""), names: [...map.names], mappings: map.mappings }
}

/** Babel's options for a module, with the map it starts from (see {@link inputMapOf}, parsed once per run) when maps are asked for. */
const optionsOf = (pipeline: Pipeline, input: BabelInput, inputMap: ReturnType<typeof inputMapOf>): InputOptions => ({
  ...babelOptions,
  filename: input.path,
  plugins: pipeline.plugins()[input.kind],
  ...(input.sourceMaps ? { sourceMaps: true, inputSourceMap: inputMap } : { inputSourceMap: false })
})

/** Babel's output as the module served; throws a {@link TranspileError} for a decorator no plugin compiled. */
const toModule = (
  pipeline: Pipeline,
  input: BabelInput,
  inputMap: ReturnType<typeof inputMapOf>,
  result: FileResult | null
): Compiled => {
  if (!result || typeof result.code !== "string" || !result.ast) {
    throw new Error("Babel produced no output")
  }
  // A decorator no plugin compiled (decorator-transforms leaves those on private members) would not
  // parse in a browser. (The standard pipeline's decorators plugin compiles every decorator or fails.)
  const decorator = pipeline.name === "standard" ? undefined : leftoverDecorator(result.ast)
  if (decorator !== undefined) {
    throw inModuleSource(
      new TranspileError({
        path: input.path,
        message: `this decorator cannot be compiled by the ${pipeline.name} pipeline (${decorator.line}:${decorator.column})`,
        ...decorator
      }),
      input.preprocessed
    )
  }
  const module = javascriptModule(input.source, result.code, dependencyKeysOf(result.ast))
  // A `.gts` whose content-tag map did not parse gets none: Babel's would point at content-tag's code.
  const mapped = input.sourceMaps && (input.preprocessed === undefined || inputMap !== false)
  return { module, map: mapped && result.map ? result.map : undefined }
}

/** Runs a synchronous pipeline; throws a {@link TranspileError} (or a defect). */
export const run = (pipeline: Pipeline, input: BabelInput): Compiled => {
  const inputMap = input.sourceMaps ? inputMapOf(input.preprocessed) : false
  let result: FileResult | null
  try {
    result = babelCore().transformSync(input.preprocessed?.code ?? input.source, optionsOf(pipeline, input, inputMap))
  } catch (cause) {
    throw fromThrown(input.path, input.preprocessed)(cause)
  }
  return toModule(pipeline, input, inputMap, result)
}

/** Runs a pipeline whose plugins load asynchronously (the template compiler's); rejects with what Babel threw. */
export const runAsync = (pipeline: Pipeline, input: BabelInput): Promise<Compiled> => {
  const inputMap = input.sourceMaps ? inputMapOf(input.preprocessed) : false
  return babelCore().transformAsync(input.preprocessed?.code ?? input.source, optionsOf(pipeline, input, inputMap))
    .then((result) => toModule(pipeline, input, inputMap, result))
}
