/**
 * The HTTP fast path (warm hits answered before the router) on a real server in this
 * process: same answers as the router, never stale after an invalidation or an edit, and
 * everything else left to the router.
 */
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Exit, Layer, Redacted, Scope } from "effect"
import { HttpRouter } from "effect/http"
import { writeFileSync } from "node:fs"
import { createServer, type Server } from "node:http"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { FastPathHandler } from "../src/http/FastPath.ts"
import * as JitWarmup from "../src/http/JitWarmup.ts"
import * as RealmServer from "../src/http/RealmServer.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { freePort, makeRealm, type RawResponse, removeRealms, request } from "./support/server.ts"

const token = "fast-path-test-admin-token-0123456789"
const scopes: Array<Scope.Closeable> = []

afterAll(async () => {
  for (const scope of scopes) await Effect.runPromise(Scope.close(scope, Exit.void))
  removeRealms()
})


const build = async <E>(layer: Layer.Layer<never, E>) => {
  const scope = Effect.runSync(Scope.make())
  scopes.push(scope)
  await Effect.runPromise(Layer.buildWithScope(layer, scope))
}

/** The realm served by `RealmServer.layer` (fast path on, watcher on). */
const serve = async (realm: string) => {
  const port = await freePort()
  const fast = new FastPathHandler()
  const transpiler = TestTranspiler.make()
  await build(RealmServer.layer({
    realmDir: realm,
    store: { _tag: "memory" },
    port,
    adminToken: Redacted.make(token),
    fastPath: fast
  }).pipe(Layer.provide(TestTranspiler.layer(transpiler))))
  return { url: `http://127.0.0.1:${port}`, fast, transpiler }
}

/** The realm on PGlite in `dataDir`, until `close` (the data directory is locked while it runs). */
const servePglite = async (realm: string, dataDir: string, warmupRequests?: number) => {
  const port = await freePort()
  const fast = new FastPathHandler()
  const scope = Effect.runSync(Scope.make())
  await Effect.runPromise(Layer.buildWithScope(
    RealmServer.layer({
      realmDir: realm,
      store: { _tag: "pglite", dataDir },
      port,
      adminToken: Redacted.make(token),
      fastPath: fast,
      warmupRequests
    }).pipe(Layer.provide(TestTranspiler.layer(TestTranspiler.make()))),
    scope
  ))
  return { url: `http://127.0.0.1:${port}`, fast, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

/** The same realm through `RealmServer.routes` in an app of its own: the router answers everything. */
const serveRoutesOnly = async (realm: string) => {
  const port = await freePort()
  const app = HttpRouter.serve(RealmServer.routes, { disableListenLog: true, disableLogger: true }).pipe(
    Layer.provide(NodeHttpServer.layer(createServer, { port, host: "127.0.0.1" })),
    Layer.provide(RealmServer.layerServices({ realmDir: realm, store: { _tag: "memory" } })),
    Layer.provide(TestTranspiler.layer(TestTranspiler.make()))
  )
  await build(app)
  return { url: `http://127.0.0.1:${port}` }
}

const admin = { authorization: `Bearer ${token}` }

const stats = async (url: string) => JSON.parse((await request(url, "/_cache/stats", { headers: admin })).body) as RealmServer.StatsBody

/** Headers as sent, without the date (and the connection headers, which the test client picks). */
const headersOf = (response: RawResponse) => {
  const { date: _date, connection: _connection, "keep-alive": _keepAlive, ...rest } = response.headers
  return rest
}

/** Requests a path until the fast path answers it (the router answers the first hit of each path). */
const warm = async (url: string, fast: FastPathHandler, rawPath: string) => {
  for (let i = 0; i < 5; i++) {
    const before = fast.answered
    const response = await request(url, rawPath)
    if (fast.answered > before) return response
  }
  throw new Error(`the fast path never answered ${rawPath}`)
}

const eventually = async <A>(check: () => Promise<A | undefined>, timeoutMs: number, what: string): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

describe("fast path", () => {
  it("after a restart, answers the first request of each preloaded module, under its own path only", async () => {
    const realm = makeRealm({ "a.ts": "export const a: number = 1\n", "b.gts": "export const b = 2\n" })
    const dataDir = path.join(makeRealm({}), "store")
    const first = await servePglite(realm, dataDir)
    const before = new Map<string, RawResponse>()
    for (const p of ["/a.ts", "/b.gts"]) {
      const response = await request(first.url, p)
      expect(response.headers["x-module-cache"]).toBe("transpiled")
      before.set(p, response)
    }
    await first.close()

    const second = await servePglite(realm, dataDir)
    try {
      // Before it listened, the JIT warm-up's requests were all answered by the fast path, and none counted.
      expect(second.fast.warmupAnswered).toBe(JitWarmup.defaultRequests)
      expect(second.fast.answered).toBe(0)
      const counted = await stats(second.url)
      expect(counted).toMatchObject({ l1Hits: 0, l2Hits: 0, transpiles: 0, warmupRequests: JitWarmup.defaultRequests })
      expect(counted.warmupMillis).toBeGreaterThan(0)
      for (const p of ["/a.ts", "/b.gts"]) {
        const answered = second.fast.answered
        const response = await request(second.url, p)
        expect(second.fast.answered, `${p} answered by the fast path`).toBe(answered + 1)
        expect(response.status).toBe(200)
        expect(response.headers["x-module-cache"]).toBe("l1")
        expect(response.body).toBe(before.get(p)!.body)
        expect(response.headers.etag).toBe(before.get(p)!.headers.etag)
      }
      // Another path that resolves to a preloaded module is left to the router the first time.
      const answered = second.fast.answered
      const aliased = await request(second.url, "/b")
      expect(aliased.headers["x-module-cache"]).toBe("l1")
      expect(second.fast.answered).toBe(answered)
      // An invalidation drops the preloaded answer like any other.
      expect((await request(second.url, "/_cache/invalidate?path=/a.ts", { method: "POST", headers: admin })).status).toBe(200)
      const invalidated = await request(second.url, "/a.ts")
      expect(invalidated.headers["x-module-cache"]).toBe("transpiled")
    } finally {
      await second.close()
    }
  }, 60_000)

  it("the JIT warm-up: off with 0 requests, and its throwaway listener closed", async () => {
    const realm = makeRealm({ "a.ts": "export const a: number = 1\n" })
    const dataDir = path.join(makeRealm({}), "store")
    const first = await servePglite(realm, dataDir)
    expect((await request(first.url, "/a.ts")).headers["x-module-cache"]).toBe("transpiled")
    expect(first.fast.warmupAnswered, "nothing preloaded, nothing to warm up with").toBe(0)
    await first.close()
    const second = await servePglite(realm, dataDir, 0)
    try {
      expect(second.fast.warmupAnswered).toBe(0)
      expect((await request(second.url, "/a.ts")).headers["x-module-cache"]).toBe("l1")
    } finally {
      await second.close()
    }

    // On its own: the requests go round robin over the paths, a path without a route gets a
    // 503 from the throwaway server, and that server is closed afterwards.
    const fast = new FastPathHandler()
    let made: Server | undefined
    const summary = await Effect.runPromise(JitWarmup.warmUp(() => (made = createServer()), fast, ["/nothing.ts"], 7))
    expect(summary).toMatchObject({ requests: 7, fastPath: 0 })
    expect(made?.listening).toBe(false)
    expect(fast.warming).toBe(false)
  }, 60_000)

  it("answers warm hits, 304s and HEADs with the router's status, headers and bytes", async () => {
    const files = {
      "a.ts": "export const a = 1\n",
      "lib/b.gts": "export const b = 2\n",
      "style.css": "body { color: red }\n",
      "dir/index.html": "<p>hi</p>\n"
    }
    const ours = await serve(makeRealm(files))
    const router = await serveRoutesOnly(makeRealm(files))
    const cases: Array<[string, Record<string, string>, string]> = [
      ["/a.ts", {}, "GET"],
      ["/lib/b", {}, "GET"],
      ["/a.ts?v=3", {}, "GET"],
      ["/style.css", {}, "GET"],
      ["/dir/", {}, "GET"],
      ["/a.ts", {}, "HEAD"],
      ["/style.css", {}, "HEAD"]
    ]
    for (const [p, headers, method] of cases) {
      await request(router.url, p) // transpiled, then an L1 hit on the router alone
      const expected = await request(router.url, p, { method, headers })
      await warm(ours.url, ours.fast, p)
      const before = ours.fast.answered
      const actual = await request(ours.url, p, { method, headers })
      expect(ours.fast.answered, `${method} ${p} answered by the fast path`).toBe(before + 1)
      expect(actual.status).toBe(expected.status)
      expect(headersOf(actual)).toEqual(headersOf(expected))
      expect(actual.body).toBe(expected.body)
      if (method === "HEAD") expect(actual.body).toBe("")
      // The 304 of the same resource.
      const etag = String(expected.headers.etag)
      const expected304 = await request(router.url, p, { method, headers: { "if-none-match": etag } })
      const actual304 = await request(ours.url, p, { method, headers: { "if-none-match": etag } })
      expect(actual304.status).toBe(304)
      expect(headersOf(actual304)).toEqual(headersOf(expected304))
      expect(actual304.body).toBe("")
    }
    expect(ours.fast.answered).toBeGreaterThanOrEqual(cases.length * 2)
  })

  it("a text file and a module go in the coding Accept-Encoding picks, as the router sends them: br, gzip or identity, their 304s and HEADs", async () => {
    const css = Array.from({ length: 80 }, (_, i) => `.card-${i} { color: #${(i * 4099).toString(16).padStart(6, "0").slice(0, 6)}; margin: ${i}px }`).join("\n")
    const card = Array.from({ length: 40 }, (_, i) => `export const card${i}: number = ${i * 7}`).join("\n")
    const files = { "theme.css": css, "card.ts": card, "tiny.css": "a {}\n", "tiny.ts": "export {}\n", "logo.png": css }
    const ours = await serve(makeRealm(files))
    const router = await serveRoutesOnly(makeRealm(files))
    const cases: Array<[string | undefined, string | undefined]> = [
      ["br", "br"],
      ["gzip, deflate, br", "br"],
      ["gzip", "gzip"],
      ["gzip;q=1.0, br;q=0.5", "gzip"],
      ["br;q=0", undefined],
      ["*;q=0", undefined],
      ["identity", undefined],
      ["br;q=2", undefined],
      [undefined, undefined]
    ]
    for (const p of ["/theme.css", "/card.ts"]) {
      // The identity bytes: the file, or the transpiled module.
      const identity = (await request(router.url, p)).bytes
      expect(identity.byteLength, p).toBeGreaterThan(256)
      for (const [accept, coding] of cases) {
        const headers: Record<string, string> = accept === undefined ? {} : { "accept-encoding": accept }
        for (const method of ["GET", "HEAD"]) {
          await request(router.url, p)
          const expected = await request(router.url, p, { method, headers })
          await warm(ours.url, ours.fast, p)
          const before = ours.fast.answered
          const actual = await request(ours.url, p, { method, headers })
          const what = `${method} ${p} accept-encoding: ${accept ?? "(none)"}`
          expect(ours.fast.answered, `${what} answered by the fast path`).toBe(before + 1)
          expect(actual.status, what).toBe(200)
          expect(headersOf(actual), what).toEqual(headersOf(expected))
          expect(actual.headers["content-encoding"], what).toBe(coding)
          expect(actual.headers.vary, what).toBe("accept-encoding")
          const sent = method === "GET" ? actual.bytes : Buffer.alloc(0)
          if (method === "GET") {
            expect(actual.bytes.equals(expected.bytes), what).toBe(true)
            const decoded = coding === "br" ? brotliDecompressSync(sent) : coding === "gzip" ? gunzipSync(sent) : sent
            expect(Buffer.from(decoded).equals(identity), `${what}: decodes to the identity bytes`).toBe(true)
          }
          // The length of the bytes sent in that coding, on HEAD as on GET.
          const length = Number(actual.headers["content-length"])
          if (coding === undefined) expect(length, what).toBe(identity.byteLength)
          else expect(length, what).toBeLessThan(identity.byteLength / 2)
          // Each coding has an ETag of its own, and its 304 (with the same vary, and no body).
          const etag = String(actual.headers.etag)
          expect(etag, what).toMatch(coding === undefined ? /^"[0-9a-f]{32}"$/ : new RegExp(`^"[0-9a-f]{32}-${coding}"$`))
          const conditional = { ...headers, "if-none-match": etag }
          const expected304 = await request(router.url, p, { method, headers: conditional })
          const actual304 = await request(ours.url, p, { method, headers: conditional })
          expect([actual304.status, expected304.status], what).toEqual([304, 304])
          expect(headersOf(actual304), what).toEqual(headersOf(expected304))
          expect(actual304.headers.vary, what).toBe("accept-encoding")
          expect(actual304.headers["content-encoding"], what).toBeUndefined()
        }
      }
    }
    // The module was compressed once, by the cache (this test's transpiler runs in-process).
    const stats = JSON.parse((await request(ours.url, "/_cache/stats", { headers: { authorization: `Bearer ${token}` } })).body) as { compressions: number }
    expect(stats.compressions).toBe(1)
    // Too small to gain, or not text: identity, varying by nothing.
    for (const p of ["/tiny.css", "/tiny.ts", "/logo.png"]) {
      await warm(ours.url, ours.fast, p)
      const answer = await request(ours.url, p, { headers: { "accept-encoding": "br, gzip" } })
      expect(answer.headers["content-encoding"], p).toBeUndefined()
      expect(answer.headers.vary, p).toBeUndefined()
    }
  })

  it("the import map, a page with the map injected and scoped CSS go compressed too, each form made once", async () => {
    const modules = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`components/card-${i}.ts`, `export const card${i} = ${i}\n`]))
    const page = `<!doctype html><html><head><script type="importmap" data-realm>{}</script></head><body>${"<p>card</p>".repeat(30)}</body></html>\n`
    const ours = await serve(makeRealm({ ...modules, "index.html": page }))
    for (const p of Object.keys(modules)) expect((await request(ours.url, `/${p}`)).status).toBe(200)
    const css = Array.from({ length: 40 }, (_, i) => `.card-${i} { padding: ${i}px }`).join("\n")
    const scoped = `/card.gts.${encodeURIComponent(Buffer.from(css).toString("base64"))}.glimmer-scoped.css`
    for (const p of ["/_cache/importmap.json", "/", scoped]) {
      const identity = await request(ours.url, p, { admin: false })
      expect(identity.status, p).toBe(200)
      expect(identity.headers.vary, p).toBe("accept-encoding")
      expect(identity.headers["content-encoding"], p).toBeUndefined()
      // The page went out with the realm's map in it, the map with every module.
      if (p !== scoped) expect(identity.body, p).toContain("components/card-11.ts")
      for (const coding of ["br", "gzip"] as const) {
        const first = await request(ours.url, p, { admin: false, headers: { "accept-encoding": coding } })
        const again = await request(ours.url, p, { admin: false, headers: { "accept-encoding": coding } })
        expect(first.headers["content-encoding"], p).toBe(coding)
        expect(first.headers.vary, p).toBe("accept-encoding")
        expect(Number(first.headers["content-length"]), p).toBe(first.bytes.byteLength)
        const decoded = coding === "br" ? brotliDecompressSync(first.bytes) : gunzipSync(first.bytes)
        expect(Buffer.from(decoded).equals(identity.bytes), `${p} ${coding} decodes to the identity bytes`).toBe(true)
        expect(again.bytes.equals(first.bytes), p).toBe(true)
        expect(first.headers.etag, p).toBe(`${String(identity.headers.etag).slice(0, -1)}-${coding}"`)
        const notModified = await request(ours.url, p, { admin: false, headers: { "accept-encoding": coding, "if-none-match": String(first.headers.etag) } })
        expect(notModified.status, p).toBe(304)
      }
    }
  })

  it("If-None-Match: a list, W/ tags and * give 304; other tags and malformed ones give 200", async () => {
    const ours = await serve(makeRealm({ "a.ts": "export const a = 1\n", "s.css": "a {}\n" }))
    for (const p of ["/a.ts", "/s.css"]) {
      const first = await warm(ours.url, ours.fast, p)
      const etag = String(first.headers.etag)
      expect(etag).toMatch(/^"[0-9a-f]{32}"$/)
      const before = ours.fast.answered
      const status = async (ifNoneMatch: string) =>
        (await request(ours.url, p, { headers: { "if-none-match": ifNoneMatch } })).status
      expect(await status(`"nope", ${etag}`)).toBe(304)
      expect(await status(`W/${etag}`)).toBe(304)
      expect(await status(`"x",W/${etag} , "y"`)).toBe(304)
      expect(await status("*")).toBe(304)
      expect(await status(`"nope"`)).toBe(200)
      expect(await status(etag.slice(1, -1))).toBe(200)
      expect(await status(`W/"${"0".repeat(32)}"`)).toBe(200)
      expect(ours.fast.answered).toBe(before + 7)
    }
  })

  it("an invalidation between two requests gives the new bytes (modules and raw files)", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n", "s.css": "a { x: 1 }\n" })
    const ours = await serve(realm)
    expect((await warm(ours.url, ours.fast, "/a.ts")).body).toContain("a = 1")
    expect((await warm(ours.url, ours.fast, "/s.css")).body).toContain("x: 1")
    for (let round = 2; round < 6; round++) {
      writeFileSync(path.join(realm, "a.ts"), `export const a = ${round}\n`)
      writeFileSync(path.join(realm, "s.css"), `a { x: ${round} }\n`)
      // The API's invalidate returns before the watcher's batch: the next request is fresh all the same.
      const a = await request(ours.url, "/_cache/invalidate?path=/a.ts", { method: "POST", headers: admin })
      expect(a.status).toBe(200)
      const s = await request(ours.url, "/_cache/invalidate?path=/s.css", { method: "POST", headers: admin })
      expect(s.status).toBe(200)
      expect((await request(ours.url, "/a.ts")).body).toContain(`a = ${round}`)
      expect((await request(ours.url, "/s.css")).body).toContain(`x: ${round}`)
    }
    // A realm-wide invalidation too.
    writeFileSync(path.join(realm, "a.ts"), "export const a = 99\n")
    writeFileSync(path.join(realm, "s.css"), "a { x: 99 }\n")
    expect((await request(ours.url, "/_cache/invalidate", { method: "POST", headers: admin })).status).toBe(200)
    expect((await request(ours.url, "/a.ts")).body).toContain("a = 99")
    expect((await request(ours.url, "/s.css")).body).toContain("x: 99")
  })

  it("an edit on disk is seen through the watcher (modules, raw files, and a new file an extensionless path now resolves to)", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n", "s.css": "a { x: 1 }\n", "m.ts": "export const m = 'ts'\n" })
    const ours = await serve(realm)
    await warm(ours.url, ours.fast, "/a.ts")
    await warm(ours.url, ours.fast, "/s.css")
    expect((await warm(ours.url, ours.fast, "/m")).body).toContain("'ts'")
    const started = Date.now()
    writeFileSync(path.join(realm, "a.ts"), "export const a = 2\n")
    await eventually(async () => (await request(ours.url, "/a.ts")).body.includes("a = 2") ? true : undefined, 5_000, "a.ts edited")
    const moduleMs = Date.now() - started
    writeFileSync(path.join(realm, "s.css"), "a { x: 2 }\n")
    await eventually(async () => (await request(ours.url, "/s.css")).body.includes("x: 2") ? true : undefined, 5_000, "s.css edited")
    // `.gts` comes before `.ts` in the resolution order: the new file wins for `/m`.
    writeFileSync(path.join(realm, "m.gts"), "export const m = 'gts'\n")
    await eventually(async () => (await request(ours.url, "/m")).body.includes("'gts'") ? true : undefined, 5_000, "/m resolves to m.gts")
    console.log(`fast path: an edit reached a request after ${moduleMs} ms`)
  })

  it("leaves errors, invalid paths, admin routes and other methods to the router", async () => {
    const ours = await serve(makeRealm({ "bad.ts": `export const x = ${TestTranspiler.syntaxErrorMarker}\n`, "a.ts": "export {}\n" }))
    await warm(ours.url, ours.fast, "/a.ts")
    const before = ours.fast.answered
    for (let i = 0; i < 3; i++) {
      const bad = await request(ours.url, "/bad.ts")
      expect(bad.status).toBe(422)
      expect(JSON.parse(bad.body)).toMatchObject({ error: "TranspileError", path: "bad.ts", line: 1 })
      expect(bad.headers["access-control-allow-origin"]).toBe("*")
    }
    expect((await request(ours.url, "/%2e%2e/etc/passwd")).status).toBe(400)
    expect((await request(ours.url, "/missing.ts")).status).toBe(404)
    expect((await request(ours.url, "/a.ts", { method: "OPTIONS" })).status).toBe(204)
    const stats = await request(ours.url, "/_cache/stats", { admin: false })
    expect(stats.status).toBe(401)
    expect(stats.headers["access-control-allow-origin"]).toBeUndefined()
    expect(ours.fast.answered).toBe(before)
    // The fast path's hits are counted like the router's.
    const counted = JSON.parse((await request(ours.url, "/_cache/stats", { headers: admin })).body) as RealmServer.StatsBody
    await request(ours.url, "/a.ts")
    const after = JSON.parse((await request(ours.url, "/_cache/stats", { headers: admin })).body) as RealmServer.StatsBody
    expect(ours.fast.answered).toBe(before + 1)
    expect(after.l1Hits).toBe(counted.l1Hits + 1)
  })
})
