/**
 * The realm's import map: each module's plain URL mapped to its {@link ImmutableUrls}
 * immutable URL, so that a browser that reloads a page asks the server for the page alone.
 *
 * - **What it lists**: the modules of the realm this process has read (`RealmFiles.knownPaths`:
 *   requested, preloaded or warmed) at the request paths the realm serves (none under a longer
 *   mount: the longest mount wins), each at the version of its current L1 entry, plus the
 *   extensionless request paths that resolved to one of them (`/greeting` for `greeting.gts`),
 *   mapped to that module's immutable URL: `./greeting` and `./greeting.gts` are then one
 *   module instance in the page, fetched once (under plain URLs they are two). A known
 *   module that is not in L1 (an edit invalidated it) is fetched through the cache first, at
 *   most {@link maxGetsPerBuild} per build, so the map names the edited module's new version
 *   at once; one that fails (a transpile error, a deleted file) is left out, and the browser
 *   asks for its plain URL.
 * - **Built once per change**: the entries are rebuilt only when the L1 module objects (or
 *   the extensionless paths) differ from the last build's, and the JSON and each page are
 *   rendered once per build.
 * - **Served** whole as JSON at `GET /_cache/importmap.json` (for loaders of their own, such
 *   as a Boxel host's) and **injected** into the realm's HTML pages that opt in with a
 *   `<script type="importmap" data-realm>` element: its content (empty, or a map of the
 *   page's own, e.g. bare specifiers) is replaced by the realm's map merged with the page's.
 *   The page's entries win, and those of its values that point at a realm module are
 *   rewritten to that module's immutable URL (an import map is not applied twice, so
 *   `"@ember/renderer": "./vendor/.../index.js"` must name the immutable URL itself). A page
 *   lists only what its module scripts reach through the modules' dependency keys
 *   ({@link reachable}), so its map grows with its graph, not with the realm. When a page's
 *   map is built, the modules it reaches that this process has not read yet are fetched
 *   through the cache first (at most {@link maxDiscoveredPerPage}), so even a first load
 *   gets immutable URLs.
 * - **Fresh after an edit**: the page is answered with `cache-control: no-cache` and an ETag
 *   of its bytes, map included, so a reload revalidates it and gets the new map when a module
 *   changed; the map names only current versions (an invalidation drops the L1 entry first).
 *   Imports inside modules are never rewritten: an edit changes only the edited module's entry.
 *
 * @since 0.4.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as HttpRouter from "effect/http/HttpRouter"
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import type * as HttpServerResponse from "effect/http/HttpServerResponse"
import type { ModuleCache } from "../cache/ModuleCache.ts"
import { type CachedModule, keyString, moduleKey } from "../domain/Domain.ts"
import { ModuleNotFoundError } from "../domain/Errors.ts"
import { CurrentResolution, type RealmFiles, type ResolvedPath } from "../realm/FileSystemSources.ts"
import { immutableUrl, versionOfEtag } from "./ImmutableUrls.ts"
import {
  browserPathOf,
  type Build,
  type ImportMapJson,
  mergeMaps,
  type PageTemplate,
  reachable,
  resolveSpecifier,
  scriptSafe,
  type Target,
  templateOf
} from "./ImportMapPages.ts"
import { pathOf } from "../realm/PathRules.ts"
import type { CachedAnswer } from "../realm/RawFileCache.ts"
import { type AnswersOnce, conditionalAnswer, moduleEtag, preflight, rawEtag } from "./Responses.ts"

/** The content type of `GET /_cache/importmap.json`. */
const jsonContentType = "application/json; charset=utf-8"

export { browserPathOf, ImportMapJson, mergeMaps, reachable } from "./ImportMapPages.ts"

/** The path of the JSON map. */
export const importMapPath = "/_cache/importmap.json"

/** Modules that are known but not in L1 fetched through the cache by one build, at most. */
export const maxGetsPerBuild = 256

/** Modules a page's first render fetches through the cache, at most (see `RealmImportMap.discover`). */
export const maxDiscoveredPerPage = 2000

/** Extensionless request paths remembered, at most (then forgotten all at once, as the fast path does). */
const maxAliases = 10_000

const encoder = new TextEncoder()

/** The import map of one realm (see the module doc). */
export class RealmImportMap {
  private readonly aliases = new Map<string, string>()
  private readonly urls = new WeakMap<CachedModule, { readonly urlPath: string; readonly url: string }>()
  /** The last build: its module objects (in order), its aliases, and its entries. */
  private last: {
    readonly modules: ReadonlyArray<CachedModule>
    readonly aliasKey: string
    readonly build: Build
  } | undefined
  /** Answers computed from one build's entries (the JSON map, and each page that opts in). */
  private readonly rendered = new WeakMap<
    ReadonlyMap<string, string>,
    Map<string, RenderedAnswer & { readonly source: unknown }>
  >()
  /** Each page's template (null: it does not opt in), per bytes object of the raw-file cache. */
  private readonly templates = new WeakMap<Uint8Array, PageTemplate | null>()

  private readonly cache: ModuleCache["Service"]
  private readonly files: RealmFiles["Service"]
  /** The realm's mount: its request paths are below it. */
  private readonly mount: string
  /**
   * Whether a request path below the mount is this realm's: false under a longer mount (the
   * longest mount wins), where a file of this realm at the same place is never served.
   */
  private readonly owns: (urlPath: string) => boolean

  /**
   * The import map of the realm that serves a request path this realm does not own, when a page
   * of this realm may list its modules: another public realm's.
   */
  private readonly foreign: (urlPath: string) => RealmImportMap | undefined

  constructor(
    cache: ModuleCache["Service"],
    files: RealmFiles["Service"],
    mount = "/",
    owns: (urlPath: string) => boolean = () => true,
    foreign: (urlPath: string) => RealmImportMap | undefined = () => undefined
  ) {
    this.cache = cache
    this.files = files
    this.mount = mount
    this.owns = owns
    this.foreign = foreign
  }

  /** The request path of a module of the realm, below its mount. */
  private urlPathOf(canonicalPath: string): string {
    const plain = browserPathOf(canonicalPath)
    return this.mount === "/" ? plain : this.mount.slice(0, -1) + plain
  }

  /** Whether a request path of the server is this realm's: below its mount, and under no longer one. */
  private isOwn(urlPath: string): boolean {
    return urlPath.startsWith(this.mount) && this.owns(urlPath)
  }

  /** Resolves a request path of the server in the realm: a path outside its mount names none of its modules. */
  private resolve(urlPath: string) {
    return this.isOwn(urlPath)
      ? this.files.resolve(urlPath.slice(this.mount.length - 1))
      : Effect.fail(new ModuleNotFoundError({ path: urlPath }))
  }

  /**
   * Notes a request path the router resolved to a module: an extensionless one (or any path
   * that is not the module's own) is listed in the map from then on, while it still resolves
   * to a module.
   */
  noteRequest(urlPath: string, resolved: ResolvedPath): void {
    if (!resolved.executable || urlPath === this.urlPathOf(resolved.path)) return
    if (this.aliases.size >= maxAliases) this.aliases.clear()
    this.aliases.set(urlPath, resolved.path)
  }

  /** A module's plain request path and immutable URL, computed once per module object. */
  private urlsOf(path: string, module: CachedModule): { readonly urlPath: string; readonly url: string } {
    let urls = this.urls.get(module)
    if (urls === undefined) {
      const urlPath = this.urlPathOf(path)
      urls = { urlPath, url: immutableUrl(urlPath, versionOfEtag(moduleEtag(module))) }
      this.urls.set(module, urls)
    }
    return urls
  }

  /** The map's entries now: plain request path to immutable URL, sorted by path. */
  readonly entries: Effect.Effect<ReadonlyMap<string, string>> = Effect.suspend(() => this.build).pipe(
    Effect.map((build) => build.entries)
  )

  /** The map's entries now, with the module each request path leads to (see `Build`). */
  readonly build: Effect.Effect<Build> = Effect.suspend(() => {
    const realmUrl = this.files.realmUrl
    const known = this.files.knownPaths()
    const current = new Map<string, CachedModule>()
    const missing: Array<string> = []
    for (const path of known) {
      const module = this.cache.peekL1(keyString(moduleKey(realmUrl, path)))
      if (module !== undefined) {
        if (this.owns(this.urlsOf(path, module).urlPath)) current.set(path, module)
      } else if (missing.length < maxGetsPerBuild && this.owns(this.urlPathOf(path))) missing.push(path)
    }
    const fetchMissing = Effect.forEach(missing, (path) =>
      this.cache.get(moduleKey(realmUrl, path)).pipe(
        Effect.map(({ module }) => {
          current.set(path, module)
        }),
        Effect.ignore
      ), { concurrency: 8, discard: true })
    const aliases = Effect.forEach(Array.from(this.aliases.keys()), (alias) =>
      Effect.map(Effect.option(this.resolve(alias)), (resolved) => {
        if (Option.isNone(resolved) || !resolved.value.executable) {
          this.aliases.delete(alias)
          return undefined
        }
        return [alias, resolved.value.path] as const
      }), { concurrency: 8 })
    return Effect.map(Effect.andThen(fetchMissing, aliases), (resolvedAliases) => {
      // The same module objects (and aliases) as the last build: its entries, as they were.
      const modules = Array.from(current.values())
      const aliasKey = resolvedAliases.map((alias) => alias === undefined ? "" : `${alias[0]}\n${alias[1]}`).join("\n")
      const last = this.last
      if (
        last !== undefined && last.aliasKey === aliasKey && last.modules.length === modules.length &&
        last.modules.every((module, i) => module === modules[i])
      ) return last.build
      const out: Array<readonly [string, string]> = []
      const targets = new Map<string, Target>()
      const byPath = new Map<string, Target>()
      for (const [path, module] of current) {
        const { url, urlPath } = this.urlsOf(path, module)
        const target = { url, urlPath, module }
        byPath.set(path, target)
        targets.set(urlPath, target)
        out.push([urlPath, url])
      }
      // An extensionless path leads to its module's own immutable URL: one module, one URL.
      for (const alias of resolvedAliases) {
        const target = alias === undefined ? undefined : byPath.get(alias[1])
        if (alias !== undefined && target !== undefined) {
          targets.set(alias[0], target)
          out.push([alias[0], target.url])
        }
      }
      out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      const build: Build = { entries: new Map(out), targets }
      this.last = { modules, aliasKey, build }
      return build
    })
  }).pipe(Effect.withSpan("ImportMap.build"))

  /** The map as JSON (`{ "imports": { ... } }`): what `GET /_cache/importmap.json` answers. */
  readonly json: Effect.Effect<ImportMapJson> = Effect.map(this.entries, (entries) => ({
    imports: Object.fromEntries(entries)
  }))

  /** The JSON map's bytes and ETag, computed once per build of the entries. */
  readonly jsonAnswer: Effect.Effect<RenderedAnswer> = Effect.map(this.entries, (entries) =>
    this.memo(entries, importMapPath, undefined, () => encoder.encode(JSON.stringify({ imports: Object.fromEntries(entries) }))))

  /**
   * A page of the realm (its bytes, as served raw at `urlPath`) with the map injected, or
   * undefined when the page does not opt in (no `<script type="importmap" data-realm>`, or
   * one whose content is not an import map). Computed once per page and build of the entries.
   */
  render(urlPath: string, page: Uint8Array): Effect.Effect<RenderedAnswer | undefined> {
    let template = this.templates.get(page)
    if (template === undefined) {
      template = templateOf(page)
      this.templates.set(page, template)
    }
    const found = template
    if (found === null) return Effect.succeed(undefined)
    const make = (page: PageBuild) => () => {
      const listed = found.entrySpecifiers === undefined
        ? page.own.entries
        : reachable(urlPath, found.entrySpecifiers, found.own, page.targets)
      const merged = mergeMaps(urlPath, listed, found.own, page.entries)
      return encoder.encode(`${found.before}${scriptSafe(merged)}${found.after}`)
    }
    return Effect.flatMap(this.build, (build) =>
      Effect.flatMap(this.withForeign(urlPath, found, build), (combined) => {
        const hit = this.cached(build.entries, combined.key, page)
        if (hit !== undefined) return Effect.succeed(hit)
        // A new build (or a new page): first fetch what the page reaches and this process has
        // not read yet, so that even a first load gets immutable URLs.
        return this.discover(urlPath, found, build).pipe(
          Effect.flatMap((fetched) =>
            fetched
              ? Effect.flatMap(this.build, (latest) => this.withForeign(urlPath, found, latest))
              : Effect.succeed(combined)
          ),
          Effect.map((latest) => this.memo(latest.own.entries, latest.key, page, make(latest)))
        )
      }))
  }

  /**
   * A page's build with the builds of the other public realms it reaches (a module of this
   * realm that imports `/shared/card.gts`, the realm at `/shared/`'s): their modules are
   * listed at their immutable URLs too, at the versions their own maps name now. The key names
   * the page and every build it was made of, so that a new build of any of them renders anew.
   */
  private withForeign(urlPath: string, template: PageTemplate, own: Build): Effect.Effect<PageBuild> {
    const entrySpecifiers = template.entrySpecifiers
    const alone: PageBuild = { own, targets: own.targets, entries: own.entries, key: urlPath }
    if (entrySpecifiers === undefined) return Effect.succeed(alone)
    const maps = new Map<RealmImportMap, Build | undefined>()
    const round = (combined: PageBuild, depth: number): Effect.Effect<PageBuild> => {
      const found: Array<RealmImportMap> = []
      reachable(urlPath, entrySpecifiers, template.own, combined.targets, (unlisted) => {
        if (this.isOwn(unlisted)) return
        const map = this.foreign(unlisted)
        if (map !== undefined && map !== this && !maps.has(map)) {
          maps.set(map, undefined)
          found.push(map)
        }
      })
      if (found.length === 0 || depth >= maxForeignRounds) return Effect.succeed(combined)
      return Effect.forEach(found, (map) => Effect.map(map.build, (build) => maps.set(map, build)), { discard: true }).pipe(
        Effect.flatMap(() => {
          const targets = new Map(own.targets)
          const entries = new Map(own.entries)
          const ids = [buildId(own)]
          for (const build of maps.values()) {
            if (build === undefined) continue
            for (const [path, target] of build.targets) if (!targets.has(path)) targets.set(path, target)
            for (const [path, url] of build.entries) if (!entries.has(path)) entries.set(path, url)
            ids.push(buildId(build))
          }
          return round({ own, targets, entries, key: `${urlPath}\n${ids.join(",")}` }, depth + 1)
        })
      )
    }
    return round(alone, 0)
  }

  /**
   * Walks what a page reaches (as {@link reachable} does) and fetches through the cache each
   * module the build does not list yet (at most {@link maxDiscoveredPerPage}), with the
   * extensionless paths it meets. True when it fetched any.
   */
  private discover(pageUrlPath: string, template: PageTemplate, build: Build): Effect.Effect<boolean> {
    const entrySpecifiers = template.entrySpecifiers
    if (entrySpecifiers === undefined) return Effect.succeed(false)
    const bare = Object.entries(template.own.imports ?? {})
    const seen = new Set<string>()
    let fetched = 0
    const level = (specifiers: ReadonlyArray<readonly [string, string]>): Effect.Effect<void> => {
      const todo: Array<string> = []
      for (const [specifier, base] of specifiers) {
        const urlPath = resolveSpecifier(specifier, base, pageUrlPath, bare)
        if (urlPath === undefined || seen.has(urlPath)) continue
        seen.add(urlPath)
        todo.push(urlPath)
      }
      if (todo.length === 0) return Effect.void
      const next: Array<readonly [string, string]> = []
      const follow = (module: CachedModule, base: string) => {
        for (const specifier of module.dependencyKeys) next.push([specifier, base])
      }
      return Effect.forEach(todo, (urlPath) => {
        const target = build.targets.get(urlPath)
        if (target !== undefined) {
          follow(target.module, target.urlPath)
          return Effect.void
        }
        if (fetched >= maxDiscoveredPerPage) return Effect.void
        // A path of another public realm is fetched through that realm (its map lists it then).
        const owner = this.isOwn(urlPath) ? this : this.foreign(urlPath)
        if (owner === undefined) return Effect.void
        fetched++
        return owner.resolve(urlPath).pipe(
          Effect.flatMap((resolved) =>
            resolved.executable
              ? Effect.map(
                Effect.provideService(
                  owner.cache.get(moduleKey(owner.files.realmUrl, resolved.path)),
                  CurrentResolution,
                  resolved
                ),
                ({ module }) => {
                  owner.noteRequest(urlPath, resolved)
                  follow(module, owner.urlPathOf(resolved.path))
                }
              )
              : Effect.void
          ),
          Effect.ignore
        )
      }, { concurrency: 8, discard: true }).pipe(Effect.andThen(Effect.suspend(() => level(next))))
    }
    return Effect.map(level(entrySpecifiers.map((specifier) => [specifier, pageUrlPath] as const)), () => fetched > 0)
  }

  /** A page (or the JSON) already rendered from these entries. */
  private cached(entries: ReadonlyMap<string, string>, key: string, source: unknown): RenderedAnswer | undefined {
    const hit = this.rendered.get(entries)?.get(key)
    return hit !== undefined && hit.source === source ? hit : undefined
  }

  private memo(entries: ReadonlyMap<string, string>, key: string, source: unknown, make: () => Uint8Array): RenderedAnswer {
    const hit = this.cached(entries, key, source)
    if (hit !== undefined) return hit
    let forEntries = this.rendered.get(entries)
    if (forEntries === undefined) {
      forEntries = new Map()
      this.rendered.set(entries, forEntries)
    }
    const bytes = make()
    const answer = { source, bytes, etag: rawEtag(bytes) }
    if (forEntries.size >= 64) forEntries.clear()
    forEntries.set(key, answer)
    return answer
  }
}

/** A page's view of the builds it lists: this realm's, and those of the other realms it reaches. */
interface PageBuild {
  readonly own: Build
  readonly targets: ReadonlyMap<string, Target>
  readonly entries: ReadonlyMap<string, string>
  /** The page's request path and the builds it was made of. */
  readonly key: string
}

/** How many times a page's walk looks for further realms behind those it found. */
const maxForeignRounds = 4

const buildIds = new WeakMap<Build, number>()
let nextBuildId = 0
/** A number per build, for the keys of pages made of several. */
const buildId = (build: Build): number => {
  let id = buildIds.get(build)
  if (id === undefined) buildIds.set(build, id = nextBuildId++)
  return id
}

/** Bytes to send and their ETag. */
export interface RenderedAnswer {
  readonly bytes: Uint8Array
  readonly etag: string
}

/**
 * An HTML page of the realm (its cached raw answer): with the map injected when it opts in,
 * answered with `cache-control: no-cache` and an ETag of the bytes sent (`304` on a match);
 * undefined when it does not opt in.
 */
export const pageAnswer = (
  importMap: RealmImportMap,
  request: HttpServerRequest.HttpServerRequest,
  raw: CachedAnswer,
  contentType: string,
  answers: AnswersOnce<Uint8Array>
): Effect.Effect<HttpServerResponse.HttpServerResponse | undefined> =>
  Effect.flatMap(importMap.render(pathOf(request.url), raw.bytes), (page) =>
    page === undefined
      ? Effect.succeed(undefined)
      : Effect.map(answers.of(page.bytes, contentType, () => page), (answer) => conditionalAnswer(request, answer, contentType)))

/** Whether a raw file may be a page that opts in (checked before anything is decoded). */
export const mayOptIn = (canonicalPath: string): boolean => /\.html?$/i.test(canonicalPath)

/** Adds `GET /_cache/importmap.json` (and its preflight) to a router: public like the modules, with their CORS headers. */
export const addRoute = (
  router: HttpRouter.HttpRouter,
  importMapOf: (
    request: HttpServerRequest.HttpServerRequest
  ) => Effect.Effect<RealmImportMap | HttpServerResponse.HttpServerResponse>,
  answers: AnswersOnce<Uint8Array>
) =>
  Effect.andThen(
    router.add("GET", importMapPath, (request) =>
      Effect.flatMap(importMapOf(request), (importMap) =>
        importMap instanceof RealmImportMap
          ? importMap.jsonAnswer.pipe(
            Effect.flatMap((map) => answers.of(map.bytes, jsonContentType, () => map)),
            Effect.map((answer) => conditionalAnswer(request, answer, jsonContentType))
          )
          : Effect.succeed(importMap))),
    // A loader on another origin that sends headers of its own asks first, as it does for modules.
    router.add("OPTIONS", importMapPath, (request) => Effect.succeed(preflight(request)))
  )
