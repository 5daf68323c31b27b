/**
 * The realm's import map, piece by piece: request paths as a browser writes them, the merge
 * with a page's own map, which pages opt in, and the page's bytes (and so its ETag) changing
 * exactly when a module's version does. The whole thing in Chromium: ImmutableReload.test.ts.
 */
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import type { ModuleCache } from "../src/cache/ModuleCache.ts"
import type { CachedModule } from "../src/domain/Domain.ts"
import { ModuleNotFoundError } from "../src/domain/Errors.ts"
import type { RealmFiles } from "../src/realm/FileSystemSources.ts"
import * as ImmutableUrls from "../src/http/ImmutableUrls.ts"
import { RealmImportMap } from "../src/http/ImportMap.ts"
import { browserPathOf, mergeMaps } from "../src/http/ImportMapPages.ts"
import { moduleEtag } from "../src/http/Responses.ts"

const realmUrl = "https://realm.test/"

const moduleOf = (path: string, sourceHash: string, dependencyKeys: ReadonlyArray<string> = []): CachedModule => ({
  key: { realmUrl, path },
  body: "export {}",
  headers: {},
  dependencyKeys,
  sourceHash,
  fingerprint: "fp"
})

/**
 * A map over an L1 that is a plain Map (by key id) and a realm that has read `paths` (with
 * their dependency keys), where `aliases` (request path to canonical path) resolve.
 */
const makeMap = (
  paths: ReadonlyArray<string>,
  dependencies: Readonly<Record<string, ReadonlyArray<string>>> = {},
  aliases: Readonly<Record<string, string>> = {}
) => {
  const l1 = new Map<string, CachedModule>(
    paths.map((path) => [`${realmUrl}|${path}`, moduleOf(path, `h-${path}`, dependencies[path])])
  )
  const cache = {
    peekL1: (id: string) => l1.get(id),
    get: () => Effect.die("not expected")
  } as unknown as ModuleCache["Service"]
  const files = {
    realmUrl,
    knownPaths: () => paths,
    resolve: (urlPath: string) =>
      aliases[urlPath] === undefined
        ? Effect.fail(new ModuleNotFoundError({ path: urlPath }))
        : Effect.succeed({ path: aliases[urlPath], file: `/realm/${aliases[urlPath]}`, executable: true })
  } as unknown as RealmFiles["Service"]
  const map = new RealmImportMap(cache, files)
  for (const [alias, path] of Object.entries(aliases)) map.noteRequest(alias, { path, file: `/realm/${path}`, executable: true })
  return { l1, map }
}

const encode = (text: string) => new TextEncoder().encode(text)
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

describe("import map", () => {
  it("keys are request paths as a browser's URL parser writes them", () => {
    expect(browserPathOf("vendor/@ember/renderer/index.js")).toBe("/vendor/@ember/renderer/index.js")
    expect(browserPathOf("a b/c+d.ts")).toBe("/a%20b/c+d.ts")
    expect(browserPathOf("100%/q?.ts")).toBe("/100%25/q%3F.ts")
    expect(browserPathOf("é.ts")).toBe("/%C3%A9.ts")
  })

  it("an immutable URL is the plain path with ?_v=<16 hex of the ETag>; any other query is plain", () => {
    const etag = moduleEtag(moduleOf("a.ts", "h"))
    const version = ImmutableUrls.versionOfEtag(etag)
    expect(version).toMatch(/^[0-9a-f]{16}$/)
    expect(ImmutableUrls.immutableUrl("/a.ts", version)).toBe(`/a.ts?_v=${version}`)
    expect(ImmutableUrls.requestedVersion(`/a.ts?_v=${version}`)).toBe(version)
    expect(ImmutableUrls.requestedVersion("/a.ts")).toBeUndefined()
    expect(ImmutableUrls.requestedVersion("/a.ts?v=1")).toBeUndefined()
    expect(ImmutableUrls.requestedVersion("/a.ts?x=1&_v=1")).toBeUndefined()
  })

  it("merges a page's own map: its keys win, and its values that name realm modules point at their immutable URLs", () => {
    const entries = new Map([
      ["/app.ts", "/app.ts?_v=1111111111111111"],
      ["/vendor/x.js", "/vendor/x.js?_v=2222222222222222"]
    ])
    expect(mergeMaps("/sub/page.html", entries, {
      imports: {
        x: "../vendor/x.js",
        y: "/vendor/x.js?keep",
        z: "https://elsewhere.test/vendor/x.js",
        "/app.ts": "/other.ts"
      },
      scopes: { "/sub/": { x: "/vendor/x.js" } }
    })).toEqual({
      imports: {
        "/app.ts": "/other.ts",
        "/vendor/x.js": "/vendor/x.js?_v=2222222222222222",
        x: "/vendor/x.js?_v=2222222222222222",
        y: "/vendor/x.js?keep",
        z: "https://elsewhere.test/vendor/x.js"
      },
      scopes: { "/sub/": { x: "/vendor/x.js?_v=2222222222222222" } }
    })
  })

  it("injects into pages that opt in; others, and a placeholder that is no import map, are left alone", () => {
    const { map } = makeMap(["app.ts"])
    const render = (html: string) => Effect.runSync(map.render("/index.html", encode(html)))
    expect(render("<script type=\"importmap\"></script>")).toBeUndefined()
    expect(render("<script data-realm></script>")).toBeUndefined()
    expect(render("<script type=\"importmap\" data-realm>{ not json</script>")).toBeUndefined()
    expect(render("<script type=\"importmap\" data-realm>[1]</script>")).toBeUndefined()
    const page = render("<head><script type=\"importmap\" data-realm></script></head>")
    expect(page).toBeDefined()
    const version = ImmutableUrls.versionOfEtag(moduleEtag(moduleOf("app.ts", "h-app.ts")))
    expect(decode(page!.bytes)).toBe(
      `<head><script type="importmap" data-realm>{"imports":{"/app.ts":"/app.ts?_v=${version}"}}</script></head>`
    )
  })

  it("a page lists the modules its module scripts reach (the JSON map lists every known one)", () => {
    const { map } = makeMap(
      ["a.ts", "b.ts", "vendor/y.js", "vendor/z.js", "unused.ts"],
      { "a.ts": ["./b", "@x/y", "./a.ts.scoped.css", "https://elsewhere.test/q.js"], "b.ts": ["./vendor/y.js?raw", "/vendor/z.js"] },
      { "/b": "b.ts" }
    )
    const imports = (html: string) => {
      const page = Effect.runSync(map.render("/index.html", encode(html)))!
      const text = decode(page.bytes)
      return JSON.parse(text.slice(text.indexOf("{"), text.indexOf("</script>"))).imports as Record<string, string>
    }
    const own = "<script type=\"importmap\" data-realm>{\"imports\":{\"@x/y\":\"./vendor/y.js\"}}</script>"
    const inline = imports(`${own}<script type="module">import { a } from "./a.ts"; a()</script>`)
    expect(Object.keys(inline).sort()).toEqual(["/a.ts", "/b", "/b.ts", "/vendor/y.js", "/vendor/z.js", "@x/y"])
    expect(inline["/b"]).toBe(inline["/b.ts"])
    expect(inline["@x/y"]).toBe(inline["/vendor/y.js"])
    expect(inline["@x/y"]).toMatch(/^\/vendor\/y\.js\?_v=[0-9a-f]{16}$/)
    // the same through a src attribute
    expect(imports(`${own}<script src="./a.ts" type="module"></script>`)).toEqual(inline)
    // a page without module scripts lists the whole map, as the JSON does
    const whole = imports(own)
    expect(Object.keys(whole)).toContain("/unused.ts")
    expect(Object.keys(Effect.runSync(map.json).imports ?? {}).sort()).toEqual(
      ["/a.ts", "/b", "/b.ts", "/unused.ts", "/vendor/y.js", "/vendor/z.js"]
    )
  })

  it("a page's first render fetches what it reaches and this process has not read: immutable URLs from the first load", () => {
    const sources: Record<string, ReadonlyArray<string>> = { "a.ts": ["./b", "./missing.ts"], "b.ts": ["./c.ts"], "c.ts": [], "d.ts": [] }
    const known: Array<string> = []
    const l1 = new Map<string, CachedModule>()
    const gets: Array<string> = []
    const cache = {
      peekL1: (id: string) => l1.get(id),
      get: (key: { readonly path: string }) => {
        gets.push(key.path)
        const dependencies = sources[key.path]
        if (dependencies === undefined) return Effect.fail(new ModuleNotFoundError({ path: key.path }))
        const module = moduleOf(key.path, `h-${key.path}`, dependencies)
        l1.set(`${realmUrl}|${key.path}`, module)
        if (!known.includes(key.path)) known.push(key.path)
        return Effect.succeed({ module, outcome: "transpiled" })
      }
    } as unknown as ModuleCache["Service"]
    const files = {
      realmUrl,
      knownPaths: () => known,
      resolve: (urlPath: string) => {
        const path = urlPath === "/b" ? "b.ts" : urlPath.slice(1)
        return sources[path] === undefined
          ? Effect.fail(new ModuleNotFoundError({ path: urlPath }))
          : Effect.succeed({ path, file: `/realm/${path}`, executable: true })
      }
    } as unknown as RealmFiles["Service"]
    const map = new RealmImportMap(cache, files)
    const html = encode("<script type=\"importmap\" data-realm></script><script type=\"module\">import \"./a.ts\"</script>")
    const page = Effect.runSync(map.render("/index.html", html))!
    const text = decode(page.bytes)
    const imports = JSON.parse(text.slice(text.indexOf("{"), text.indexOf("</script>"))).imports as Record<string, string>
    expect(Object.keys(imports).sort()).toEqual(["/a.ts", "/b", "/b.ts", "/c.ts"])
    expect(imports["/b"]).toBe(imports["/b.ts"])
    // d.ts is not reached; missing.ts does not resolve and is left out (the browser asks for its plain URL)
    expect(gets.sort()).toEqual(["a.ts", "b.ts", "c.ts"])
    // the next render reads nothing and answers the same bytes
    gets.length = 0
    expect(Effect.runSync(map.render("/index.html", html))!.etag).toBe(page.etag)
    expect(gets).toEqual([])
  })

  it("nothing in a path can close the script element", () => {
    const { map } = makeMap(["x</script><script>alert(1)</script>.ts"])
    const page = Effect.runSync(map.render("/", encode("<script type=\"importmap\" data-realm></script>")))
    const html = decode(page!.bytes)
    expect(html.match(/<\/script>/g)).toHaveLength(1)
    expect(JSON.parse(html.slice(html.indexOf(">") + 1, html.lastIndexOf("<"))).imports).toBeDefined()
  })

  it("the page's bytes and ETag change when a module's version changes, and only then", () => {
    const { l1, map } = makeMap(["a.ts", "b.ts"])
    const html = encode("<script type=\"importmap\" data-realm>{\"imports\":{\"b\":\"./b.ts\"}}</script>")
    const render = () => Effect.runSync(map.render("/index.html", html))!
    const first = render()
    const second = render()
    expect(second.etag).toBe(first.etag)
    // b.ts edited: its L1 entry is another module (another source hash)
    l1.set(`${realmUrl}|b.ts`, moduleOf("b.ts", "h-b-2"))
    const third = render()
    expect(third.etag).not.toBe(first.etag)
    const before = JSON.parse(decode(first.bytes).replace(/^<script[^>]*>|<\/script>$/g, "")).imports
    const after = JSON.parse(decode(third.bytes).replace(/^<script[^>]*>|<\/script>$/g, "")).imports
    expect(Object.keys(after).filter((key) => after[key] !== before[key]).sort()).toEqual(["/b.ts", "b"])
  })
})
