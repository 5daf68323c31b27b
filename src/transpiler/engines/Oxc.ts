/**
 * The native engine of the `standard` pipeline: oxc-transform strips TypeScript (with
 * TypeScript's import elision and `declare` fields), and es-module-lexer (else oxc-parser)
 * reads the output's import records for the dependency keys. Both ship prebuilt N-API binaries in their npm
 * packages and run in worker threads.
 *
 * Oxc does not compile standard (2023-11) decorators or `accessor` fields, and orders
 * parameter properties as tsc does: a module that has one is handed back ({@link NativeResult} `fallback`) for Babel's
 * decorators plugin, so every module gets the same semantics as with `--engine babel`.
 *
 * In `.gts`/`.gjs`, a template refers to its imports through `eval`, which import elision
 * cannot see: {@link templateKeepers} finds the imports a template uses (the same rules as
 * the Babel pipeline's `keepTemplateLocals`) and the source gets an uncalled function that
 * references them, removed again from the output.
 *
 * @since 0.3.0
 */
import { createRequire } from "node:module"
import type { parseSync as ParseSync } from "oxc-parser"
import type { TransformOptions } from "oxc-transform"
import { lazyRequire } from "../../internal/lazyRequire.ts"
import { versionOf } from "../pipelines/Pipeline.ts"
import { loadGlimmerSyntax, mentions, templateCompilerModule } from "../pipelines/Standard.ts"
import { type RawSourceMap, truncated } from "../SourceMaps.ts"

// Native bindings, loaded by the first transpile: the main thread of a pool never loads them.
const lexer = lazyRequire<typeof import("es-module-lexer")>(import.meta.url, "es-module-lexer")
const oxcParser = lazyRequire<typeof import("oxc-parser")>(import.meta.url, "oxc-parser")
const oxcTransform = lazyRequire<typeof import("oxc-transform")>(import.meta.url, "oxc-transform")
const parseSync: typeof ParseSync = (...args) => oxcParser().parseSync(...args)

/** The engines of the `standard` pipeline: `native` (oxc) or `babel`. */
export const engineNames = ["native", "babel"] as const

/** An engine of the `standard` pipeline. */
export type EngineName = (typeof engineNames)[number]

/** Whether a string names an engine. */
export const isEngineName = (value: string): value is EngineName => (engineNames as ReadonlyArray<string>).includes(value)

/** The default engine of the `standard` pipeline. */
export const defaultEngine: EngineName = "native"

const transformOptions = {
  sourceType: "module",
  sourcemap: false,
  target: "esnext",
  typescript: { onlyRemoveTypeImports: false }
} as const satisfies TransformOptions

/** What the native engine contributes to the fingerprint besides versions. Bump `revision` when this module's handling changes. */
export const config = {
  engine: "native",
  revision: 3,
  maxNesting: 256,
  dependencyKeys: "es-module-lexer, else oxc-parser's module records",
  oxcTransform: transformOptions,
  fallback: "babel for decorators, accessor fields and parameter properties",
  templateLocals: "keep-template-locals"
} as const

let cachedVersions: Readonly<Record<string, string>> | undefined

/** The installed versions of oxc-transform and oxc-parser. */
export const versions = (): Readonly<Record<string, string>> => {
  if (cachedVersions !== undefined) return cachedVersions
  const require = createRequire(import.meta.url)
  cachedVersions = {
    "oxc-transform": versionOf(require, "oxc-transform"),
    "oxc-parser": versionOf(require, "oxc-parser"),
    "es-module-lexer": versionOf(require, "es-module-lexer")
  }
  return cachedVersions
}

/** A syntax error of the native engine: 1-based line, 0-based UTF-16 column of the code it was given. */
export interface NativeSyntaxError {
  readonly _tag: "NativeSyntaxError"
  readonly message: string
  readonly line: number
  readonly column: number
}

/** What the native engine made of a module. */
type NativeResult =
  | {
    readonly _tag: "Compiled"
    readonly code: string
    readonly dependencyKeys: ReadonlyArray<string>
    /** The map of `code` back to the code compiled, when asked for. */
    readonly map: RawSourceMap | undefined
  }
  | { readonly _tag: "Fallback" }
  | NativeSyntaxError

const keeperName = "__mtc_keep_template_locals__"

/** The line (1-based) and UTF-16 column (0-based) of a UTF-8 byte offset. */
const positionOf = (code: string, byteOffset: number): { readonly line: number; readonly column: number } => {
  const before = Buffer.from(code, "utf8").subarray(0, byteOffset).toString("utf8")
  const lines = before.split("\n")
  return { line: lines.length, column: (lines[lines.length - 1] ?? "").length }
}

/** The value of a string literal or a template literal without substitutions, from its source text. */
const literalValue = (text: string): string | undefined => {
  const quote = text[0]
  if (text.length < 2 || text[text.length - 1] !== quote) return undefined
  const body = text.slice(1, -1)
  if (quote === "`") {
    if (body.includes("${")) return undefined
  } else if (quote !== "\"" && quote !== "'") {
    return undefined
  }
  if (!body.includes("\\")) return body
  try {
    // JSON's escapes are a subset of JavaScript's; anything else is left as written.
    const parsed: unknown = JSON.parse(`"${body.replace(/\\'/g, "'").replace(/\\`/g, "`").replace(/"/g, "\\\"")}"`)
    return typeof parsed === "string" ? parsed : undefined
  } catch {
    return body
  }
}

interface AstNode {
  readonly type: string
}

const isAstNode = (u: unknown): u is AstNode =>
  u !== null && typeof u === "object" && "type" in u && typeof u.type === "string"

/**
 * Whether an ESTree AST has a decorator or an `accessor` field (which oxc leaves as they
 * are), or a constructor parameter property (which oxc declares as a field before the
 * class's own fields, as tsc does, where Babel assigns it in the constructor after them:
 * another order of own properties). Babel compiles those modules.
 */
const needsBabel = (root: unknown): boolean => {
  const stack: Array<unknown> = [root]
  while (stack.length > 0) {
    const node = stack.pop()
    if (Array.isArray(node)) {
      for (const child of node) stack.push(child)
      continue
    }
    if (!isAstNode(node)) continue
    if (node.type === "Decorator" || node.type === "AccessorProperty" || node.type === "TSParameterProperty") return true
    for (const value of Object.values(node)) {
      if (value !== null && typeof value === "object") stack.push(value)
    }
  }
  return false
}

/**
 * The dependency keys of compiled JavaScript, as `BabelTranspiler.dependencyKeysOf` reads
 * them from Babel's AST: static imports, `export ... from`, and `import()` of a string or
 * substitution-free template literal; deduplicated, in source order.
 */
export const dependencyKeysOfModuleRecords = (
  code: string,
  module: ReturnType<typeof parseSync>["module"]
): ReadonlyArray<string> => {
  const found: Array<{ readonly at: number; readonly key: string }> = []
  for (const record of module.staticImports) found.push({ at: record.start, key: record.moduleRequest.value })
  for (const record of module.staticExports) {
    for (const entry of record.entries) {
      if (entry.moduleRequest !== null && !entry.isType) found.push({ at: record.start, key: entry.moduleRequest.value })
    }
  }
  // Spans are UTF-8 byte offsets.
  let bytes: Buffer | undefined
  for (const record of module.dynamicImports) {
    bytes ??= Buffer.from(code, "utf8")
    const key = literalValue(bytes.subarray(record.moduleRequest.start, record.moduleRequest.end).toString("utf8").trim())
    if (key !== undefined) found.push({ at: record.start, key })
  }
  found.sort((a, b) => a.at - b.at)
  return Array.from(new Set(found.map((f) => f.key)))
}

let lexerReady = false

/**
 * The dependency keys of compiled JavaScript read by es-module-lexer (which reads only the
 * import records, where oxc-parser serialises the whole AST): the same rules as
 * {@link dependencyKeysOfModuleRecords}. `undefined` when the lexer fails.
 */
export const dependencyKeysByLexer = (code: string): ReadonlyArray<string> | undefined => {
  try {
    if (!lexerReady) {
      lexer().initSync()
      lexerReady = true
    }
    const [imports] = lexer().parse(code)
    const keys = new Set<string>()
    for (const record of imports) {
      if (record.d === -2) continue // import.meta
      if (record.d === -1) {
        if (record.n !== undefined) keys.add(record.n)
        continue
      }
      // import(): `n` for a string literal; a template literal without substitutions from its text
      const key = record.n ?? literalValue(code.slice(record.s, record.e).trim())
      if (key !== undefined) keys.add(key)
    }
    return Array.from(keys)
  } catch {
    return undefined
  }
}

/** Blanks the given UTF-16 ranges of a text. */
const blank = (text: string, ranges: ReadonlyArray<{ readonly start: number; readonly end: number }>): string => {
  let out = ""
  let at = 0
  for (const range of ranges) {
    out += text.slice(at, range.start)
    at = Math.max(at, range.end)
  }
  return out + text.slice(at)
}

/** How often `name` occurs as a free word in a text (not after `.`, not inside a longer name). */
const occurrences = (text: string, name: string): number => {
  let count = 0
  for (let at = text.indexOf(name); at !== -1; at = text.indexOf(name, at + 1)) {
    const before = text[at - 1]
    const after = text[at + name.length]
    if ((before === undefined || !/[\w$.]/.test(before)) && (after === undefined || !/[\w$]/.test(after))) count++
  }
  return count
}

/** A template of a `.gts`/`.gjs` source, as content-tag's `parse` reports it (UTF-16 offsets). */
interface TemplateSpan {
  readonly contents: string
  readonly start: number
  readonly end: number
}

/**
 * The imports of content-tag's output that a template uses and that import elision would
 * otherwise remove. The same rules as the Babel pipeline's `keepTemplateLocals`:
 * an import not referenced outside templates is kept when a template names it as a free
 * word; one referenced outside templates (perhaps only as a type) is kept when
 * `@glimmer/syntax` finds it among a template's free names (or cannot parse the template).
 * References are counted textually in the source with its templates blanked out.
 */
export const templateKeepers = (
  path: string,
  preprocessed: string,
  source: string,
  templates: ReadonlyArray<TemplateSpan>
): ReadonlyArray<string> => {
  if (templates.length === 0 || !preprocessed.includes(templateCompilerModule)) return []
  const { module } = parseSync(`${path}.ts`, preprocessed, { lang: "ts", sourceType: "module" })
  const imported: Array<string> = []
  for (const record of module.staticImports) {
    if (record.moduleRequest.value === templateCompilerModule) continue
    for (const entry of record.entries) {
      if (!entry.isType) imported.push(entry.localName.value)
    }
  }
  if (imported.length === 0) return []
  const outside = blank(source, templates)
  const locals: Array<ReadonlySet<string> | undefined | "unparsed"> = templates.map(() => "unparsed")
  const localsOf = (i: number): ReadonlySet<string> | undefined => {
    const known = locals[i]
    if (known !== "unparsed") return known
    let parsed: ReadonlySet<string> | undefined
    try {
      parsed = new Set(loadGlimmerSyntax().getTemplateLocals(templates[i]?.contents ?? ""))
    } catch {
      parsed = undefined
    }
    locals[i] = parsed
    return parsed
  }
  const keep: Array<string> = []
  for (const name of imported) {
    // the import itself is one occurrence
    const referenced = occurrences(outside, name) > 1
    const used = templates.some((template, i) => {
      if (!mentions(template.contents, name)) return false
      if (!referenced) return true
      const found = localsOf(i)
      return found === undefined || found.has(name)
    })
    if (used) keep.push(name)
  }
  return keep
}

/**
 * Deeper bracket nesting than this goes to Babel: oxc recurses on the native stack, and a
 * native stack overflow ends the whole process (Babel's is a catchable RangeError).
 */
const maxNativeNesting = 256

/** Whether the brackets `( [ {` of a text nest deeper than `limit` (brackets in strings and comments count too). */
const nestsDeeperThan = (text: string, limit: number): boolean => {
  let depth = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 40 || c === 91 || c === 123) {
      if (++depth > limit) return true
    } else if (c === 41 || c === 93 || c === 125) {
      if (depth > 0) depth--
    }
  }
  return false
}

/**
 * Compiles a module's code (TypeScript when `typescript`, else JavaScript) with oxc, keeping
 * the imports named in `keep` as if the code used them, with a source map when `sourceMaps`.
 */
export const compile = (
  path: string,
  code: string,
  typescript: boolean,
  keep: ReadonlyArray<string>,
  sourceMaps = false
): NativeResult => {
  // A decorator (also one on a `declare` field, which oxc drops and Babel rejects), an
  // `accessor` field or a parameter property: Babel compiles the module.
  if (nestsDeeperThan(code, maxNativeNesting)) return { _tag: "Fallback" }
  const suspect = code.includes("@") || code.includes("accessor") || (typescript && code.includes("constructor"))
  if (suspect && needsBabel(parseSync(typescript ? `${path}.ts` : `${path}.js`, code, {
    lang: typescript ? "ts" : "js",
    sourceType: "module"
  }).program)) return { _tag: "Fallback" }
  const input = keep.length === 0 ? code : `${code}\nvoid function ${keeperName}() { ${keep.join("; ")}; };\n`
  const filename = typescript ? `${path}.ts` : `${path}.js`
  const result = oxcTransform().transformSync(filename, input, { ...transformOptions, sourcemap: sourceMaps, lang: typescript ? "ts" : "js" })
  const error = result.errors.find((e) => e.severity === "Error")
  if (error !== undefined) {
    const offset = error.labels[0]?.start
    const position = offset === undefined ? { line: 1, column: 0 } : positionOf(input, offset)
    return { _tag: "NativeSyntaxError", message: error.message, ...position }
  }
  let output = result.code
  if (keep.length > 0) {
    const at = output.lastIndexOf(`void function ${keeperName}()`)
    if (at >= 0) output = output.slice(0, at)
  }
  // Babel ends its output without a newline: so do we, so that simple modules read the same
  output = output.replace(/\n+$/, "")
  const dependencyKeys = dependencyKeysByLexer(output) ??
    dependencyKeysOfModuleRecords(output, parseSync(`${path}.js`, output, { lang: "js", sourceType: "module" }).module)
  // The map of what was cut off (the keeper) goes too.
  let map: RawSourceMap | undefined = result.map
  if (map !== undefined && keep.length > 0) {
    const lines = output.split("\n")
    map = truncated(map, lines.length, lines[lines.length - 1]!.length)
  }
  return { _tag: "Compiled", code: output, dependencyKeys, map }
}
