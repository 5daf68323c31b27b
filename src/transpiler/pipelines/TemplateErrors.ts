/**
 * Positions for errors of the template compiler. Glimmer reports a template's errors
 * relative to the template's own text (`hash.loc` of a parse error, `location` of a
 * syntax error), or not at all (errors of AST transforms such as glimmer-scoped-css).
 * These helpers move such a position into the module's source, using content-tag's
 * `parse` to find where each `<template>` is.
 *
 * @since 0.2.0
 */
import { loadGlimmerSyntax } from "./Standard.ts"

/** A position: line 1-based, column 0-based (as Babel reports them). */
export interface Position {
  readonly line: number
  readonly column: number
}

/** One `<template>` of a module, as content-tag's `parse` reports it (the fields used here). */
interface ParsedTemplate {
  readonly contents: string
  readonly range: { readonly startUtf16Codepoint: number }
  readonly contentRange: { readonly startUtf16Codepoint: number }
}

const isRecord = (u: unknown): u is Record<string, unknown> => u !== null && typeof u === "object"

const positionIn = (value: unknown, line: string, column: string): Position | undefined =>
  isRecord(value) && typeof value[line] === "number" && typeof value[column] === "number"
    ? { line: value[line], column: value[column] }
    : undefined

/** The position a Glimmer error gives, relative to the template text, if any. */
export const relativePosition = (cause: unknown): Position | undefined => {
  if (!isRecord(cause)) return undefined
  // Handlebars' parser: hash.loc = { first_line (1-based), first_column (0-based), ... }
  const parse = isRecord(cause.hash) ? positionIn(cause.hash.loc, "first_line", "first_column") : undefined
  if (parse !== undefined) return parse
  // Glimmer's syntax errors: location = { start: { line, column } }
  return isRecord(cause.location) ? positionIn(cause.location.start, "line", "column") : undefined
}

/** The position of a character offset in a text. */
const positionAt = (text: string, offset: number): Position => {
  let line = 1
  let lineStart = 0
  for (let i = text.indexOf("\n"); i !== -1 && i < offset; i = text.indexOf("\n", i + 1)) {
    line++
    lineStart = i + 1
  }
  return { line, column: offset - lineStart }
}

/**
 * Where the text given to the template compiler starts within a template's contents:
 * content-tag drops leading whitespace that contains a line break.
 */
const textOffset = (contents: string): number => {
  const leading = /^\s*/.exec(contents)?.[0] ?? ""
  return leading.includes("\n") ? leading.length : 0
}

const parses = (text: string): boolean => {
  try {
    loadGlimmerSyntax().preprocess(text, { mode: "codemod" })
    return true
  } catch {
    return false
  }
}

/**
 * The position in the module's source of a template compiler error. With one template,
 * the error is its; with several, the first whose text Glimmer cannot parse (for a parse
 * error). A position within the template is moved into the module; an error without one
 * points at the `<template>` tag. `undefined` when the template cannot be told.
 */
export const templateErrorPosition = (
  source: string,
  templates: ReadonlyArray<ParsedTemplate>,
  cause: unknown
): Position | undefined => {
  const relative = relativePosition(cause)
  const template = templates.length === 1
    ? templates[0]
    : relative !== undefined
    ? templates.find((candidate) => !parses(candidate.contents.slice(textOffset(candidate.contents))))
    : undefined
  if (template === undefined) return undefined
  if (relative === undefined) return positionAt(source, template.range.startUtf16Codepoint)
  const base = positionAt(source, template.contentRange.startUtf16Codepoint + textOffset(template.contents))
  return relative.line === 1
    ? { line: base.line, column: base.column + relative.column }
    : { line: base.line + relative.line - 1, column: relative.column }
}
