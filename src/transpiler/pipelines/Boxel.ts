/**
 * The `boxel` pipeline: {@link Ember}'s, plus what Boxel's realm server does to a module.
 *
 * In order: ember-concurrency's async-arrow task transform (`task(async () => ...)` becomes
 * a generator task), TypeScript, `decorator-transforms` with its default options (calls to
 * the `dt7948` global, which the host installs with `import "decorator-transforms/globals"`),
 * the template compiler with `glimmer-scoped-css` (`<style scoped>` becomes scoped
 * attributes and an import of a virtual `./<file>.<base64>.glimmer-scoped.css` module, which
 * the realm server answers as `text/css`), and Boxel's loader rewrites: `fetch(...)` becomes
 * `import.meta.loader.fetch(...)`, and `import(x)` becomes
 * `import.meta.loader.import(new URL(x, import.meta.url).href)` when `x` is a path-like
 * string literal (`./`, `../`, `/`, or containing `://`), else `import.meta.loader.import(x)`.
 *
 * All run on Babel 8 (Boxel itself runs Babel 7.29; see the README).
 *
 * @since 0.2.0
 */
import { types, type PluginItem, type PluginObject } from "@babel/core"
import type * as ScopedCssTransform from "glimmer-scoped-css/ast-transform"
import { createRequire } from "node:module"
import { resolve } from "node:path"
import * as Ember from "./Ember.ts"
import { foreignPlugin, type Pipeline, versionOf } from "./Pipeline.ts"

const loaderMember = (name: string): types.MemberExpression =>
  types.memberExpression(
    types.memberExpression(types.metaProperty(types.identifier("import"), types.identifier("meta")), types.identifier("loader")),
    types.identifier(name)
  )

/** Whether an `import()` specifier is resolved against the module's URL by Boxel's loader. */
const isPathLike = (specifier: string): boolean =>
  specifier.startsWith("./") || specifier.startsWith("../") || specifier.startsWith("/") || specifier.includes("://")

const importMetaUrl = (): types.MemberExpression =>
  types.memberExpression(types.metaProperty(types.identifier("import"), types.identifier("meta")), types.identifier("url"))

/** Boxel's loader rewrites of `fetch(...)` and `import(...)` (a global `fetch` only: a local one is left alone). */
const loaderRewrites = (): PluginObject => ({
  name: "module-transpile-cache/boxel-loader",
  visitor: {
    CallExpression(path) {
      const callee = path.node.callee
      if (callee.type === "Identifier" && callee.name === "fetch" && !path.scope.hasBinding("fetch")) {
        path.node.callee = loaderMember("fetch")
      }
    },
    ImportExpression(path) {
      const { source, options } = path.node
      const specifier = source.type === "StringLiteral" && isPathLike(source.value)
        ? types.memberExpression(types.newExpression(types.identifier("URL"), [source, importMetaUrl()]), types.identifier("href"))
        : source
      path.replaceWith(types.callExpression(loaderMember("import"), options ? [specifier, options] : [specifier]))
    }
  }
})

const require = createRequire(import.meta.url)

const scopedCssOptions = { noGlobal: true } as const

const pipelines = new Map<string, Pipeline>()

/** The `boxel` pipeline, over the template compiler of `emberSource` (default: this package's ember-source). */
export const make = (emberSource?: string): Pipeline => {
  const key = resolve(emberSource ?? Ember.defaultEmberSource())
  const known = pipelines.get(key)
  if (known !== undefined) return known
  // Loaded here, not on import: a process that runs another pipeline never pays for them.
  // ember-concurrency 5's own Babel plugin for `task(async () => ...)` (CommonJS).
  const asyncArrowTaskTransform: PluginItem = foreignPlugin(require("ember-concurrency/async-arrow-task-transform"))
  const { generateScopedCSSPlugin }: typeof ScopedCssTransform = require("glimmer-scoped-css/ast-transform")
  const pipeline = Ember.makeWith({
    name: "boxel",
    emberSource: key,
    decoratorOptions: {},
    transforms: [generateScopedCSSPlugin(scopedCssOptions)],
    transformsConfig: [["glimmer-scoped-css/ast-transform#generateScopedCSSPlugin", scopedCssOptions]],
    before: [[asyncArrowTaskTransform, ["ember-concurrency/async-arrow-task-transform", {}]]],
    after: [[loaderRewrites, ["module-transpile-cache/boxel-loader", { revision: 1 }]]],
    versions: {
      "ember-concurrency": versionOf(require, "ember-concurrency"),
      "glimmer-scoped-css": versionOf(require, "glimmer-scoped-css")
    },
    revision: 1
  })
  pipelines.set(key, pipeline)
  return pipeline
}
