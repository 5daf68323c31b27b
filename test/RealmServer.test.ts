/**
 * The realm server as a real process: statuses, headers, path safety, the file watcher,
 * restarts on PGlite, and OTLP trace export.
 */
import { Effect, Exit } from "effect"
import { rmSync, renameSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as FileSystemSources from "../src/realm/FileSystemSources.ts"
import { ifNoneMatches, moduleEtag } from "../src/http/RealmServer.ts"
import { startOtlpReceiver } from "./support/otlp.ts"
import {
  eventually,
  jsonOf,
  makeRealm,
  removeRealms,
  request,
  type ServerProcess,
  sleep,
  startServer,
  stopAll,
  writeEntry
} from "./support/server.ts"

const maxSourceBytes = 2048

const files = {
  "mod.ts": "export const answer: number = 42\n",
  "uses-dep.ts": "import { answer } from \"./mod.ts\"\nexport const twice = answer * 2\n",
  "lib/helper.ts": "export const helper = (x: number): number => x + 1\n",
  "both.gts": "export const which: string = \"gts\"\n",
  "both.ts": "export const which: string = \"ts\"\n",
  "component.gts": "export const Hello = <template>Hello</template>\n",
  "plain.js": "export const plain = 1\n",
  "broken.ts": "export const ok = 1\nexport const broken = ;\n",
  "big.ts": `export const big = "${"x".repeat(maxSourceBytes * 2)}"\n`,
  "big.txt": "y".repeat(maxSourceBytes * 2),
  "page.html": "<!doctype html><p>hi</p>\n",
  "data.json": "{\"a\":1}\n",
  "index.html": "<!doctype html><p>index</p>\n",
  ".secret.ts": "export const secret = 1\n",
  ".hidden/inside.ts": "export const inside = 1\n",
  "escape.ts": { symlink: "/etc/hostname" },
  "link.ts": { symlink: "mod.ts" },
  "edit.ts": "export const version = 1\n",
  "gone.ts": "export const gone = 1\n"
} as const

const etagPattern = /^"[0-9a-f]{32}"$/

describe("path resolution and conditional requests (in process)", () => {
  afterAll(() => removeRealms())

  const resolved = async (realm: string, urlPath: string, excluded: ReadonlyArray<string> = []) => {
    const exit = await Effect.runPromiseExit(FileSystemSources.resolve(realm, urlPath, { excluded }))
    if (Exit.isSuccess(exit)) return exit.value.path
    const error = Exit.findErrorOption(exit)
    return error._tag === "Some" ? error.value._tag : "defect"
  }

  it("resolves extensionless paths in the documented order, and decodes once", async () => {
    expect(FileSystemSources.executableExtensions).toEqual([".gts", ".gjs", ".ts", ".mts", ".js", ".mjs"])
    const realm = makeRealm({
      "a.gts": "", "a.ts": "", "b.ts": "", "b.js": "", "c.mts": "", "c.js": "", "d.mjs": "", "e.gjs": "", "e.js": "",
      "dir/index.html": "", "sp ace.ts": "", "%2e%2e/x.ts": "", "file.d.ts": "", "name.component": "",
      "name.helper.ts": "", "cache/x.ts": "", "link.ts": { symlink: "b.ts" }, "out.ts": { symlink: "/etc/hostname" },
      "dotlink.ts": { symlink: ".hidden.ts" }, ".hidden.ts": ""
    })
    expect(await resolved(realm, "/a")).toBe("a.gts")
    expect(await resolved(realm, "/b")).toBe("b.ts")
    expect(await resolved(realm, "/c")).toBe("c.mts")
    expect(await resolved(realm, "/d")).toBe("d.mjs")
    expect(await resolved(realm, "/e")).toBe("e.gjs")
    expect(await resolved(realm, "/a.ts")).toBe("a.ts")
    expect(await resolved(realm, "/file.d")).toBe("file.d.ts")
    expect(await resolved(realm, "/name.component")).toBe("name.component")
    expect(await resolved(realm, "/name.helper")).toBe("name.helper.ts")
    expect(await resolved(realm, "/dir/")).toBe("dir/index.html")
    expect(await resolved(realm, "/sp%20ace")).toBe("sp ace.ts")
    expect(await resolved(realm, "/%252e%252e/x.ts")).toBe("%2e%2e/x.ts")
    expect(await resolved(realm, "//b.ts")).toBe("b.ts")
    expect(await resolved(realm, "/link.ts")).toBe("b.ts")
    expect(await resolved(realm, "/out.ts")).toBe("InvalidPathError")
    expect(await resolved(realm, "/dotlink.ts")).toBe("InvalidPathError")
    expect(await resolved(realm, "/cache/x.ts")).toBe("cache/x.ts")
    expect(await resolved(realm, "/cache/x.ts", [path.join(realm, "cache")])).toBe("InvalidPathError")
    expect(await resolved(realm, "/cache/x.ts", ["cache"])).toBe("InvalidPathError")
    expect(await resolved(realm, "/missing")).toBe("ModuleNotFoundError")
    expect(await resolved(realm, "/b.ts/x")).toBe("ModuleNotFoundError")
    for (const bad of ["/../b.ts", "/%2e%2e/b.ts", "/x/..%2f..%2fb.ts", "/./b.ts", "/b%00.ts", "/a\\b", "/%5c", "/.hidden", "/%ff", `/${"x".repeat(1025)}`]) {
      expect(await resolved(realm, bad), bad).toBe("InvalidPathError")
    }
    expect(await resolved(path.join(realm, "nope"), "/b.ts")).toBe("SourceReadError")
  })

  it("matches If-None-Match lists, weak tags and *, and ignores malformed values", () => {
    const etag = moduleEtag({ sourceHash: "abc", fingerprint: "def" })
    expect(etag).toMatch(etagPattern)
    expect(moduleEtag({ sourceHash: "abc", fingerprint: "def" })).toBe(etag)
    expect(moduleEtag({ sourceHash: "abc", fingerprint: "xyz" })).not.toBe(etag)
    expect(ifNoneMatches(etag, etag)).toBe(true)
    expect(ifNoneMatches(` "a" ,W/${etag}`, etag)).toBe(true)
    expect(ifNoneMatches("*", etag)).toBe(true)
    for (const value of [undefined, "", "\"", etag.slice(1), "W/", ",,", `"${"x".repeat(10_000)}"`]) {
      expect(ifNoneMatches(value, etag), String(value)).toBe(false)
    }
  })
})

describe("realm server (memory store)", () => {
  let realm: string
  let server: ServerProcess

  beforeAll(async () => {
    realm = makeRealm(files)
    server = await startServer({ realmDir: realm, store: "memory", env: { MTC_MAX_SOURCE_BYTES: String(maxSourceBytes) } })
  })

  afterAll(async () => {
    await stopAll()
    removeRealms()
  })

  it("200: a transpiled module with its headers, then an L1 hit", async () => {
    const first = await request(server.url, "/mod.ts")
    expect(first.status).toBe(200)
    expect(first.headers["content-type"]).toBe("text/javascript; charset=utf-8")
    expect(first.headers["cache-control"]).toBe("no-cache")
    expect(first.headers["access-control-allow-origin"]).toBe("*")
    expect(first.headers["x-module-cache"]).toBe("transpiled")
    expect(first.headers.etag).toMatch(etagPattern)
    expect(first.body).toContain("export const answer = 42")
    expect(first.body).not.toContain(": number")

    const second = await request(server.url, "/mod.ts")
    expect(second.status).toBe(200)
    expect(second.headers["x-module-cache"]).toBe("l1")
    expect(second.headers.etag).toBe(first.headers.etag)
    expect(second.body).toBe(first.body)
  })

  it("serves .gts through content-tag and .js as a module", async () => {
    const gts = await request(server.url, "/component.gts")
    expect(gts.status).toBe(200)
    expect(gts.body).toContain("@ember/template-compiler")
    const js = await request(server.url, "/plain.js")
    expect(js.status).toBe(200)
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8")
  })

  it("304: If-None-Match with the ETag, a list, a weak tag or *; malformed values never match", async () => {
    const { headers } = await request(server.url, "/uses-dep.ts")
    const etag = String(headers.etag)
    for (const value of [etag, `"nope", ${etag}`, `W/${etag}`, "*"]) {
      const response = await request(server.url, "/uses-dep.ts", { headers: { "if-none-match": value } })
      expect(response.status, value).toBe(304)
      expect(response.body).toBe("")
      expect(response.headers.etag).toBe(etag)
      expect(response.headers["x-module-cache"]).toBe("l1")
    }
    for (const value of ["\"other\"", "garbage", "\"", ",,,", `${etag.slice(0, -1)}`, "W/", "\"a\" \"b\""]) {
      const response = await request(server.url, "/uses-dep.ts", { headers: { "if-none-match": value } })
      expect(response.status, value).toBe(200)
    }
  })

  it("HEAD: the same headers as GET and no body", async () => {
    const get = await request(server.url, "/mod.ts")
    const head = await request(server.url, "/mod.ts", { method: "HEAD" })
    expect(head.status).toBe(200)
    expect(head.body).toBe("")
    expect(head.headers.etag).toBe(get.headers.etag)
    expect(head.headers["content-type"]).toBe(get.headers["content-type"])
    expect(head.headers["content-length"]).toBe(String(Buffer.byteLength(get.body)))
    expect(head.headers["x-module-cache"]).toBe("l1")
    const missing = await request(server.url, "/missing.ts", { method: "HEAD" })
    expect(missing.status).toBe(404)
  })

  it("404: a missing module, with a JSON body", async () => {
    const response = await request(server.url, "/missing.ts")
    expect(response.status).toBe(404)
    expect(response.headers["access-control-allow-origin"]).toBe("*")
    expect(jsonOf(response)).toMatchObject({ error: "ModuleNotFoundError", path: "missing.ts" })
    expect((await request(server.url, "/missing")).status).toBe(404)
    expect((await request(server.url, "/lib/")).status).toBe(404)
  })

  it("413: a source over MTC_MAX_SOURCE_BYTES, module or raw", async () => {
    const response = await request(server.url, "/big.ts")
    expect(response.status).toBe(413)
    expect(jsonOf(response)).toMatchObject({ error: "SourceTooLargeError", path: "big.ts", limit: maxSourceBytes })
    expect((await request(server.url, "/big.txt")).status).toBe(413)
  })

  it("422: a transpile error with its position", async () => {
    const response = await request(server.url, "/broken.ts")
    expect(response.status).toBe(422)
    expect(response.headers["content-type"]).toContain("application/json")
    const body = jsonOf(response)
    expect(body).toMatchObject({ error: "TranspileError", path: "broken.ts", line: 2 })
    expect(typeof body.message).toBe("string")
    expect(typeof body.column).toBe("number")
    // a failed transpile is answered the same way again
    expect((await request(server.url, "/broken.ts")).status).toBe(422)
  })

  it("4xx for traversal, NUL, dotfiles, the data directory, bad encoding and symlinks out of the realm", async () => {
    const attempts = [
      "/../etc/passwd",
      "/../../../../etc/passwd",
      "/%2e%2e/etc/passwd",
      "/%2E%2E/%2E%2E/etc/passwd",
      "/..%2fetc%2fpasswd",
      "/lib/..%2f..%2fetc%2fpasswd",
      "/..%5cetc%5cpasswd",
      "/lib\\..\\..\\etc\\passwd",
      "/mod.ts%00",
      "/mod%00.ts",
      "/.secret.ts",
      "/.secret",
      "/.hidden/inside.ts",
      "/%2ehidden/inside.ts",
      "/.transpile-cache/anything",
      "/.transpile-cache/",
      "/%E0%A4%A",
      "/%zz",
      "/escape.ts",
      `/${"a".repeat(1100)}.ts`
    ]
    for (const attempt of attempts) {
      const response = await request(server.url, attempt)
      expect(response.status, attempt).toBeGreaterThanOrEqual(400)
      expect(response.status, attempt).toBeLessThan(500)
      expect(response.body, attempt).not.toContain("root:")
    }
    const dot = await request(server.url, "/.secret.ts")
    expect(dot.status).toBe(400)
    expect(jsonOf(dot)).toMatchObject({ error: "InvalidPathError" })
    // the server is still fine
    expect((await request(server.url, "/_cache/health")).status).toBe(200)
  })

  it("a symlink inside the realm serves its target under the target's key", async () => {
    const link = await request(server.url, "/link.ts")
    const target = await request(server.url, "/mod.ts")
    expect(link.status).toBe(200)
    expect(link.headers.etag).toBe(target.headers.etag)
  })

  it("CORS: every module and file response allows any origin; OPTIONS answers preflights; /_cache/* has no CORS", async () => {
    const preflight = await request(server.url, "/mod.ts", {
      method: "OPTIONS",
      headers: {
        origin: "https://example.test",
        "access-control-request-method": "GET",
        "access-control-request-headers": "if-none-match"
      }
    })
    expect(preflight.status).toBe(204)
    expect(preflight.headers["access-control-allow-origin"]).toBe("*")
    expect(preflight.headers["access-control-allow-methods"]).toContain("GET")
    expect(preflight.headers["access-control-allow-headers"]).toContain("if-none-match")
    for (const p of ["/mod.ts", "/missing.ts", "/broken.ts", "/page.html"]) {
      expect((await request(server.url, p)).headers["access-control-allow-origin"], p).toBe("*")
    }
    for (const p of ["/_cache/stats", "/_cache/health"]) {
      expect((await request(server.url, p)).headers["access-control-allow-origin"], p).toBeUndefined()
    }
  })

  it("extensionless paths try .gts, .gjs, .ts, .mts, .js, .mjs in that order", async () => {
    const helper = await request(server.url, "/lib/helper")
    const explicit = await request(server.url, "/lib/helper.ts")
    expect(helper.status).toBe(200)
    expect(helper.headers.etag).toBe(explicit.headers.etag)
    const both = await request(server.url, "/both")
    expect(both.body).toContain("\"gts\"")
    expect((await request(server.url, "/plain")).status).toBe(200)
  })

  it("serves non-executable files raw with their content type, and index.html for /", async () => {
    const page = await request(server.url, "/page.html")
    expect(page.status).toBe(200)
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8")
    expect(page.body).toBe(files["page.html"])
    expect(page.headers.etag).toMatch(etagPattern)
    expect(page.headers["x-module-cache"]).toBeUndefined()
    expect((await request(server.url, "/page.html", { headers: { "if-none-match": String(page.headers.etag) } })).status)
      .toBe(304)
    const data = await request(server.url, "/data.json")
    expect(data.headers["content-type"]).toBe("application/json; charset=utf-8")
    const index = await request(server.url, "/")
    expect(index.status).toBe(200)
    expect(index.body).toBe(files["index.html"])
  })

  it("an edit on disk is served within a second, also through an extensionless request", async () => {
    expect((await request(server.url, "/edit.ts")).body).toContain("version = 1")
    expect((await request(server.url, "/edit")).body).toContain("version = 1")
    expect((await request(server.url, "/edit.ts")).headers["x-module-cache"]).toBe("l1")
    writeFileSync(path.join(realm, "edit.ts"), "export const version = 2\n")
    const started = Date.now()
    await eventually(async () => {
      const response = await request(server.url, "/edit")
      return response.body.includes("version = 2") ? response : undefined
    }, 1000, "the edit is served")
    expect(Date.now() - started).toBeLessThan(1000)
    expect((await request(server.url, "/edit.ts")).body).toContain("version = 2")

    // an atomic save: write a temporary file, then rename it over the module
    writeFileSync(path.join(realm, "edit.ts.tmp"), "export const version = 3\n")
    renameSync(path.join(realm, "edit.ts.tmp"), path.join(realm, "edit.ts"))
    await eventually(async () => {
      const response = await request(server.url, "/edit.ts")
      return response.body.includes("version = 3") ? response : undefined
    }, 1000, "the atomic save is served")
  })

  it("a deleted module is 404 and a created one is served", async () => {
    expect((await request(server.url, "/gone.ts")).status).toBe(200)
    rmSync(path.join(realm, "gone.ts"))
    await eventually(async () => ((await request(server.url, "/gone.ts")).status === 404 ? true : undefined), 1000, "404")
    writeEntry(realm, "new/fresh.ts", "export const fresh = true\n")
    await eventually(async () => ((await request(server.url, "/new/fresh")).status === 200 ? true : undefined), 1000, "200")
  })

  it("admin: health, stats and invalidation of a module or the realm", async () => {
    const health = await request(server.url, "/_cache/health")
    expect(health.status).toBe(200)
    expect(jsonOf(health)).toMatchObject({ status: "ok" })

    const stats = jsonOf(await request(server.url, "/_cache/stats"))
    for (const field of [
      "transpiles", "l1Hits", "l2Hits", "coalesced", "fallbacks", "persistFailures", "l1Bytes",
      "preloadedEntries", "preloadedBytes", "preloadMillis"
    ]) {
      expect(typeof stats[field], field).toBe("number")
    }
    expect(stats.store).toBe("memory")

    await request(server.url, "/lib/helper")
    expect((await request(server.url, "/lib/helper")).headers["x-module-cache"]).toBe("l1")
    const one = await request(server.url, "/_cache/invalidate?path=lib/helper", { method: "POST" })
    expect(one.status).toBe(200)
    expect(jsonOf(one)).toMatchObject({ invalidated: "module", paths: ["lib/helper.ts"] })
    expect((await request(server.url, "/lib/helper")).headers["x-module-cache"]).toBe("transpiled")

    expect((await request(server.url, "/mod.ts")).headers["x-module-cache"]).toBe("l1")
    const all = await request(server.url, "/_cache/invalidate", { method: "POST" })
    expect(jsonOf(all)).toMatchObject({ invalidated: "realm", paths: [] })
    expect((await request(server.url, "/mod.ts")).headers["x-module-cache"]).toBe("transpiled")

    const bad = await request(server.url, "/_cache/invalidate?path=../x", { method: "POST" })
    expect(bad.status).toBe(400)
  })
})

describe("realm server (lifecycle)", () => {
  afterAll(async () => {
    await stopAll()
    removeRealms()
  })

  it("restarts on PGlite warm: every module preloaded and served from L1, with zero transpiles and zero L2 reads", async () => {
    const realm = makeRealm({ "a.ts": "export const a: number = 1\n", "b.gts": "export const b = 2\n", "c.ts": "export {}\n" })
    // a data directory inside the realm without a leading dot: excluded all the same
    const args = ["--data-dir", path.join(realm, "store-data")]
    const first = await startServer({ realmDir: realm, store: "pglite", args })
    expect((await request(first.url, "/store-data/PG_VERSION")).status).toBe(400)
    for (const p of ["/a.ts", "/b", "/c.ts"]) {
      const response = await request(first.url, p)
      expect(response.status).toBe(200)
      expect(response.headers["x-module-cache"]).toBe("transpiled")
    }
    const etag = (await request(first.url, "/a.ts")).headers.etag
    expect(await first.stop("SIGTERM")).not.toBe("SIGKILL")

    const second = await startServer({ realmDir: realm, store: "pglite", args })
    for (const p of ["/a.ts", "/b", "/c.ts"]) {
      const response = await request(second.url, p)
      expect(response.status).toBe(200)
      expect(response.headers["x-module-cache"], p).toBe("l1")
    }
    expect((await request(second.url, "/a.ts")).headers.etag).toBe(etag)
    expect(jsonOf(await request(second.url, "/_cache/stats"))).toMatchObject({
      transpiles: 0,
      l2Hits: 0,
      l1Hits: 4,
      preloadedEntries: 3,
      store: "pglite"
    })
    expect(second.output()).toMatch(/preloaded 3 modules \([\d.]+ KiB\) into L1 in \d+ ms/)

    // a file edited while the server was down is never served from L2
    await second.stop("SIGINT")
    writeFileSync(path.join(realm, "a.ts"), "export const a: number = 2\n")
    const third = await startServer({ realmDir: realm, store: "pglite", args })
    const edited = await request(third.url, "/a.ts")
    expect(edited.body).toContain("a = 2")
    expect(edited.headers["x-module-cache"]).toBe("transpiled")
    expect(edited.headers.etag).not.toBe(etag)
    expect(jsonOf(await request(third.url, "/_cache/stats"))).toMatchObject({ preloadedEntries: 2 })
    await third.stop()
  }, 180_000)

  it("shuts down gracefully: in-flight requests finish, then the process exits", async () => {
    // A module big enough that its transpile takes a while (about 0.5 MiB of TypeScript),
    // so that the request is surely accepted and in flight when the signal arrives.
    const big = Array.from({ length: 12_000 }, (_, i) => `export const v${i}: number = ${i}\n`).join("")
    const realm = makeRealm({ "a.ts": big })
    const server = await startServer({ realmDir: realm, store: "memory" })
    const inFlight = request(server.url, "/a.ts")
    await sleep(150)
    const code = await server.stop("SIGTERM")
    expect((await inFlight).status).toBe(200)
    expect(code).not.toBe("SIGKILL")
    expect(server.output()).not.toMatch(/Error|defect/i)
  })

  it("a realm directory that disappears gives 503s, never a crash, and comes back", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n" })
    const server = await startServer({ realmDir: realm, store: "memory" })
    expect((await request(server.url, "/a.ts")).status).toBe(200)
    const moved = `${realm}-moved`
    renameSync(realm, moved)
    const gone = await request(server.url, "/a.ts")
    expect(gone.status).toBe(503)
    expect(jsonOf(gone)).toMatchObject({ error: "SourceReadError" })
    expect((await request(server.url, "/_cache/health")).status).toBe(503)
    renameSync(moved, realm)
    expect((await request(server.url, "/a.ts")).status).toBe(200)
    writeFileSync(path.join(realm, "a.ts"), "export const a = 2\n")
    // the watch is re-established within a couple of seconds, and edits are seen again
    await eventually(async () => {
      const response = await request(server.url, "/a.ts")
      return response.body.includes("a = 2") ? true : undefined
    }, 4000, "the edit after the realm came back")
    expect(server.child.exitCode).toBeNull()
    await server.stop()
  })

  it("exports ModuleCache.get spans with their outcome over OTLP", async () => {
    const receiver = await startOtlpReceiver()
    try {
      const realm = makeRealm({ "a.ts": "export const a = 1\n" })
      const server = await startServer({
        realmDir: realm,
        store: "memory",
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "100" }
      })
      expect((await request(server.url, "/a.ts")).status).toBe(200)
      expect((await request(server.url, "/a.ts")).status).toBe(200)
      const spans = await eventually(async () => {
        const found = receiver.spans().filter((span) => span.name === "ModuleCache.get")
        return found.length >= 2 ? found : undefined
      }, 10_000, "ModuleCache.get spans")
      expect(spans.map((span) => span.attributes["mtc.outcome"])).toEqual(expect.arrayContaining(["transpiled", "l1"]))
      expect(spans[0]?.attributes["mtc.path"]).toBe("a.ts")
      expect(spans[0]?.serviceName).toBe("module-transpile-cache")
      // The start-up preload has a span of its own (an empty memory store: nothing preloaded).
      const preload = receiver.spans().find((span) => span.name === "ModuleCache.preload")
      expect(preload?.attributes).toMatchObject({ "mtc.preload.entries": 0, "mtc.preload.rows": 0 })
      expect(preload?.attributes["mtc.realm"]).toMatch(/^file:\/\//)
      expect(receiver.undecoded()).toBe(0)
      await server.stop()
    } finally {
      await receiver.close()
    }
  })
})
