/**
 * Which modules the transpiler handles: the kind of a module, from its extension.
 * `.ts`/`.mts` (TypeScript), `.gts` (content-tag, then as `.ts`), `.gjs` (content-tag, then
 * as `.js`), `.js`/`.mjs`. A `.d.ts` (or `.d.mts`) file is an empty module.
 *
 * @since 0.1.0
 */
import { posix } from "node:path"
import type { ModuleKind } from "./pipelines/Pipeline.ts"

/** The kind of module of each extension (part of the fingerprint). */
export const kindsByExtension: Readonly<Record<string, ModuleKind>> = {
  ".ts": "ts",
  ".mts": "ts",
  ".gts": "gts",
  ".js": "js",
  ".mjs": "js",
  ".gjs": "gjs"
}

/** The extensions the transpiler accepts. */
export const supportedExtensions: ReadonlyArray<string> = Object.keys(kindsByExtension)

/**
 * The kind of module a path names, from its extension, or `undefined` when the extension
 * is not one the transpiler handles.
 */
export const moduleKindOf = (path: string): ModuleKind | undefined => {
  const extension = posix.extname(path).toLowerCase()
  return Object.hasOwn(kindsByExtension, extension) ? kindsByExtension[extension] : undefined
}

/** Whether a path names a TypeScript declaration file (`.d.ts`, `.d.mts`): a module with no runtime content. */
export const isDeclarationFile = (path: string): boolean => /\.d\.m?ts$/i.test(path)

/** Whether a kind of module goes through content-tag first (`.gts`, `.gjs`). */
export const hasTemplates = (kind: ModuleKind): boolean => kind === "gts" || kind === "gjs"
