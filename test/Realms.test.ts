/**
 * Many realms in one server, over real HTTP: mounts (the longest wins, the same path in two
 * realms, paths under no mount, `/_cache/` never a realm's), mounts and unmounts at run time
 * (`/_cache/realms`: statuses, 404 after an unmount even for the fast path's routes, a remount
 * serving the directory as it is now, zero failed requests to other realms under load while a
 * realm is mounted and unmounted, an in-flight request to the realm being unmounted answered),
 * invalidation per realm (admin route and CLI), and the CLI's mounts (`--realm` errors,
 * `--realm-url-base`, the data directory of PGlite).
 */
import { Deferred, Effect, Exit, Fiber, Layer, Redacted, Scope } from "effect"
import { existsSync } from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ModuleCache } from "../src/cache/ModuleCache.ts"
import { moduleKey } from "../src/domain/Domain.ts"
import { FastPathHandler } from "../src/http/FastPath.ts"
import * as ModuleCacheLive from "../src/live/ModuleCacheLive.ts"
import * as Realms from "../src/realm/Realms.ts"
import * as RealmServer from "../src/http/RealmServer.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import {
  eventually,
  freePort,
  jsonOf,
  makeRealm,
  type RawResponse,
  removeRealms,
  request,
  runCli,
  startServer,
  stopAll,
  testAdminToken,
  writeEntry
} from "./support/server.ts"

const scopes: Array<Scope.Closeable> = []

afterAll(async () => {
  for (const scope of scopes.splice(0)) await Effect.runPromise(Scope.close(scope, Exit.void))
  await stopAll()
  removeRealms()
})

/** `RealmServer.layer` on a free port (memory store, the counting test transpiler, the fast path on). */
const serve = async (options: Pick<RealmServer.ServeOptions, "realms" | "realmDir" | "realmUrlBase">) => {
  const port = await freePort()
  const fast = new FastPathHandler()
  const transpiler = TestTranspiler.make()
  const scope = Effect.runSync(Scope.make())
  scopes.push(scope)
  await Effect.runPromise(Layer.buildWithScope(
    RealmServer.layer({
      ...options,
      store: { _tag: "memory" },
      port,
      adminToken: Redacted.make(testAdminToken),
      fastPath: fast
    }).pipe(Layer.provide(TestTranspiler.layer(transpiler))),
    scope
  ))
  return { url: `http://127.0.0.1:${port}`, fast, transpiler }
}

type Server = Awaited<ReturnType<typeof serve>>

/** Requests a path until the fast path answers it (the router answers the first hits of each path). */
const warmFast = async (server: Server, rawPath: string): Promise<RawResponse> => {
  for (let i = 0; i < 20; i++) {
    const before = server.fast.answered
    const response = await request(server.url, rawPath)
    expect(response.status, `${rawPath}: ${response.body}`).toBe(200)
    if (server.fast.answered > before) return response
  }
  throw new Error(`the fast path never answered ${rawPath}`)
}

/** The module a source transpiles to under the test transpiler. */
const transpiled = (relative: string, source: string) => `// transpiled ${relative}\n${source}`

const mountRealm = (url: string, body: unknown, options: { readonly admin?: boolean; readonly raw?: string } = {}) =>
  request(url, "/_cache/realms", {
    method: "POST",
    ...(options.admin === undefined ? {} : { admin: options.admin }),
    headers: { "content-type": "application/json" },
    body: options.raw ?? JSON.stringify(body)
  })

const unmountRealm = (url: string, mount: string, options: { readonly admin?: boolean } = {}) =>
  request(url, `/_cache/realms?mount=${encodeURIComponent(mount)}`, { method: "DELETE", ...(options.admin === undefined ? {} : { admin: options.admin }) })

const statsOf = async (url: string) => jsonOf(await request(url, "/_cache/stats")) as unknown as RealmServer.StatsBody

const mountsOf = async (url: string) => {
  const listed = await request(url, "/_cache/realms")
  expect(listed.status).toBe(200)
  return (JSON.parse(listed.body) as { realms: ReadonlyArray<{ mount: string }> }).realms.map((realm) => realm.mount)
}

const expectNotFound = (response: RawResponse, what: string) => {
  expect(response.status, what).toBe(404)
  expect(response.headers["content-type"], what).toMatch(/^application\/json/)
  expect(jsonOf(response)["error"], what).toBe("ModuleNotFoundError")
}

// -----------------------------------------------------------------------------
// Mounts
// -----------------------------------------------------------------------------

describe("mounts", () => {
  const sources = {
    root: "export const where = 'root'\n",
    rootShadowA: "export const where = 'root a/x, shadowed by /a/'\n",
    rootShadowAB: "export const where = 'root a/b/x, shadowed by /a/b/'\n",
    a: "export const where = 'realm a'\n",
    aShadowB: "export const where = 'a b/x, shadowed by /a/b/'\n",
    ab: "export const where = 'realm a/b'\n",
    p: "export const same = 'p'\n",
    q: "export const same = 'q, another source'\n"
  }
  let server: Server

  beforeAll(async () => {
    const root = makeRealm({
      "x.ts": sources.root,
      "a/x.ts": sources.rootShadowA,
      "a/b/x.ts": sources.rootShadowAB,
      "_cache/x.ts": "export const admin = 'never served'\n",
      "_cache/health": "never served\n"
    })
    const a = makeRealm({ "x.ts": sources.a, "b/x.ts": sources.aShadowB, "b/only-in-a.ts": sources.aShadowB })
    const ab = makeRealm({ "x.ts": sources.ab })
    const p = makeRealm({ "same.ts": sources.p, "same.json": "{\"realm\":\"p\"}\n" })
    const q = makeRealm({ "same.ts": sources.q, "same.json": "{\"realm\":\"q\"}\n" })
    server = await serve({
      realmDir: root,
      realms: [{ mount: "/a/b/", dir: ab }, { mount: "/a/", dir: a }, { mount: "/p/", dir: p }, { mount: "/q/", dir: q }]
    })
  }, 60_000)

  it("the longest mount wins, with no fall-through to a shorter one, by the router and the fast path", async () => {
    for (let round = 0; round < 4; round++) {
      expect((await request(server.url, "/x.ts")).body).toBe(transpiled("x.ts", sources.root))
      expect((await request(server.url, "/a/x.ts")).body).toBe(transpiled("x.ts", sources.a))
      expect((await request(server.url, "/a/b/x.ts")).body).toBe(transpiled("x.ts", sources.ab))
      expect((await request(server.url, "/a/b/x")).body).toBe(transpiled("x.ts", sources.ab))
      // Other spellings of the same path are the same mount's.
      for (const spelling of ["/a//b/x.ts", "//a/b/x.ts", "/a/%62/x.ts", "/a%2Fb/x.ts", "/%61/b/x"]) {
        expect((await request(server.url, spelling)).body, spelling).toBe(transpiled("x.ts", sources.ab))
      }
      expect((await request(server.url, "//a/x.ts")).body).toBe(transpiled("x.ts", sources.a))
      // Only in /a/'s directory, below b/: the path is /a/b/'s, which has no such module.
      expectNotFound(await request(server.url, "/a/b/only-in-a.ts"), "/a/b/only-in-a.ts")
    }
    expect((await warmFast(server, "/a/b/x.ts")).body).toBe(transpiled("x.ts", sources.ab))
    expect((await warmFast(server, "/a/x.ts")).body).toBe(transpiled("x.ts", sources.a))
    expect((await warmFast(server, "/x.ts")).body).toBe(transpiled("x.ts", sources.root))
    const stats = await statsOf(server.url)
    expect(Object.keys(stats.realms ?? {}).sort()).toEqual(["/", "/a/", "/a/b/", "/p/", "/q/"])
    // Each transpiled its own x.ts once, and nobody the shadowed files.
    expect(stats.realms?.["/"]?.transpiles).toBe(1)
    expect(stats.realms?.["/a/"]?.transpiles).toBe(1)
    expect(stats.realms?.["/a/b/"]?.transpiles).toBe(1)
  })

  it("the same path in two realms gives each realm's own bytes and ETag, cold and warm", async () => {
    const p = await request(server.url, "/p/same.ts")
    const q = await request(server.url, "/q/same.ts")
    expect(p.body).toBe(transpiled("same.ts", sources.p))
    expect(q.body).toBe(transpiled("same.ts", sources.q))
    expect(p.headers.etag).toMatch(/^"[0-9a-f]{32}"$/)
    expect(q.headers.etag).toMatch(/^"[0-9a-f]{32}"$/)
    expect(p.headers.etag).not.toBe(q.headers.etag)
    const warmP = await warmFast(server, "/p/same.ts")
    const warmQ = await warmFast(server, "/q/same.ts")
    expect([warmP.body, warmP.headers.etag]).toEqual([p.body, p.headers.etag])
    expect([warmQ.body, warmQ.headers.etag]).toEqual([q.body, q.headers.etag])
    // Each ETag revalidates in its own realm only.
    expect((await request(server.url, "/p/same.ts", { headers: { "if-none-match": p.headers.etag ?? "" } })).status).toBe(304)
    expect((await request(server.url, "/q/same.ts", { headers: { "if-none-match": p.headers.etag ?? "" } })).status).toBe(200)
    // Raw files too.
    const rawP = await warmFast(server, "/p/same.json")
    const rawQ = await warmFast(server, "/q/same.json")
    expect(rawP.body).toBe("{\"realm\":\"p\"}\n")
    expect(rawQ.body).toBe("{\"realm\":\"q\"}\n")
    expect(rawP.headers.etag).not.toBe(rawQ.headers.etag)
  })

  it("/_cache/* is never a realm's, even with a realm at / holding a _cache directory", async () => {
    for (const rawPath of ["/_cache/x.ts", "/_cache/x", "//_cache/x.ts", "/%5fcache/x.ts", "/_cache%2Fx.ts"]) {
      for (const method of ["GET", "HEAD"]) {
        const file = await request(server.url, rawPath, { method })
        expect(file.status, `${method} ${rawPath}`).toBe(404)
        expect(file.body, rawPath).not.toContain("never served")
        expect(file.headers["access-control-allow-origin"], rawPath).toBeUndefined()
      }
    }
    const health = await request(server.url, "/_cache/health")
    expect(health.status).toBe(200)
    expect(jsonOf(health)).toMatchObject({ status: "ok", realms: 5 })
    for (const mount of ["/_cache/", "/_cache/x/"]) {
      const refused = await mountRealm(server.url, { mount, dir: makeRealm({ "x.ts": "export const x = 1\n" }) })
      expect(refused.status, mount).toBe(400)
    }
  })
})

describe("paths under no mount", () => {
  it("answer 404 JSON, like a missing module", async () => {
    const server = await serve({ realms: [{ mount: "/a/", dir: makeRealm({ "x.ts": "export const a = 1\n" }) }] })
    for (const rawPath of ["/x.ts", "/", "/b/x.ts", "/a", "/ab/x.ts", "/A/x.ts"]) {
      expectNotFound(await request(server.url, rawPath), rawPath)
    }
    expect((await request(server.url, "/a/x.ts")).status).toBe(200)
  })
})

// -----------------------------------------------------------------------------
// Run time
// -----------------------------------------------------------------------------

/** GETs over a keep-alive agent (one of the load's clients). */
const agentGet = (agent: http.Agent, url: string, rawPath: string): Promise<{ readonly status: number; readonly body: string }> =>
  new Promise((resolve, reject) => {
    const target = new URL(url)
    const req = http.get({ host: target.hostname, port: target.port, path: rawPath, agent }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => chunks.push(chunk))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
      res.on("error", reject)
    })
    req.setTimeout(30_000, () => req.destroy(new Error(`timeout: GET ${rawPath}`)))
    req.on("error", reject)
  })

describe("mounts and unmounts at run time", () => {
  const sourceOf = (realm: string, name: string) => `export const ${name.replace(/\W/g, "_")} = '${realm} ${name}'\n`
  const names = ["m1.ts", "m2.ts", "m3.ts", "lib/m4.ts"]
  const realmFiles = (realm: string) => ({
    ...Object.fromEntries(names.map((name) => [name, sourceOf(realm, name)])),
    "data.json": `{"realm":"${realm}"}\n`
  })
  let server: Server
  let dirs: { a: string; b: string; c: string }

  beforeAll(async () => {
    dirs = { a: makeRealm({ ...realmFiles("a"), "cold.ts": "export const cold = 'a cold'\n" }), b: makeRealm(realmFiles("b")), c: makeRealm({ ...realmFiles("c"), "slow.ts": "export const slow = 'c slow'\n" }) }
    server = await serve({ realms: [{ mount: "/a/", dir: dirs.a }, { mount: "/b/", dir: dirs.b }] })
  }, 60_000)

  it("POST /_cache/realms: 201, 409 when taken, 400 for a bad mount or dir or body, 401 without the admin token", async () => {
    const created = await mountRealm(server.url, { mount: "/c/", dir: dirs.c })
    expect(created.status, created.body).toBe(201)
    expect(jsonOf(created)).toMatchObject({ mount: "/c/", realmUrl: `${pathToFileURL(dirs.c).href}/`, private: false, preloaded: 0 })
    expect((await request(server.url, "/c/m1.ts")).body).toBe(transpiled("m1.ts", sourceOf("c", "m1.ts")))
    expect(await mountsOf(server.url)).toEqual(["/a/", "/b/", "/c/"])

    const taken = await mountRealm(server.url, { mount: "/c/", dir: makeRealm({ "x.ts": "export const x = 1\n" }) })
    expect(taken.status).toBe(409)
    expect(jsonOf(taken)["error"]).toBe("MountConflictError")
    // The same directory (the same realm URL) at another mount.
    const sameRealm = await mountRealm(server.url, { mount: "/c2/", dir: dirs.c })
    expect(sameRealm.status).toBe(409)

    const file = path.join(dirs.c, "m1.ts")
    const badBodies: ReadonlyArray<readonly [string, unknown]> = [
      ["mount without its trailing /", { mount: "/d", dir: dirs.c }],
      ["mount without its leading /", { mount: "d/", dir: dirs.c }],
      ["traversal", { mount: "/../", dir: dirs.c }],
      ["empty segment", { mount: "/d//", dir: dirs.c }],
      ["percent-encoded", { mount: "/%64/", dir: dirs.c }],
      ["admin routes", { mount: "/_cache/", dir: dirs.c }],
      ["relative dir", { mount: "/d/", dir: "relative/dir" }],
      ["missing dir", { mount: "/d/", dir: "/nonexistent/realm/dir" }],
      ["a file for a dir", { mount: "/d/", dir: file }],
      ["no dir", { mount: "/d/" }],
      ["mount a number", { mount: 4, dir: dirs.c }],
      ["private a string", { mount: "/d/", dir: dirs.c, private: "yes" }]
    ]
    for (const [name, body] of badBodies) {
      const response = await mountRealm(server.url, body)
      expect(response.status, `${name}: ${response.body}`).toBe(400)
      expect(response.body, name).not.toContain(dirs.c)
    }
    for (const raw of ["{", "", "[]", "null", "\"/d/\""]) {
      const response = await mountRealm(server.url, undefined, { raw })
      expect(response.status, `body ${JSON.stringify(raw)}`).toBe(400)
    }
    const anonymous = await mountRealm(server.url, { mount: "/d/", dir: dirs.c }, { admin: false })
    expect(anonymous.status).toBe(401)
    const forged = await request(server.url, "/_cache/realms", {
      method: "POST",
      headers: { authorization: `Bearer ${testAdminToken}x`, "content-type": "application/json" },
      body: JSON.stringify({ mount: "/d/", dir: dirs.a })
    })
    expect(forged.status).toBe(401)
    expect((await request(server.url, "/_cache/realms", { admin: false })).status).toBe(401)
    expect((await unmountRealm(server.url, "/c/", { admin: false })).status).toBe(401)
    // Nothing of the refused calls was mounted.
    expect(await mountsOf(server.url)).toEqual(["/a/", "/b/", "/c/"])
    expectNotFound(await request(server.url, "/d/m1.ts"), "/d/m1.ts")

    // A private realm mounted at run time: its reads need a token from the first.
    const privately = await mountRealm(server.url, { mount: "/p/", dir: makeRealm({ "x.ts": "export const p = 'private'\n" }), private: true })
    expect(privately.status).toBe(201)
    expect(jsonOf(privately)["private"]).toBe(true)
    expect((await request(server.url, "/p/x.ts")).status).toBe(401)
    expect((await request(server.url, "/p/missing.ts")).status).toBe(401)
    expect((await request(server.url, "/p/x.ts", { headers: { authorization: `Bearer ${testAdminToken}` } })).status).toBe(200)
    expect((await unmountRealm(server.url, "/p/")).status).toBe(204)

    expect((await unmountRealm(server.url, "/c/")).status).toBe(204)
    const again = await unmountRealm(server.url, "/c/")
    expect(again.status).toBe(404)
    expect(jsonOf(again)["error"]).toBe("NotMountedError")
    expect((await unmountRealm(server.url, "/zz/")).status).toBe(404)
    expect((await request(server.url, "/_cache/realms", { method: "DELETE" })).status).toBe(400)
    expect(await mountsOf(server.url)).toEqual(["/a/", "/b/"])
  })

  it("after an unmount the realm answers 404, even the paths the fast path had routes for; a remount serves the directory as it is now", async () => {
    expect((await mountRealm(server.url, { mount: "/c/", dir: dirs.c })).status).toBe(201)
    const module = await warmFast(server, "/c/m2.ts")
    expect(module.body).toBe(transpiled("m2.ts", sourceOf("c", "m2.ts")))
    expect((await warmFast(server, "/c/m2")).body).toBe(module.body)
    expect((await warmFast(server, "/c/data.json")).body).toBe("{\"realm\":\"c\"}\n")
    await warmFast(server, "/a/m2.ts")

    expect((await unmountRealm(server.url, "/c/")).status).toBe(204)
    const answered = server.fast.answered
    for (const rawPath of ["/c/m2.ts", "/c/m2", "/c/data.json", "/c/m1.ts", "/c/"]) {
      expectNotFound(await request(server.url, rawPath), rawPath)
      expectNotFound(await request(server.url, rawPath, { headers: { "if-none-match": module.headers.etag ?? "*" } }), `${rawPath} 304 probe`)
    }
    expect(server.fast.answered).toBe(answered)
    // The other realms' routes still hold.
    expect((await request(server.url, "/a/m2.ts")).body).toBe(transpiled("m2.ts", sourceOf("a", "m2.ts")))
    expect(server.fast.answered).toBe(answered + 1)
    expect((await statsOf(server.url)).realms?.["/c/"]).toBeUndefined()

    // Edited while unmounted (no watcher saw it): the remount serves the new bytes.
    const edited = "export const m2 = 'c m2, edited while unmounted'\n"
    writeEntry(dirs.c, "m2.ts", edited)
    writeEntry(dirs.c, "data.json", "{\"realm\":\"c\",\"edited\":true}\n")
    expect((await mountRealm(server.url, { mount: "/c/", dir: dirs.c })).status).toBe(201)
    expect((await request(server.url, "/c/m2.ts")).body).toBe(transpiled("m2.ts", edited))
    expect((await request(server.url, "/c/m2")).body).toBe(transpiled("m2.ts", edited))
    expect((await request(server.url, "/c/data.json")).body).toBe("{\"realm\":\"c\",\"edited\":true}\n")
    expect((await warmFast(server, "/c/m2.ts")).body).toBe(transpiled("m2.ts", edited))
    expect((await request(server.url, "/c/m3.ts")).body).toBe(transpiled("m3.ts", sourceOf("c", "m3.ts")))
    // The remount's watcher sees edits (the fast path's route of /c/m2.ts included).
    const again = "export const m2 = 'c m2, edited after the remount'\n"
    writeEntry(dirs.c, "m2.ts", again)
    await eventually(async () => {
      const response = await request(server.url, "/c/m2.ts")
      return response.body === transpiled("m2.ts", again) ? response : undefined
    }, 10_000, "the remounted realm's watcher saw the edit")

    // Another directory at the same mount: its bytes.
    expect((await unmountRealm(server.url, "/c/")).status).toBe(204)
    const other = makeRealm({ "m2.ts": "export const m2 = 'another directory'\n" })
    expect((await mountRealm(server.url, { mount: "/c/", dir: other })).status).toBe(201)
    expect((await request(server.url, "/c/m2.ts")).body).toBe(transpiled("m2.ts", "export const m2 = 'another directory'\n"))
    expectNotFound(await request(server.url, "/c/m3.ts"), "/c/m3.ts after the other directory")
    expect((await unmountRealm(server.url, "/c/")).status).toBe(204)
  })

  it("a remount preloads the realm's L2 rows, and the fast path answers their first request", async () => {
    const dir = makeRealm({ "p1.ts": "export const p1 = 1\n", "p2.ts": "export const p2 = 2\n" })
    expect((await mountRealm(server.url, { mount: "/p/", dir })).status).toBe(201)
    for (const name of ["p1.ts", "p2.ts"]) expect((await request(server.url, `/p/${name}`)).headers["x-module-cache"]).toBe("transpiled")
    expect((await unmountRealm(server.url, "/p/")).status).toBe(204)
    const remounted = await mountRealm(server.url, { mount: "/p/", dir })
    expect(remounted.status).toBe(201)
    expect(JSON.parse(remounted.body)).toMatchObject({ mount: "/p/", preloaded: 2 })
    const answered = server.fast.answered
    const first = await request(server.url, "/p/p1.ts")
    expect(first.body).toBe(transpiled("p1.ts", "export const p1 = 1\n"))
    expect(first.headers["x-module-cache"]).toBe("l1")
    expect(server.fast.answered).toBe(answered + 1)
    expect((await unmountRealm(server.url, "/p/")).status).toBe(204)
  })

  it("mounting and unmounting a realm 20 times under load fails no request to the other realms", async () => {
    // The bytes every load path must answer, read before the load.
    const loadPaths = ["a", "b"].flatMap((realm) => [...names.map((name) => `/${realm}/${name}`), `/${realm}/data.json`, `/${realm}/m1`])
    const expected = new Map<string, string>()
    for (const loadPath of loadPaths) {
      const response = await request(server.url, loadPath)
      expect(response.status, loadPath).toBe(200)
      expected.set(loadPath, response.body)
    }
    const failures: Array<string> = []
    let served = 0
    let running = true
    const agents: Array<http.Agent> = []
    const client = async (index: number) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      agents.push(agent)
      let i = index
      while (running) {
        const loadPath = loadPaths[i++ % loadPaths.length]!
        try {
          const response = await agentGet(agent, server.url, loadPath)
          if (response.status !== 200 || response.body !== expected.get(loadPath)) {
            failures.push(`${loadPath}: ${response.status} ${response.body.slice(0, 200)}`)
          }
        } catch (error) {
          failures.push(`${loadPath}: ${String(error)}`)
        }
        served++
      }
    }
    const clients = Array.from({ length: 8 }, (_, index) => client(index))

    const cycles: Array<{ readonly served: number }> = []
    const cFailures: Array<string> = []
    try {
      for (let cycle = 0; cycle < 20; cycle++) {
        const mounted = await mountRealm(server.url, { mount: "/c/", dir: dirs.c, private: cycle % 2 === 1 })
        if (mounted.status !== 201) cFailures.push(`mount ${cycle}: ${mounted.status} ${mounted.body}`)
        const authorization = { authorization: `Bearer ${testAdminToken}` }
        for (let i = 0; i < 3; i++) {
          const response = await request(server.url, "/c/m1.ts", { headers: authorization })
          if (response.status !== 200 || response.body !== transpiled("m1.ts", sourceOf("c", "m1.ts"))) {
            cFailures.push(`cycle ${cycle} /c/m1.ts: ${response.status}`)
          }
        }
        const unmounted = await unmountRealm(server.url, "/c/")
        if (unmounted.status !== 204) cFailures.push(`unmount ${cycle}: ${unmounted.status} ${unmounted.body}`)
        const gone = await request(server.url, "/c/m1.ts", { headers: authorization })
        if (gone.status !== 404) cFailures.push(`cycle ${cycle} after the unmount: ${gone.status}`)
        cycles.push({ served })
      }
    } finally {
      running = false
      await Promise.all(clients)
      for (const agent of agents) agent.destroy()
    }
    expect(cFailures).toEqual([])
    expect(failures).toEqual([])
    // The load ran through the cycles (not before or after them only).
    const during = cycles.at(-1)!.served - cycles[0]!.served
    expect(during, `requests served during the cycles: ${during}`).toBeGreaterThan(19 * 8)
    expect(await mountsOf(server.url)).toEqual(["/a/", "/b/"])
  }, 120_000)

  it("a request in flight to the realm being unmounted gets an answer, and the remount serves the module afresh", async () => {
    expect((await mountRealm(server.url, { mount: "/c/", dir: dirs.c })).status).toBe(201)
    const gate = await Effect.runPromise(server.transpiler.gate)
    try {
      const calls = server.transpiler.calls()
      const inFlight = request(server.url, "/c/slow.ts")
      // Held in its transpile.
      expect((await Effect.runPromise(Deferred.await(gate.started))).path).toBe("slow.ts")
      // A cold load of another realm in flight through the unmount too.
      const otherInFlight = request(server.url, "/a/cold.ts")
      await eventually(async () => server.transpiler.calls() === calls + 2 ? true : undefined, 10_000, "both transpiles held")
      // The other realms answer meanwhile (warm: no transpile).
      expect((await request(server.url, "/a/m1.ts")).status).toBe(200)
      const unmounted = await unmountRealm(server.url, "/c/")
      expect(unmounted.status).toBe(204)
      server.transpiler.ungate()
      await Effect.runPromise(Deferred.succeed(gate.release, undefined))
      const answer = await inFlight
      const other = await otherInFlight
      expect(other.status).toBe(200)
      expect(other.body).toBe(transpiled("cold.ts", "export const cold = 'a cold'\n"))
      expect(other.headers["x-module-cache"]).toBe("transpiled")
      expect((await request(server.url, "/a/cold.ts")).headers["x-module-cache"]).toBe("l1")
      // Either the module it was loading or the realm's 404; never a hang or a 5xx.
      if (answer.status === 200) expect(answer.body).toBe(transpiled("slow.ts", "export const slow = 'c slow'\n"))
      else expectNotFound(answer, "the request in flight")
    } finally {
      server.transpiler.ungate()
      await Effect.runPromise(Deferred.succeed(gate.release, undefined))
    }
    expectNotFound(await request(server.url, "/c/slow.ts"), "/c/slow.ts after the unmount")
    // The load finished after the unmount left nothing of the realm in L1.
    expect((await statsOf(server.url)).realms?.["/c/"]).toBeUndefined()
    writeEntry(dirs.c, "slow.ts", "export const slow = 'c slow, edited'\n")
    expect((await mountRealm(server.url, { mount: "/c/", dir: dirs.c })).status).toBe(201)
    const remounted = await request(server.url, "/c/slow.ts")
    expect(remounted.status).toBe(200)
    expect(remounted.body).toBe(transpiled("slow.ts", "export const slow = 'c slow, edited'\n"))
    expect((await unmountRealm(server.url, "/c/")).status).toBe(204)
  })
})

describe("Realms in process", () => {
  it("an unmount during a mount's preload leaves nothing of the realm in L1", async () => {
    const dir = makeRealm({ "x.ts": "export const x = 1\n", "y.ts": "export const y = 2\n" })
    const services = ModuleCacheLive.layer({ _tag: "memory" }).pipe(
      Layer.provideMerge(Realms.layerRegistry()),
      Layer.provide(TestTranspiler.layer(TestTranspiler.make()))
    )
    const program = Effect.gen(function*() {
      const cache = yield* ModuleCache
      const registry = yield* Realms.RealmRegistry
      // The realm's modules in L2, nothing in L1.
      const plain = yield* Realms.make(registry, cache, { watch: false })
      const { realm } = yield* plain.mount({ mount: "/c/", dir })
      yield* cache.get(moduleKey(realm.realmUrl, "x.ts"))
      yield* cache.get(moduleKey(realm.realmUrl, "y.ts"))
      // Their L2 writes committed (they go in batches, after the loads answered).
      const written: Effect.Effect<void> = Effect.flatMap(cache.stats, (stats) =>
        stats.inFlight === 0 ? Effect.void : Effect.andThen(Effect.yieldNow, written))
      yield* written
      expect((yield* cache.realmUsage(realm.realmUrl))?.rows).toBe(2)
      yield* plain.unmount("/c/")
      expect(cache.countsOf(realm.realmUrl).l1Entries).toBe(0)

      const entered = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const gated: ModuleCache["Service"] = {
        ...cache,
        preload: (realmUrls) =>
          Effect.andThen(Deferred.succeed(entered, undefined), Effect.andThen(Deferred.await(release), cache.preload(realmUrls)))
      }
      const realms = yield* Realms.make(registry, gated, { watch: false })
      const mounting = yield* Effect.forkChild(realms.mount({ mount: "/c/", dir }, { preload: true }))
      yield* Deferred.await(entered)
      const unmounting = yield* Effect.forkChild(realms.unmount("/c/"))
      yield* Deferred.succeed(release, undefined)
      // The preload checks each row's source through the realm table, which no longer has the realm.
      yield* Fiber.join(mounting)
      yield* Fiber.join(unmounting)
      expect(registry.get("/c/")).toBeUndefined()
      expect(cache.countsOf(realm.realmUrl).l1Entries).toBe(0)
    })
    await Effect.runPromise(Effect.scoped(Effect.provide(program, services)))
  })
})

// -----------------------------------------------------------------------------
// Invalidation per realm
// -----------------------------------------------------------------------------

describe("invalidation per realm (admin route)", () => {
  it("drops only the named realm's modules; without realm and several mounts it is a 400", async () => {
    const files = { "x.ts": "export const x = 1\n", "y.ts": "export const y = 2\n" }
    const server = await serve({ realms: [{ mount: "/a/", dir: makeRealm(files) }, { mount: "/b/", dir: makeRealm(files) }] })
    const outcome = async (rawPath: string) => (await request(server.url, rawPath)).headers["x-module-cache"]
    const all = ["/a/x.ts", "/a/y.ts", "/b/x.ts", "/b/y.ts"]
    for (const rawPath of all) await warmFast(server, rawPath)

    const whole = await request(server.url, "/_cache/invalidate?realm=/a/", { method: "POST" })
    expect(whole.status).toBe(200)
    expect(jsonOf(whole)).toMatchObject({ invalidated: "realm", mount: "/a/", paths: [] })
    expect(await outcome("/b/x.ts")).toBe("l1")
    expect(await outcome("/b/y.ts")).toBe("l1")
    expect(await outcome("/a/x.ts")).toBe("transpiled")
    expect(await outcome("/a/y.ts")).toBe("transpiled")

    const one = await request(server.url, "/_cache/invalidate?realm=/b/&path=x.ts", { method: "POST" })
    expect(jsonOf(one)).toMatchObject({ invalidated: "module", mount: "/b/", paths: ["x.ts"] })
    expect(await outcome("/a/x.ts")).toBe("l1")
    expect(await outcome("/b/y.ts")).toBe("l1")
    expect(await outcome("/b/x.ts")).toBe("transpiled")

    const ambiguous = await request(server.url, "/_cache/invalidate", { method: "POST" })
    expect(ambiguous.status).toBe(400)
    expect((await request(server.url, "/_cache/invalidate?path=x.ts", { method: "POST" })).status).toBe(400)
    expect((await request(server.url, "/_cache/invalidate?realm=/zz/", { method: "POST" })).status).toBe(404)
    expect((await request(server.url, "/_cache/invalidate?realm=/a/", { method: "POST", admin: false })).status).toBe(401)
    // The refused calls dropped nothing.
    for (const rawPath of all) expect(await outcome(rawPath), rawPath).toBe("l1")
  })
})

// -----------------------------------------------------------------------------
// The CLI
// -----------------------------------------------------------------------------

/** stderr without effect/cli's "ERROR" heading: the message's lines. */
const errorLines = (stderr: string) => stderr.split("\n").map((line) => line.trim()).filter((line) => line !== "" && line !== "ERROR")

describe("the CLI with mounts", () => {
  it("--realm and --private mistakes are one-line errors with exit 1", async () => {
    const a = makeRealm({ "x.ts": "export const a = 1\n" })
    const b = makeRealm({ "x.ts": "export const b = 1\n" })
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
      [["--realm", "/a/"], "--realm /a/: expected MOUNT=DIR"],
      [["--realm", `=${a}`], "expected MOUNT=DIR"],
      [["--realm", "/a/="], "expected MOUNT=DIR"],
      [["--realm", `/a/=${a}`, "--realm", `/a/=${b}`], "/a/ is given twice"],
      [[a, "--realm", `/=${b}`], "/ is given twice"],
      [["--realm", `/a/=${a}`, "--private", "/b/"], "--private /b/: no --realm is mounted there"],
      [["--private", "/a/"], "no realm"],
      [["--realm", `/a=${a}`], "invalid mount \"/a\""],
      [["--realm", `a/=${a}`], "invalid mount \"a/\""],
      [["--realm", `/../=${a}`], "invalid mount \"/../\""],
      [["--realm", `/x/../=${a}`], "invalid mount \"/x/../\""],
      [["--realm", `/_cache/=${a}`], "invalid mount \"/_cache/\""],
      [["--realm", `/a//=${a}`], "invalid mount \"/a//\""],
      [["--realm", `/a/=/nonexistent/realm/dir`], "/nonexistent/realm/dir"]
    ]
    const results = await Promise.all(cases.map(([args]) =>
      runCli(["serve", ...args, "--store", "memory", "--port", "0", "--transpile-workers", "0"], { env: { MTC_ADMIN_TOKEN: testAdminToken } })
    ))
    cases.forEach(([args, message], i) => {
      const result = results[i]!
      const what = `${args.join(" ")}: ${result.stderr}`
      expect(result.code, what).toBe(1)
      const lines = errorLines(result.stderr)
      expect(lines, what).toHaveLength(1)
      expect(lines[0], what).toContain(message)
      expect(result.stdout, what).not.toContain("listening")
    })
  }, 120_000)

  it("--realm-url-base gives realm URLs base + mount; invalidate --realm drops only that realm's modules", async () => {
    const files = { "x.ts": "export const x = 1\n", "y.ts": "export const y = 2\n" }
    const a = makeRealm(files)
    const b = makeRealm(files)
    const server = await startServer({
      args: ["--realm", `/a/=${a}`, "--realm", `/alice/notes/=${b}`, "--realm-url-base", "https://realms.example/", "--transpile-workers", "0"]
    })
    const stats = await statsOf(server.url)
    expect(stats.realms?.["/a/"]?.realmUrl).toBe("https://realms.example/a/")
    expect(stats.realms?.["/alice/notes/"]?.realmUrl).toBe("https://realms.example/alice/notes/")
    const c = makeRealm(files)
    const mounted = await mountRealm(server.url, { mount: "/c/", dir: c })
    expect(jsonOf(mounted)["realmUrl"]).toBe("https://realms.example/c/")
    expect((await unmountRealm(server.url, "/c/")).status).toBe(204)

    const outcome = async (rawPath: string) => (await request(server.url, rawPath)).headers["x-module-cache"]
    const all = ["/a/x.ts", "/a/y.ts", "/alice/notes/x.ts", "/alice/notes/y.ts"]
    for (const rawPath of all) {
      await request(server.url, rawPath)
      expect(await outcome(rawPath), rawPath).toBe("l1")
    }
    const env = { MTC_ADMIN_TOKEN: testAdminToken }
    const whole = await runCli(["invalidate", "--realm", "/a/", "--url", server.url], { env })
    expect(whole.code, whole.stderr).toBe(0)
    expect(JSON.parse(whole.stdout)).toMatchObject({ invalidated: "realm", mount: "/a/", realmUrl: "https://realms.example/a/" })
    expect(await outcome("/alice/notes/x.ts")).toBe("l1")
    expect(await outcome("/alice/notes/y.ts")).toBe("l1")
    expect(await outcome("/a/x.ts")).toBe("transpiled")
    expect(await outcome("/a/y.ts")).toBe("transpiled")

    const one = await runCli(["invalidate", "x.ts", "--realm", "/alice/notes/", "--url", server.url], { env })
    expect(one.code, one.stderr).toBe(0)
    expect(JSON.parse(one.stdout)).toMatchObject({ invalidated: "module", mount: "/alice/notes/", paths: ["x.ts"] })
    expect(await outcome("/alice/notes/y.ts")).toBe("l1")
    expect(await outcome("/a/x.ts")).toBe("l1")
    expect(await outcome("/alice/notes/x.ts")).toBe("transpiled")

    const ambiguous = await runCli(["invalidate", "--url", server.url], { env })
    expect(ambiguous.code).toBe(1)
    expect(ambiguous.stdout + ambiguous.stderr).toContain("400")
    expect(ambiguous.stdout + ambiguous.stderr).toContain("realm=MOUNT is needed")
    const unknown = await runCli(["invalidate", "--realm", "/zz/", "--url", server.url], { env })
    expect(unknown.code).toBe(1)
    expect(unknown.stdout + unknown.stderr).toContain("404")
    for (const rawPath of all) expect(await outcome(rawPath), rawPath).toBe("l1")
    expect(await server.stop()).toBe(0)
  }, 120_000)

  it("without --realm-url-base a realm's URL is its directory's file:// URL", async () => {
    const a = makeRealm({ "x.ts": "export const x = 1\n" })
    const server = await startServer({ args: ["--realm", `/a/=${a}`, "--transpile-workers", "0"] })
    expect((await statsOf(server.url)).realms?.["/a/"]?.realmUrl).toBe(`${pathToFileURL(a).href}/`)
    expect(await server.stop()).toBe(0)
  }, 60_000)

  it("with --realm and PGlite the data directory is ./.transpile-cache in the working directory, one for the process", async () => {
    const cwd = makeRealm({}, "mtc-cwd-")
    const a = makeRealm({ "x.ts": "export const a: number = 1\n" })
    const b = makeRealm({ "x.ts": "export const b: number = 2\n" })
    const args = ["--realm", `/a/=${a}`, "--realm", `/b/=${b}`, "--transpile-workers", "0"]
    const server = await startServer({ store: "pglite", cwd, args, env: { DATABASE_URL: "" } })
    expect((await request(server.url, "/a/x.ts")).status).toBe(200)
    expect((await request(server.url, "/b/x.ts")).status).toBe(200)
    expect(existsSync(path.join(cwd, ".transpile-cache"))).toBe(true)
    expect(existsSync(path.join(a, ".transpile-cache"))).toBe(false)
    expect(existsSync(path.join(b, ".transpile-cache"))).toBe(false)
    // One process per data directory: a second one in the same working directory is refused.
    const second = await runCli(["serve", "--realm", `/c/=${makeRealm({ "x.ts": "export const c = 3\n" })}`, "--store", "pglite", "--port", "0"], {
      cwd,
      env: { MTC_ADMIN_TOKEN: testAdminToken, DATABASE_URL: "" }
    })
    expect(second.code).toBe(1)
    expect(errorLines(second.stderr), second.stderr).toHaveLength(1)
    expect(await server.stop()).toBe(0)

    // Restarted in the same directory, it reads its rows back: both realms' modules come from L2.
    const again = await startServer({ store: "pglite", cwd, args, env: { DATABASE_URL: "" } })
    expect((await request(again.url, "/a/x.ts")).headers["x-module-cache"]).toMatch(/^l[12]$/)
    expect((await request(again.url, "/b/x.ts")).headers["x-module-cache"]).toMatch(/^l[12]$/)
    expect(await again.stop()).toBe(0)
    // warm takes the same mounts; a --data-dir elsewhere is used instead; serve then preloads what warm wrote.
    const elsewhere = path.join(makeRealm({}, "mtc-data-"), "store")
    const warmed = await runCli(["warm", ...args, "--store", "pglite", "--data-dir", elsewhere], { cwd, env: { DATABASE_URL: "" } })
    expect(warmed.code, warmed.stderr).toBe(0)
    expect(warmed.stdout).toContain("warmed 2 modules")
    expect(warmed.stdout).toMatch(/\/a\/ preloaded 1 module/)
    expect(warmed.stdout).toMatch(/\/b\/ preloaded 1 module/)
    expect(existsSync(elsewhere)).toBe(true)
    const third = await startServer({ store: "pglite", cwd, args: [...args, "--data-dir", elsewhere], env: { DATABASE_URL: "" } })
    expect((await request(third.url, "/a/x.ts")).headers["x-module-cache"]).toBe("l1")
    expect((await request(third.url, "/b/x.ts")).headers["x-module-cache"]).toBe("l1")
    expect(await third.stop()).toBe(0)
  }, 180_000)
})
