/**
 * The pages side of the realm's import map ({@link ImportMap}): which HTML pages opt in (a
 * `<script type="importmap" data-realm>` element whose content is empty or an import map),
 * what a page's module scripts reach through the modules' dependency keys, resolved as a
 * browser resolves them, and how the realm's entries merge with the page's own map. Pure
 * functions of their inputs: no I/O, no cache.
 *
 * @since 0.4.0
 */
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { initSync as initLexer, parse as lexModule } from "es-module-lexer"
import type { CachedModule } from "../domain/Domain.ts"

const decoder = new TextDecoder()

/** An import map, as the HTML standard defines it (the parts this server reads and writes). */
export const ImportMapJson = Schema.Struct({
  imports: Schema.optional(Schema.Record(Schema.String, Schema.String)),
  scopes: Schema.optional(Schema.Record(Schema.String, Schema.Record(Schema.String, Schema.String))),
  integrity: Schema.optional(Schema.Record(Schema.String, Schema.String))
})
export type ImportMapJson = typeof ImportMapJson.Type

/** The base URL page-relative values are resolved against: only its path matters. */
export const pageOrigin = "http://realm.invalid"

/** The opening tag of a page's placeholder, its content, and its closing tag. */
const placeholder = /(<script\b[^>]*\bdata-realm\b[^>]*>)([\s\S]*?)(<\/script\s*>)/i

/** Whether an opening `<script ...>` tag is an import map's. */
const isImportMapTag = (tag: string): boolean => /\btype\s*=\s*["']?importmap["'\s>]/i.test(tag)

const decodeMap = Schema.decodeUnknownOption(ImportMapJson)

/**
 * The request path of a canonical module path as a browser writes it: what the URL parser
 * makes of it (`@` and `+` stay, a space becomes `%20`), so that the map's keys equal the
 * URLs the browser resolves imports to. `%`, `?` and `#` are encoded first.
 */
export const browserPathOf = (canonicalPath: string): string =>
  new URL(`/${canonicalPath.replace(/%/g, "%25").replace(/\?/g, "%3F").replace(/#/g, "%23")}`, pageOrigin).pathname

/** JSON safe inside a `<script>` element: no `<` that could close it or open a comment. */
export const scriptSafe = (value: unknown): string => JSON.stringify(value).replace(/</g, "\\u003c")

/** Where a request path leads in one build: the module, its own request path and its immutable URL. */
export interface Target {
  readonly urlPath: string
  readonly url: string
  readonly module: CachedModule
}

/** One build of the map: its entries (sorted), and the target of each entry's request path. */
export interface Build {
  readonly entries: ReadonlyMap<string, string>
  readonly targets: ReadonlyMap<string, Target>
}

/** A page that opts in: the HTML around its placeholder's content, and the page's own map. */
export interface PageTemplate {
  readonly before: string
  readonly after: string
  readonly own: ImportMapJson
  /**
   * What the page's module scripts import (`<script type="module" src>`, and the imports of
   * inline module scripts); undefined when it has no module script (then the whole map is listed).
   */
  readonly entrySpecifiers: ReadonlyArray<string> | undefined
}

const moduleScripts = /<script\b([^>]*)>([\s\S]*?)<\/script\s*>/gi
const isModuleScript = (attributes: string): boolean => /\btype\s*=\s*["']?module["'\s]|\btype\s*=\s*["']?module$/i.test(attributes)
const srcOf = (attributes: string): string | undefined => /\bsrc\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))/i.exec(attributes)?.slice(1).find((v) => v !== undefined)

let lexerReady = false

/** The specifiers a module's text imports (static, and dynamic with a literal), read by es-module-lexer. */
const importsOf = (code: string): ReadonlyArray<string> => {
  try {
    if (!lexerReady) {
      initLexer()
      lexerReady = true
    }
    return lexModule(code)[0].flatMap((record) => record.n === undefined || record.d === -2 ? [] : [record.n])
  } catch {
    return []
  }
}

/** What a page's module scripts import, or undefined when it has none. */
const entrySpecifiersOf = (html: string): ReadonlyArray<string> | undefined => {
  const found: Array<string> = []
  let any = false
  for (const match of html.matchAll(moduleScripts)) {
    const attributes = match[1]!
    if (!isModuleScript(attributes)) continue
    any = true
    const src = srcOf(attributes)
    if (src !== undefined) found.push(src)
    else found.push(...importsOf(match[2]!))
  }
  return any ? found : undefined
}

/**
 * The entries a page reaches: from what its module scripts import, through each listed
 * module's dependency keys, resolved as the browser resolves them (relative and absolute
 * URLs against the importer's URL, bare specifiers through the page's own `imports`).
 * A module this build does not list ends the walk there: the browser asks for it plainly.
 */
export const reachable = (
  pageUrlPath: string,
  entrySpecifiers: ReadonlyArray<string>,
  own: ImportMapJson,
  targets: ReadonlyMap<string, Target>,
  /** Sees each request path the walk meets that `targets` does not list. */
  onUnlisted?: (urlPath: string) => void
): ReadonlyMap<string, string> => {
  const listed = new Map<string, string>()
  const seen = new Set<string>()
  const pending: Array<readonly [string, string]> = entrySpecifiers.map((specifier) => [specifier, pageUrlPath])
  const bare = Object.entries(own.imports ?? {})
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const urlPath = resolveSpecifier(next[0], next[1], pageUrlPath, bare)
    if (urlPath === undefined || seen.has(urlPath)) continue
    seen.add(urlPath)
    const target = targets.get(urlPath)
    if (target === undefined) {
      onUnlisted?.(urlPath)
      continue
    }
    listed.set(urlPath, target.url)
    if (seen.has(target.urlPath) && target.urlPath !== urlPath) continue
    seen.add(target.urlPath)
    listed.set(target.urlPath, target.url)
    for (const specifier of target.module.dependencyKeys) pending.push([specifier, target.urlPath])
  }
  return new Map([...listed].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)))
}

/** The same-origin request path a specifier resolves to from `base`, or undefined (another origin, a query, no mapping). */
export const resolveSpecifier = (
  specifier: string,
  base: string,
  pageUrlPath: string,
  bare: ReadonlyArray<readonly [string, string]>
): string | undefined => {
  let target: URL | undefined
  try {
    if (/^(?:\/|\.\/|\.\.\/)/.test(specifier) || /^[a-z][a-z0-9+.-]*:/i.test(specifier)) {
      target = new URL(specifier, `${pageOrigin}${base}`)
    } else {
      // A bare specifier: the page's exact entry, else its longest prefix entry ending in "/".
      let best: readonly [string, string] | undefined
      for (const entry of bare) {
        if (entry[0] === specifier) {
          best = entry
          break
        }
        if (entry[0].endsWith("/") && specifier.startsWith(entry[0]) && (best === undefined || entry[0].length > best[0].length)) {
          best = entry
        }
      }
      if (best === undefined) return undefined
      target = new URL(best[1] + specifier.slice(best[0].length), `${pageOrigin}${pageUrlPath}`)
    }
  } catch {
    return undefined
  }
  return target.origin === pageOrigin && target.search === "" ? target.pathname : undefined
}

/** The template of a page, or null when it does not opt in. */
export const templateOf = (page: Uint8Array): PageTemplate | null => {
  const html = decoder.decode(page)
  const found = placeholder.exec(html)
  if (found === null || !isImportMapTag(found[1]!)) return null
  const content = found[2]!.trim()
  let own: ImportMapJson = {}
  if (content !== "") {
    let parsed: unknown
    try {
      parsed = JSON.parse(content)
    } catch {
      return null
    }
    const decoded = decodeMap(parsed)
    if (Option.isNone(decoded)) return null
    own = decoded.value
  }
  const start = found.index + found[1]!.length
  return { before: html.slice(0, start), after: html.slice(start + found[2]!.length), own, entrySpecifiers: entrySpecifiersOf(html) }
}

/**
 * The realm's entries under the page's own map: the page's keys win, and its values that
 * name a realm module (same origin, no query) become that module's immutable URL.
 */
export const mergeMaps = (
  urlPath: string,
  entries: ReadonlyMap<string, string>,
  own: ImportMapJson,
  lookup: ReadonlyMap<string, string> = entries
): ImportMapJson => {
  const base = `${pageOrigin}${urlPath}`
  const rewrite = (specifiers: Readonly<Record<string, string>>): Record<string, string> => {
    const out: Record<string, string> = {}
    for (const [key, value] of Object.entries(specifiers)) {
      let target: URL | undefined
      try {
        target = new URL(value, base)
      } catch {
        target = undefined
      }
      const immutable = target !== undefined && target.origin === pageOrigin && target.search === "" && target.hash === ""
        ? lookup.get(target.pathname)
        : undefined
      out[key] = immutable ?? value
    }
    return out
  }
  const imports = { ...Object.fromEntries(entries), ...rewrite(own.imports ?? {}) }
  return {
    ...own,
    imports,
    ...(own.scopes === undefined ? {} : {
      scopes: Object.fromEntries(Object.entries(own.scopes).map(([scope, specifiers]) => [scope, rewrite(specifiers)]))
    })
  }
}
