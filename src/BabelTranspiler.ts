/**
 * The Babel 8 implementation of the {@link Transpiler} service.
 *
 * The pipeline is chosen by the module's extension:
 *
 * - `.ts`, `.mts`: TypeScript strip, then standard (2023-11) decorators
 * - `.gts`: content-tag (`<template>` to `template(...)` calls), then as `.ts`
 * - `.gjs`: content-tag, then as `.js`
 * - `.js`, `.mjs`: standard decorators only
 *
 * @since 0.1.0
 */
import { transformSync, types, type InputOptions, type PluginItem } from "@babel/core"
import decoratorsPlugin from "@babel/plugin-proposal-decorators"
import typescriptPlugin from "@babel/plugin-transform-typescript"
import { Preprocessor } from "content-tag"
import { Config, Effect, Layer } from "effect"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, posix } from "node:path"
import { defaultMaxSourceBytes, hashSource, javascriptContentType, type TranspiledModule } from "./Domain.ts"
import { SourceTooLargeError, TranspileError } from "./Errors.ts"
import { Transpiler, type TranspileInput } from "./Transpiler.ts"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/** The options of {@link make}. */
export interface BabelTranspilerOptions {
  /** The largest source, in UTF-8 bytes, that is transpiled. Defaults to {@link defaultMaxSourceBytes}. */
  readonly maxSourceBytes?: number
}

/** The default source size limit: 8 MiB. */
export { defaultMaxSourceBytes }

// -----------------------------------------------------------------------------
// Pipeline configuration
// -----------------------------------------------------------------------------

/** The pipelines, by the kind of module they handle. */
export type ModuleKind = "ts" | "gts" | "js" | "gjs"

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

// Babel 8 has neither `isTSX` nor `allowDeclareFields`: declare fields are always allowed,
// and JSX is parsed only when a JSX syntax plugin is present, which it never is here (so
// `<T>value` assertions parse as TypeScript). The option is kept because it documents the
// intent and is part of the fingerprint.
const typescriptOptions = { allowDeclareFields: true } as const
// In `.gts` the template refers to imports Babel cannot see (the template is compiled at
// run time, through `eval`), so TypeScript's elision of "unused" imports would drop the
// components and helpers a template uses. Only imports marked `type` are removed there.
const glimmerTypescriptOptions = { allowDeclareFields: true, onlyRemoveTypeImports: true } as const
const decoratorsOptions = { version: "2023-11" } as const

// Built once: Babel caches loaded plugins by the identity of these arrays and objects.
const pluginsByKind: Readonly<Record<ModuleKind, Array<PluginItem>>> = {
  ts: [[typescriptPlugin, typescriptOptions], [decoratorsPlugin, decoratorsOptions]],
  gts: [[typescriptPlugin, glimmerTypescriptOptions], [decoratorsPlugin, decoratorsOptions]],
  js: [[decoratorsPlugin, decoratorsOptions]],
  gjs: [[decoratorsPlugin, decoratorsOptions]]
}

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

/**
 * Everything besides package versions that decides the output. It goes into the
 * fingerprint, so bump `pipeline` when this module's own handling changes.
 */
export const pipelineConfig = {
  pipeline: 1,
  babel: babelOptions,
  plugins: {
    ts: [["@babel/plugin-transform-typescript", typescriptOptions], ["@babel/plugin-proposal-decorators", decoratorsOptions]],
    gts: [
      ["@babel/plugin-transform-typescript", glimmerTypescriptOptions],
      ["@babel/plugin-proposal-decorators", decoratorsOptions]
    ],
    js: [["@babel/plugin-proposal-decorators", decoratorsOptions]],
    gjs: [["@babel/plugin-proposal-decorators", decoratorsOptions]]
  },
  contentTag: { kinds: ["gts", "gjs"], inline_source_map: false },
  extensions: kindsByExtension
} as const

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

const readVersion = (packageJsonPath: string): string => {
  const parsed: unknown = JSON.parse(readFileSync(packageJsonPath, "utf8"))
  if (parsed !== null && typeof parsed === "object" && "version" in parsed && typeof parsed.version === "string") {
    return parsed.version
  }
  throw new Error(`no version in ${packageJsonPath}`)
}

/** Finds a package's package.json by walking up from its resolved entry (for packages that do not export it). */
const findPackageJson = (entry: string, name: string): string => {
  let dir = dirname(entry)
  for (;;) {
    const candidate = join(dir, "package.json")
    try {
      const parsed: unknown = JSON.parse(readFileSync(candidate, "utf8"))
      if (parsed !== null && typeof parsed === "object" && "name" in parsed && parsed.name === name) return candidate
    } catch {
      // not here: keep walking up
    }
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`package.json of ${name} not found from ${entry}`)
    dir = parent
  }
}

let cachedVersions: Readonly<Record<string, string>> | undefined

/**
 * The installed versions of the packages that make the output: @babel/core (and the
 * parser and generator it uses), both plugins and content-tag.
 */
export const pipelineVersions = (): Readonly<Record<string, string>> => {
  if (cachedVersions !== undefined) return cachedVersions
  const require = createRequire(import.meta.url)
  const coreRequire = createRequire(require.resolve("@babel/core"))
  cachedVersions = {
    "@babel/core": readVersion(require.resolve("@babel/core/package.json")),
    "@babel/parser": readVersion(coreRequire.resolve("@babel/parser/package.json")),
    "@babel/generator": readVersion(coreRequire.resolve("@babel/generator/package.json")),
    "@babel/plugin-transform-typescript": readVersion(require.resolve("@babel/plugin-transform-typescript/package.json")),
    "@babel/plugin-proposal-decorators": readVersion(require.resolve("@babel/plugin-proposal-decorators/package.json")),
    // content-tag does not export its package.json
    "content-tag": readVersion(findPackageJson(require.resolve("content-tag"), "content-tag"))
  }
  return cachedVersions
}

/** The fingerprint of this pipeline as installed. */
export const pipelineFingerprint = (): string => fingerprintOf({ versions: pipelineVersions(), config: pipelineConfig })

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

/**
 * The specifiers a module's AST imports: static imports, `export ... from`, and dynamic
 * `import()` of a string literal or a template literal without substitutions. Deduplicated,
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

const messageOf = (cause: unknown): string => {
  try {
    if (isRecord(cause) && typeof cause.message === "string") return cause.message
    return String(cause)
  } catch {
    return "unknown error"
  }
}

const contentTagError = /Parse Error at (.*):(\d+):(\d+): \d+:\d+/

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

/** Makes a Babel {@link Transpiler}. The content-tag preprocessor is created on first use. */
export const make = (options: BabelTranspilerOptions = {}): Effect.Effect<Transpiler["Service"]> =>
  Effect.sync(() => {
    const limit = options.maxSourceBytes ?? defaultMaxSourceBytes
    const fingerprint = pipelineFingerprint()
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

    const run = (path: string, source: string, kind: ModuleKind): TranspiledModule => {
      const preprocessed = kind === "gts" || kind === "gjs" ? runContentTag(source, path) : undefined
      let result: ReturnType<typeof transformSync>
      try {
        result = transformSync(preprocessed?.code ?? source, {
          ...babelOptions,
          filename: path,
          plugins: pluginsByKind[kind]
        })
      } catch (cause) {
        const error = toTranspileError(path, cause)
        // Babel saw content-tag's output: point at the module's own source instead.
        throw preprocessed ? remapTranspileError(error, preprocessed.map) : error
      }
      if (!result || typeof result.code !== "string" || !result.ast) {
        throw new Error("Babel produced no output")
      }
      return {
        body: result.code,
        headers: { "content-type": javascriptContentType },
        dependencyKeys: dependencyKeysOf(result.ast),
        sourceHash: hashSource(source)
      }
    }

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
        if (source.trim() === "") return Effect.succeed(emptyModule(source))
        return Effect.try({
          try: () => run(path, source, kind),
          catch: (cause) => (cause instanceof TranspileError ? cause : toTranspileError(path, cause))
        })
      }), "Transpiler.transpile", { attributes: { path, transpiler: "babel" }, captureStackTrace: false })

    return Transpiler.of({ fingerprint, transpile })
  })

/** A layer of the Babel {@link Transpiler}. */
export const layer = (options: BabelTranspilerOptions = {}): Layer.Layer<Transpiler> =>
  Layer.effect(Transpiler, make(options))

/** The source size limit from `MTC_MAX_SOURCE_BYTES`, {@link defaultMaxSourceBytes} when unset. */
export const maxSourceBytesConfig: Config.Config<number> = Config.Int("MTC_MAX_SOURCE_BYTES").pipe(
  Config.withDefault(defaultMaxSourceBytes)
)

/** A layer of the Babel {@link Transpiler}, its size limit read from `MTC_MAX_SOURCE_BYTES`. */
export const layerConfig: Layer.Layer<Transpiler, Config.ConfigError> = Layer.effect(
  Transpiler,
  Effect.gen(function*() {
    const maxSourceBytes = yield* maxSourceBytesConfig
    return yield* make({ maxSourceBytes })
  })
)
