/**
 * content-tag, as one transpiler uses it: a `.gts`/`.gjs` module's `<template>`s become
 * calls (with a source map back to the module), or are listed with their positions.
 *
 * The WASM preprocessor is created on first use. An error other than a parse error may
 * leave it in a bad state, so the next call starts a fresh one.
 *
 * @since 0.1.0
 */
import type { Preprocessor } from "content-tag"
import { messageOf } from "../internal/errors.ts"
import { lazyRequire } from "../internal/lazyRequire.ts"

const contentTag = lazyRequire<typeof import("content-tag")>(import.meta.url, "content-tag")

/** content-tag's output: the module with its templates compiled away, and a v3 source map to the module. */
export interface Preprocessed {
  readonly code: string
  readonly map: string
}

/** One `<template>` of a module, as content-tag's `parse` reports it. */
export type Template = ReturnType<Preprocessor["parse"]>[number]

/** The first line of content-tag's parse errors: `Parse Error at foo.gts:2:9: 2:10` (file, line, 1-based column). */
export const parseErrorPattern = /Parse Error at (.*):(\d+):(\d+): \d+:\d+/

/** One transpiler's content-tag preprocessor. */
export interface ContentTag {
  /** The module with its templates turned into calls; throws content-tag's error. */
  readonly process: (source: string, filename: string) => Preprocessed
  /** The module's templates; throws content-tag's error. */
  readonly templates: (source: string, filename: string) => ReadonlyArray<Template>
}

/** A {@link ContentTag} whose preprocessor is created on first use. */
export const make = (): ContentTag => {
  let preprocessor: Preprocessor | undefined
  const current = (): Preprocessor => (preprocessor ??= new (contentTag().Preprocessor)())
  return {
    process: (source, filename) => {
      let result: { code: string; map: string }
      try {
        result = current().process(source, { filename })
      } catch (cause) {
        // Anything but a parse error may have left the WASM instance in a bad state:
        // start a fresh preprocessor next time.
        if (!parseErrorPattern.test(messageOf(cause))) preprocessor = undefined
        throw cause
      }
      try {
        return { code: result.code, map: result.map }
      } finally {
        // a wasm-bindgen object: free its memory now rather than at finalization
        if ("free" in result && typeof result.free === "function") result.free()
      }
    },
    templates: (source, filename) => current().parse(source, { filename })
  }
}
