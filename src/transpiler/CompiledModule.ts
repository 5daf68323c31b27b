/**
 * What a compiled module is served as: its JavaScript, its content type, its source's
 * hash and its dependency keys (the specifiers its compiled AST imports, as written).
 *
 * @since 0.1.0
 */
import type { types } from "@babel/core"
import { babelCore } from "./BabelCore.ts"
import { hashSource, javascriptContentType, type TranspiledModule } from "../domain/Domain.ts"

/** The module served for `source`, compiled to `body`. */
export const javascriptModule = (source: string, body: string, dependencyKeys: ReadonlyArray<string>): TranspiledModule => ({
  body,
  headers: { "content-type": javascriptContentType },
  dependencyKeys,
  sourceHash: hashSource(source)
})

const literalSpecifier = (node: types.Node | null | undefined): string | undefined => {
  if (!node) return undefined
  if (node.type === "StringLiteral") return node.value
  if (node.type === "TemplateLiteral" && node.expressions.length === 0 && node.quasis.length === 1) {
    return node.quasis[0]?.value.cooked ?? undefined
  }
  return undefined
}

const isMember = (node: types.Node, object: (o: types.Node) => boolean, property: string): boolean =>
  node.type === "MemberExpression" && !node.computed && node.property.type === "Identifier" &&
  node.property.name === property && object(node.object)

const isImportMeta = (node: types.Node): boolean =>
  node.type === "MetaProperty" && node.meta.name === "import" && node.property.name === "meta"

/** `import.meta.loader.import` */
const isLoaderImport = (node: types.Node): boolean =>
  isMember(node, (loader) => isMember(loader, isImportMeta, "loader"), "import")

/** The specifier of `x` or `new URL(x, import.meta.url).href`, `x` a literal. */
const loaderSpecifier = (node: types.Node): string | undefined => {
  if (
    node.type === "MemberExpression" && !node.computed && node.property.type === "Identifier" &&
    node.property.name === "href" && node.object.type === "NewExpression" &&
    node.object.callee.type === "Identifier" && node.object.callee.name === "URL"
  ) {
    const [first, second] = node.object.arguments
    return first && second && isMember(second, isImportMeta, "url") ? literalSpecifier(first) : undefined
  }
  return literalSpecifier(node)
}

/**
 * The specifiers a module's AST imports: static imports, `export ... from`, and dynamic
 * `import()` of a string literal or a template literal without substitutions (also as
 * Boxel's `import.meta.loader.import(...)`). Deduplicated,
 * in first-seen order, exactly as written.
 */
export const dependencyKeysOf = (ast: types.Node): ReadonlyArray<string> => {
  const seen = new Set<string>()
  const add = (specifier: string | undefined) => {
    if (specifier !== undefined) seen.add(specifier)
  }
  babelCore().types.traverseFast(ast, (node) => {
    switch (node.type) {
      case "ImportDeclaration":
        if (node.importKind !== "type" && node.importKind !== "typeof") add(node.source.value)
        break
      case "ExportAllDeclaration":
        if (node.exportKind !== "type") add(node.source.value)
        break
      case "ExportNamedDeclaration":
        if (node.source && node.exportKind !== "type") add(node.source.value)
        break
      case "ImportExpression":
        add(literalSpecifier(node.source))
        break
      case "CallExpression":
        if (node.callee.type === "Import") {
          const [first] = node.arguments
          add(first && first.type !== "SpreadElement" && first.type !== "ArgumentPlaceholder" ? literalSpecifier(first) : undefined)
        } else if (isLoaderImport(node.callee)) {
          // Boxel's loader rewrite: import.meta.loader.import(x) or (new URL(x, import.meta.url).href)
          const [first] = node.arguments
          add(first && first.type !== "SpreadElement" && first.type !== "ArgumentPlaceholder" ? loaderSpecifier(first) : undefined)
        }
        break
    }
  })
  return Array.from(seen)
}
