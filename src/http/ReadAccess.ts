/**
 * Read access to private realms: who may read the modules, raw files, scoped CSS, HEADs
 * and 304s of a realm that is not public.
 *
 * A private realm answers only to `Authorization: Bearer <token>`, where the token is
 *
 * - the admin token (see {@link AdminToken}), compared in constant time; or
 * - a read token: a JWT signed HS256 with `MTC_READ_SECRET` (at least 32 bytes), whose
 *   claims hold `realms`, the mounts it may read (e.g. `["/alice/notes/"]`, matched exactly),
 *   and `exp`, which is required. Any other algorithm (`none`, HS384, HS512, RS256, ...) is
 *   refused; there is no clock tolerance.
 *
 * Without a read secret, only the admin token reads private realms. Every refusal gets the
 * same {@link unauthorized} answer, whatever the cause and whether the path exists or not.
 * Tokens are never logged.
 *
 * The HTTP fast path runs inside Node's request event and cannot wait for a verification,
 * so {@link ReadAccess.allowsCached} answers synchronously from a bounded map of the headers
 * that {@link ReadAccess.allows} verified, re-checking their expiry on every call.
 *
 * @since 0.4.0
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import { lazyRequire } from "../internal/lazyRequire.ts"
import * as AdminToken from "./AdminToken.ts"

/** `MTC_READ_SECRET` is unusable: too short, or unreadable from the configuration. */
export class ReadSecretError extends Schema.TaggedError<ReadSecretError>()("ReadSecretError", {
  message: Schema.String
}) {}

/** jose, loaded by the first token verified or signed: a server of public realms never loads it. */
const jose = lazyRequire<typeof import("jose")>(import.meta.url, "jose")

/** The environment variable holding the secret that read tokens are signed with. */
export const envVar = "MTC_READ_SECRET"

/** The shortest read secret accepted, in UTF-8 bytes (the size of an HS256 key). */
export const minSecretBytes = 32

/** The only signing algorithm of read tokens. */
export const algorithm = "HS256"

/** How many verified `Authorization` headers {@link ReadAccess.allowsCached} remembers by default. */
export const defaultCacheCapacity = 10_000

/** The longest token that is verified at all; anything longer is refused unread. */
export const maxTokenLength = 8192

/** What {@link make} needs. */
export interface ReadAccessOptions {
  /** The secret read tokens are signed with. Without it, only the admin token reads private realms. */
  readonly readSecret?: Redacted.Redacted<string> | undefined
  /** The admin token, which reads every realm. */
  readonly adminToken?: Redacted.Redacted<string> | undefined
  /** How many verified headers to remember for {@link ReadAccess.allowsCached} (default {@link defaultCacheCapacity}). */
  readonly cacheCapacity?: number | undefined
}

/** Decides whether a request may read a private realm. */
export interface ReadAccess {
  /**
   * Whether this `Authorization` header lets its bearer read the realm mounted at `mount`.
   * Never fails: a missing, malformed, expired, foreign or forged token is `false`.
   */
  readonly allows: (authorization: string | undefined, mount: string) => Effect.Effect<boolean>
  /**
   * Synchronous, for the HTTP fast path: `true` only when this exact header was verified by
   * {@link ReadAccess.allows} before, grants `mount`, and has not expired since (checked
   * against the clock on every call). `false` means "not known here": hand the request to
   * the router, which calls `allows`. A refused token is never remembered, and only the
   * canonical spelling `Bearer <token>` is.
   */
  readonly allowsCached: (authorization: string | undefined, mount: string) => boolean
}

/** The read access of a server. */
export class ReadAccessService extends Context.Service<ReadAccessService, ReadAccess>()(
  "module-transpile-cache/ReadAccess"
) {}

/** The `realms` claim of a read token. */
const Realms = Schema.Array(Schema.String)
const decodeRealms = Schema.decodeUnknownOption(Realms)

/** What the cache holds of a verified header: until when (JWT seconds), and which mounts. */
interface Grant {
  /** The `exp` claim (seconds since the epoch); `Infinity` for the admin token. */
  readonly exp: number
  /** The mounts granted; `undefined` for every mount (the admin token). */
  readonly realms: ReadonlySet<string> | undefined
}

const bytesOf = (secret: Redacted.Redacted<string>): Uint8Array => new TextEncoder().encode(Redacted.value(secret))

const checkSecret = (secret: Redacted.Redacted<string>): Effect.Effect<Uint8Array, ReadSecretError> => {
  const key = bytesOf(secret)
  return key.byteLength >= minSecretBytes
    ? Effect.succeed(key)
    : Effect.fail(new ReadSecretError({ message: `${envVar} must be at least ${minSecretBytes} bytes` }))
}

/** Whether a grant is still valid at `nowMillis`, with the same rule as jose's `exp` check (no tolerance). */
const live = (grant: Grant, nowMillis: number): boolean => Math.floor(nowMillis / 1000) < grant.exp

const grants = (grant: Grant, mount: string): boolean => grant.realms === undefined || grant.realms.has(mount)

/**
 * A {@link ReadAccess}. Fails with {@link ReadSecretError} when the read secret is shorter
 * than {@link minSecretBytes}. Time is the `Clock` of the context it runs in.
 */
export const make = (options: ReadAccessOptions): Effect.Effect<ReadAccess, ReadSecretError> =>
  Effect.gen(function*() {
    const secret = options.readSecret === undefined ? undefined : yield* checkSecret(options.readSecret)
    // Imported once (WebCrypto, non-extractable, verify only) instead of on every verification.
    const key = secret === undefined ? undefined : yield* Effect.promise(() =>
      crypto.subtle.importKey("raw", new Uint8Array(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"])
    )
    const adminToken = options.adminToken
    const capacity = Math.max(1, options.cacheCapacity ?? defaultCacheCapacity)
    const clock = yield* Clock.Clock
    const verified = new Map<string, Grant>()

    /**
     * Remembers a verified header, only in its canonical form `Bearer <token>`: other
     * spellings (case, extra spaces) are verified each time, so that one token cannot fill
     * the map with padded copies of itself.
     */
    const remember = (authorization: string, token: string, grant: Grant): void => {
      if (authorization.length !== token.length + 7 || !authorization.startsWith("Bearer ")) return
      verified.delete(authorization)
      if (verified.size >= capacity) {
        // Oldest first (insertion order).
        const oldest = verified.keys().next()
        if (oldest.done !== true) verified.delete(oldest.value)
      }
      verified.set(authorization, grant)
    }

    /** Verifies a JWT: its grant, or `undefined` for any refusal (the promise never rejects). */
    const verify = (token: string, secret: CryptoKey): Promise<Grant | undefined> =>
      jose().jwtVerify(token, secret, {
        algorithms: [algorithm],
        requiredClaims: ["exp"],
        clockTolerance: 0,
        currentDate: new Date(clock.currentTimeMillisUnsafe())
      }).then(
        ({ payload }) => {
          const realms = decodeRealms(payload["realms"])
          if (Option.isNone(realms) || typeof payload.exp !== "number") return undefined
          return { exp: payload.exp, realms: new Set(realms.value) }
        }
      ).catch(() => undefined)

    const allowsCached = (authorization: string | undefined, mount: string): boolean => {
      if (authorization === undefined) return false
      const grant = verified.get(authorization)
      if (grant === undefined) return false
      if (!live(grant, clock.currentTimeMillisUnsafe())) {
        verified.delete(authorization)
        return false
      }
      return grants(grant, mount)
    }

    const allows = Effect.fn("ReadAccess.allows")(function*(authorization: string | undefined, mount: string) {
      if (allowsCached(authorization, mount)) {
        yield* Effect.annotateCurrentSpan("readAccess.outcome", "cached")
        return true
      }
      const token = AdminToken.bearerOf(authorization)
      if (authorization === undefined || token === undefined) {
        yield* Effect.annotateCurrentSpan("readAccess.outcome", "no-bearer")
        return false
      }
      if (adminToken !== undefined && AdminToken.matches(adminToken, token)) {
        remember(authorization, token, { exp: Infinity, realms: undefined })
        yield* Effect.annotateCurrentSpan("readAccess.outcome", "admin")
        return true
      }
      if (key === undefined || token.length > maxTokenLength) {
        yield* Effect.annotateCurrentSpan("readAccess.outcome", "refused")
        return false
      }
      const grant = yield* Effect.promise(() => verify(token, key))
      if (grant === undefined) {
        yield* Effect.annotateCurrentSpan("readAccess.outcome", "refused")
        return false
      }
      remember(authorization, token, grant)
      const allowed = grants(grant, mount)
      yield* Effect.annotateCurrentSpan("readAccess.outcome", allowed ? "read-token" : "other-realm")
      return allowed
    })

    return { allows, allowsCached }
  })

/** `MTC_READ_SECRET`, if set. */
export const readSecretConfig: Config.Config<Option.Option<Redacted.Redacted<string>>> = Config.Redacted(envVar).pipe(
  Config.option
)

/** A layer with the given secret and admin token. */
export const layer = (options: ReadAccessOptions): Layer.Layer<ReadAccessService, ReadSecretError> =>
  Layer.effect(
    ReadAccessService,
    Effect.gen(function*() {
      // Without an admin token in the options, the one of the context's AdminToken service.
      const admin = options.adminToken ?? Option.getOrUndefined(yield* Effect.serviceOption(AdminToken.AdminToken))?.token
      return ReadAccessService.of(yield* make({ ...options, adminToken: admin }))
    })
  )

/**
 * A layer reading the secret from `MTC_READ_SECRET` (unset or empty: no read tokens) and the
 * admin token from the {@link AdminToken.AdminToken} service, when there is one.
 */
export const layerConfig: Layer.Layer<ReadAccessService, ReadSecretError> = Layer.effect(
  ReadAccessService,
  Effect.gen(function*() {
    const configured = yield* Effect.mapError(
      Effect.gen(function*() {
        return yield* readSecretConfig
      }),
      (error) => new ReadSecretError({ message: `${envVar}: ${error.message}` })
    )
    const readSecret = Option.isSome(configured) && Redacted.value(configured.value) !== ""
      ? configured.value
      : undefined
    const admin = yield* Effect.serviceOption(AdminToken.AdminToken)
    const adminToken = Option.isSome(admin) ? admin.value.token : undefined
    return ReadAccessService.of(yield* make({ readSecret, adminToken }))
  })
)

/**
 * Mints a read token for `realms` (mounts, e.g. `"/alice/notes/"`), valid for `expiresIn`
 * from now (the `Clock`'s now), for the CLI, operators and tests. Fails with
 * {@link ReadSecretError} when the secret is too short for a server to accept.
 */
export const issueReadToken = (
  secret: Redacted.Redacted<string>,
  realms: ReadonlyArray<string>,
  expiresIn: Duration.Input
): Effect.Effect<string, ReadSecretError> =>
  Effect.gen(function*() {
    const key = yield* checkSecret(secret)
    const now = yield* Clock.currentTimeMillis
    const exp = Math.floor((now + Duration.toMillis(expiresIn)) / 1000)
    return yield* Effect.promise(() =>
      new (jose().SignJWT)({ realms: [...realms] })
        .setProtectedHeader({ alg: algorithm, typ: "JWT" })
        .setIssuedAt(Math.floor(now / 1000))
        .setExpirationTime(exp)
        .sign(key)
    )
  })

/** The headers of every answer of a private realm: not for shared caches, and varying by credentials. */
export const privateHeaders: Readonly<Record<string, string>> = {
  "cache-control": "private, no-cache",
  "vary": "authorization"
}

/** The body of every refused read: the same for every cause. */
export const unauthorizedBody = JSON.stringify({
  error: "Unauthorized",
  message: "This realm is private: send Authorization: Bearer <token> with a read token for it or the admin token."
})

const unauthorizedBaseHeaders: Readonly<Record<string, string>> = {
  "access-control-allow-origin": "*",
  "access-control-expose-headers": "www-authenticate",
  "x-content-type-options": "nosniff",
  ...privateHeaders,
  "www-authenticate": `Bearer realm="module-transpile-cache"`
}

/** The headers of every refused read, content type included (for a fast path writing them itself). */
export const unauthorizedHeaders: Readonly<Record<string, string>> = {
  ...unauthorizedBaseHeaders,
  "content-type": "application/json"
}

/** The `401` every refused read gets, whatever the cause and whether the path exists. */
export const unauthorized = (): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.text(unauthorizedBody, {
    status: 401,
    headers: unauthorizedBaseHeaders,
    contentType: "application/json"
  })

/**
 * The headers of the answer to a CORS preflight of a private realm's module or file: those of
 * a public one, with `authorization` always among the allowed headers (a `*` never covers it).
 * `requested` is the preflight's `Access-Control-Request-Headers`.
 */
export const privatePreflightHeaders = (requested: string | undefined): Readonly<Record<string, string>> => {
  const names = (requested ?? "").split(",").map((name) => name.trim().toLowerCase()).filter((name) => name !== "")
  const allowed = names.includes("authorization") ? names : ["authorization", ...names]
  return {
    "access-control-allow-origin": "*",
    "access-control-expose-headers": "etag, x-module-cache",
    "x-content-type-options": "nosniff",
    "access-control-allow-methods": "GET, HEAD, POST, OPTIONS",
    "access-control-allow-headers": names.length === 0 ? "authorization, *" : allowed.join(", "),
    "access-control-max-age": "86400",
    "vary": "access-control-request-headers"
  }
}
