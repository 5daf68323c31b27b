/**
 * Read access to private realms: the admin token and HS256 read tokens are let in, every
 * other token (none, expired, another algorithm, forged, another realm's, malformed) is
 * refused with the one `401`; the synchronous cache of the fast path knows only verified
 * headers and drops them when they expire.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Redacted } from "effect"
import { TestClock } from "effect/testing"
import { generateKeyPair, SignJWT } from "jose"
import { createHmac } from "node:crypto"
import * as AdminToken from "../src/http/AdminToken.ts"
import * as ReadAccess from "../src/http/ReadAccess.ts"

const secret = Redacted.make("s".repeat(32))
const otherSecret = Redacted.make("o".repeat(32))
const admin = Redacted.make("admin-token-0123456789")
const key = (s: Redacted.Redacted<string>) => new TextEncoder().encode(Redacted.value(s))

const b64 = (value: string | Uint8Array): string => Buffer.from(value).toString("base64url")
const b64json = (value: unknown): string => b64(JSON.stringify(value))
const bearer = (token: string) => `Bearer ${token}`

/** A token signed HS256 with `secret` over exactly these header and claims (the clock starts at 0 under TestClock). */
const signedRaw = (header: unknown, claims: string, with_ = secret): string => {
  const input = `${b64json(header)}.${b64(claims)}`
  return `${input}.${createHmac("sha256", Redacted.value(with_)).update(input).digest("base64url")}`
}
const signed = (claims: unknown, with_ = secret): string => signedRaw({ alg: "HS256", typ: "JWT" }, JSON.stringify(claims), with_)

/** Signs `claims` with jose under another algorithm. */
const signWith = (alg: string, claims: Record<string, unknown>, signingKey: Parameters<SignJWT["sign"]>[0]) =>
  Effect.promise(() => new SignJWT(claims).setProtectedHeader({ alg }).sign(signingKey))

const makeAccess = (options: ReadAccess.ReadAccessOptions = { readSecret: secret, adminToken: admin }) =>
  Effect.orDie(ReadAccess.make(options))

const service = Effect.gen(function*() {
  return yield* ReadAccess.ReadAccessService
})

const goodFor = (realms: ReadonlyArray<string>) => Effect.orDie(ReadAccess.issueReadToken(secret, realms, "1 hour"))

describe("ReadAccess", () => {
  it.effect("a read token for /a/ reads /a/ and nothing else (mounts match exactly)", () =>
    Effect.gen(function*() {
      const access = yield* makeAccess()
      const token = yield* goodFor(["/a/"])
      expect(yield* access.allows(bearer(token), "/a/")).toBe(true)
      expect(yield* access.allows(`bearer   ${token}  `, "/a/")).toBe(true)
      // Only the canonical spelling is remembered for the fast path.
      expect(access.allowsCached(`bearer   ${token}  `, "/a/")).toBe(false)
      expect(access.allowsCached(bearer(token), "/a/")).toBe(true)
      expect(yield* access.allows(bearer(token), "/b/")).toBe(false)
      expect(yield* access.allows(bearer(token), "/a")).toBe(false)
      expect(yield* access.allows(bearer(token), "/a/b/")).toBe(false)
      expect(yield* access.allows(bearer(token), "/")).toBe(false)
      const two = yield* goodFor(["/a/", "/alice/notes/"])
      expect(yield* access.allows(bearer(two), "/alice/notes/")).toBe(true)
      expect(yield* access.allows(bearer(two), "/b/")).toBe(false)
    }))

  it.effect("the admin token reads every realm, with or without a read secret", () =>
    Effect.gen(function*() {
      for (const options of [{ readSecret: secret, adminToken: admin }, { adminToken: admin }]) {
        const access = yield* makeAccess(options)
        expect(yield* access.allows(bearer(Redacted.value(admin)), "/a/")).toBe(true)
        expect(yield* access.allows(bearer(Redacted.value(admin)), "/alice/notes/")).toBe(true)
        expect(yield* access.allows(bearer(`${Redacted.value(admin)}x`), "/a/")).toBe(false)
        expect(yield* access.allows(bearer(Redacted.value(admin).slice(1)), "/a/")).toBe(false)
      }
    }))

  it.effect("without a read secret, read tokens are refused; with no admin token either, everything is", () =>
    Effect.gen(function*() {
      const token = yield* goodFor(["/a/"])
      const adminOnly = yield* makeAccess({ adminToken: admin })
      expect(yield* adminOnly.allows(bearer(token), "/a/")).toBe(false)
      const nobody = yield* makeAccess({})
      expect(yield* nobody.allows(bearer(token), "/a/")).toBe(false)
      expect(yield* nobody.allows(bearer(Redacted.value(admin)), "/a/")).toBe(false)
      expect(nobody.allowsCached(bearer(token), "/a/")).toBe(false)
    }))

  it.effect("refuses every bad token, and never remembers one", () =>
    Effect.gen(function*() {
      const access = yield* makeAccess()
      const good = yield* goodFor(["/a/"])
      const [header, payload] = good.split(".")
      const exp = 3600
      const { privateKey } = yield* Effect.promise(() => generateKeyPair("RS256"))
      const bad: ReadonlyArray<readonly [string, string | undefined]> = [
        ["no header", undefined],
        ["empty header", ""],
        ["Bearer without a token", "Bearer"],
        ["Bearer and spaces", "Bearer   "],
        ["Basic scheme", `Basic ${good}`],
        ["Token scheme", `Token ${good}`],
        ["the bare token, no scheme", good],
        ["two tokens", `Bearer ${good} ${good}`],
        ["alg none, no signature", bearer(`${b64json({ alg: "none", typ: "JWT" })}.${payload}.`)],
        ["alg none, the HS256 signature kept", bearer(`${b64json({ alg: "none" })}.${payload}.${good.split(".")[2]}`)],
        ["HS384 with the same secret", bearer(yield* signWith("HS384", { realms: ["/a/"], exp }, key(secret)))],
        ["HS512 with the same secret", bearer(yield* signWith("HS512", { realms: ["/a/"], exp }, key(secret)))],
        ["RS256", bearer(yield* signWith("RS256", { realms: ["/a/"], exp }, privateKey))],
        ["RS256 header over an HMAC of the secret", bearer(signedRaw({ alg: "RS256" }, JSON.stringify({ realms: ["/a/"], exp })))],
        ["another secret", bearer(signed({ realms: ["/a/"], exp }, otherSecret))],
        ["claims changed under the signature", bearer(`${header}.${b64json({ realms: ["/a/", "/b/"], exp })}.${good.split(".")[2]}`)],
        ["signature cut short", bearer(good.slice(0, -2))],
        ["signature of another token", bearer(`${header}.${payload}.${signed({ realms: ["/a/"], exp: 1 }).split(".")[2]}`)],
        ["two parts", bearer(`${header}.${payload}`)],
        ["four parts", bearer(`${good}.x`)],
        ["one part", bearer("abc")],
        ["bad base64", bearer(`${header}.${payload}!.${good.split(".")[2]}`)],
        ["bad JSON claims", bearer(signedRaw({ alg: "HS256" }, "{\"realms\": [\"/a/\"], exp: 3600"))],
        ["bad JSON header", bearer(`${b64("{alg")}.${payload}.${good.split(".")[2]}`)],
        ["claims not an object", bearer(signedRaw({ alg: "HS256" }, JSON.stringify(["/a/"])))],
        ["realms a string", bearer(signed({ realms: "/a/", exp }))],
        ["realms with a number", bearer(signed({ realms: ["/a/", 1], exp }))],
        ["realms missing", bearer(signed({ exp }))],
        ["realms null", bearer(signed({ realms: null, exp }))],
        ["exp missing", bearer(signed({ realms: ["/a/"] }))],
        ["exp a string", bearer(signed({ realms: ["/a/"], exp: "3600" }))],
        ["expired", bearer(signed({ realms: ["/a/"], exp: 0 }))],
        ["not valid yet (nbf)", bearer(signed({ realms: ["/a/"], exp, nbf: 60 }))],
        ["for another realm", bearer(signed({ realms: ["/b/"], exp }))],
        ["for no realm", bearer(signed({ realms: [], exp }))],
        ["far too long", bearer(signed({ realms: ["/a/"], exp, pad: "x".repeat(ReadAccess.maxTokenLength) }))]
      ]
      for (const [name, authorization] of bad) {
        expect(yield* access.allows(authorization, "/a/"), name).toBe(false)
        expect(access.allowsCached(authorization, "/a/"), name).toBe(false)
        // Refused twice: nothing of the first refusal was remembered as allowed.
        expect(yield* access.allows(authorization, "/a/"), name).toBe(false)
      }
      // The control: the same secret and claims, signed HS256, is let in.
      expect(yield* access.allows(bearer(signed({ realms: ["/a/"], exp })), "/a/")).toBe(true)
    }))

  it.effect("expiry: valid until the second of exp, with no tolerance", () =>
    Effect.gen(function*() {
      const access = yield* makeAccess()
      const token = bearer(yield* goodFor(["/a/"]))
      yield* TestClock.adjust("3599999 millis")
      expect(yield* access.allows(token, "/a/")).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(access.allowsCached(token, "/a/")).toBe(false)
      expect(yield* access.allows(token, "/a/")).toBe(false)
    }))

  it.effect("allowsCached: unknown before allows, true after a good verify, false for other realms and after expiry", () =>
    Effect.gen(function*() {
      const access = yield* makeAccess()
      const token = bearer(yield* goodFor(["/a/"]))
      expect(access.allowsCached(token, "/a/")).toBe(false)
      expect(access.allowsCached(undefined, "/a/")).toBe(false)
      expect(yield* access.allows(token, "/a/")).toBe(true)
      expect(access.allowsCached(token, "/a/")).toBe(true)
      expect(access.allowsCached(token, "/b/")).toBe(false)
      // The exact header only: another spelling of it has not been verified.
      expect(access.allowsCached(token.replace("Bearer", "bearer"), "/a/")).toBe(false)
      // Verified for /a/ and asked for /b/: refused, and still not allowed for /b/ from the cache.
      expect(yield* access.allows(token, "/b/")).toBe(false)
      expect(access.allowsCached(token, "/b/")).toBe(false)
      yield* TestClock.adjust("59 minutes")
      expect(access.allowsCached(token, "/a/")).toBe(true)
      yield* TestClock.adjust("1 minute")
      expect(access.allowsCached(token, "/a/")).toBe(false)
      expect(yield* access.allows(token, "/a/")).toBe(false)
      expect(access.allowsCached(token, "/a/")).toBe(false)
    }))

  it.effect("allowsCached knows the admin token once allows verified it, for every realm, and never expires it", () =>
    Effect.gen(function*() {
      const access = yield* makeAccess()
      const header = bearer(Redacted.value(admin))
      expect(access.allowsCached(header, "/a/")).toBe(false)
      expect(yield* access.allows(header, "/a/")).toBe(true)
      yield* TestClock.adjust("3650 days")
      expect(access.allowsCached(header, "/b/")).toBe(true)
    }))

  it.effect("a secret rotated away: tokens of the old secret are refused by a server with the new one", () =>
    Effect.gen(function*() {
      const old = yield* makeAccess()
      const token = bearer(yield* goodFor(["/a/"]))
      expect(yield* old.allows(token, "/a/")).toBe(true)
      const rotated = yield* makeAccess({ readSecret: otherSecret })
      expect(rotated.allowsCached(token, "/a/")).toBe(false)
      expect(yield* rotated.allows(token, "/a/")).toBe(false)
    }))

  it.effect("the cache is bounded: the oldest verified header goes first, and is verified again by allows", () =>
    Effect.gen(function*() {
      const access = yield* makeAccess({ readSecret: secret, cacheCapacity: 2 })
      const tokens = [
        bearer(yield* goodFor(["/a/"])),
        bearer(yield* goodFor(["/b/"])),
        bearer(yield* goodFor(["/c/"]))
      ] as const
      const mounts = ["/a/", "/b/", "/c/"] as const
      for (const [i, token] of tokens.entries()) expect(yield* access.allows(token, mounts[i]!)).toBe(true)
      expect(access.allowsCached(tokens[0], "/a/")).toBe(false)
      expect(access.allowsCached(tokens[1], "/b/")).toBe(true)
      expect(access.allowsCached(tokens[2], "/c/")).toBe(true)
      expect(yield* access.allows(tokens[0], "/a/")).toBe(true)
      expect(access.allowsCached(tokens[0], "/a/")).toBe(true)
      expect(access.allowsCached(tokens[1], "/b/")).toBe(false)
    }))

  it.effect("a secret under 32 bytes fails make, layerConfig and issueReadToken with ReadSecretError", () =>
    Effect.gen(function*() {
      const short = Redacted.make("s".repeat(31))
      const fromMake = yield* Effect.flip(ReadAccess.make({ readSecret: short }))
      expect(fromMake._tag).toBe("ReadSecretError")
      expect(fromMake.message).toContain("MTC_READ_SECRET")
      expect(fromMake.message).not.toContain(Redacted.value(short))
      const fromIssue = yield* Effect.flip(ReadAccess.issueReadToken(short, ["/a/"], "1 hour"))
      expect(fromIssue._tag).toBe("ReadSecretError")
      const fromLayer = yield* Effect.flip(
        Layer.build(
          ReadAccess.layerConfig.pipe(
            Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { MTC_READ_SECRET: Redacted.value(short) } })))
          )
        )
      )
      expect(fromLayer._tag).toBe("ReadSecretError")
      // 32 bytes of UTF-8 in 16 characters is long enough.
      yield* ReadAccess.make({ readSecret: Redacted.make("é".repeat(16)) })
    }))

  it.effect("layerConfig: the secret from MTC_READ_SECRET, the admin token from the AdminToken service", () =>
    Effect.gen(function*() {
      const token = bearer(yield* goodFor(["/a/"]))
      const withBoth = ReadAccess.layerConfig.pipe(
        Layer.provide(AdminToken.layer(admin)),
        Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { MTC_READ_SECRET: Redacted.value(secret) } })))
      )
      const both = yield* Effect.provide(service, withBoth)
      expect(yield* both.allows(token, "/a/")).toBe(true)
      expect(yield* both.allows(bearer(Redacted.value(admin)), "/z/")).toBe(true)
      for (const env of [{}, { MTC_READ_SECRET: "" }]) {
        const none = yield* Effect.provide(
          service,
          ReadAccess.layerConfig.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))
        )
        expect(yield* none.allows(token, "/a/")).toBe(false)
        expect(yield* none.allows(bearer(Redacted.value(admin)), "/a/")).toBe(false)
      }
    }))

  it.effect("issueReadToken mints an HS256 JWT with realms, iat and exp", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust("1000 seconds")
      const token = yield* ReadAccess.issueReadToken(secret, ["/a/", "/b/"], "30 minutes")
      const [header, claims] = token.split(".").slice(0, 2).map((part) => JSON.parse(Buffer.from(part!, "base64url").toString("utf8")))
      expect(header).toEqual({ alg: "HS256", typ: "JWT" })
      expect(claims).toEqual({ realms: ["/a/", "/b/"], iat: 1000, exp: 2800 })
    }))

  it("the 401 of a refused read: one body for every cause, Bearer challenge, private and varying by authorization", () => {
    const first = ReadAccess.unauthorized()
    const second = ReadAccess.unauthorized()
    expect(first.status).toBe(401)
    expect(first.headers["www-authenticate"]).toBe(`Bearer realm="module-transpile-cache"`)
    expect(first.headers["access-control-allow-origin"]).toBe("*")
    expect(first.headers["cache-control"]).toBe("private, no-cache")
    expect(first.headers["vary"]).toBe("authorization")
    expect(first.body._tag === "Uint8Array" && first.body.contentType).toBe("application/json")
    const text = (response: typeof first) =>
      response.body._tag === "Uint8Array" ? new TextDecoder().decode(response.body.body) : ""
    expect(JSON.parse(text(first))).toEqual({ error: "Unauthorized", message: expect.any(String) })
    expect(text(second)).toBe(text(first))
    expect(text(first)).toBe(ReadAccess.unauthorizedBody)
    expect(ReadAccess.unauthorizedHeaders["content-type"]).toBe("application/json")
  })

  it("private answers and preflights", () => {
    expect(ReadAccess.privateHeaders).toEqual({ "cache-control": "private, no-cache", "vary": "authorization" })
    expect(ReadAccess.privatePreflightHeaders(undefined)["access-control-allow-headers"]).toBe("authorization, *")
    expect(ReadAccess.privatePreflightHeaders("X-Foo")["access-control-allow-headers"]).toBe("authorization, x-foo")
    expect(ReadAccess.privatePreflightHeaders("x-foo, Authorization")["access-control-allow-headers"])
      .toBe("x-foo, authorization")
    expect(ReadAccess.privatePreflightHeaders(undefined)["access-control-allow-origin"]).toBe("*")
  })
})
