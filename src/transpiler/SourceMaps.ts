/**
 * Source maps of transpiled modules: the v3 map from the served code back to the module's
 * source, made in the same run as the code (in the transpile worker), checked, and named by a
 * `//# sourceMappingURL=` comment at the end of the code.
 *
 * - **The comment is relative**: `<file>.map?_v=<version>`, `<file>` the module's own file name
 *   and `<version>` its immutable version (the first 16 hex digits of its ETag, see
 *   `ImmutableUrls`). A browser resolves it against the script's URL, so it names the map of
 *   exactly the version it runs, under the module's own directory, wherever the realm is
 *   mounted or proxied: in a module script, and in code a loader `eval`s with a
 *   `//# sourceURL=` of the module (as Boxel's loader does).
 * - **`sources`** is the file name too (so it resolves to the module's request path) and
 *   **`sourcesContent`** the source itself: devtools need no second request, and a private
 *   realm's source is only ever sent to its readers.
 * - **A map that fails its check** (a mapping outside the code or the source) is dropped, and
 *   the module is served without a comment: a wrong map is worse than none.
 *
 * @since 0.7.0
 */
import remapping from "@jridgewell/remapping"
import { decode, encode } from "@jridgewell/sourcemap-codec"
import { posix } from "node:path"
import type { TranspiledModule } from "../domain/Domain.ts"

/** A v3 source map, as the transpile steps make it. */
export interface RawSourceMap {
  readonly version: number
  readonly file?: string | null | undefined
  readonly sources: ReadonlyArray<string | null>
  readonly sourcesContent?: ReadonlyArray<string | null> | null | undefined
  readonly names: ReadonlyArray<string>
  readonly mappings: string
  readonly sourceRoot?: string | null | undefined
}

/** What the fingerprint records of source maps when they are on. Bump `revision` when the maps change. */
export const sourceMapConfig = { revision: 1, comment: "relative <file>.map?_v=<version>", sourcesContent: true } as const

/** The file name part of a module's map URL: its own file name, percent-encoded. */
const fileNameOf = (path: string): string => encodeURIComponent(posix.basename(path))

/** The suffix of a map's request path after its module's. */
export const mapSuffix = ".map"

/** The comment that names a module's map, relative to the module's URL. */
export const mapComment = (path: string, version: string): string =>
  `\n//# sourceMappingURL=${fileNameOf(path)}${mapSuffix}?_v=${version}`

const lineLengths = (text: string): ReadonlyArray<number> => {
  const lengths: Array<number> = []
  let start = 0
  for (let end = text.indexOf("\n"); end !== -1; end = text.indexOf("\n", start)) {
    lengths.push(end - start)
    start = end + 1
  }
  lengths.push(text.length - start)
  return lengths
}

/** Base64 digit values by char code (-1: not a digit). */
const digits = (() => {
  const table = new Int8Array(128).fill(-1)
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for (let i = 0; i < alphabet.length; i++) table[alphabet.charCodeAt(i)] = i
  return table
})()

const comma = 44
const semicolon = 59

/**
 * Whether `mappings` (base64 VLQ, `,` and `;`) decode, and every mapping lies inside the code
 * (`generated`, its lines' widths) and names a position inside the one source (`original`):
 * each segment has 1, 4 or 5 fields, a generated column within its line, source 0, and an
 * original line and column within the source. Read in one pass, with no decoded copy: this
 * runs once per transpile.
 */
export const fits = (mappings: string, generated: ReadonlyArray<number>, original: ReadonlyArray<number>): boolean => {
  // The decoded state: fields relative to the previous segment's (the column to the line's).
  let line = 0
  let width = generated[0]!
  let column = 0
  let source = 0
  let originalLine = 0
  let originalColumn = 0
  let fields = 0
  const length = mappings.length
  for (let at = 0; at <= length; at++) {
    const code = at === length ? semicolon : mappings.charCodeAt(at)
    if (code === comma || code === semicolon) {
      // The segment just read, if any.
      if (fields !== 0) {
        if (fields !== 1 && fields !== 4 && fields !== 5) return false
        if (column < 0 || column > width) return false
        if (
          fields !== 1 &&
          (source !== 0 || originalLine < 0 || originalLine >= original.length || originalColumn < 0 ||
            originalColumn > original[originalLine]!)
        ) return false
        fields = 0
      }
      if (code === semicolon && at < length) {
        if (++line >= generated.length) return false
        width = generated[line]!
        column = 0
      }
      continue
    }
    // One VLQ value: 5 bits per digit, least significant first, the sign in the lowest bit.
    let value = 0
    let shift = 0
    let digit = code < 128 ? digits[code]! : -1
    for (;;) {
      if (digit < 0 || shift > 25) return false
      value |= (digit & 31) << shift
      shift += 5
      if ((digit & 32) === 0) break
      if (++at >= length) return false
      const next = mappings.charCodeAt(at)
      digit = next < 128 ? digits[next]! : -1
    }
    // "-0" stands for -2^31, as the source-map libraries read it.
    const delta = (value & 1) === 0 ? value >>> 1 : value === 1 ? -0x80000000 : -(value >>> 1)
    switch (fields++) {
      case 0:
        column += delta
        break
      case 1:
        source += delta
        break
      case 2:
        originalLine += delta
        break
      case 3:
        originalColumn += delta
        break
      case 4:
        break // the name: its index is not checked
      default:
        return false
    }
  }
  return true
}

/**
 * The served map of a module, or undefined when the map the steps made does not check: v3 with
 * the module's file name as `file` and its one source, the source's text as `sourcesContent`.
 */
export const servedMap = (path: string, source: string, code: string, map: RawSourceMap): string | undefined => {
  if (map.version !== 3 || map.sources.length !== 1) return undefined
  if (!fits(map.mappings, lineLengths(code), lineLengths(source))) return undefined
  const name = JSON.stringify(posix.basename(path))
  // The mappings checked are base64 and separators only: nothing in them needs escaping.
  return `{"version":3,"file":${name},"sources":[${name}],"sourcesContent":[${JSON.stringify(source)}],"names":${
    JSON.stringify(map.names)
  },"mappings":"${map.mappings}"}`
}

/**
 * A transpiled module with its map: the code gets the comment that names the map, and the map
 * its served form; without a map, or with one that does not check, the module as it is.
 */
export const withSourceMap = (
  module: TranspiledModule,
  path: string,
  source: string,
  map: RawSourceMap | undefined,
  version: string
): TranspiledModule => {
  if (map === undefined || module.body === "") return module
  const served = servedMap(path, source, module.body, map)
  if (served === undefined) return module
  return { ...module, body: module.body + mapComment(path, version), sourceMap: served }
}

/** `outer` (of code made from `inner`'s code) composed with `inner`: a map to `inner`'s source. */
export const compose = (outer: RawSourceMap, inner: RawSourceMap): RawSourceMap => {
  const composed = remapping([JSON.stringify(outer), JSON.stringify(inner)], () => null)
  const mappings = composed.mappings
  return {
    version: 3,
    sources: composed.sources,
    names: composed.names,
    mappings: typeof mappings === "string" ? mappings : encode(mappings)
  }
}

/** A map with the mappings of its lines from `lines` on (0-based) dropped: code cut off at the end. */
export const truncated = (map: RawSourceMap, lines: number, lastLineWidth: number): RawSourceMap => {
  const mappings = decode(map.mappings).slice(0, lines)
  const last = mappings[lines - 1]
  if (last !== undefined) mappings[lines - 1] = last.filter((segment) => segment[0] <= lastLineWidth)
  return { ...map, mappings: encode(mappings) }
}

/** Parses a map made by a step (content-tag's JSON), or undefined when it is not one. */
export const parseMap = (json: string): RawSourceMap | undefined => {
  try {
    const parsed: unknown = JSON.parse(json)
    if (
      parsed !== null && typeof parsed === "object" && "mappings" in parsed && typeof parsed.mappings === "string" &&
      "sources" in parsed && Array.isArray(parsed.sources)
    ) {
      const names = "names" in parsed && Array.isArray(parsed.names) ? parsed.names : []
      return { version: 3, sources: parsed.sources, names, mappings: parsed.mappings }
    }
  } catch {
    // not JSON
  }
  return undefined
}

const commentPattern = /\n\/\/# sourceMappingURL=[^\n]*$/

/** A module's code without the comment that names its map (the code as its steps made it). */
export const codeOf = (body: string): string => body.replace(commentPattern, "")
