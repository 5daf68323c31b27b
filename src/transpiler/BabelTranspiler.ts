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
 * Within a pipeline the plugins are chosen by the module's extension (see `ModuleKind.ts`).
 * The parts live in their own modules: the options and what they select
 * (`TranspilerOptions.ts`), the fingerprint (`Fingerprint.ts`), content-tag (`ContentTag.ts`),
 * the Babel run (`Babel.ts`), the native engine (`engines/Oxc.ts`), error positions
 * (`TranspileErrors.ts`) and dependency keys (`CompiledModule.ts`); this module runs them
 * and re-exports their public parts.
 *
 * @since 0.1.0
 */
import type * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { posix } from "node:path"
import { defaultMaxSourceBytes, moduleVersion, type TranspiledModule } from "../domain/Domain.ts"
import { SourceTooLargeError, TranspileError } from "../domain/Errors.ts"
import { Transpiler, type TranspileInput } from "../domain/Transpiler.ts"
import * as Babel from "./Babel.ts"
import { javascriptModule } from "./CompiledModule.ts"
import * as ContentTag from "./ContentTag.ts"
import * as Oxc from "./engines/Oxc.ts"
import { fingerprintOfPipeline } from "./Fingerprint.ts"
import { hasTemplates, isDeclarationFile, moduleKindOf, supportedExtensions } from "./ModuleKind.ts"
import type { ModuleKind, PipelineError } from "./pipelines/Pipeline.ts"
import * as Standard from "./pipelines/Standard.ts"
import * as SourceMaps from "./SourceMaps.ts"
import { fromThrown, inModuleSource, inTemplate } from "./TranspileErrors.ts"
import { isMainThread } from "node:worker_threads"
import { timed, transpileTimeOf } from "./TranspileMetrics.ts"
import { type BabelTranspilerOptions, engineOf, loadPlugins, optionsConfig, pipelineOf } from "./TranspilerOptions.ts"

export { dependencyKeysOf } from "./CompiledModule.ts"
export { defaultEngine, type EngineName, engineNames, isEngineName } from "./engines/Oxc.ts"
export {
  configOf,
  fingerprintFor,
  fingerprintOf,
  fingerprintOfPipeline,
  type FingerprintParts,
  pipelineConfig,
  pipelineFingerprint,
  pipelineVersions,
  versionsOf
} from "./Fingerprint.ts"
export { isDeclarationFile, moduleKindOf, supportedExtensions } from "./ModuleKind.ts"
export {
  HostPackageError,
  isPipelineName,
  type ModuleKind,
  type PipelineError,
  PipelineLoadError,
  type PipelineName,
  pipelineNames
} from "./pipelines/Pipeline.ts"
export { originalPosition, toTranspileError } from "./TranspileErrors.ts"
export {
  type BabelTranspilerOptions,
  defaultPipeline,
  emberSourceConfig,
  engineConfig,
  engineOf,
  hostPackagesConfig,
  maxSourceBytesConfig,
  optionsConfig,
  pipelineNameConfig,
  pipelineOf,
  sourceMapsConfig
} from "./TranspilerOptions.ts"

/**
 * Makes a Babel {@link Transpiler} running the pipeline the options choose. The
 * content-tag preprocessor is created on first use. Fails when the pipeline cannot be
 * loaded (an `emberSource` without a template compiler, a `hostPackages` without a package
 * the pipeline needs or with a version it cannot drive).
 */
export const make = (options: BabelTranspilerOptions = {}): Effect.Effect<Transpiler["Service"], PipelineError> =>
  Effect.flatMap(pipelineOf(options), (pipeline) => {
    const engine = engineOf(pipeline, options)
    // The native engine loads Babel's plugins only for a module it hands to Babel.
    return engine === "native" ? Effect.succeed(pipeline) : Effect.as(loadPlugins(pipeline), pipeline)
  }).pipe(Effect.map((pipeline) => {
    const limit = options.maxSourceBytes ?? defaultMaxSourceBytes
    const engine = engineOf(pipeline, options)
    const sourceMaps = options.sourceMaps ?? true
    const fingerprint = fingerprintOfPipeline(pipeline, engine, sourceMaps)
    const contentTag = ContentTag.make()

    const preprocess = (path: string, source: string, kind: ModuleKind): ContentTag.Preprocessed | undefined =>
      hasTemplates(kind) ? contentTag.process(source, path) : undefined

    /** The native engine; Babel's standard pipeline for a module with decorators or `accessor` fields. */
    const runNative = (path: string, source: string, kind: ModuleKind): Babel.Compiled => {
      const preprocessed = preprocess(path, source, kind)
      const code = preprocessed?.code ?? source
      let keep: ReadonlyArray<string> = []
      if (preprocessed !== undefined && kind === "gts" && code.includes(Standard.templateCompilerModule)) {
        const templates = contentTag.templates(source, path).map((t) => ({
          contents: t.contents,
          start: t.range.startUtf16Codepoint,
          end: t.range.endUtf16Codepoint
        }))
        keep = Oxc.templateKeepers(path, code, source, templates)
      }
      const result = Oxc.compile(path, code, kind === "ts" || kind === "gts", keep, sourceMaps)
      switch (result._tag) {
        case "Compiled": {
          const module = javascriptModule(source, result.code, result.dependencyKeys)
          if (result.map === undefined || preprocessed === undefined) return { module, map: result.map }
          // oxc maps to content-tag's code, whose map goes on to the `.gts` source.
          const inner = SourceMaps.parseMap(preprocessed.map)
          return { module, map: inner === undefined ? undefined : SourceMaps.compose(result.map, inner) }
        }
        case "NativeSyntaxError":
          throw inModuleSource(
            new TranspileError({
              path,
              message: `${result.message} (${result.line}:${result.column})`,
              line: result.line,
              column: result.column
            }),
            preprocessed
          )
        case "Fallback":
          return Babel.run(pipeline, { path, source, kind, preprocessed, sourceMaps })
      }
    }

    const runSync = (path: string, source: string, kind: ModuleKind): Babel.Compiled =>
      engine === "native"
        ? runNative(path, source, kind)
        : Babel.run(pipeline, { path, source, kind, preprocessed: preprocess(path, source, kind), sourceMaps })

    // Plugins that load asynchronously (the template compiler's) need transformAsync.
    const runAsync = (path: string, source: string, kind: ModuleKind): Effect.Effect<Babel.Compiled, TranspileError> =>
      Effect.flatMap(
        Effect.try({ try: () => preprocess(path, source, kind), catch: fromThrown(path, undefined) }),
        (preprocessed) =>
          Effect.tryPromise({
            try: () => Babel.runAsync(pipeline, { path, source, kind, preprocessed, sourceMaps }),
            catch: (cause) => {
              const error = fromThrown(path, preprocessed)(cause)
              return preprocessed ? inTemplate(error, source, () => contentTag.templates(source, path), cause) : error
            }
          })
      )

    /** The module with its map and the comment that names it (see `SourceMaps`), when maps are on. */
    const mapped = (path: string, source: string, module: TranspiledModule, map: SourceMaps.RawSourceMap | undefined) =>
      map === undefined
        ? module
        : SourceMaps.withSourceMap(module, path, source, map, moduleVersion(module.sourceHash, fingerprint))

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
        if (source.trim() === "" || isDeclarationFile(path)) return Effect.succeed(javascriptModule(source, "", []))
        const compiled = pipeline.async
          ? runAsync(path, source, kind)
          : Effect.try({ try: () => runSync(path, source, kind), catch: fromThrown(path, undefined) })
        return Effect.map(compiled, ({ map, module }) => mapped(path, source, module, map))
      }), "Transpiler.transpile", {
        attributes: { "mtc.path": path, "mtc.engine": engine, "mtc.pipeline": pipeline.name },
        captureStackTrace: false
      })

    // Timed here only in-process: a worker's transpiles are timed by the pool, in the main thread.
    if (!isMainThread) return Transpiler.of({ fingerprint, sourceMaps, transpile })
    const time = transpileTimeOf(pipeline.name, engine)
    return Transpiler.of({ fingerprint, sourceMaps, transpile: (input) => timed(time, transpile(input)) })
  }))

/** A layer of the Babel {@link Transpiler}. */
export const layer = (options: BabelTranspilerOptions = {}): Layer.Layer<Transpiler, PipelineError> =>
  Layer.effect(Transpiler, make(options))

/**
 * A layer of the Babel {@link Transpiler}, its options read from `MTC_MAX_SOURCE_BYTES`,
 * `MTC_PIPELINE`, `MTC_ENGINE`, `MTC_EMBER_SOURCE`, `MTC_HOST_PACKAGES` and `MTC_SOURCE_MAPS`.
 */
export const layerConfig: Layer.Layer<Transpiler, Config.ConfigError | PipelineError> = Layer.effect(
  Transpiler,
  Effect.gen(function*() {
    const options = yield* optionsConfig
    return yield* make(options)
  })
)
