/**
 * Private realms through a real server (`RealmServer.layer` on a real port, the fast path on,
 * and a real `serve` process): every bad token gets the one `401` whether the path exists or
 * not; a private module warmed by an allowed reader gives nothing to anyone else, by the router
 * and by the fast path alike (GET, HEAD, 304 probes, raw files, scoped CSS); a token for one
 * realm reads no other; private answers carry `cache-control: private, no-cache` and
 * `vary: authorization`; preflights allow `authorization`; the admin token reads everything.
 */
import { Effect, Exit, Layer, Redacted, Scope } from "effect"
import { SignJWT } from "jose"
import { createHmac } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { FastPathHandler } from "../src/http/FastPath.ts"
import * as ReadAccess from "../src/http/ReadAccess.ts"
import * as RealmServer from "../src/http/RealmServer.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import {
  adminAuthorization,
  eventually,
  freePort,
  makeRealm,
  type RawResponse,
  removeRealms,
  request,
  runCli,
  startServer,
  stopAll,
  testAdminToken
} from "./support/server.ts"

const secret = "private-realms-test-read-secret-0123456789"
const readSecret = Redacted.make(secret)
const otherSecret = "another-read-secret-of-another-server-0123"

const b64 = (value: string): string => Buffer.from(value).toString("base64url")
const b64json = (value: unknown): string => b64(JSON.stringify(value))
const bearer = (token: string) => `Bearer ${token}`

/** A JWT over exactly this header and these claims, signed HS256 with `key`. */
const hs256 = (header: unknown, claims: unknown, key = secret): string => {
  const input = `${b64json(header)}.${b64json(claims)}`
  return `${input}.${createHmac("sha256", key).update(input).digest("base64url")}`
}

const nowSeconds = () => Math.floor(Date.now() / 1000)

/** A good read token for `realms`, valid an hour. */
const tokenFor = (realms: ReadonlyArray<string>): Promise<string> =>
  Effect.runPromise(ReadAccess.issueReadToken(readSecret, realms, "1 hour"))

/** Every kind of refused `Authorization` header for the realm at `/a/` (`undefined`: none at all). */
const badAuthorizations = async (): Promise<ReadonlyArray<readonly [string, string | undefined]>> => {
  const exp = nowSeconds() + 3600
  const good = await tokenFor(["/a/"])
  const [header, payload, signature] = good.split(".")
  const hs512 = await new SignJWT({ realms: ["/a/"] }).setProtectedHeader({ alg: "HS512", typ: "JWT" })
    .setExpirationTime(exp).sign(new TextEncoder().encode(secret))
  const hs384 = await new SignJWT({ realms: ["/a/"] }).setProtectedHeader({ alg: "HS384" })
    .setExpirationTime(exp).sign(new TextEncoder().encode(secret))
  return [
    ["no token", undefined],
    ["expired", bearer(hs256({ alg: "HS256", typ: "JWT" }, { realms: ["/a/"], exp: nowSeconds() - 60 }))],
    ["alg none, unsigned", bearer(`${b64json({ alg: "none", typ: "JWT" })}.${payload}.`)],
    ["alg none, the HS256 signature kept", bearer(`${b64json({ alg: "none", typ: "JWT" })}.${payload}.${signature}`)],
    ["HS512 with the read secret", bearer(hs512)],
    ["HS384 with the read secret", bearer(hs384)],
    ["wrong signature (another secret)", bearer(hs256({ alg: "HS256", typ: "JWT" }, { realms: ["/a/"], exp }, otherSecret))],
    ["claims changed under the signature", bearer(`${header}.${b64json({ realms: ["/a/", "/b/"], exp })}.${signature}`)],
    ["another realm's token", bearer(await tokenFor(["/b/"]))],
    ["a token for no realm", bearer(await tokenFor([]))],
    ["malformed: one part", bearer("not-a-jwt")],
    ["malformed: bad base64", bearer(`${header}.${payload}!.${signature}`)],
    ["malformed: Bearer alone", "Bearer"],
    ["malformed: Basic scheme", `Basic ${Buffer.from(`user:${good}`).toString("base64")}`],
    ["malformed: the token without a scheme", good],
    ["the admin token, one character short", bearer(testAdminToken.slice(0, -1))]
  ]
}

const scopes: Array<Scope.Closeable> = []

afterAll(async () => {
  for (const scope of scopes.splice(0)) await Effect.runPromise(Scope.close(scope, Exit.void))
  await stopAll()
  removeRealms()
})

/** Private `/a/` and `/b/`, public `/pub/`, served by `RealmServer.layer` with its fast path. */
const serve = async () => {
  const port = await freePort()
  const fast = new FastPathHandler()
  const transpiler = TestTranspiler.make()
  const dirs = {
    a: makeRealm({
      "x.ts": "export const alpha = 'alpha-private-module'\n",
      "other.ts": "export const other = 'alpha-private-other'\n",
      "data.json": "{\"alpha\":\"alpha-private-json\"}\n",
      "card.gts": "export const card = 'alpha-private-card'\n",
      "index.html": "<!doctype html><p>alpha-private-page</p>\n",
      "big.json": JSON.stringify(Array.from({ length: 100 }, (_, i) => ({ alpha: `alpha-private-item-${i}` })))
    }),
    b: makeRealm({ "x.ts": "export const bravo = 'bravo-private-module'\n" }),
    pub: makeRealm({ "x.ts": "export const open = 'public-module'\n" })
  }
  const scope = Effect.runSync(Scope.make())
  scopes.push(scope)
  await Effect.runPromise(Layer.buildWithScope(
    RealmServer.layer({
      realms: [
        { mount: "/a/", dir: dirs.a, private: true },
        { mount: "/b/", dir: dirs.b, private: true },
        { mount: "/pub/", dir: dirs.pub }
      ],
      store: { _tag: "memory" },
      port,
      adminToken: Redacted.make(testAdminToken),
      readSecret,
      fastPath: fast
    }).pipe(Layer.provide(TestTranspiler.layer(transpiler))),
    scope
  ))
  return { url: `http://127.0.0.1:${port}`, fast, transpiler }
}

type Server = Awaited<ReturnType<typeof serve>>

const get = (server: Server, rawPath: string, authorization: string | undefined, extra: Record<string, string> = {}, method = "GET") =>
  request(server.url, rawPath, { method, admin: false, headers: authorization === undefined ? extra : { authorization, ...extra } })

/** Requests a path with a reader's header until the fast path answers it (the router answers the first hits). */
const warmFast = async (server: Server, rawPath: string, authorization: string): Promise<RawResponse> => {
  for (let i = 0; i < 20; i++) {
    const before = server.fast.answered
    const response = await get(server, rawPath, authorization)
    expect(response.status, `${rawPath}: ${response.body}`).toBe(200)
    if (server.fast.answered > before) return response
  }
  throw new Error(`the fast path never answered ${rawPath}`)
}

/** Asserts the one 401 of every refused read: its body, its headers, nothing of the realm. */
const expectRefused = (response: RawResponse, what: string, method = "GET") => {
  expect(response.status, what).toBe(401)
  expect(response.body, what).toBe(method === "HEAD" ? "" : ReadAccess.unauthorizedBody)
  expect(response.headers.etag, what).toBeUndefined()
  expect(response.headers["x-module-cache"], what).toBeUndefined()
  expect(response.headers["cache-control"], what).toBe("private, no-cache")
  expect(response.headers.vary, what).toBe("authorization")
  expect(response.headers["www-authenticate"], what).toMatch(/^Bearer /)
  expect(response.body, what).not.toMatch(/alpha|bravo/)
}

/** Asserts the private headers of a private realm's answer. */
const expectPrivate = (response: RawResponse, what: string) => {
  expect(response.headers["cache-control"], what).toBe("private, no-cache")
  expect(response.headers.vary, what).toBe("authorization")
}

describe("private realms (RealmServer.layer, fast path on)", () => {
  let server: Server
  let bad: ReadonlyArray<readonly [string, string | undefined]>

  beforeAll(async () => {
    server = await serve()
    bad = await badAuthorizations()
  }, 60_000)

  it("every bad token gets the same 401, whether the path exists or not, and nothing is resolved or transpiled", async () => {
    const calls = server.transpiler.calls()
    const paths = ["/a/x.ts", "/a/x", "/a/missing.ts", "/a/", "/a/data.json", "/a/nested/deep/missing.gts", "/a/%2e%2e/pub/x.ts", "/a/.secret.ts"]
    const bodies = new Set<string>()
    for (const [name, authorization] of bad) {
      for (const rawPath of paths) {
        const response = await get(server, rawPath, authorization)
        expectRefused(response, `${name} ${rawPath}`)
        bodies.add(response.body)
      }
    }
    expect([...bodies]).toEqual([ReadAccess.unauthorizedBody])
    // Refused before the path was even resolved: no transpile of anything.
    expect(server.transpiler.calls()).toBe(calls)
  })

  it("a private module warmed by its reader gives 0 bytes to everyone else, by the router and the fast path alike", async () => {
    const readerA = bearer(await tokenFor(["/a/"]))
    const readerB = bearer(await tokenFor(["/b/"]))
    const first = await get(server, "/a/other.ts", readerA)
    expect(first.status).toBe(200)
    expect(first.body).toContain("alpha-private-other")
    expectPrivate(first, "router")
    const warm = await warmFast(server, "/a/other.ts", readerA)
    expect(warm.headers["x-module-cache"]).toBe("l1")
    expect(warm.body).toBe(first.body)
    expectPrivate(warm, "fast path")
    const etag = warm.headers.etag ?? ""
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/)
    // B's reader verified too, so that the fast path's cache of verified headers knows their header.
    await warmFast(server, "/b/x.ts", readerB)

    const answered = server.fast.answered
    const probes: ReadonlyArray<readonly [string, string, Record<string, string>]> = [
      ["GET", "plain", {}],
      ["HEAD", "plain", {}],
      ["GET", "If-None-Match (the ETag)", { "if-none-match": etag }],
      ["HEAD", "If-None-Match (the ETag)", { "if-none-match": etag }],
      ["GET", "If-None-Match *", { "if-none-match": "*" }]
    ]
    for (const [name, authorization] of bad) {
      for (const [method, probe, extra] of probes) {
        const response = await get(server, "/a/other.ts", authorization, extra, method)
        expectRefused(response, `${name}, ${method} ${probe}`, method)
      }
    }
    // Query strings (an immutable URL's version, anything else) and the realm's import map change nothing.
    for (const [name, authorization] of bad) {
      for (const rawPath of ["/a/other.ts?x=1", "/a/other.ts?_v=0123456789abcdef", "/_cache/importmap.json?realm=/a/"]) {
        expectRefused(await get(server, rawPath, authorization), `${name} ${rawPath}`)
      }
    }
    const importMap = await get(server, "/_cache/importmap.json?realm=/a/", readerA)
    expect(importMap.status, importMap.body).toBe(200)
    // B's reader, known to the fast path's cache, is refused A's module too.
    for (const [method, probe, extra] of probes) {
      expectRefused(await get(server, "/a/other.ts", readerB, extra, method), `B's reader, ${method} ${probe}`, method)
    }
    // None of them was answered by the fast path: each fell through to the router's 401.
    expect(server.fast.answered).toBe(answered)

    // The reader still gets it from the fast path, and its 304, with the private headers.
    const again = await get(server, "/a/other.ts", readerA)
    expect(again.status).toBe(200)
    expect(again.body).toBe(first.body)
    expectPrivate(again, "fast path again")
    const notModified = await get(server, "/a/other.ts", readerA, { "if-none-match": etag })
    expect(notModified.status).toBe(304)
    expect(notModified.body).toBe("")
    expectPrivate(notModified, "304")
    const head = await get(server, "/a/other.ts", readerA, {}, "HEAD")
    expect(head.status).toBe(200)
    expect(head.body).toBe("")
    expect(head.headers.etag).toBe(etag)
    expectPrivate(head, "HEAD")
    expect(server.fast.answered).toBe(answered + 3)
  })

  it("a token that expires while its reader is warm is refused from then on, by the fast path too", async () => {
    const shortLived = bearer(hs256({ alg: "HS256", typ: "JWT" }, { realms: ["/a/"], exp: nowSeconds() + 2 }))
    await warmFast(server, "/a/x.ts", shortLived)
    const expired = await eventually(async () => {
      const response = await get(server, "/a/x.ts", shortLived)
      if (response.status === 200) return undefined
      return response
    }, 10_000, "the token expired")
    expectRefused(expired, "expired while warm")
    const answered = server.fast.answered
    for (const method of ["GET", "HEAD"]) expectRefused(await get(server, "/a/x.ts", shortLived, {}, method), `expired ${method}`, method)
    expect(server.fast.answered).toBe(answered)
  })

  it("a private realm's compressed file varies by authorization and encoding, router and fast path alike; refused without a token", async () => {
    const readerA = bearer(await tokenFor(["/a/"]))
    const brHeaders = { "accept-encoding": "br" }
    const first = await get(server, "/a/big.json", readerA, brHeaders)
    const warm = await warmFast(server, "/a/big.json", readerA)
    for (const [what, response] of [["router", first], ["fast path", warm]] as const) {
      expect(response.status, what).toBe(200)
      expect(response.headers["cache-control"], what).toBe("private, no-cache")
      expect(response.headers.vary, what).toBe("authorization, accept-encoding")
    }
    expect(first.headers["content-encoding"]).toBe("br")
    const before = server.fast.answered
    const fastBr = await get(server, "/a/big.json", readerA, brHeaders)
    expect(server.fast.answered).toBe(before + 1)
    expect(fastBr.headers["content-encoding"]).toBe("br")
    expect(fastBr.bytes.equals(first.bytes)).toBe(true)
    for (const [name, authorization] of bad) {
      expectRefused(await get(server, "/a/big.json", authorization, brHeaders), `${name} br`)
    }
  })

  it("a token for one realm reads no other; one naming both reads both; the admin token reads every realm", async () => {
    const readerA = bearer(await tokenFor(["/a/"]))
    const readerB = bearer(await tokenFor(["/b/"]))
    const both = bearer(await tokenFor(["/a/", "/b/"]))
    // Each first through the router, then again once it may be a fast-path route.
    for (let round = 0; round < 3; round++) {
      expect((await get(server, "/a/x.ts", readerA)).body).toContain("alpha-private-module")
      expect((await get(server, "/b/x.ts", readerB)).body).toContain("bravo-private-module")
      expectRefused(await get(server, "/b/x.ts", readerA), `A's token on /b/, round ${round}`)
      expectRefused(await get(server, "/a/x.ts", readerB), `B's token on /a/, round ${round}`)
      expect((await get(server, "/a/x.ts", both)).status).toBe(200)
      expect((await get(server, "/b/x.ts", both)).status).toBe(200)
      for (const rawPath of ["/a/x.ts", "/b/x.ts", "/a/data.json"]) {
        const response = await get(server, rawPath, adminAuthorization)
        expect(response.status, rawPath).toBe(200)
        expectPrivate(response, `admin ${rawPath}`)
      }
    }
    // A public realm needs no token, ignores a bad one, and carries no private headers.
    for (const authorization of [undefined, readerA, "Bearer nonsense"]) {
      const response = await get(server, "/pub/x.ts", authorization)
      expect(response.status).toBe(200)
      expect(response.body).toContain("public-module")
      expect(response.headers["cache-control"]).toBe("no-cache")
      expect(response.headers.vary).toBeUndefined()
    }
  })

  it("raw files, pages and scoped CSS of a private realm are refused without a token, router and fast path alike", async () => {
    const readerA = bearer(await tokenFor(["/a/"]))
    const json = await warmFast(server, "/a/data.json", readerA)
    expect(json.body).toBe("{\"alpha\":\"alpha-private-json\"}\n")
    expect(json.headers["content-type"]).toBe("application/json; charset=utf-8")
    expectPrivate(json, "raw file")
    const page = await get(server, "/a/", readerA)
    expect(page.status).toBe(200)
    expect(page.body).toContain("alpha-private-page")
    expectPrivate(page, "index page")
    const css = `/a/card.gts.${encodeURIComponent(Buffer.from(".card { color: red; }").toString("base64"))}.glimmer-scoped.css`
    const scoped = await get(server, css, readerA)
    expect(scoped.status).toBe(200)
    expect(scoped.headers["content-type"]).toBe("text/css; charset=utf-8")
    expect(scoped.body).toBe(".card { color: red; }")
    expectPrivate(scoped, "scoped CSS")

    const answered = server.fast.answered
    for (const [name, authorization] of bad) {
      for (const rawPath of ["/a/data.json", "/a/", "/a/index.html", css]) {
        expectRefused(await get(server, rawPath, authorization), `${name} ${rawPath}`)
        expectRefused(await get(server, rawPath, authorization, { "if-none-match": json.headers.etag ?? "*" }), `${name} ${rawPath} 304 probe`)
        expectRefused(await get(server, rawPath, authorization, {}, "HEAD"), `${name} HEAD ${rawPath}`, "HEAD")
      }
    }
    expect(server.fast.answered).toBe(answered)
  })

  it("the preflight of a private realm allows authorization; a public realm's is unchanged; neither needs a token", async () => {
    const named = await request(server.url, "/a/x.ts", {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "GET", "access-control-request-headers": "authorization" }
    })
    expect(named.status).toBe(204)
    expect(named.headers["access-control-allow-headers"]?.split(",").map((name) => name.trim())).toContain("authorization")
    expect(named.headers["access-control-allow-origin"]).toBe("*")
    const unnamed = await request(server.url, "/a/missing.ts", {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "GET" }
    })
    expect(unnamed.status).toBe(204)
    expect(unnamed.headers["access-control-allow-headers"]).toBe("authorization, *")
    const other = await request(server.url, "/a/x.ts", {
      method: "OPTIONS",
      headers: { "access-control-request-method": "GET", "access-control-request-headers": "x-trace, if-none-match" }
    })
    expect(other.headers["access-control-allow-headers"]).toBe("authorization, x-trace, if-none-match")
    const open = await request(server.url, "/pub/x.ts", { method: "OPTIONS", headers: { "access-control-request-method": "GET" } })
    expect(open.status).toBe(204)
    expect(open.headers["access-control-allow-headers"]).toBe("*")
  })

  it("the stats name which realms are private", async () => {
    const stats = JSON.parse((await request(server.url, "/_cache/stats")).body) as RealmServer.StatsBody
    expect(stats.realms?.["/a/"]?.private).toBe(true)
    expect(stats.realms?.["/b/"]?.private).toBe(true)
    expect(stats.realms?.["/pub/"]?.private).toBe(false)
  })
})

describe("a private realm whose directory lies inside a public realm's", () => {
  it("is not read through another spelling of its mount (//m/, percent-encoding) by the public realm", async () => {
    const root = makeRealm({
      "x.ts": "export const open = 'public root'\n",
      "alice/x.ts": "export const alice = 'alice-private-nested'\n",
      "alice/data.json": "{\"alice\":\"alice-private-nested\"}\n"
    })
    const port = await freePort()
    const scope = Effect.runSync(Scope.make())
    scopes.push(scope)
    await Effect.runPromise(Layer.buildWithScope(
      RealmServer.layer({
        realmDir: root,
        realms: [{ mount: "/alice/", dir: `${root}/alice`, private: true }],
        store: { _tag: "memory" },
        port,
        adminToken: Redacted.make(testAdminToken),
        readSecret
      }).pipe(Layer.provide(TestTranspiler.layer(TestTranspiler.make()))),
      scope
    ))
    const url = `http://127.0.0.1:${port}`
    const reader = bearer(await tokenFor(["/alice/"]))
    const spellings = ["/alice/x.ts", "//alice/x.ts", "/%61lice/x.ts", "/%61%6c%69%63%65/x.ts", "///alice/x.ts", "/alice%2Fx.ts", "/%2Falice/x.ts", "/alice/data.json", "//alice/data.json", "/%61lice/data.json"]
    for (const rawPath of spellings) {
      expectRefused(await request(url, rawPath), `tokenless ${rawPath}`)
      const read = await request(url, rawPath, { headers: { authorization: reader } })
      expect(read.status, rawPath).toBe(200)
      expect(read.body, rawPath).toContain("alice-private-nested")
      expectPrivate(read, rawPath)
    }
    expect((await request(url, "//x.ts")).status).toBe(200)
    expect((await request(url, "/%78.ts")).body).toContain("public root")
  })
})

describe("private realms in a serve process (--private, MTC_READ_SECRET)", () => {
  it("refuses tokenless reads before and after a reader warmed the module, and lets readers and the admin in", async () => {
    const a = makeRealm({ "x.ts": "export const alpha: string = 'alpha-in-a-process'\n" })
    const pub = makeRealm({ "x.ts": "export const open: string = 'public-in-a-process'\n" })
    const server = await startServer({
      store: "memory",
      args: ["--realm", `/a/=${a}`, "--realm", `/pub/=${pub}`, "--private", "/a/", "--transpile-workers", "0"],
      env: { MTC_READ_SECRET: secret }
    })
    // The token as an operator mints it: `read-token` with the same secret.
    const minted = await runCli(["read-token", "--realm", "/a/", "--ttl", "10 minutes"], { env: { MTC_READ_SECRET: secret } })
    expect(minted.code, minted.stderr).toBe(0)
    const reader = bearer(minted.stdout.trim())
    expect((await request(server.url, "/pub/x.ts", { headers: { authorization: reader } })).status).toBe(200)
    const bad = await badAuthorizations()
    for (const [name, authorization] of bad) {
      expectRefused(await request(server.url, "/a/x.ts", { headers: authorization === undefined ? {} : { authorization } }), `cold, ${name}`)
    }
    const outcomes: Array<string | undefined> = []
    let etag = ""
    for (let i = 0; i < 5; i++) {
      const response = await request(server.url, "/a/x.ts", { headers: { authorization: reader } })
      expect(response.status).toBe(200)
      expect(response.body).toContain("alpha-in-a-process")
      expectPrivate(response, `reader ${i}`)
      outcomes.push(response.headers["x-module-cache"] as string | undefined)
      etag = response.headers.etag ?? ""
    }
    expect(outcomes[0]).toBe("transpiled")
    expect(outcomes.slice(1)).toEqual(["l1", "l1", "l1", "l1"])
    for (const [name, authorization] of bad) {
      const headers = authorization === undefined ? {} : { authorization }
      expectRefused(await request(server.url, "/a/x.ts", { headers }), `warm, ${name}`)
      expectRefused(await request(server.url, "/a/x.ts", { method: "HEAD", headers }), `warm HEAD, ${name}`, "HEAD")
      expectRefused(await request(server.url, "/a/x.ts", { headers: { ...headers, "if-none-match": etag } }), `warm 304 probe, ${name}`)
    }
    expect((await request(server.url, "/a/x.ts", { headers: { authorization: adminAuthorization } })).status).toBe(200)
    expect((await request(server.url, "/pub/x.ts")).status).toBe(200)
    expect(await server.stop()).toBe(0)
  }, 90_000)

  it("a read secret shorter than 32 bytes is a one-line error, exit 1", async () => {
    const a = makeRealm({ "x.ts": "export const a = 1\n" })
    const result = await runCli(["serve", "--realm", `/a/=${a}`, "--private", "/a/", "--store", "memory", "--port", "0"], {
      env: { MTC_READ_SECRET: "short", MTC_ADMIN_TOKEN: testAdminToken }
    })
    expect(result.code).toBe(1)
    const lines = result.stderr.split("\n").map((line) => line.trim()).filter((line) => line !== "" && line !== "ERROR")
    expect(lines, result.stderr).toHaveLength(1)
    expect(lines[0]).toContain("MTC_READ_SECRET must be at least 32 bytes")
    expect(result.stderr + result.stdout).not.toContain("short")
  }, 60_000)
})
