/**
 * Reading a served module through its source map, as devtools do: where the comment at the end
 * of its code points, and where a position of the code comes from in the source.
 */
import { originalPositionFor, TraceMap } from "@jridgewell/trace-mapping"

/** The map URL a module's `//# sourceMappingURL=` comment names, resolved against the module's URL. */
export const mapUrlOf = (moduleUrl: string, body: string): string | undefined => {
  const match = /\n\/\/# sourceMappingURL=(\S+)$/.exec(body)
  return match === null ? undefined : new URL(match[1]!, moduleUrl).href
}

/** The 1-based line and 0-based column of a UTF-16 offset of a text. */
export const positionAt = (text: string, offset: number): { readonly line: number; readonly column: number } => {
  const lines = text.slice(0, offset).split("\n")
  return { line: lines.length, column: lines[lines.length - 1]!.length }
}

/** Where the first occurrence of `needle` in the code comes from in the source (1-based line, 0-based column). */
export const originalOf = (code: string, map: string, needle: string): { readonly line: number; readonly column: number } => {
  const at = code.indexOf(needle)
  if (at === -1) throw new Error(`${needle} is not in the code`)
  return originalAt(code, map, at)
}

/** Where a UTF-16 offset of the code comes from in the source. */
export const originalAt = (code: string, map: string, offset: number): { readonly line: number; readonly column: number } => {
  const found = originalPositionFor(new TraceMap(map), positionAt(code, offset))
  if (found.line === null || found.column === null) throw new Error(`no mapping at offset ${offset}`)
  return { line: found.line, column: found.column }
}

/** The position of the first occurrence of `needle` in the source. */
export const sourcePositionOf = (source: string, needle: string): { readonly line: number; readonly column: number } => {
  const at = source.indexOf(needle)
  if (at === -1) throw new Error(`${needle} is not in the source`)
  return positionAt(source, at)
}

/** A module that throws below type-only imports, a type alias and a multi-line interface. */
export const measureSource = `import type { Thing } from "./thing.ts"
type Shape = { readonly size: number }
interface Box<T> {
  readonly value: T
  readonly label: string
}
export function measure(shape: Shape, box?: Box<Thing>): number {
  if (shape.size < 0) {
    throw new Error("ts-throw")
  }
  return shape.size + (box?.label.length ?? 0)
}
`

/** A component that throws in a method below a multi-line `<template>`. */
export const cardSource = `import Component from "@glimmer/component";
interface Args { n: number }
export default class Card extends Component<{ Args: Args }> {
  <template>
    <div class="card">
      <span>{{this.label}}</span>
      {{#if @n}}
        <b>{{@n}}</b>
      {{/if}}
    </div>
  </template>
  get label(): string {
    throw new Error("gts-throw");
  }
}
`
