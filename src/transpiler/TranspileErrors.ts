/**
 * Turns what content-tag, Babel and the template compiler throw into a
 * {@link TranspileError} that points into the module's own source: lines 1-based, columns
 * 0-based, as Babel reports them, and the same `(line:column)` at the end of the message.
 *
 * @since 0.1.0
 */
import { decodedMappings, TraceMap } from "@jridgewell/trace-mapping"
import { TranspileError } from "../domain/Errors.ts"
import { messageOf } from "../internal/errors.ts"
import { parseErrorPattern, type Preprocessed, type Template } from "./ContentTag.ts"
import { type Position, relativePosition, templateErrorPosition } from "./pipelines/TemplateErrors.ts"

const isRecord = (u: unknown): u is Record<string, unknown> => u !== null && typeof u === "object"

/**
 * The position a Babel code frame points at: the line after `>`, the column of the first
 * `^` under it (frames are printed without colours, `highlightCode: false`).
 */
const codeFrameLocation = (text: string): Position | undefined => {
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

/**
 * Turns anything thrown by content-tag or Babel into a {@link TranspileError}. Lines are
 * 1-based and columns 0-based, as Babel reports them.
 */
export const toTranspileError = (path: string, cause: unknown): TranspileError => {
  const raw = messageOf(cause)
  const firstLine = raw.split("\n", 1)[0] ?? raw
  // content-tag: "Parse Error at foo.gts:2:9: 2:10", the reason in `source_code` ("  × Expression expected").
  const tag = parseErrorPattern.exec(firstLine)
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
 * Maps a position of generated code (line 1-based, column 0-based) back through a v3
 * source map to the position in its source: the last mapping at or before the column,
 * else the first on the line. `undefined` when the line has no mapping.
 */
export const originalPosition = (map: string, line: number, column: number): Position | undefined => {
  const segments = line < 1 ? undefined : decodedMappings(new TraceMap(map))[line - 1]
  let first: Position | undefined
  let best: Position | undefined
  for (const segment of segments ?? []) {
    // [generated column, source, source line, source column, name?]; a lone column maps to nothing
    if (segment.length === 1) continue
    const position = { line: segment[2] + 1, column: segment[3] }
    first ??= position
    if (segment[0] <= column) best = position
  }
  return best ?? first
}

/**
 * Moves a {@link TranspileError}'s position (and the `(line:column)` at the end of its
 * message) through a source map. Without a mapping the position is dropped rather than
 * left pointing at generated code.
 */
const remap = (error: TranspileError, map: string): TranspileError => {
  if (error.line === undefined || error.column === undefined) return error
  let original: Position | undefined
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

/** An error about code Babel saw, pointing into the module's own source: through content-tag's map when it ran. */
export const inModuleSource = (error: TranspileError, preprocessed: Preprocessed | undefined): TranspileError =>
  preprocessed ? remap(error, preprocessed.map) : error

/** What a transpile threw, as a {@link TranspileError} in the module's own source (one already made is kept). */
export const fromThrown = (path: string, preprocessed: Preprocessed | undefined) => (cause: unknown): TranspileError =>
  cause instanceof TranspileError ? cause : inModuleSource(toTranspileError(path, cause), preprocessed)

/**
 * An error of the template compiler has no position Babel knows: find its template among
 * the module's (content-tag's `parse`) and move Glimmer's position there. The error is
 * kept when it has a position, or when its template cannot be told.
 */
export const inTemplate = (
  error: TranspileError,
  source: string,
  templates: () => ReadonlyArray<Template>,
  cause: unknown
): TranspileError => {
  if (error.line !== undefined) return error
  let found: ReadonlyArray<Template>
  try {
    found = templates()
  } catch {
    return error
  }
  if (found.length === 0) return error
  const position = templateErrorPosition(source, found, cause)
  if (position === undefined) return error
  // Handlebars' first line says "Parse error on line 1:" (of the template); its last says what was expected.
  const lines = messageOf(cause).split("\n").map((line) => line.trim()).filter((line) => line !== "")
  const detail = relativePosition(cause) !== undefined && /^Parse error on line/.test(error.message)
    ? `Template parse error: ${lines[lines.length - 1] ?? error.message}`
    : error.message.replace(/\s*:?\s*$/, "")
  return new TranspileError({ path: error.path, message: `${detail} (${position.line}:${position.column})`, ...position })
}
