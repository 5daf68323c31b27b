/**
 * The fingerprint of a transpiler: a hash of everything that decides its output (the
 * installed versions of the packages that make it, and the pipeline's and the engine's
 * configuration), the same in every thread and process. Rows written under another
 * fingerprint count as misses.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { createRequire } from "node:module"
import { hashSource } from "../domain/Domain.ts"
import { babelOptions } from "./Babel.ts"
import * as Oxc from "./engines/Oxc.ts"
import { kindsByExtension } from "./ModuleKind.ts"
import { type Pipeline, type PipelineError, readVersion, versionOf } from "./pipelines/Pipeline.ts"
import * as Standard from "./pipelines/Standard.ts"
import { sourceMapConfig } from "./SourceMaps.ts"
import { type BabelTranspilerOptions, engineOf, pipelineOf } from "./TranspilerOptions.ts"

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

/** What the transpiler itself contributes to every pipeline's configuration. */
const transpilerConfig = {
  transpiler: 2,
  babel: babelOptions,
  contentTag: { kinds: ["gts", "gjs"], inline_source_map: false },
  extensions: kindsByExtension,
  declarationFiles: "empty"
} as const

/**
 * The configuration of a pipeline as it goes into the fingerprint: the pipeline's own and the
 * transpiler's, and that of source maps when they are on (the default).
 */
export const configOf = (
  pipeline: Pipeline,
  sourceMaps = true
): typeof transpilerConfig & { readonly pipeline: unknown; readonly sourceMaps?: typeof sourceMapConfig } => ({
  ...transpilerConfig,
  pipeline: pipeline.config,
  ...(sourceMaps ? { sourceMaps: sourceMapConfig } : {})
})

/**
 * Everything besides package versions that decides the output of the `standard`
 * pipeline with its default (native) engine and source maps. It goes into the fingerprint.
 */
export const pipelineConfig = { ...configOf(Standard.make()), engine: Oxc.config }

let cachedCoreVersions: Readonly<Record<string, string>> | undefined

/** The installed versions of the packages every pipeline uses: @babel/core, the parser and generator it uses, and content-tag. */
const coreVersions = (): Readonly<Record<string, string>> => {
  if (cachedCoreVersions !== undefined) return cachedCoreVersions
  const require = createRequire(import.meta.url)
  const coreRequire = createRequire(require.resolve("@babel/core"))
  cachedCoreVersions = {
    "@babel/core": readVersion(require.resolve("@babel/core/package.json")),
    "@babel/parser": readVersion(coreRequire.resolve("@babel/parser/package.json")),
    "@babel/generator": readVersion(coreRequire.resolve("@babel/generator/package.json")),
    "content-tag": versionOf(require, "content-tag")
  }
  return cachedCoreVersions
}

/** The installed versions of every package that makes a pipeline's output. */
export const versionsOf = (pipeline: Pipeline): Readonly<Record<string, string>> => ({
  ...coreVersions(),
  ...pipeline.versions
})

/**
 * The installed versions of the packages that make the output of the `standard`
 * pipeline: @babel/core (and the parser and generator it uses), its plugins,
 * @glimmer/syntax, content-tag, and oxc-transform and oxc-parser (the default engine).
 */
export const pipelineVersions = (): Readonly<Record<string, string>> => ({ ...versionsOf(Standard.make()), ...Oxc.versions() })

/**
 * The fingerprint of a pipeline run by an engine, with source maps or without. With the Babel
 * engine and no maps it is what it always was; the native engine adds its configuration and
 * the oxc packages' versions, and maps add their configuration (the code ends with a comment).
 */
export const fingerprintOfPipeline = (pipeline: Pipeline, engine: Oxc.EngineName, sourceMaps = true): string =>
  engine === "native"
    ? fingerprintOf({
      versions: { ...versionsOf(pipeline), ...Oxc.versions() },
      config: { ...configOf(pipeline, sourceMaps), engine: Oxc.config }
    })
    : fingerprintOf({ versions: versionsOf(pipeline), config: configOf(pipeline, sourceMaps) })

/** The fingerprint of the `standard` pipeline as installed. */
export const pipelineFingerprint = (): string => fingerprintOfPipeline(Standard.make(), Oxc.defaultEngine)

/**
 * The fingerprint of the pipeline that options choose: a deterministic function of the
 * options and the packages used (the pipeline name, every plugin's version and options,
 * the host's packages' versions, and the template compiler's version), the same in every
 * thread and process.
 */
export const fingerprintFor = (options: BabelTranspilerOptions = {}): Effect.Effect<string, PipelineError> =>
  Effect.map(pipelineOf(options), (pipeline) => fingerprintOfPipeline(pipeline, engineOf(pipeline, options), options.sourceMaps ?? true))
