/**
 * The Transpiler service: source text to the JavaScript a browser imports.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type { TranspiledModule } from "./Domain.ts"
import type { TranspilerError } from "./Errors.ts"

/** The input of one transpile. */
export interface TranspileInput {
  /** The canonical path, whose extension picks the pipeline (`.ts`, `.gts`, ...). */
  readonly path: string
  readonly source: string
  /**
   * The content codings to compress the body with in the same run (a pool's worker), when
   * fewer than the transpiler's own: the rest are made later, by the cache. Absent: all of them.
   */
  readonly codings?: ReadonlyArray<"br" | "gzip"> | undefined
}

/** Turns module source into JavaScript. */
export class Transpiler extends Context.Service<Transpiler, {
  /**
   * A hash of the pipeline: Babel and plugin versions plus configuration. Rows written
   * under another fingerprint count as misses.
   */
  readonly fingerprint: string
  /**
   * Whether it makes a source map of every module (`TranspiledModule.sourceMap`): a module it
   * returns without one is counted as unmapped. Absent: it makes none.
   */
  readonly sourceMaps?: boolean
  /**
   * Fails with a `ModuleBuildError` when the module cannot be built, or with a
   * `TranspilePoolError` when the attempt failed (a worker crashed, ran out of memory or of
   * time, or the queue was full): those are not the module's fault, and a retry may succeed.
   */
  readonly transpile: (input: TranspileInput) => Effect.Effect<TranspiledModule, TranspilerError>
  /**
   * Compresses a module's body with `codings` where its transpiles run (a pool's worker, with
   * zlib's synchronous calls: far cheaper for bodies this size than libuv's thread pool), for
   * forms made after the transpile. Absent: the cache compresses on libuv's thread pool.
   */
  readonly compress?: (
    module: TranspiledModule,
    codings: ReadonlyArray<"br" | "gzip">
  ) => Effect.Effect<TranspiledModule, TranspilerError>
}>()("module-transpile-cache/Transpiler") {}
