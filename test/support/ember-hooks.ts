/**
 * Node module hooks that let a plain Node process evaluate what the `ember` and `boxel`
 * pipelines emit, the way an Ember host would:
 *
 * - bare `@ember/*`, `@glimmer/*` (and the few other names ember-source's runtime is
 *   published under) resolve to ember-source's ESM build, `@glimmer/component` and
 *   `@glimmer/env` to their ESM builds (what an app's build or an import map does);
 * - a `*.glimmer-scoped.css` import records its decoded CSS in `globalThis.__scopedCss`;
 * - files of the built realm (`.gts`, `.gjs`, `.ts`, `.js`, already transpiled) load as ES
 *   modules, each with `import.meta.loader` set to `globalThis.__boxelLoader` (what
 *   Boxel's loader provides).
 *
 * Registered by `ember-register.ts` (`node --import`); the realm directory comes in
 * `MTC_EVAL_REALM`, ember-source's package directory in `MTC_EVAL_EMBER_PACKAGES`.
 */
import { decodeScopedCSSRequest } from "glimmer-scoped-css"
import { existsSync, readFileSync } from "node:fs"
import type { LoadHook, ResolveHook } from "node:module"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const packages = process.env.MTC_EVAL_EMBER_PACKAGES ??
  path.join(root, "node_modules/ember-source/dist/prod/packages")
const realm = process.env.MTC_EVAL_REALM === undefined ? undefined : path.resolve(process.env.MTC_EVAL_REALM)

const separate: Readonly<Record<string, string>> = {
  "@glimmer/component": path.join(root, "node_modules/@glimmer/component/dist/index.js"),
  "@glimmer/env": path.join(root, "node_modules/@glimmer/env/dist/modules/es2017/index.js")
}

const runtimeFile = (specifier: string): string | undefined => {
  const known = separate[specifier]
  if (known !== undefined) return known
  if (!/^(@ember\/|@glimmer\/|@simple-dom\/|ember$|rsvp$|backburner\.js$|router_js$|route-recognizer$|dag-map$)/.test(specifier)) {
    return undefined
  }
  for (const candidate of [path.join(packages, specifier, "index.js"), path.join(packages, `${specifier}.js`)]) {
    if (existsSync(candidate)) return candidate
  }
  return undefined
}

const fromRoot = pathToFileURL(path.join(root, "package.json")).href
const isBare = (specifier: string): boolean => !/^(\.|\/|[a-z]+:)/.test(specifier)

export const resolve: ResolveHook = (specifier, context, nextResolve) => {
  const file = runtimeFile(specifier)
  if (file !== undefined) return { url: pathToFileURL(file).href, format: "module", shortCircuit: true }
  // Glimmer-scoped CSS is virtual: its URL is the module, as the realm server answers it.
  if (specifier.endsWith(".glimmer-scoped.css") && context.parentURL !== undefined) {
    return { url: new URL(specifier, context.parentURL).href, format: "module", shortCircuit: true }
  }
  // Packages (decorator-transforms, ember-concurrency, ...) resolve from this repository, as a host's build would.
  if (isBare(specifier)) return nextResolve(specifier, { ...context, parentURL: fromRoot })
  return nextResolve(specifier, context)
}

export const load: LoadHook = (url, context, nextLoad) => {
  if (url.endsWith(".glimmer-scoped.css")) {
    // records the decoded CSS, as a stylesheet the host would add
    const { css } = decodeScopedCSSRequest(new URL(url).pathname)
    return {
      format: "module",
      source: `(globalThis.__scopedCss ??= []).push(${JSON.stringify(css)});`,
      shortCircuit: true
    }
  }
  if (realm !== undefined && url.startsWith("file:")) {
    const file = fileURLToPath(url)
    if (file.startsWith(realm + path.sep)) {
      const source = readFileSync(file, "utf8")
      return {
        format: "module",
        source: `import.meta.loader = globalThis.__boxelLoader;\n${source}`,
        shortCircuit: true
      }
    }
  }
  return nextLoad(url, context)
}
