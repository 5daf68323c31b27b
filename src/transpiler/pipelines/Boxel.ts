/**
 * The `boxel` pipeline: {@link Ember}'s, plus what Boxel's realm server does to a module.
 *
 * In order: ember-concurrency's async-arrow task transform (`task(async () => ...)` becomes
 * a generator task; the host's ember-concurrency, 4.x or 5.x, with `buildTask` imported from
 * {@link asyncArrowRuntime}, the module Boxel's host provides), TypeScript, `decorator-transforms` with its default options (calls to
 * the `dt7948` global, which the host installs with `import "decorator-transforms/globals"`),
 * the template compiler with `glimmer-scoped-css` (`<style scoped>` becomes scoped
 * attributes and an import of a virtual `./<file>.<base64>.glimmer-scoped.css` module, which
 * the realm server answers as `text/css`), and Boxel's loader rewrites: `fetch(...)` becomes
 * `import.meta.loader.fetch(...)`, and `import(x)` becomes
 * `import.meta.loader.import(new URL(x, import.meta.url).href)` when `x` is a path-like
 * string literal (`./`, `../`, `/`, or containing `://`), else `import.meta.loader.import(x)`.
 *
 * All run on Babel 8 (Boxel itself runs Babel 7.29; see docs/pipelines.md). ember-concurrency,
 * decorator-transforms and ember-source come from the host's `node_modules` when
 * `hostPackages` names it (see {@link HostPackages}).
 *
 * @since 0.2.0
 */
import type { PluginAPI, PluginObject, PluginTarget, types } from "@babel/core"
import type * as ScopedCssTransform from "glimmer-scoped-css/ast-transform"
import { createRequire } from "node:module"
import { resolve } from "node:path"
import * as Ember from "./Ember.ts"
import * as HostPackages from "./HostPackages.ts"
import { foreignPlugin, type Pipeline, versionOf } from "./Pipeline.ts"

const loaderMember = (t: typeof types, name: string): types.MemberExpression =>
  t.memberExpression(
    t.memberExpression(t.metaProperty(t.identifier("import"), t.identifier("meta")), t.identifier("loader")),
    t.identifier(name)
  )

/** Whether an `import()` specifier is resolved against the module's URL by Boxel's loader. */
const isPathLike = (specifier: string): boolean =>
  specifier.startsWith("./") || specifier.startsWith("../") || specifier.startsWith("/") || specifier.includes("://")

const importMetaUrl = (t: typeof types): types.MemberExpression =>
  t.memberExpression(t.metaProperty(t.identifier("import"), t.identifier("meta")), t.identifier("url"))

/** Boxel's loader rewrites of `fetch(...)` and `import(...)` (a global `fetch` only: a local one is left alone). */
const loaderRewrites = ({ types: t }: PluginAPI): PluginObject => ({
  name: "module-transpile-cache/boxel-loader",
  visitor: {
    CallExpression(path) {
      const callee = path.node.callee
      if (callee.type === "Identifier" && callee.name === "fetch" && !path.scope.hasBinding("fetch")) {
        path.node.callee = loaderMember(t, "fetch")
      }
    },
    ImportExpression(path) {
      const { source, options } = path.node
      const specifier = source.type === "StringLiteral" && isPathLike(source.value)
        ? t.memberExpression(t.newExpression(t.identifier("URL"), [source, importMetaUrl(t)]), t.identifier("href"))
        : source
      path.replaceWith(t.callExpression(loaderMember(t, "import"), options ? [specifier, options] : [specifier]))
    }
  }
})

const require = createRequire(import.meta.url)

const scopedCssOptions = { noGlobal: true } as const

/** The ember-concurrency majors whose async-arrow transform the pipeline drives. */
export const emberConcurrencyMajors: ReadonlyArray<number> = [4, 5]

/** Where the async-arrow transforms of ember-concurrency 4 and 5 import `buildTask` from. */
export const transformRuntime = "ember-concurrency/async-arrow-runtime"

/**
 * Where the `boxel` pipeline's output imports `buildTask` from: the module Boxel's host
 * provides (its loader shims it; Boxel's own realm server emits it), and which
 * ember-concurrency 3.1, 4 and 5 all ship (4 and 5 re-export it as `async-arrow-runtime`,
 * the name their transform uses, which Boxel's host does not provide).
 */
export const asyncArrowRuntime = "ember-concurrency/-private/async-arrow-runtime"

/** The subpath of {@link asyncArrowRuntime} in ember-concurrency's package. */
const asyncArrowRuntimeSubpath = "./-private/async-arrow-runtime"

/**
 * Points the imports of `buildTask` that the async-arrow transform added at
 * {@link asyncArrowRuntime}. What the module imported itself is left as written (the
 * transform may add its specifier to such an import: it is moved out to an import of its own).
 */
const runtimeImportRewrite = ({ types: t }: PluginAPI): PluginObject => {
  const written = new WeakSet<types.Node>()
  const runtimeImports = (program: types.Program): ReadonlyArray<types.ImportDeclaration> =>
    program.body.filter((node): node is types.ImportDeclaration =>
      node.type === "ImportDeclaration" && node.source.value === transformRuntime
    )
  return {
    name: "module-transpile-cache/async-arrow-runtime",
    // before any visitor runs (the transform works in its Program visitor): what the module wrote
    pre(file) {
      for (const node of runtimeImports(file.ast.program)) {
        written.add(node)
        for (const specifier of node.specifiers) written.add(specifier)
      }
    },
    post(file) {
      const body = file.ast.program.body
      for (const node of runtimeImports(file.ast.program)) {
        const added = node.specifiers.filter((specifier) => !written.has(specifier))
        if (!written.has(node)) {
          node.source = t.stringLiteral(asyncArrowRuntime)
        } else if (added.length > 0) {
          node.specifiers = node.specifiers.filter((specifier) => written.has(specifier))
          body.splice(body.indexOf(node) + 1, 0, t.importDeclaration(added, t.stringLiteral(asyncArrowRuntime)))
        }
      }
    }
  }
}

/**
 * ember-concurrency's async-arrow transform of a package. 4.x's declares Babel 7 alone
 * (`api.assertVersion(7)`; 5.x's, the same code plus the removal of the factory import it
 * made unused, declares `^7 || ^8`): it is run on Babel 8 with its version check answered,
 * and test/HostPackages.test.ts shows its output equal to the same transform on Babel 7.29.
 */
export const asyncArrowTransform = (pkg: HostPackages.HostPackage): PluginTarget => {
  const plugin = HostPackages.load("boxel", pkg, "./async-arrow-task-transform")
  if (typeof plugin !== "function") throw new TypeError(`${pkg.dir}/async-arrow-task-transform is not a Babel plugin`)
  if (pkg.major !== 4) return foreignPlugin(plugin)
  return foreignPlugin((api: PluginAPI, options: unknown, dirname: string): unknown =>
    plugin(
      Object.create(api, {
        assertVersion: { value: (range: string | number) => (range === 7 ? undefined : api.assertVersion(range)) }
      }),
      options,
      dirname
    )
  )
}

const pipelines = new Map<string, Pipeline>()

/**
 * The `boxel` pipeline, over the template compiler of `emberSource` and the
 * ember-concurrency and decorator-transforms of `hostPackages` (default: the ones beside
 * this package; the ember-source of `hostPackages` when only that is given).
 */
export const make = (emberSource?: string, hostPackages?: string): Pipeline => {
  const dir = Ember.emberSourceDir("boxel", emberSource, hostPackages)
  const key = JSON.stringify([dir, hostPackages === undefined ? null : resolve(hostPackages)])
  const known = pipelines.get(key)
  if (known !== undefined) return known
  // ember-concurrency from the host: its transform, and the runtime module its output imports.
  const emberConcurrency = HostPackages.requireDrivable(
    "boxel",
    HostPackages.locate("boxel", "ember-concurrency", hostPackages),
    emberConcurrencyMajors,
    ["./async-arrow-task-transform", asyncArrowRuntimeSubpath]
  )
  const pipeline = Ember.makeWith({
    name: "boxel",
    emberSource: dir,
    hostPackages,
    decoratorOptions: {},
    decoratorRuntime: "./globals",
    transformsConfig: [["glimmer-scoped-css/ast-transform#generateScopedCSSPlugin", scopedCssOptions]],
    beforeConfig: [
      ["ember-concurrency/async-arrow-task-transform", {}],
      ["module-transpile-cache/async-arrow-runtime", { runtime: asyncArrowRuntime }]
    ],
    afterConfig: [["module-transpile-cache/boxel-loader", { revision: 1 }]],
    // Loaded with the pipeline's plugins: the main thread of a pool never pays for them.
    extraPlugins: () => {
      const { generateScopedCSSPlugin }: typeof ScopedCssTransform = require("glimmer-scoped-css/ast-transform")
      return {
        transforms: [generateScopedCSSPlugin(scopedCssOptions)],
        before: [asyncArrowTransform(emberConcurrency), runtimeImportRewrite],
        after: [loaderRewrites]
      }
    },
    versions: {
      "ember-concurrency": emberConcurrency.version,
      "glimmer-scoped-css": versionOf(require, "glimmer-scoped-css")
    },
    revision: 2
  })
  pipelines.set(key, pipeline)
  return pipeline
}
