/**
 * The options of the Babel transpiler, what they select (the pipeline, and the engine
 * that runs it), and reading them from the environment.
 *
 * @since 0.2.0
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { defaultMaxSourceBytes } from "../domain/Domain.ts"
import { messageOf } from "../internal/errors.ts"
import * as Oxc from "./engines/Oxc.ts"
import * as Boxel from "./pipelines/Boxel.ts"
import * as Ember from "./pipelines/Ember.ts"
import { HostPackageError, type Pipeline, type PipelineError, PipelineLoadError, type PipelineName, pipelineNames } from "./pipelines/Pipeline.ts"
import * as Standard from "./pipelines/Standard.ts"

/**
 * The options of the transpiler: plain data (a worker thread gets them by structured clone
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
   * The host's `node_modules`: the packages whose runtime the `ember` and `boxel` output
   * imports come from there (decorator-transforms, ember-concurrency for `boxel`, and
   * ember-source unless `emberSource` is given), so the output imports what the host
   * provides. Defaults to the packages beside this one. A package missing there, or of a
   * version the pipeline cannot drive, fails with a `HostPackageError`.
   */
  readonly hostPackages?: string
  /**
   * The engine of the `standard` pipeline: `native` (oxc-transform, the default) or
   * `babel`. The `ember` and `boxel` pipelines always run Babel.
   */
  readonly engine?: Oxc.EngineName
  /**
   * Make a source map of every module, stored and served beside it and named by a
   * `//# sourceMappingURL=` comment at the end of its code (default true). On and off are
   * different fingerprints.
   */
  readonly sourceMaps?: boolean
}

/** The default pipeline of the transpiler and of the CLI. */
export const defaultPipeline: PipelineName = "standard"

/**
 * The pipeline that options choose, loaded (the template compiler of `ember`/`boxel` is
 * loaded synchronously, once per ember-source directory).
 */
export const pipelineOf = (options: BabelTranspilerOptions = {}): Effect.Effect<Pipeline, PipelineError> =>
  Effect.try({
    try: () => {
      const name = options.pipeline ?? defaultPipeline
      switch (name) {
        case "standard":
          return Standard.make()
        case "ember":
          return Ember.make(options.emberSource, options.hostPackages)
        case "boxel":
          return Boxel.make(options.emberSource, options.hostPackages)
      }
    },
    catch: pipelineError(options.pipeline ?? defaultPipeline)
  })

const pipelineError = (pipeline: PipelineName) => (cause: unknown): PipelineError =>
  cause instanceof PipelineLoadError || cause instanceof HostPackageError
    ? cause
    : new PipelineLoadError({ pipeline, message: messageOf(cause) })

/**
 * Loads a pipeline's Babel plugins (and the template compiler of `ember`/`boxel`), so that a
 * plugin that cannot load fails the transpiler's start rather than its first module.
 */
export const loadPlugins = (pipeline: Pipeline): Effect.Effect<void, PipelineError> =>
  Effect.try({ try: () => void pipeline.plugins(), catch: pipelineError(pipeline.name) })

/** The engine that runs a pipeline under the options: `native` only for `standard`. */
export const engineOf = (pipeline: Pipeline, options: BabelTranspilerOptions): Oxc.EngineName =>
  pipeline.name === "standard" ? options.engine ?? Oxc.defaultEngine : "babel"

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

/** The host's `node_modules` from `MTC_HOST_PACKAGES`, if set. */
export const hostPackagesConfig: Config.Config<Option.Option<string>> = Config.option(Config.String("MTC_HOST_PACKAGES"))

/** Whether modules get source maps, from `MTC_SOURCE_MAPS` (`true`/`false`, also `on`/`off`, `1`/`0`), on when unset. */
export const sourceMapsConfig: Config.Config<boolean> = Config.Boolean("MTC_SOURCE_MAPS").pipe(Config.withDefault(true))

/**
 * The options from `MTC_MAX_SOURCE_BYTES`, `MTC_PIPELINE`, `MTC_ENGINE`, `MTC_EMBER_SOURCE`,
 * `MTC_HOST_PACKAGES` and `MTC_SOURCE_MAPS`.
 */
export const optionsConfig: Config.Config<BabelTranspilerOptions> = Config.all({
  maxSourceBytes: maxSourceBytesConfig,
  pipeline: pipelineNameConfig,
  engine: engineConfig,
  sourceMaps: sourceMapsConfig,
  emberSource: emberSourceConfig,
  hostPackages: hostPackagesConfig
}).pipe(Config.map(({ emberSource, hostPackages, ...rest }) => ({
  ...rest,
  ...(Option.isSome(emberSource) ? { emberSource: emberSource.value } : {}),
  ...(Option.isSome(hostPackages) ? { hostPackages: hostPackages.value } : {})
})))
