/**
 * Source maps over HTTP (src/http/SourceMapAnswers.ts) on a real server in this process: the
 * comment at the end of a module names its map, which answers with the module's rules (CORS,
 * ETags and 304s in every coding, the immutable variant, 404 for a version that is not current,
 * a private realm's 401) from the router and then from the fast path; maps survive a restart
 * on PGlite with no transpile; a module whose map cannot be made is served without a comment,
 * and counted.
 */
import { Effect, Exit, Layer, Redacted, Scope } from "effect"
import { writeFileSync } from "node:fs"
import * as path from "node:path"
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import { afterAll, describe, expect, it } from "vitest"
import { Transpiler } from "../src/domain/Transpiler.ts"
import { FastPathHandler } from "../src/http/FastPath.ts"
import * as RealmServer from "../src/http/RealmServer.ts"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import type { BabelTranspilerOptions } from "../src/transpiler/TranspilerOptions.ts"
import { eventually, freePort, makeRealm, type RawResponse, removeRealms, request } from "./support/server.ts"
import { cardSource, mapUrlOf, originalOf, sourcePositionOf } from "./support/sourceMaps.ts"

const token = "source-map-test-admin-token-0123456789"
const admin = { authorization: `Bearer ${token}` }
const scopes: Array<Scope.Closeable> = []

afterAll(async () => {
  for (const scope of scopes) await Effect.runPromise(Scope.close(scope, Exit.void))
  removeRealms()
})


interface Served {
  readonly url: string
  readonly fast: FastPathHandler
  readonly close: () => Promise<void>
}

/** A realm served by `RealmServer.layer` with the Babel transpiler in process (or `transpiler`). */
const serve = async (
  options: Partial<RealmServer.ServeOptions> & { readonly transpilerOptions?: BabelTranspilerOptions },
  transpiler: Layer.Layer<Transpiler, unknown> = BabelTranspiler.layer(options.transpilerOptions)
): Promise<Served> => {
  const port = await freePort()
  const fast = new FastPathHandler()
  const scope = Effect.runSync(Scope.make())
  scopes.push(scope)
  const { transpilerOptions: _ignored, ...serveOptions } = options
  await Effect.runPromise(Layer.buildWithScope(
    RealmServer.layer({ store: { _tag: "memory" }, ...serveOptions, port, adminToken: Redacted.make(token), fastPath: fast })
      .pipe(Layer.provide(transpiler)),
    scope
  ))
  return { url: `http://127.0.0.1:${port}`, fast, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const stats = async (url: string) => JSON.parse((await request(url, "/_cache/stats", { headers: admin })).body) as RealmServer.StatsBody

/** The map URL a module's comment names, as a path and query of the server. */
const mapPathOf = (url: string, modulePath: string, body: string): string => {
  const mapUrl = mapUrlOf(`${url}${modulePath}`, body)
  if (mapUrl === undefined) throw new Error(`no sourceMappingURL in ${modulePath}`)
  const parsed = new URL(mapUrl)
  return parsed.pathname + parsed.search
}

/** Requests a path until the fast path answers it. */
const fromFastPath = async (served: Served, rawPath: string, headers: Record<string, string> = {}): Promise<RawResponse> => {
  for (let i = 0; i < 5; i++) {
    const before = served.fast.answered
    const response = await request(served.url, rawPath, { headers })
    if (served.fast.answered > before) return response
  }
  throw new Error(`the fast path never answered ${rawPath}`)
}

const withoutDate = (response: RawResponse) => {
  const { date: _date, connection: _connection, "keep-alive": _keepAlive, ...rest } = response.headers
  return rest
}

describe("source maps over HTTP", () => {
  it("the comment names the map beside the module; it answers with the module's rules, then from the fast path", async () => {
    const realm = makeRealm({ "cards/card.gts": cardSource })
    const served = await serve({ realmDir: realm })
    const module = await request(served.url, "/cards/card")
    expect(module.status).toBe(200)
    const mapPath = mapPathOf(served.url, "/cards/card", module.body)
    expect(mapPath).toMatch(/^\/cards\/card\.gts\.map\?_v=[0-9a-f]{16}$/)
    const version = mapPath.slice(-16)
    expect(module.headers.etag!.slice(1, 17)).toBe(version)

    const map = await request(served.url, mapPath)
    expect(map.status).toBe(200)
    expect(map.headers["content-type"]).toBe("application/json; charset=utf-8")
    expect(map.headers["access-control-allow-origin"]).toBe("*")
    expect(map.headers["cache-control"]).toBe("public, max-age=31536000, immutable")
    expect(map.headers.etag).toBe(`${module.headers.etag!.slice(0, -1)}-map"`)
    const parsed = JSON.parse(map.body) as { sources: Array<string>; sourcesContent: Array<string> }
    expect(parsed.sources).toEqual(["card.gts"])
    expect(new URL(parsed.sources[0]!, `${served.url}${mapPath}`).pathname).toBe("/cards/card.gts")
    expect(parsed.sourcesContent).toEqual([cardSource])
    const needle = `throw new Error("gts-throw")`
    expect(originalOf(module.body, map.body, needle)).toEqual(sourcePositionOf(cardSource, needle))

    // The plain URL: the current version, revalidated like the module.
    const plain = await request(served.url, "/cards/card.gts.map")
    expect(plain.body).toBe(map.body)
    expect(plain.headers["cache-control"]).toBe("no-cache")
    const notModified = await request(served.url, "/cards/card.gts.map", { headers: { "if-none-match": plain.headers.etag! } })
    expect(notModified.status).toBe(304)
    expect(notModified.headers.vary).toBe("accept-encoding")

    // Compressed once: each coding decodes to the identity bytes and has its own ETag and 304.
    const br = await request(served.url, mapPath, { headers: { "accept-encoding": "br" } })
    expect(br.headers["content-encoding"]).toBe("br")
    expect(brotliDecompressSync(br.bytes).toString("utf8")).toBe(map.body)
    expect(Number(br.headers["content-length"])).toBe(br.bytes.byteLength)
    const gzip = await request(served.url, mapPath, { headers: { "accept-encoding": "gzip" } })
    expect(gunzipSync(gzip.bytes).toString("utf8")).toBe(map.body)
    expect((await request(served.url, mapPath, { headers: { "accept-encoding": "br", "if-none-match": br.headers.etag! } })).status).toBe(304)
    const head = await request(served.url, mapPath, { method: "HEAD", headers: { "accept-encoding": "br" } })
    expect(head.headers["content-length"]).toBe(br.headers["content-length"])

    // Warm: the fast path answers both URLs, with the router's headers, in every coding.
    for (const [p, headers] of [[mapPath, {}], [mapPath, { "accept-encoding": "br" }], ["/cards/card.gts.map", {}]] as const) {
      const router = await request(served.url, p, { headers })
      const fast = await fromFastPath(served, p, headers)
      expect(fast.bytes.equals(router.bytes)).toBe(true)
      expect(withoutDate(fast)).toEqual(withoutDate(router))
    }
    expect((await stats(served.url)).transpiles).toBe(1)
  })

  it("after an edit, the old version's map is a 404, never the new map; the new comment names the new one", async () => {
    const realm = makeRealm({ "card.gts": cardSource })
    const served = await serve({ realmDir: realm })
    const before = await request(served.url, "/card.gts")
    const oldMap = mapPathOf(served.url, "/card.gts", before.body)
    await fromFastPath(served, oldMap)
    const edited = `// a line above\n${cardSource}`
    writeFileSync(path.join(realm, "card.gts"), edited)
    const after = await eventually(async () => {
      const response = await request(served.url, "/card.gts")
      return response.body === before.body ? undefined : response
    }, 10_000, "the edit served")
    const stale = await request(served.url, oldMap)
    expect(stale.status).toBe(404)
    expect(JSON.parse(stale.body)).toMatchObject({ error: "VersionNotCurrent" })
    expect(stale.headers["cache-control"]).toBe("no-store")
    const newMap = mapPathOf(served.url, "/card.gts", after.body)
    expect(newMap).not.toBe(oldMap)
    const map = await request(served.url, newMap)
    const needle = `throw new Error("gts-throw")`
    expect(originalOf(after.body, map.body, needle)).toEqual(sourcePositionOf(edited, needle))
    expect(sourcePositionOf(edited, needle).line).toBe(sourcePositionOf(cardSource, needle).line + 1)
  })

  it("a map of no module is a 404 JSON; a file named like a map is served as a file when its module has none", async () => {
    const realm = makeRealm({ "a.ts": "export const a: number = 1\n", "vendor.js": "export const v = 1\n", "vendor.js.map": "{\"version\":3}" })
    const on = await serve({ realmDir: realm })
    const missing = await request(on.url, "/nope.ts.map")
    expect(missing.status).toBe(404)
    expect(JSON.parse(missing.body)).toMatchObject({ error: "ModuleNotFoundError" })
    // While maps are on, `vendor.js.map` is the map of the module vendor.js.
    expect(JSON.parse((await request(on.url, "/vendor.js.map")).body)).toMatchObject({ sources: ["vendor.js"] })
    const off = await serve({ realmDir: realm, transpilerOptions: { sourceMaps: false } })
    const body = (await request(off.url, "/a.ts")).body
    expect(body).not.toContain("sourceMappingURL")
    expect((await request(off.url, "/a.ts.map")).status).toBe(404)
    expect((await request(off.url, "/vendor.js.map")).body).toBe("{\"version\":3}")
  })

  it("a private realm's map is a 401 without a token, exactly as its modules", async () => {
    const realm = makeRealm({ "card.gts": cardSource })
    const served = await serve({ realms: [{ mount: "/private/", dir: realm, private: true }] })
    const module = await request(served.url, "/private/card.gts", { headers: admin })
    const mapPath = mapPathOf(served.url, "/private/card.gts", module.body)
    for (const p of [mapPath, "/private/card.gts.map", "/private/nope.gts.map"]) {
      const refused = await request(served.url, p)
      expect(refused.status).toBe(401)
      expect(refused.body).not.toContain("gts-throw")
    }
    const map = await request(served.url, mapPath, { headers: admin })
    expect(map.status).toBe(200)
    expect(map.headers.vary).toContain("authorization")
    expect(map.headers["cache-control"]).not.toContain("public")
    expect(JSON.parse(map.body)).toMatchObject({ sourcesContent: [cardSource] })
    const fast = await fromFastPath(served, mapPath, admin)
    expect(fast.body).toBe(map.body)
    expect((await request(served.url, mapPath)).status).toBe(401)
  })

  it("a module whose map cannot be made is served without a comment, and counted", async () => {
    const realm = makeRealm({ "a.ts": "export const a: number = 1\n" })
    // A transpiler that makes maps, whose map of this module failed: no map in the module.
    const unmapping = Layer.effect(Transpiler, Effect.map(BabelTranspiler.make(), (t) => Transpiler.of({
      fingerprint: t.fingerprint,
      sourceMaps: true,
      transpile: (input) => Effect.map(t.transpile(input), ({ sourceMap: _dropped, ...module }) => ({ ...module, body: module.body.replace(/\n\/\/# sourceMappingURL=.*$/, "") }))
    })))
    const served = await serve({ realmDir: realm }, unmapping)
    const module = await request(served.url, "/a.ts")
    expect(module.status).toBe(200)
    expect(module.body).not.toContain("sourceMappingURL")
    expect((await request(served.url, "/a.ts.map")).status).toBe(404)
    const counted = await stats(served.url)
    expect(counted.unmapped).toBe(1)
    expect(counted.realms?.["/"]?.unmapped).toBe(1)
    const metrics = await request(served.url, "/_cache/metrics", { headers: admin })
    expect(metrics.body).toMatch(/module_cache_unmapped_total(\{[^}]*\})? 1\b/)
  })

  it("after a restart on PGlite, maps are served from L2 with no transpile", async () => {
    const realm = makeRealm({ "card.gts": cardSource, "b.ts": "type T = number\nexport const b: T = 2\n" })
    const dataDir = path.join(makeRealm({}), "store")
    const first = await serve({ realmDir: realm, store: { _tag: "pglite", dataDir } })
    const maps = new Map<string, string>()
    for (const p of ["/card.gts", "/b.ts"]) {
      const body = (await request(first.url, p)).body
      const mapPath = mapPathOf(first.url, p, body)
      maps.set(mapPath, (await request(first.url, mapPath)).body)
    }
    expect((await stats(first.url)).transpiles).toBe(2)
    await first.close()
    const second = await serve({ realmDir: realm, store: { _tag: "pglite", dataDir } })
    for (const [mapPath, body] of maps) {
      const again = await request(second.url, mapPath)
      expect(again.status).toBe(200)
      expect(again.body).toBe(body)
    }
    expect((await stats(second.url)).transpiles).toBe(0)
    await second.close()
  })
})
