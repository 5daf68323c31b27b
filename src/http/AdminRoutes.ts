/**
 * The realm server's admin routes (`/_cache/*`): no CORS headers, and their preflights are
 * refused (403).
 *
 * - `GET /_cache/health`: 200 when the realm directory is readable, else 503; no credential.
 * - `GET /_cache/stats`: the cache's counters and the versions in L2 for the realm ({@link StatsBody}).
 * - `GET /_cache/metrics` and the live page `GET /_cache/`: see {@link MetricsRoutes}.
 * - `POST /_cache/invalidate?path=P`: one module by its request path, canonicalised (a path
 *   that names no module of the realm writes nothing), or without `path` the whole realm
 *   ({@link InvalidateBody}).
 *
 * Stats and invalidate need `Authorization: Bearer <token>` of the {@link AdminToken}
 * service: 401 without it or with another token, 403 for a browser request carrying
 * `Origin`, and every call refused when the service is absent.
 *
 * @since 0.3.0
 */
import { Effect, Option } from "effect"
import { HttpRouter, HttpServerRequest, type HttpServerResponse } from "effect/http"
import { moduleKey } from "../domain/Domain.ts"
import type { ModuleCache } from "../cache/ModuleCache.ts"
import * as AdminToken from "./AdminToken.ts"
import { errorBodyOf, scrubPaths, statusOf } from "./ErrorMapping.ts"
import { FastPath } from "./FastPath.ts"
import * as MetricsRoutes from "./MetricsRoutes.ts"
import { fileSystem, type RealmFiles } from "../realm/FileSystemSources.ts"
import { type ErrorBody, type HealthBody, type InvalidateBody, InvalidateQuery, type StatsBody } from "./HttpBodies.ts"
import { candidatesOf, encodePath, keysCovering, pathOf, validatePath } from "../realm/PathRules.ts"
import type { RawFiles } from "../realm/RawFileCache.ts"
import { adminJson } from "./Responses.ts"

/** What the admin routes act on. */
interface AdminContext {
  readonly cache: ModuleCache["Service"]
  readonly files: RealmFiles["Service"]
  readonly raw: RawFiles
  /** Absolute directories never shown in an answer (see `ErrorMapping.errorBodyOf`). */
  readonly hidden: ReadonlyArray<string>
}

/** Adds the admin routes to a router. */
export const add = Effect.fnUntraced(function*(router: HttpRouter.HttpRouter, context: AdminContext) {
  const { cache, files, hidden, raw } = context
  const adminToken = yield* Effect.serviceOption(AdminToken.AdminToken)
  const fast = yield* Effect.serviceOption(FastPath)
  const fsys = yield* fileSystem

  const health = Effect.gen(function*() {
    const info = yield* Effect.exit(fsys.stat(files.realmDir))
    const shown = files.realmUrl.startsWith("file:") ? {} : { realmUrl: files.realmUrl }
    if (info._tag === "Success" && info.value.type === "Directory") {
      return adminJson(200, { status: "ok", ...shown } satisfies HealthBody)
    }
    return adminJson(503, {
      status: "unavailable",
      ...shown,
      message: "the realm directory is not available"
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

  const stats = Effect.map(Effect.all([cache.stats, cache.realmUsage(files.realmUrl)]), ([counters, usage]) => {
    const warmup = Option.match(fast, {
      onNone: () => ({}),
      onSome: (handler) => ({ warmupRequests: handler.warmupAnswered, warmupMillis: handler.warmupMillis })
    })
    const body: StatsBody = {
      realmUrl: files.realmUrl,
      ...counters,
      ...warmup,
      // As in error bodies: no file-system path of the realm in a message.
      recentErrors: counters.recentErrors.map((error) => ({ ...error, message: scrubPaths(error.message, hidden) })),
      rawFileBytes: raw.bytes,
      realms: [{
        realmUrl: files.realmUrl,
        modules: counters.l1Entries,
        errors: counters.errors,
        ...(usage === undefined ? {} : { l2Rows: usage.rows, l2Bytes: usage.bytes })
      }],
      // The versions in L2, ours marked (left out when L2 cannot be read now: the counters still answer).
      ...(usage === undefined ? {} : {
        versions: usage.versions.map((version) => ({ ...version, current: version.fingerprint === counters.fingerprint }))
      })
    }
    return adminJson(200, body)
  })

  /**
   * The keys a request path names: its canonical path, or (when it names no file now) those
   * of its candidates this process has read, plus the cached keys below it.
   */
  const keysOf = (encoded: string, lexical: string, directory: string) =>
    Effect.gen(function*() {
      const resolved = yield* Effect.exit(files.resolve(encoded))
      const known = files.knownPaths()
      // A path that names no file now: only keys this process has read (and may cache) are
      // invalidated, so that invalidating made-up paths writes nothing.
      const named = resolved._tag === "Success"
        ? [resolved.value.path]
        : candidatesOf(lexical).filter((candidate) => known.includes(candidate))
      return keysCovering(directory, named, known)
    })

  const invalidate = Effect.gen(function*() {
    const query = yield* Effect.exit(HttpRouter.schemaParams(InvalidateQuery))
    if (query._tag === "Failure") {
      return adminJson(400, { error: "BadRequest", message: "path must be given at most once", path: "" } satisfies ErrorBody)
    }
    const target = query.value.path
    if (target === undefined || target === "" || target === "/") {
      raw.clear()
      yield* cache.invalidateRealm(files.realmUrl)
      return adminJson(200, { invalidated: "realm", realmUrl: files.realmUrl, paths: [] } satisfies InvalidateBody)
    }
    const encoded = encodePath(target.startsWith("/") ? target : `/${target}`)
    const lexical = yield* validatePath(encoded)
    // A directory's index.html stands for the directory: everything below it is covered.
    const directory = lexical.replace(/\/?index\.html$/, "")
    const keys = yield* keysOf(encoded, lexical, directory)
    raw.invalidate(directory)
    yield* Effect.forEach(keys, (key) => cache.invalidate(moduleKey(files.realmUrl, key)), { discard: true })
    return adminJson(200, { invalidated: "module", realmUrl: files.realmUrl, paths: keys } satisfies InvalidateBody)
  }).pipe(Effect.catch((error) => Effect.succeed(adminJson(statusOf(error), errorBodyOf(error, hidden)))))

  const refusePreflight = (request: HttpServerRequest.HttpServerRequest) =>
    Effect.succeed(adminJson(403, {
      error: "Forbidden",
      message: "admin routes answer no cross-origin requests",
      path: pathOf(request.url)
    } satisfies ErrorBody))

  yield* router.add("GET", "/_cache/health", health)
  yield* router.add("GET", "/_cache/stats", guarded(stats))
  yield* router.add("POST", "/_cache/invalidate", guarded(invalidate))
  yield* router.add("OPTIONS", "/_cache/*", refusePreflight)
  yield* MetricsRoutes.add(router, { cache, files, raw, guarded })
})
