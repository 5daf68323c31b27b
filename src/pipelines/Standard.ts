/**
 * The `standard` pipeline: TypeScript, standard (2023-11) decorators, and content-tag's
 * runtime `template()` calls, left for a runtime template compiler.
 *
 * In `.gts`/`.gjs` a template refers to its names through `eval`, which TypeScript's
 * import elision cannot see. {@link keepTemplateLocals} reads each template's free names
 * (with `@glimmer/syntax`) and marks those imports as used, so the components and helpers
 * a template uses are kept while an import used only as a type is removed, as in `.ts`.
 *
 * @since 0.2.0
 */
import { types, type NodePath, type PluginItem, type PluginObject } from "@babel/core"
import decoratorsPlugin from "@babel/plugin-proposal-decorators"
import typescriptPlugin from "@babel/plugin-transform-typescript"
import { getTemplateLocals } from "@glimmer/syntax"
import { createRequire } from "node:module"
import { type ModuleKind, type Pipeline, versionOf } from "./Pipeline.ts"

/** The module content-tag imports `template` from. */
export const templateCompilerModule = "@ember/template-compiler"

const importedName = (specifier: types.ImportSpecifier): string =>
  specifier.imported.type === "Identifier" ? specifier.imported.name : specifier.imported.value

/** The text of a string literal, or of a template literal without substitutions. */
const literalText = (node: types.Node | undefined): string | undefined => {
  if (!node) return undefined
  if (node.type === "StringLiteral") return node.value
  if (node.type === "TemplateLiteral" && node.expressions.length === 0 && node.quasis.length === 1) {
    return node.quasis[0]?.value.cooked ?? undefined
  }
  return undefined
}

/** The local names bound to `template` from `@ember/template-compiler`. */
const templateFunctions = (program: NodePath<types.Program>): ReadonlySet<string> => {
  const names = new Set<string>()
  for (const statement of program.node.body) {
    if (statement.type !== "ImportDeclaration" || statement.source.value !== templateCompilerModule) continue
    for (const specifier of statement.specifiers) {
      if (specifier.type === "ImportSpecifier" && importedName(specifier) === "template") names.add(specifier.local.name)
    }
  }
  return names
}

/**
 * A Babel plugin, to run before the TypeScript plugin: each import a `template()` call's
 * template names is referenced by that call, so TypeScript does not elide it. A template
 * that `@glimmer/syntax` cannot parse keeps every import (as its `eval` might see any).
 */
export const keepTemplateLocals = (): PluginObject => ({
  name: "module-transpile-cache/keep-template-locals",
  visitor: {
    Program: {
      // On enter: the TypeScript plugin elides imports on its own Program enter, which runs next.
      enter(program) {
        const functions = templateFunctions(program)
        if (functions.size === 0) return
        program.traverse({
          CallExpression(call) {
            const callee = call.node.callee
            if (callee.type !== "Identifier" || !functions.has(callee.name)) return
            const [first] = call.node.arguments
            const text = first === undefined || first.type === "SpreadElement" || first.type === "ArgumentPlaceholder"
              ? undefined
              : literalText(first)
            let names: ReadonlyArray<string>
            try {
              names = text === undefined ? Object.keys(program.scope.bindings) : getTemplateLocals(text)
            } catch {
              names = Object.keys(program.scope.bindings)
            }
            for (const name of names) {
              const binding = call.scope.getBinding(name)
              if (binding !== undefined && binding.kind === "module") binding.reference(call)
            }
          }
        })
      }
    }
  }
})

// Babel 8 has neither `isTSX` nor `allowDeclareFields`: declare fields are always allowed,
// and JSX is parsed only when a JSX syntax plugin is present, which it never is here (so
// `<T>value` assertions parse as TypeScript). The option is kept because it documents the
// intent and is part of the fingerprint.
const typescriptOptions = { allowDeclareFields: true } as const
const decoratorsOptions = { version: "2023-11" } as const

/** Built once: Babel caches loaded plugins by the identity of these arrays and objects. */
const plugins: Readonly<Record<ModuleKind, Array<PluginItem>>> = {
  ts: [[typescriptPlugin, typescriptOptions], [decoratorsPlugin, decoratorsOptions]],
  gts: [keepTemplateLocals, [typescriptPlugin, typescriptOptions], [decoratorsPlugin, decoratorsOptions]],
  js: [[decoratorsPlugin, decoratorsOptions]],
  gjs: [[decoratorsPlugin, decoratorsOptions]]
}

/**
 * The configuration of the `standard` pipeline, as it goes into the fingerprint. Bump
 * `revision` when this module's own handling changes.
 */
export const config = {
  pipeline: "standard",
  revision: 2,
  plugins: {
    ts: [["@babel/plugin-transform-typescript", typescriptOptions], ["@babel/plugin-proposal-decorators", decoratorsOptions]],
    gts: [
      ["module-transpile-cache/keep-template-locals", {}],
      ["@babel/plugin-transform-typescript", typescriptOptions],
      ["@babel/plugin-proposal-decorators", decoratorsOptions]
    ],
    js: [["@babel/plugin-proposal-decorators", decoratorsOptions]],
    gjs: [["@babel/plugin-proposal-decorators", decoratorsOptions]]
  }
} as const

let cached: Pipeline | undefined

/** The `standard` pipeline (the same value on every call). */
export const make = (): Pipeline => {
  if (cached !== undefined) return cached
  const require = createRequire(import.meta.url)
  cached = {
    name: "standard",
    plugins,
    versions: {
      "@babel/plugin-transform-typescript": versionOf(require, "@babel/plugin-transform-typescript"),
      "@babel/plugin-proposal-decorators": versionOf(require, "@babel/plugin-proposal-decorators"),
      "@glimmer/syntax": versionOf(require, "@glimmer/syntax")
    },
    config,
    async: false
  }
  return cached
}
