/**
 * The `ember` pipeline: what Ember's own build emits for `.gts`/`.gjs`/`.ts`/`.js`.
 *
 * - content-tag (run by the transpiler for `.gts`/`.gjs`), then
 * - `@babel/plugin-transform-typescript` with `allowDeclareFields` and normal import elision,
 * - `decorator-transforms`: legacy decorators (`@tracked`, `@action`, `@service`), also on
 *   `declare` fields, calling its runtime from `decorator-transforms/runtime-esm`,
 * - `babel-plugin-ember-template-compilation` with ember-source's template compiler, so
 *   templates are precompiled to Glimmer's wire format (`createTemplateFactory` from
 *   `@ember/template-factory`); no runtime template compiler is needed.
 *
 * All run on Babel 8. The template compiler comes from an `ember-source` directory, by
 * default the one this package depends on; a deployment points it at the ember-source its
 * host runs (a template compiled by one version must run on the same version's runtime).
 * decorator-transforms and ember-source come from the host's `node_modules` when
 * `hostPackages` names it (see {@link HostPackages}): the output calls the host's runtime.
 *
 * @since 0.2.0
 */
import type { PluginItem } from "@babel/core"
import { existsSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, resolve } from "node:path"
import * as HostPackages from "./HostPackages.ts"
import { defaultExport, foreignPlugin, type ModuleKind, type Pipeline, PipelineLoadError, readVersion, versionOf } from "./Pipeline.ts"
import { loadPlugin } from "./Standard.ts"

/** Where ember-source keeps its template compiler: 7.x, 6.x (ESM), older (a CommonJS bundle). */
const compilerCandidates = [
  "dist/prod/packages/ember-template-compiler/index.js",
  "dist/packages/ember-template-compiler/index.js",
  "dist/ember-template-compiler.js"
] as const

/** The `ember-source` directory this package depends on. */
export const defaultEmberSource = (): string =>
  dirname(createRequire(import.meta.url).resolve("ember-source/package.json"))

/**
 * The ember-source directory of a pipeline: `emberSource` when given, else the host's
 * (`<hostPackages>/ember-source`, which must exist), else the one beside this package.
 */
export const emberSourceDir = (pipeline: string, emberSource: string | undefined, hostPackages: string | undefined): string =>
  resolve(
    emberSource ??
      (hostPackages === undefined ? defaultEmberSource() : HostPackages.locate(pipeline, "ember-source", hostPackages).dir)
  )

/** The decorator-transforms majors the pipelines drive: 2.x has `runtime-esm` and the `dt7948` global of Boxel's host. */
export const decoratorTransformsMajors: ReadonlyArray<number> = [2]

/** The template compiler of an ember-source directory: where it is and which version, before it is loaded. */
interface TemplateCompiler {
  readonly dir: string
  readonly version: string
  readonly file: string
}

const compilers = new Map<string, Readonly<Record<string, unknown>>>()

/**
 * Finds the template compiler of an `ember-source` directory and reads its version, without
 * loading it: the fingerprint needs only the version.
 */
const locateTemplateCompiler = (pipeline: string, emberSource: string): TemplateCompiler => {
  const dir = resolve(emberSource)
  const fail = (message: string) => new PipelineLoadError({ pipeline, message })
  let version: string
  try {
    version = readVersion(join(dir, "package.json"))
  } catch (cause) {
    throw fail(`${dir} is not an ember-source directory: ${String(cause)}`)
  }
  const file = compilerCandidates.map((candidate) => join(dir, candidate)).find((candidate) => existsSync(candidate))
  if (file === undefined) {
    throw fail(`no template compiler in ${dir} (looked for ${compilerCandidates.join(", ")})`)
  }
  return { dir, version, file }
}

/**
 * Loads a template compiler (synchronously: Node 22 `require`s an ES module graph without
 * top-level await). Cached by directory.
 */
const loadTemplateCompiler = (pipeline: string, compiler: TemplateCompiler): Readonly<Record<string, unknown>> => {
  const known = compilers.get(compiler.dir)
  if (known !== undefined) return known
  const fail = (message: string) => new PipelineLoadError({ pipeline, message })
  let loaded: unknown
  try {
    loaded = createRequire(join(compiler.dir, "package.json"))(compiler.file)
  } catch (cause) {
    throw fail(`cannot load ${compiler.file}: ${String(cause)}`)
  }
  if (loaded === null || typeof loaded !== "object" || !("precompile" in loaded) || typeof loaded.precompile !== "function") {
    throw fail(`${compiler.file} exports no precompile function`)
  }
  const module = { ...loaded }
  compilers.set(compiler.dir, module)
  return module
}

/** The plugins a pipeline adds to the Ember ones, loaded with them. */
export interface ExtraPlugins {
  /** Template AST transforms. */
  readonly transforms: ReadonlyArray<unknown>
  /** Plugins before TypeScript, and after the template compiler. */
  readonly before: ReadonlyArray<PluginItem>
  readonly after: ReadonlyArray<PluginItem>
}

/** The options of the Ember-shaped pipelines. */
interface EmberPipelineParts {
  readonly name: "ember" | "boxel"
  /** The ember-source directory (see {@link emberSourceDir}). */
  readonly emberSource: string
  /** The host's `node_modules`, where decorator-transforms comes from; undefined: the one beside this package. */
  readonly hostPackages: string | undefined
  /** decorator-transforms' options: where its runtime comes from. */
  readonly decoratorOptions: Readonly<Record<string, unknown>>
  /** The decorator-transforms subpath the output imports (`./runtime-esm`, or `./globals` the host imports). */
  readonly decoratorRuntime: string
  /** The fingerprint entries of the template AST transforms, of the plugins before TypeScript and of those after the template compiler. */
  readonly transformsConfig: ReadonlyArray<unknown>
  readonly beforeConfig: ReadonlyArray<unknown>
  readonly afterConfig: ReadonlyArray<unknown>
  /** Loads those transforms and plugins, in the same order as their entries. */
  readonly extraPlugins: () => ExtraPlugins
  /** More package versions that make the output. */
  readonly versions: Readonly<Record<string, string>>
  readonly revision: number
}

const typescriptOptions = { allowDeclareFields: true } as const

/**
 * Builds an Ember-shaped pipeline (`ember`, or `boxel` with its extra plugins). What decides
 * the fingerprint (versions, the template compiler's place) is checked now; the plugins and
 * the template compiler load on the first call of `plugins`.
 */
export const makeWith = (parts: EmberPipelineParts): Pipeline => {
  const compiler = locateTemplateCompiler(parts.name, parts.emberSource)
  const require = createRequire(import.meta.url)
  // decorator-transforms from the host: its output calls the host's runtime.
  const decoratorPackage = HostPackages.requireDrivable(
    parts.name,
    HostPackages.locate(parts.name, "decorator-transforms", parts.hostPackages),
    decoratorTransformsMajors,
    [parts.decoratorRuntime]
  )
  let plugins: Record<ModuleKind, Array<PluginItem>> | undefined
  const loadPlugins = (): Record<ModuleKind, Array<PluginItem>> => {
    if (plugins !== undefined) return plugins
    const decoratorTransforms = foreignPlugin(defaultExport(HostPackages.load(parts.name, decoratorPackage, "")))
    const templateCompilationPlugin = loadPlugin(require, "babel-plugin-ember-template-compilation/browser")
    const typescriptPlugin = loadPlugin(require, "@babel/plugin-transform-typescript")
    const extra = parts.extraPlugins()
    const templateOptions = {
      compiler: loadTemplateCompiler(parts.name, compiler),
      targetFormat: "wire",
      transforms: [...extra.transforms]
    }
    const common: Array<PluginItem> = [
      [decoratorTransforms, parts.decoratorOptions],
      [templateCompilationPlugin, templateOptions]
    ]
    plugins = {
      ts: [...extra.before, [typescriptPlugin, typescriptOptions], ...common, ...extra.after],
      gts: [...extra.before, [typescriptPlugin, typescriptOptions], ...common, ...extra.after],
      js: [...extra.before, ...common, ...extra.after],
      gjs: [...extra.before, ...common, ...extra.after]
    }
    return plugins
  }
  const configOf = (typescript: boolean) => [
    ...parts.beforeConfig,
    ...(typescript ? [["@babel/plugin-transform-typescript", typescriptOptions]] : []),
    ["decorator-transforms", parts.decoratorOptions],
    ["babel-plugin-ember-template-compilation/browser", { targetFormat: "wire", transforms: parts.transformsConfig }],
    ...parts.afterConfig
  ]
  return {
    name: parts.name,
    plugins: loadPlugins,
    versions: {
      "@babel/plugin-transform-typescript": versionOf(require, "@babel/plugin-transform-typescript"),
      "decorator-transforms": decoratorPackage.version,
      "babel-plugin-ember-template-compilation": versionOf(require, "babel-plugin-ember-template-compilation"),
      "@glimmer/syntax": versionOf(createRequire(require.resolve("babel-plugin-ember-template-compilation")), "@glimmer/syntax"),
      // the template compiler's version: wire format must match the host's runtime
      "ember-source": compiler.version,
      ...parts.versions
    },
    config: {
      pipeline: parts.name,
      revision: parts.revision,
      plugins: { ts: configOf(true), gts: configOf(true), js: configOf(false), gjs: configOf(false) }
    },
    async: true
  }
}

const decoratorRuntime = "decorator-transforms/runtime-esm"

const pipelines = new Map<string, Pipeline>()

/**
 * The `ember` pipeline, over the template compiler of `emberSource` and the
 * decorator-transforms of `hostPackages` (default: the ones beside this package; the
 * ember-source of `hostPackages` when only that is given).
 */
export const make = (emberSource?: string, hostPackages?: string): Pipeline => {
  const dir = emberSourceDir("ember", emberSource, hostPackages)
  const key = JSON.stringify([dir, hostPackages === undefined ? null : resolve(hostPackages)])
  const known = pipelines.get(key)
  if (known !== undefined) return known
  const pipeline = makeWith({
    name: "ember",
    emberSource: dir,
    hostPackages,
    decoratorOptions: { runtime: { import: decoratorRuntime } },
    decoratorRuntime: "./runtime-esm",
    transformsConfig: [],
    beforeConfig: [],
    afterConfig: [],
    extraPlugins: () => ({ transforms: [], before: [], after: [] }),
    versions: {},
    revision: 1
  })
  pipelines.set(key, pipeline)
  return pipeline
}
