/**
 * The Babel 8 implementation of the {@link Transpiler} service.
 *
 * A pipeline is chosen per transpiler (`options.pipeline`, see `src/transpiler/pipelines/`):
 *
 * - `standard` (the default): TypeScript, standard (2023-11) decorators, and content-tag's
 *   runtime `template()` calls;
 * - `ember`: what Ember's build emits: legacy decorators (decorator-transforms) and
 *   templates precompiled to wire format by ember-source's template compiler;
 * - `boxel`: `ember` plus glimmer-scoped-css, ember-concurrency's async tasks and Boxel's
 *   loader rewrites of `fetch` and `import()`.
 *
 * Within a pipeline the plugins are chosen by the module's extension: `.ts`/`.mts`
 * (TypeScript), `.gts` (content-tag, then as `.ts`), `.gjs` (content-tag, then as `.js`),
 * `.js`/`.mjs`. A `.d.ts` (or `.d.mts`) file is an empty module.
 *
 * @since 0.1.0
 */
import { transformAsync, transformSync, types, type InputOptions } from "@babel/core"
import { Preprocessor } from "content-tag"
import { Config, Effect, Layer, Option } from "effect"
import { createRequire } from "node:module"
import { posix } from "node:path"
import { defaultMaxSourceBytes, hashSource, javascriptContentType, type TranspiledModule } from "../domain/Domain.ts"
import { SourceTooLargeError, TranspileError } from "../domain/Errors.ts"
import { messageOf } from "../internal/errors.ts"
import * as Oxc from "./engines/Oxc.ts"
import * as Boxel from "./pipelines/Boxel.ts"
import * as Ember from "./pipelines/Ember.ts"
import {
  isPipelineName,
  type ModuleKind,
  type Pipeline,
  PipelineLoadError,
  type PipelineName,
  pipelineNames,
  readVersion,
  versionOf
} from "./pipelines/Pipeline.ts"
import * as Standard from "./pipelines/Standard.ts"
import { relativePosition, templateErrorPosition } from "./pipelines/TemplateErrors.ts"
import { Transpiler, type TranspileInput } from "../domain/Transpiler.ts"

export { isPipelineName, PipelineLoadError, type PipelineName, pipelineNames }
export { defaultEngine, type EngineName, engineNames, isEngineName } from "./engines/Oxc.ts"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * The options of {@link make}: plain data (a worker thread gets them by structured clone
 * and makes its own transpiler, with the same fingerprint).
 */
export interface BabelTranspilerOptions {
  /** The largest source, in UTF-8 bytes, that is transpiled. Defaults to {@link defaultMaxSourceBytes}. */
  readonly maxSourceBytes?: number
  /** The pipeline: `standard` (the default), `ember` or `boxel`. */
  readonly pipeline?: PipelineName
  /**
   * The `ember-source` directory whose template compiler the `ember` and `boxel` pipelines
   * use (the version the host runs). Defaults to the one this package depends on.
   */
  readonly emberSource?: string
  /**
   * The engine of the `standard` pipeline: `native` (oxc-transform, the default) or
   * `babel`. The `ember` and `boxel` pipelines always run Babel.
   */
  readonly engine?: Oxc.EngineName
}

/** The default pipeline of {@link make} and of the CLI. */
export const defaultPipeline: PipelineName = "standard"

// -----------------------------------------------------------------------------
// Pipeline configuration
// -----------------------------------------------------------------------------

/** The kinds of module, each with its own plugins in every pipeline. */
export type { ModuleKind }

const kindsByExtension: Readonly<Record<string, ModuleKind>> = {
  ".ts": "ts",
  ".mts": "ts",
  ".gts": "gts",
  ".js": "js",
  ".mjs": "js",
  ".gjs": "gjs"
}

/** The extensions the transpiler accepts. */
export const supportedExtensions: ReadonlyArray<string> = Object.keys(kindsByExtension)

/**
 * The kind of module a path names, from its extension, or `undefined` when the extension
 * is not one the transpiler handles.
 */
export const moduleKindOf = (path: string): ModuleKind | undefined => {
  const extension = posix.extname(path).toLowerCase()
  return Object.hasOwn(kindsByExtension, extension) ? kindsByExtension[extension] : undefined
}

/** Whether a path names a TypeScript declaration file (`.d.ts`, `.d.mts`): a module with no runtime content. */
export const isDeclarationFile = (path: string): boolean => /\.d\.m?ts$/i.test(path)

const babelOptions = {
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

/** What this module itself contributes to every pipeline's configuration. */
const transpilerConfig = {
  transpiler: 2,
  babel: babelOptions,
  contentTag: { kinds: ["gts", "gjs"], inline_source_map: false },
  extensions: kindsByExtension,
  declarationFiles: "empty"
} as const

/** The configuration of a pipeline as it goes into the fingerprint: the pipeline's own and the transpiler's. */
export const configOf = (pipeline: Pipeline): typeof transpilerConfig & { readonly pipeline: unknown } => ({
  ...transpilerConfig,
  pipeline: pipeline.config
})

/**
 * Everything besides package versions that decides the output of the `standard`
 * pipeline with its default (native) engine. It goes into the fingerprint.
 */
export const pipelineConfig = { ...configOf(Standard.make()), engine: Oxc.config }

// -----------------------------------------------------------------------------
// Fingerprint
// -----------------------------------------------------------------------------

/** What a fingerprint is computed from. */
export interface FingerprintParts {
  /** Package name to installed version. */
  readonly versions: Readonly<Record<string, string>>
  /** The pipeline configuration, any JSON value. */
  readonly config: unknown
}

const stableJson = (value: unknown): string => {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(",")}}`
  }
  return JSON.stringify(value) ?? "null"
}

/**
 * The hex SHA-256 of the package versions and configuration, serialised as JSON with
 * sorted keys, so the same parts always give the same fingerprint.
 */
export const fingerprintOf = (parts: FingerprintParts): string =>
  hashSource(stableJson({ versions: parts.versions, config: parts.config }))

let cachedCoreVersions: Readonly<Record<string, string>> | undefined

/** The installed versions of the packages every pipeline uses: @babel/core, the parser and generator it uses, and content-tag. */
const coreVersions = (): Readonly<Record<string, string>> => {
  if (cachedCoreVersions !== undefined) return cachedCoreVersions
  const require = createRequire(import.meta.url)
  const coreRequire = createRequire(require.resolve("@babel/core"))
  cachedCoreVersions = {
    "@babel/core": readVersion(require.resolve("@babel/core/package.json")),
    "@babel/parser": readVersion(coreRequire.resolve("@babel/parser/package.json")),
    "@babel/generator": readVersion(coreRequire.resolve("@babel/generator/package.json")),
    "content-tag": versionOf(require, "content-tag")
  }
  return cachedCoreVersions
}

/** The installed versions of every package that makes a pipeline's output. */
export const versionsOf = (pipeline: Pipeline): Readonly<Record<string, string>> => ({
  ...coreVersions(),
  ...pipeline.versions
})

/**
 * The installed versions of the packages that make the output of the `standard`
 * pipeline: @babel/core (and the parser and generator it uses), its plugins,
 * @glimmer/syntax, content-tag, and oxc-transform and oxc-parser (the default engine).
 */
export const pipelineVersions = (): Readonly<Record<string, string>> => ({ ...versionsOf(Standard.make()), ...Oxc.versions() })

/** The fingerprint of the `standard` pipeline as installed. */
export const pipelineFingerprint = (): string => fingerprintOfPipeline(Standard.make(), Oxc.defaultEngine)

/**
 * The pipeline that options choose, loaded (the template compiler of `ember`/`boxel` is
 * loaded synchronously, once per ember-source directory).
 */
export const pipelineOf = (options: BabelTranspilerOptions = {}): Effect.Effect<Pipeline, PipelineLoadError> =>
  Effect.try({
    try: () => {
      const name = options.pipeline ?? defaultPipeline
      switch (name) {
        case "standard":
          return Standard.make()
        case "ember":
          return Ember.make(options.emberSource)
        case "boxel":
          return Boxel.make(options.emberSource)
      }
    },
    catch: (cause) =>
      cause instanceof PipelineLoadError
        ? cause
        : new PipelineLoadError({ pipeline: options.pipeline ?? defaultPipeline, message: messageOf(cause) })
  })

/**
 * The fingerprint of the pipeline that options choose: a deterministic function of the
 * options and the installed packages (the pipeline name, every plugin's version and
 * options, and the template compiler's version), the same in every thread and process.
 */
export const fingerprintFor = (options: BabelTranspilerOptions = {}): Effect.Effect<string, PipelineLoadError> =>
  Effect.map(pipelineOf(options), (pipeline) => fingerprintOfPipeline(pipeline, engineOf(pipeline, options)))

/** The engine that runs a pipeline under the options: `native` only for `standard`. */
export const engineOf = (pipeline: Pipeline, options: BabelTranspilerOptions): Oxc.EngineName =>
  pipeline.name === "standard" ? options.engine ?? Oxc.defaultEngine : "babel"

/**
 * The fingerprint of a pipeline run by an engine. With the Babel engine it is what it
 * always was; the native engine adds its configuration and the oxc packages' versions.
 */
export const fingerprintOfPipeline = (pipeline: Pipeline, engine: Oxc.EngineName): string =>
  engine === "native"
    ? fingerprintOf({
      versions: { ...versionsOf(pipeline), ...Oxc.versions() },
      config: { ...configOf(pipeline), engine: Oxc.config }
    })
    : fingerprintOf({ versions: versionsOf(pipeline), config: configOf(pipeline) })

// -----------------------------------------------------------------------------
// Dependencies
// -----------------------------------------------------------------------------

const literalSpecifier = (node: types.Node | null | undefined): string | undefined => {
  if (!node) return undefined
  if (node.type === "StringLiteral") return node.value
  if (node.type === "TemplateLiteral" && node.expressions.length === 0 && node.quasis.length === 1) {
    return node.quasis[0]?.value.cooked ?? undefined
  }
  return undefined
}

const isMember = (node: types.Node, object: (o: types.Node) => boolean, property: string): boolean =>
  node.type === "MemberExpression" && !node.computed && node.property.type === "Identifier" &&
  node.property.name === property && object(node.object)

const isImportMeta = (node: types.Node): boolean =>
  node.type === "MetaProperty" && node.meta.name === "import" && node.property.name === "meta"

/** `import.meta.loader.import` */
const isLoaderImport = (node: types.Node): boolean =>
  isMember(node, (loader) => isMember(loader, isImportMeta, "loader"), "import")

/** The specifier of `x` or `new URL(x, import.meta.url).href`, `x` a literal. */
const loaderSpecifier = (node: types.Node): string | undefined => {
  if (
    node.type === "MemberExpression" && !node.computed && node.property.type === "Identifier" &&
    node.property.name === "href" && node.object.type === "NewExpression" &&
    node.object.callee.type === "Identifier" && node.object.callee.name === "URL"
  ) {
    const [first, second] = node.object.arguments
    return first && second && isMember(second, isImportMeta, "url") ? literalSpecifier(first) : undefined
  }
  return literalSpecifier(node)
}

/**
 * The specifiers a module's AST imports: static imports, `export ... from`, and dynamic
 * `import()` of a string literal or a template literal without substitutions (also as
 * Boxel's `import.meta.loader.import(...)`). Deduplicated,
 * in first-seen order, exactly as written.
 */
export const dependencyKeysOf = (ast: types.Node): ReadonlyArray<string> => {
  const seen = new Set<string>()
  const add = (specifier: string | undefined) => {
    if (specifier !== undefined) seen.add(specifier)
  }
  types.traverseFast(ast, (node) => {
    switch (node.type) {
      case "ImportDeclaration":
        if (node.importKind !== "type" && node.importKind !== "typeof") add(node.source.value)
        break
      case "ExportAllDeclaration":
        if (node.exportKind !== "type") add(node.source.value)
        break
      case "ExportNamedDeclaration":
        if (node.source && node.exportKind !== "type") add(node.source.value)
        break
      case "ImportExpression":
        add(literalSpecifier(node.source))
        break
      case "CallExpression":
        if (node.callee.type === "Import") {
          const [first] = node.arguments
          add(first && first.type !== "SpreadElement" && first.type !== "ArgumentPlaceholder" ? literalSpecifier(first) : undefined)
        } else if (isLoaderImport(node.callee)) {
          // Boxel's loader rewrite: import.meta.loader.import(x) or (new URL(x, import.meta.url).href)
          const [first] = node.arguments
          add(first && first.type !== "SpreadElement" && first.type !== "ArgumentPlaceholder" ? loaderSpecifier(first) : undefined)
        }
        break
    }
  })
  return Array.from(seen)
}

// -----------------------------------------------------------------------------
// Errors
// -----------------------------------------------------------------------------

const isRecord = (u: unknown): u is Record<string, unknown> => u !== null && typeof u === "object"

const contentTagError = /Parse Error at (.*):(\d+):(\d+): \d+:\d+/

/** The position of the first decorator left in a compiled AST, if any. */
const leftoverDecorator = (ast: types.Node): { readonly line: number; readonly column: number } | undefined => {
  let found: { readonly line: number; readonly column: number } | undefined
  types.traverseFast(ast, (node) => {
    if (found === undefined && node.type === "Decorator") {
      found = node.loc ? { line: node.loc.start.line, column: node.loc.start.column } : { line: 1, column: 0 }
    }
  })
  return found
}

/**
 * Turns anything thrown by content-tag or Babel into a {@link TranspileError}. Lines are
 * 1-based and columns 0-based, as Babel reports them.
 */
export const toTranspileError = (path: string, cause: unknown): TranspileError => {
  const raw = messageOf(cause)
  const firstLine = raw.split("\n", 1)[0] ?? raw
  // content-tag: "Parse Error at foo.gts:2:9: 2:10", the reason in `source_code` ("  × Expression expected").
  const tag = contentTagError.exec(firstLine)
  if (tag && isRecord(cause)) {
    const line = Number(tag[2])
    const column = Number(tag[3]) - 1
    const detail = typeof cause.source_code === "string" ? /×\s*(.+)/.exec(cause.source_code)?.[1]?.trim() : undefined
    return new TranspileError({ path, message: `${detail ?? "Parse error"} (${line}:${column})`, line, column })
  }
  // Babel: "/abs/path/foo.ts: Unexpected token (1:8)", then a code frame; `loc` holds the position.
  const marker = `${path}: `
  const at = firstLine.indexOf(marker)
  const message = at >= 0 ? firstLine.slice(at + marker.length) : firstLine
  const loc = isRecord(cause) && isRecord(cause.loc) ? cause.loc : undefined
  if (loc && typeof loc.line === "number" && typeof loc.column === "number") {
    return new TranspileError({ path, message, line: loc.line, column: loc.column })
  }
  const position = /\((\d+):(\d+)\)$/.exec(message)
  if (position) {
    return new TranspileError({ path, message, line: Number(position[1]), column: Number(position[2]) })
  }
  // Errors of plugins and scope checks (`path.buildCodeFrameError`) carry only a code frame.
  const frame = codeFrameLocation(raw)
  if (frame) return new TranspileError({ path, message: `${message} (${frame.line}:${frame.column})`, ...frame })
  return new TranspileError({ path, message: message === "" ? "transpile failed" : message })
}

/**
 * Moves a {@link TranspileError}'s position (and the `(line:column)` at the end of its
 * message) through a source map. Without a mapping the position is dropped rather than
 * left pointing at generated code.
 */
const remapTranspileError = (error: TranspileError, map: string): TranspileError => {
  if (error.line === undefined || error.column === undefined) return error
  let original: { readonly line: number; readonly column: number } | undefined
  try {
    original = originalPosition(map, error.line, error.column)
  } catch {
    original = undefined
  }
  const bare = error.message.replace(/ \(\d+:\d+\)$/, "")
  return original
    ? new TranspileError({ path: error.path, message: `${bare} (${original.line}:${original.column})`, ...original })
    : new TranspileError({ path: error.path, message: bare })
}

/**
 * The position a Babel code frame points at: the line after `>`, the column of the first
 * `^` under it (frames are printed without colours, `highlightCode: false`).
 */
const codeFrameLocation = (text: string): { readonly line: number; readonly column: number } | undefined => {
  const lines = text.split("\n")
  for (let i = 0; i < lines.length - 1; i++) {
    const marked = /^>\s*(\d+) \|/.exec(lines[i] ?? "")
    if (!marked) continue
    const carets = /^(\s*\| )(\s*)\^/.exec(lines[i + 1] ?? "")
    if (!carets) return undefined
    return { line: Number(marked[1]), column: carets[2]?.length ?? 0 }
  }
  return undefined
}

// -----------------------------------------------------------------------------
// Source maps (content-tag output back to the module's own lines)
// -----------------------------------------------------------------------------

const base64Digits = new Map(
  Array.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", (char, i) => [char, i] as const)
)

/** Decodes one line of VLQ segments, each the list of its (relative) fields. */
const decodeSegments = (line: string): Array<Array<number>> => {
  const segments: Array<Array<number>> = []
  for (const text of line.split(",")) {
    if (text === "") continue
    const fields: Array<number> = []
    let value = 0
    let shift = 0
    for (const char of text) {
      const digit = base64Digits.get(char)
      if (digit === undefined) return segments
      value += (digit & 31) << shift
      if (digit & 32) {
        shift += 5
      } else {
        fields.push(value & 1 ? -(value >>> 1) : value >>> 1)
        value = 0
        shift = 0
      }
    }
    segments.push(fields)
  }
  return segments
}

/**
 * Maps a position of generated code (line 1-based, column 0-based) back through a v3
 * source map to the position in its source: the last mapping at or before the column,
 * else the first on the line. `undefined` when the line has no mapping.
 */
export const originalPosition = (
  map: string,
  line: number,
  column: number
): { readonly line: number; readonly column: number } | undefined => {
  const parsed: unknown = JSON.parse(map)
  if (!isRecord(parsed) || typeof parsed.mappings !== "string") return undefined
  const lines = parsed.mappings.split(";")
  if (line < 1 || line > lines.length) return undefined
  // source line and column are relative to the previous segment across the whole map
  let sourceLine = 0
  let sourceColumn = 0
  for (let i = 0; i < line; i++) {
    let generatedColumn = 0
    let best: { readonly line: number; readonly column: number } | undefined
    let first: { readonly line: number; readonly column: number } | undefined
    for (const fields of decodeSegments(lines[i] ?? "")) {
      generatedColumn += fields[0] ?? 0
      if (fields.length < 4) continue
      sourceLine += fields[2] ?? 0
      sourceColumn += fields[3] ?? 0
      if (i !== line - 1) continue
      const position = { line: sourceLine + 1, column: sourceColumn }
      first ??= position
      if (generatedColumn <= column) best = position
    }
    if (i === line - 1) return best ?? first
  }
  return undefined
}

// -----------------------------------------------------------------------------
// Constructors
// -----------------------------------------------------------------------------

const emptyModule = (source: string): TranspiledModule => ({
  body: "",
  headers: { "content-type": javascriptContentType },
  dependencyKeys: [],
  sourceHash: hashSource(source)
})

/**
 * Makes a Babel {@link Transpiler} running the pipeline the options choose. The
 * content-tag preprocessor is created on first use. Fails when the pipeline cannot be
 * loaded (an `emberSource` without a template compiler).
 */
export const make = (options: BabelTranspilerOptions = {}): Effect.Effect<Transpiler["Service"], PipelineLoadError> =>
  Effect.map(pipelineOf(options), (pipeline) => {
    const limit = options.maxSourceBytes ?? defaultMaxSourceBytes
    const engine = engineOf(pipeline, options)
    const fingerprint = fingerprintOfPipeline(pipeline, engine)
    let preprocessor: Preprocessor | undefined

    const runContentTag = (source: string, filename: string): { readonly code: string; readonly map: string } => {
      preprocessor ??= new Preprocessor()
      let result: { code: string; map: string }
      try {
        result = preprocessor.process(source, { filename })
      } catch (cause) {
        // Anything but a parse error may have left the WASM instance in a bad state:
        // start a fresh preprocessor next time.
        if (!contentTagError.test(messageOf(cause))) preprocessor = undefined
        throw cause
      }
      try {
        return { code: result.code, map: result.map }
      } finally {
        // a wasm-bindgen object: free its memory now rather than at finalization
        if ("free" in result && typeof result.free === "function") result.free()
      }
    }

    const toError = (path: string, preprocessed: { readonly map: string } | undefined) => (cause: unknown): TranspileError => {
      if (cause instanceof TranspileError) return cause
      const error = toTranspileError(path, cause)
      // Babel saw content-tag's output: point at the module's own source instead.
      return preprocessed ? remapTranspileError(error, preprocessed.map) : error
    }

    /**
     * An error of the template compiler has no position Babel knows: find its template in
     * the module's source (content-tag's `parse`) and move Glimmer's position there.
     */
    const templateError = (path: string, source: string, cause: unknown, error: TranspileError): TranspileError => {
      if (error.line !== undefined) return error
      let templates: ReturnType<Preprocessor["parse"]>
      try {
        preprocessor ??= new Preprocessor()
        templates = preprocessor.parse(source, { filename: path })
      } catch {
        return error
      }
      if (templates.length === 0) return error
      const position = templateErrorPosition(source, templates, cause)
      if (position === undefined) return error
      // Handlebars' first line says "Parse error on line 1:" (of the template); its last says what was expected.
      const lines = messageOf(cause).split("\n").map((line) => line.trim()).filter((line) => line !== "")
      const detail = relativePosition(cause) !== undefined && /^Parse error on line/.test(error.message)
        ? `Template parse error: ${lines[lines.length - 1] ?? error.message}`
        : error.message.replace(/\s*:?\s*$/, "")
      return new TranspileError({ path, message: `${detail} (${position.line}:${position.column})`, ...position })
    }

    const toModule = (
      path: string,
      source: string,
      preprocessed: { readonly map: string } | undefined,
      result: ReturnType<typeof transformSync>
    ): TranspiledModule => {
      if (!result || typeof result.code !== "string" || !result.ast) {
        throw new Error("Babel produced no output")
      }
      // A decorator no plugin compiled (decorator-transforms leaves those on private members) would not
      // parse in a browser. (The standard pipeline's decorators plugin compiles every decorator or fails.)
      const decorator = pipeline.name === "standard" ? undefined : leftoverDecorator(result.ast)
      if (decorator !== undefined) {
        const error = new TranspileError({
          path,
          message: `this decorator cannot be compiled by the ${pipeline.name} pipeline (${decorator.line}:${decorator.column})`,
          ...decorator
        })
        throw preprocessed ? remapTranspileError(error, preprocessed.map) : error
      }
      return {
        body: result.code,
        headers: { "content-type": javascriptContentType },
        dependencyKeys: dependencyKeysOf(result.ast),
        sourceHash: hashSource(source)
      }
    }

    /** The native engine; Babel's standard pipeline for a module with decorators or `accessor` fields. */
    const runNative = (path: string, source: string, kind: ModuleKind): TranspiledModule => {
      const preprocessed = kind === "gts" || kind === "gjs" ? runContentTag(source, path) : undefined
      const code = preprocessed?.code ?? source
      let keep: ReadonlyArray<string> = []
      if (preprocessed !== undefined && kind === "gts" && code.includes(Standard.templateCompilerModule)) {
        preprocessor ??= new Preprocessor()
        const templates = preprocessor.parse(source, { filename: path }).map((t) => ({
          contents: t.contents,
          start: t.range.startUtf16Codepoint,
          end: t.range.endUtf16Codepoint
        }))
        keep = Oxc.templateKeepers(path, code, source, templates)
      }
      const result = Oxc.compile(path, code, kind === "ts" || kind === "gts", keep)
      switch (result._tag) {
        case "Compiled":
          return {
            body: result.code,
            headers: { "content-type": javascriptContentType },
            dependencyKeys: result.dependencyKeys,
            sourceHash: hashSource(source)
          }
        case "NativeSyntaxError": {
          const error = new TranspileError({
            path,
            message: `${result.message} (${result.line}:${result.column})`,
            line: result.line,
            column: result.column
          })
          throw preprocessed ? remapTranspileError(error, preprocessed.map) : error
        }
        case "Fallback":
          return runBabel(path, source, kind, preprocessed)
      }
    }

    const runSync = (path: string, source: string, kind: ModuleKind): TranspiledModule =>
      engine === "native" ? runNative(path, source, kind) : runBabel(path, source, kind, undefined)

    const runBabel = (
      path: string,
      source: string,
      kind: ModuleKind,
      already: { readonly code: string; readonly map: string } | undefined
    ): TranspiledModule => {
      const preprocessed = already ?? (kind === "gts" || kind === "gjs" ? runContentTag(source, path) : undefined)
      let result: ReturnType<typeof transformSync>
      try {
        result = transformSync(preprocessed?.code ?? source, { ...babelOptions, filename: path, plugins: pipeline.plugins[kind] })
      } catch (cause) {
        throw toError(path, preprocessed)(cause)
      }
      return toModule(path, source, preprocessed, result)
    }

    // Plugins that load asynchronously (the template compiler's) need transformAsync.
    const runAsync = (path: string, source: string, kind: ModuleKind): Effect.Effect<TranspiledModule, TranspileError> =>
      Effect.flatMap(
        Effect.try({
          try: () => kind === "gts" || kind === "gjs" ? runContentTag(source, path) : undefined,
          catch: toError(path, undefined)
        }),
        (preprocessed) =>
          Effect.tryPromise({
            try: () =>
              transformAsync(preprocessed?.code ?? source, { ...babelOptions, filename: path, plugins: pipeline.plugins[kind] })
                .then((result) => toModule(path, source, preprocessed, result)),
            catch: (cause) => {
              const error = toError(path, preprocessed)(cause)
              return preprocessed ? templateError(path, source, cause, error) : error
            }
          })
      )

    // Data-first withSpan, as elsewhere in the library: the pipeable form captures a stack
    // trace on every call.
    const transpile = ({ path, source }: TranspileInput): Effect.Effect<TranspiledModule, TranspileError | SourceTooLargeError> =>
      Effect.withSpan(Effect.suspend((): Effect.Effect<TranspiledModule, TranspileError | SourceTooLargeError> => {
        const size = Buffer.byteLength(source, "utf8")
        if (size > limit) return Effect.fail(new SourceTooLargeError({ path, size, limit }))
        const kind = moduleKindOf(path)
        if (kind === undefined) {
          return Effect.fail(
            new TranspileError({
              path,
              message: `unsupported module extension ${JSON.stringify(posix.extname(path))}; expected one of ${supportedExtensions.join(", ")}`
            })
          )
        }
        if (source.trim() === "" || isDeclarationFile(path)) return Effect.succeed(emptyModule(source))
        if (pipeline.async) return runAsync(path, source, kind)
        return Effect.try({ try: () => runSync(path, source, kind), catch: toError(path, undefined) })
      }), "Transpiler.transpile", {
        attributes: { path, transpiler: engine, pipeline: pipeline.name },
        captureStackTrace: false
      })

    return Transpiler.of({ fingerprint, transpile })
  })

/** A layer of the Babel {@link Transpiler}. */
export const layer = (options: BabelTranspilerOptions = {}): Layer.Layer<Transpiler, PipelineLoadError> =>
  Layer.effect(Transpiler, make(options))

/** The source size limit from `MTC_MAX_SOURCE_BYTES`, {@link defaultMaxSourceBytes} when unset. */
export const maxSourceBytesConfig: Config.Config<number> = Config.Int("MTC_MAX_SOURCE_BYTES").pipe(
  Config.withDefault(defaultMaxSourceBytes)
)

/** The pipeline from `MTC_PIPELINE` (`standard`, `ember` or `boxel`), {@link defaultPipeline} when unset. */
export const pipelineNameConfig: Config.Config<PipelineName> = Config.Literals(pipelineNames, "MTC_PIPELINE").pipe(
  Config.withDefault(defaultPipeline)
)

/** The engine of the `standard` pipeline from `MTC_ENGINE` (`native` or `babel`), `native` when unset. */
export const engineConfig: Config.Config<Oxc.EngineName> = Config.Literals(Oxc.engineNames, "MTC_ENGINE").pipe(
  Config.withDefault(Oxc.defaultEngine)
)

/** The `ember-source` directory from `MTC_EMBER_SOURCE`, if set. */
export const emberSourceConfig: Config.Config<Option.Option<string>> = Config.option(Config.String("MTC_EMBER_SOURCE"))

/** The options from `MTC_MAX_SOURCE_BYTES`, `MTC_PIPELINE`, `MTC_ENGINE` and `MTC_EMBER_SOURCE`. */
export const optionsConfig: Config.Config<BabelTranspilerOptions> = Config.all({
  maxSourceBytes: maxSourceBytesConfig,
  pipeline: pipelineNameConfig,
  engine: engineConfig,
  emberSource: emberSourceConfig
}).pipe(Config.map(({ emberSource, ...rest }) =>
  Option.isSome(emberSource) ? { ...rest, emberSource: emberSource.value } : rest
))

/** A layer of the Babel {@link Transpiler}, its options read from `MTC_MAX_SOURCE_BYTES`, `MTC_PIPELINE` and `MTC_EMBER_SOURCE`. */
export const layerConfig: Layer.Layer<Transpiler, Config.ConfigError | PipelineLoadError> = Layer.effect(
  Transpiler,
  Effect.gen(function*() {
    const options = yield* optionsConfig
    return yield* make(options)
  })
)
