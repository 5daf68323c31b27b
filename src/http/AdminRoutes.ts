/**
 * The realm server's admin routes (`/_cache/*`): no CORS headers, and their preflights are
 * refused (403).
 *
 * - `GET /_cache/health`: 200 when every realm directory is readable, else 503; no credential.
 * - `GET /_cache/stats`: the cache's counters in total, and each realm's by mount, with the
 *   versions in L2 ({@link StatsBody}).
 * - `GET /_cache/metrics` and the live page `GET /_cache/`: see {@link MetricsRoutes}.
 * - `POST /_cache/invalidate?realm=MOUNT&path=P`: one module by its request path in the realm,
 *   canonicalised (a path that names no module of the realm writes nothing), or without `path`
 *   the whole realm ({@link InvalidateBody}). `realm` may be left out when one realm is mounted.
 * - `GET /_cache/realms`: the mounted realms with their figures. `POST /_cache/realms` mounts
 *   one ({@link MountRequestBody}: 201, 409 when the mount or the realm is taken, 400 for a bad
 *   mount or a directory that cannot be read); `DELETE /_cache/realms?mount=M` unmounts it
 *   (204, 404 when nothing is mounted there).
 *
 * All but health need `Authorization: Bearer <token>` of the {@link AdminToken}
 * service: 401 without it or with another token, 403 for a browser request carrying
 * `Origin`, and every call refused when the service is absent.
 *
 * @since 0.3.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as path from "node:path"
import { moduleKey } from "../domain/Domain.ts"
import type { ModuleCache } from "../cache/ModuleCache.ts"
import * as AdminToken from "./AdminToken.ts"
import { errorBodyOf, scrubPaths, statusOf } from "./ErrorMapping.ts"
import { FastPath } from "./FastPath.ts"
import * as MetricsRoutes from "./MetricsRoutes.ts"
import { fileSystem } from "../realm/FileSystemSources.ts"
import {
  type ErrorBody,
  type HealthBody,
  type InvalidateBody,
  InvalidateQuery,
  MountRequestBody,
  type RealmsBody,
  type RealmStatsBody,
  type StatsBody
} from "./HttpBodies.ts"
import { candidatesOf, encodePath, keysCovering, pathOf, validatePath } from "../realm/PathRules.ts"
import type { MountedRealm, Realms } from "../realm/Realms.ts"
import { adminJson } from "./Responses.ts"
import { routePreloaded } from "./Preloader.ts"

/** What the admin routes act on. */
interface AdminContext {
  readonly cache: ModuleCache["Service"]
  readonly realms: Realms["Service"]
}

/** The figures of a realm, without its L2 usage. */
export const figuresOf = (cache: ModuleCache["Service"], realm: MountedRealm): RealmStatsBody => {
  const counts = cache.countsOf(realm.realmUrl)
  return {
    mount: realm.mount,
    realmUrl: realm.realmUrl,
    private: realm.isPrivate,
    modules: counts.l1Entries,
    errors: counts.errors,
    transpiles: counts.transpiles,
    compressions: counts.compressions,
    unmapped: counts.unmapped,
    l1Hits: counts.l1Hits,
    l2Hits: counts.l2Hits,
    coalesced: counts.coalesced,
    fallbacks: counts.fallbacks,
    rawFileBytes: realm.raw.bytes
  }
}

/** A 400 of an admin route. */
const badRequest = (message: string, urlPath: string) =>
  adminJson(400, { error: "BadRequest", message, path: urlPath } satisfies ErrorBody)

/** Adds the admin routes to a router. */
export const add = Effect.fnUntraced(function*(router: HttpRouter.HttpRouter, context: AdminContext) {
  const { cache, realms } = context
  const adminToken = yield* Effect.serviceOption(AdminToken.AdminToken)
  const fast = yield* Effect.serviceOption(FastPath)
  const fsys = yield* fileSystem

  const health = Effect.gen(function*() {
    const mounted = realms.list()
    const down = yield* Effect.filter(mounted, (realm) =>
      Effect.map(Effect.exit(fsys.stat(realm.files.realmDir)), (info) =>
        !(info._tag === "Success" && info.value.type === "Directory")), { concurrency: 8 })
    const only = mounted.length === 1 ? mounted[0] : undefined
    const shown = only === undefined || only.realmUrl.startsWith("file:") ? {} : { realmUrl: only.realmUrl }
    const counted = only === undefined ? { realms: mounted.length } : {}
    if (down.length === 0) return adminJson(200, { status: "ok", ...shown, ...counted } satisfies HealthBody)
    return adminJson(503, {
      status: "unavailable",
      ...shown,
      ...counted,
      message: only !== undefined
        ? "the realm directory is not available"
        : `realm directories not available: ${down.map((realm) => realm.mount).join(" ")}`
    } satisfies HealthBody)
  })

  /** Runs an admin route only for a caller that presents the admin token (and is no browser page). */
  const guarded = <E, R>(
    handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
  ): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest> =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const refuse = (status: number, error: string, message: string) =>
        adminJson(status, { error, message, path: pathOf(request.url) } satisfies ErrorBody, status === 401
          ? { "www-authenticate": "Bearer" }
          : {})
      if (request.headers["origin"] !== undefined) {
        return refuse(403, "Forbidden", "admin routes do not answer browser requests from other origins")
      }
      if (adminToken._tag === "None") return refuse(403, "Forbidden", "no admin token is configured")
      const presented = AdminToken.bearerOf(request.headers["authorization"])
      if (presented === undefined || !AdminToken.matches(adminToken.value.token, presented)) {
        return refuse(401, "Unauthorized", "this route needs Authorization: Bearer <admin token>")
      }
      return yield* handler
    })

  /** A realm's figures with its L2 rows and bytes (left out when L2 cannot be read now). */
  const figuresWithL2 = (realm: MountedRealm) =>
    Effect.map(cache.realmUsage(realm.realmUrl), (usage) => ({
      figures: {
        ...figuresOf(cache, realm),
        ...(usage === undefined ? {} : { l2Rows: usage.rows, l2Bytes: usage.bytes })
      },
      usage
    }))

  const stats = Effect.gen(function*() {
    const counters = yield* cache.stats
    const mounted = realms.list()
    const perRealm = yield* Effect.forEach(mounted, figuresWithL2, { concurrency: 8 })
    const only = mounted.length === 1 ? perRealm[0] : undefined
    const warmup = Option.match(fast, {
      onNone: () => ({}),
      onSome: (handler) => ({ warmupRequests: handler.warmupAnswered, warmupMillis: handler.warmupMillis })
    })
    const hidden = mounted.flatMap((realm) => realm.hidden)
    const body: StatsBody = {
      ...(only === undefined ? {} : { realmUrl: only.figures.realmUrl }),
      ...counters,
      ...warmup,
      // As in error bodies: no file-system path of a realm in a message.
      recentErrors: counters.recentErrors.map((error) => ({ ...error, message: scrubPaths(error.message, hidden) })),
      rawFileBytes: realms.raw.bytes,
      realms: Object.fromEntries(perRealm.map(({ figures }) => [figures.mount, figures])),
      // The versions in L2 of the one realm, ours marked (left out when L2 cannot be read now: the counters still answer).
      ...(only?.usage === undefined ? {} : {
        versions: only.usage.versions.map((version) => ({ ...version, current: version.fingerprint === counters.fingerprint }))
      })
    }
    return adminJson(200, body)
  })

  /**
   * The keys a request path of a realm names: its canonical path, or (when it names no file
   * now) those of its candidates this process has read, plus the cached keys below it.
   */
  const keysOf = (realm: MountedRealm, encoded: string, lexical: string, directory: string) =>
    Effect.gen(function*() {
      const resolved = yield* Effect.exit(realm.files.resolve(encoded))
      const known = realm.files.knownPaths()
      // A path that names no file now: only keys this process has read (and may cache) are
      // invalidated, so that invalidating made-up paths writes nothing.
      const named = resolved._tag === "Success"
        ? [resolved.value.path]
        : candidatesOf(lexical).filter((candidate) => known.includes(candidate))
      return keysCovering(directory, named, known)
    })

  /** The realm a query names by its mount, or the only one; a 400 or 404 answer otherwise. */
  const realmOf = (mount: string | undefined, urlPath: string): MountedRealm | HttpServerResponse.HttpServerResponse => {
    if (mount === undefined) {
      const mounted = realms.list()
      if (mounted.length === 1) return mounted[0]!
      return badRequest("realm=MOUNT is needed when several realms are mounted", urlPath)
    }
    const realm = realms.get(mount)
    if (realm !== undefined) return realm
    return adminJson(404, { error: "NotMountedError", message: `no realm is mounted at ${mount}`, path: urlPath } satisfies ErrorBody)
  }

  const invalidate = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const query = yield* Effect.exit(HttpRouter.schemaParams(InvalidateQuery))
    if (query._tag === "Failure") return badRequest("path and realm must be given at most once", pathOf(request.url))
    const realm = realmOf(query.value.realm, pathOf(request.url))
    if (HttpServerResponse.isHttpServerResponse(realm)) return realm
    const target = query.value.path
    if (target === undefined || target === "" || target === "/") {
      realm.raw.clear()
      yield* cache.invalidateRealm(realm.realmUrl)
      return adminJson(200, { invalidated: "realm", mount: realm.mount, realmUrl: realm.realmUrl, paths: [] } satisfies InvalidateBody)
    }
    return yield* Effect.gen(function*() {
      const encoded = encodePath(target.startsWith("/") ? target : `/${target}`)
      const lexical = yield* validatePath(encoded)
      // A directory's index.html stands for the directory: everything below it is covered.
      const directory = lexical.replace(/\/?index\.html$/, "")
      const keys = yield* keysOf(realm, encoded, lexical, directory)
      realm.raw.invalidate(directory)
      yield* Effect.forEach(keys, (key) => cache.invalidate(moduleKey(realm.realmUrl, key)), { discard: true })
      return adminJson(200, { invalidated: "module", mount: realm.mount, realmUrl: realm.realmUrl, paths: keys } satisfies InvalidateBody)
    }).pipe(Effect.catch((error) => Effect.succeed(adminJson(statusOf(error), errorBodyOf(error, realm.hidden)))))
  })

  // Suspended: the realms mounted when the route is called, not when it was added.
  const listRealms = Effect.map(
    Effect.suspend(() => Effect.forEach(realms.list(), figuresWithL2, { concurrency: 8 })),
    (all) => adminJson(200, { realms: all.map(({ figures }) => figures) } satisfies RealmsBody)
  )

  const mount = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const urlPath = pathOf(request.url)
    const body = yield* Effect.exit(HttpServerRequest.schemaBodyJson(MountRequestBody))
    if (body._tag === "Failure") return badRequest("the body is { \"mount\": \"/m/\", \"dir\": \"/abs/dir\", \"private\"?: boolean }", urlPath)
    const spec = body.value
    if (!path.isAbsolute(spec.dir)) return badRequest("dir must be an absolute path", urlPath)
    return yield* realms.mount(
      { mount: spec.mount, dir: spec.dir, private: spec.private, realmUrl: spec.realmUrl },
      { preload: true }
    ).pipe(
      Effect.tap(({ generation, preloaded, realm }) =>
        Option.match(fast, {
          onNone: () => Effect.void,
          onSome: (handler) => routePreloaded(handler, cache, realm, preloaded, generation)
        })),
      Effect.map(({ preloaded, realm }) =>
        adminJson(201, { ...figuresOf(cache, realm), preloaded: preloaded.length })),
      Effect.catchTags({
        MountConflictError: (error) => Effect.succeed(adminJson(409, { error: error._tag, message: error.message, path: urlPath } satisfies ErrorBody)),
        InvalidMountError: (error) => Effect.succeed(badRequest(error.message, urlPath)),
        SourceReadError: () => Effect.succeed(badRequest("the directory cannot be read", urlPath))
      })
    )
  })

  const unmount = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const urlPath = pathOf(request.url)
    const mountPath = new URL(request.url, "http://localhost").searchParams.getAll("mount")
    if (mountPath.length !== 1) return badRequest("mount=MOUNT must be given once", urlPath)
    return yield* realms.unmount(mountPath[0]!).pipe(
      Effect.as(HttpServerResponse.empty({ status: 204, headers: { "cache-control": "no-store" } })),
      Effect.catchTag("NotMountedError", (error) =>
        Effect.succeed(adminJson(404, { error: error._tag, message: error.message, path: urlPath } satisfies ErrorBody)))
    )
  })

  const refusePreflight = (request: HttpServerRequest.HttpServerRequest) =>
    Effect.succeed(adminJson(403, {
      error: "Forbidden",
      message: "admin routes answer no cross-origin requests",
      path: pathOf(request.url)
    } satisfies ErrorBody))

  yield* router.add("GET", "/_cache/health", health)
  yield* router.add("GET", "/_cache/stats", guarded(stats))
  yield* router.add("POST", "/_cache/invalidate", guarded(invalidate))
  yield* router.add("GET", "/_cache/realms", guarded(listRealms))
  yield* router.add("POST", "/_cache/realms", guarded(mount))
  yield* router.add("DELETE", "/_cache/realms", guarded(unmount))
  yield* router.add("OPTIONS", "/_cache/*", refusePreflight)
  yield* MetricsRoutes.add(router, { cache, realms, guarded })
})
