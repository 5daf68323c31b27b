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
import type { NodePath, PluginAPI, PluginItem, PluginObject, PluginTarget, types } from "@babel/core"
import type * as GlimmerSyntax from "@glimmer/syntax"
import { createRequire } from "node:module"
import { lazyRequire } from "../../internal/lazyRequire.ts"
import { defaultExport, foreignPlugin, type ModuleKind, type Pipeline, versionOf } from "./Pipeline.ts"

/** `@glimmer/syntax`, loaded on first use: most modules never need a template parsed here. */
export const loadGlimmerSyntax = lazyRequire<typeof GlimmerSyntax>(import.meta.url, "@glimmer/syntax")

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

/** A scope binding (Babel's `Binding`, which @babel/core does not re-export). */
type Binding = NonNullable<ReturnType<NodePath["scope"]["getBinding"]>>

/** Whether a reference is in a type position (as TypeScript's import elision counts them). */
const isInType = (path: NodePath): boolean => {
  const parent = path.parent
  switch (parent?.type) {
    case "TSTypeReference":
    case "TSClassImplements":
    case "TSInterfaceHeritage":
    case "TSTypeQuery":
    case "TSQualifiedName":
      return true
    case "ExportSpecifier":
      return parent.exportKind === "type"
    default:
      return false
  }
}

/** Whether a template's text names `name` as a free word: not after `.` or `@`, not inside a longer name. */
export const mentions = (text: string, name: string): boolean => {
  for (let at = text.indexOf(name); at !== -1; at = text.indexOf(name, at + 1)) {
    const before = text[at - 1]
    const after = text[at + name.length]
    if ((before === undefined || !/[\w$.@-]/.test(before)) && (after === undefined || !/[\w$-]/.test(after))) return true
  }
  return false
}

/**
 * A Babel plugin, to run before the TypeScript plugin: an import that TypeScript would
 * elide but that a `template()` call's template uses gets a reference, so it is kept.
 *
 * - An import used neither in the JavaScript nor in types is kept when a template names it as a
 *   free word (an import nobody uses is rare; a template's imports are the common case, and
 *   are not worth a Glimmer parse each).
 * - An import used in types is kept only when `@glimmer/syntax` finds it among a
 *   template's free names (a template that cannot be parsed keeps it).
 */
export const keepTemplateLocals = ({ types }: PluginAPI): PluginObject => ({
  name: "module-transpile-cache/keep-template-locals",
  visitor: {
    Program: {
      // On enter: the TypeScript plugin elides imports on its own Program enter, which runs next.
      enter(program) {
        const functions = templateFunctions(program)
        if (functions.size === 0) return
        const candidates = new Map<string, Binding>()
        for (const [name, binding] of Object.entries(program.scope.bindings)) {
          if (binding.kind === "module" && binding.referencePaths.every(isInType)) candidates.set(name, binding)
        }
        if (candidates.size === 0) return
        // Names used in types: Babel's scope does not always count these as references.
        const typeNames = new Set<string>()
        types.traverseFast(program.node, (node) => {
          const head = node.type === "TSTypeReference"
            ? node.typeName
            : node.type === "TSTypeQuery"
            ? node.exprName
            : node.type === "TSClassImplements" || node.type === "TSInterfaceHeritage"
            ? node.expression
            : undefined
          let left: types.Node | undefined = head
          while (left !== undefined && left.type === "TSQualifiedName") left = left.left
          if (left !== undefined && left.type === "Identifier") typeNames.add(left.name)
        })
        const keep = (name: string) => {
          candidates.get(name)?.reference(program)
          candidates.delete(name)
        }
        types.traverseFast(program.node, (node) => {
          if (candidates.size === 0 || node.type !== "CallExpression") return
          if (node.callee.type !== "Identifier" || !functions.has(node.callee.name)) return
          const [first] = node.arguments
          const text = first === undefined || first.type === "SpreadElement" || first.type === "ArgumentPlaceholder"
            ? undefined
            : literalText(first)
          let locals: ReadonlySet<string> | undefined | "unparsed" = "unparsed"
          for (const name of Array.from(candidates.keys())) {
            if (text !== undefined && !mentions(text, name)) continue
            const binding = candidates.get(name)
            if (text === undefined || binding === undefined || (binding.referencePaths.length === 0 && !typeNames.has(name))) {
              keep(name)
              continue
            }
            if (locals === "unparsed") {
              try {
                locals = new Set(loadGlimmerSyntax().getTemplateLocals(text))
              } catch {
                locals = undefined
              }
            }
            if (locals === undefined || locals.has(name)) keep(name)
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

/** A Babel plugin package's plugin, loaded now. */
export const loadPlugin = (require: NodeJS.Require, name: string): PluginTarget => foreignPlugin(defaultExport(require(name)))

let plugins: Readonly<Record<ModuleKind, Array<PluginItem>>> | undefined

/** Loaded on first use, then the same value: Babel caches loaded plugins by the identity of these arrays and objects. */
const loadPlugins = (): Readonly<Record<ModuleKind, Array<PluginItem>>> => {
  if (plugins !== undefined) return plugins
  const require = createRequire(import.meta.url)
  const typescriptPlugin = loadPlugin(require, "@babel/plugin-transform-typescript")
  const decoratorsPlugin = loadPlugin(require, "@babel/plugin-proposal-decorators")
  plugins = {
    ts: [[typescriptPlugin, typescriptOptions], [decoratorsPlugin, decoratorsOptions]],
    gts: [keepTemplateLocals, [typescriptPlugin, typescriptOptions], [decoratorsPlugin, decoratorsOptions]],
    js: [[decoratorsPlugin, decoratorsOptions]],
    gjs: [[decoratorsPlugin, decoratorsOptions]]
  }
  return plugins
}

/**
 * The configuration of the `standard` pipeline, as it goes into the fingerprint. Bump
 * `revision` when this module's own handling changes.
 */
export const config = {
  pipeline: "standard",
  revision: 3,
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
    plugins: loadPlugins,
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
