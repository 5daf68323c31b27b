/**
 * What a transpile pipeline is: the Babel plugins it runs for each kind of module, the
 * installed versions and the options that decide its output (its fingerprint), and
 * whether Babel must run it asynchronously.
 *
 * The pipelines themselves are {@link Standard}, {@link Ember} and {@link Boxel}; the
 * Babel transpiler (`BabelTranspiler.ts`) picks one by name and runs it.
 *
 * @since 0.2.0
 */
import type { PluginItem, PluginTarget } from "@babel/core"
import * as Schema from "effect/Schema"
import { readFileSync } from "node:fs"
import { dirname, join } from "node:path"

/** The names of the pipelines. */
export const pipelineNames = ["standard", "ember", "boxel"] as const

/** A pipeline's name: `standard` (2023-11 decorators, runtime templates), `ember` or `boxel`. */
export type PipelineName = (typeof pipelineNames)[number]

/** Whether a string names a pipeline. */
export const isPipelineName = (value: string): value is PipelineName =>
  (pipelineNames as ReadonlyArray<string>).includes(value)

/** The kinds of module, by extension (see `BabelTranspiler.moduleKindOf`). */
export type ModuleKind = "ts" | "gts" | "js" | "gjs"

/** A pipeline, ready to run. */
export interface Pipeline {
  readonly name: PipelineName
  /**
   * The Babel plugins of each kind of module, loaded on the first call and the same value on
   * every call (Babel caches plugins by identity). Loading them is what costs: the main
   * thread of a pool, which only needs the fingerprint, never calls this. Throws a
   * {@link PipelineError} when a plugin or the template compiler cannot be loaded.
   */
  readonly plugins: () => Readonly<Record<ModuleKind, Array<PluginItem>>>
  /** Package name to installed version, for every package besides Babel's own that makes the output. */
  readonly versions: Readonly<Record<string, string>>
  /** Everything besides versions that decides the output: plugin names and options, as JSON. */
  readonly config: unknown
  /** Some plugin loads asynchronously (babel-plugin-ember-template-compilation): use `transformAsync`. */
  readonly async: boolean
}

/** A pipeline could not be loaded: a missing package, or an `ember-source` directory without a template compiler. */
export class PipelineLoadError extends Schema.TaggedError<PipelineLoadError>()("PipelineLoadError", {
  pipeline: Schema.String,
  message: Schema.String
}) {}

/**
 * A package whose runtime the pipeline's output imports is missing from the host's
 * `node_modules` (`hostPackages`; empty when the packages beside this one were used), or is
 * a version the pipeline cannot drive. Never answered by falling back to another copy.
 */
export class HostPackageError extends Schema.TaggedError<HostPackageError>()("HostPackageError", {
  pipeline: Schema.String,
  packageName: Schema.String,
  hostPackages: Schema.String,
  message: Schema.String
}) {}

/** Why a pipeline could not be loaded. */
export type PipelineError = PipelineLoadError | HostPackageError

/**
 * A third-party Babel plugin whose declared type does not fit @babel/core 8's
 * `PluginTarget`: typed against Babel 7's declarations, or an async plugin factory
 * (babel-plugin-ember-template-compilation), which Babel 8 runs under `transformAsync` but
 * does not type. Babel checks what the function returns when it loads the plugin.
 */
export const foreignPlugin = (plugin: unknown): PluginTarget => {
  if (typeof plugin !== "function") throw new TypeError("a Babel plugin must be a function")
  return plugin as PluginTarget
}

/** A module's default export when it has one (an ES module `require`d), else the module itself (CommonJS). */
export const defaultExport = (loaded: unknown): unknown =>
  loaded !== null && typeof loaded === "object" && "default" in loaded ? loaded.default : loaded

const isRecord = (u: unknown): u is Record<string, unknown> => u !== null && typeof u === "object"

/** The `version` field of a package.json. */
export const readVersion = (packageJsonPath: string): string => {
  const parsed: unknown = JSON.parse(readFileSync(packageJsonPath, "utf8"))
  if (isRecord(parsed) && typeof parsed.version === "string") return parsed.version
  throw new Error(`no version in ${packageJsonPath}`)
}

/** Finds a package's package.json by walking up from its resolved entry (for packages that do not export it). */
const findPackageJson = (entry: string, name: string): string => {
  let dir = dirname(entry)
  for (;;) {
    const candidate = join(dir, "package.json")
    try {
      const parsed: unknown = JSON.parse(readFileSync(candidate, "utf8"))
      if (isRecord(parsed) && parsed.name === name) return candidate
    } catch {
      // not here: keep walking up
    }
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`package.json of ${name} not found from ${entry}`)
    dir = parent
  }
}

/** The installed version of a package, resolved the way `require` would from `resolveFrom`. */
export const versionOf = (require: NodeJS.Require, name: string): string => {
  try {
    return readVersion(require.resolve(`${name}/package.json`))
  } catch {
    // the package does not export its package.json
    return readVersion(findPackageJson(require.resolve(name), name))
  }
}
