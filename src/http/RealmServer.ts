/**
 * The realm server: serves realm directories over HTTP, each at its mount (a URL path prefix,
 * see {@link Realms}), transpiled through one {@link ModuleCache}, and invalidates modules as
 * their files change on disk.
 *
 * **Realms.** A request belongs to the realm of the longest mount that prefixes its path (404
 * below none). A private realm answers only readers {@link ReadAccess} lets in (401 otherwise,
 * before the path is resolved), with `cache-control: private, no-cache` and `vary: authorization`.
 *
 * **Modules.** `GET` and `HEAD` of a path of a realm resolve its rest (below the mount) with
 * `FileSystemSources.resolve`. An executable module (`.gts .gjs .ts .mts .js .mjs`)
 * is answered with its transpiled JavaScript:
 *
 * - `content-type: text/javascript; charset=utf-8`, `cache-control: no-cache`;
 * - a strong `ETag`: the first 32 hex digits of `sha256(sourceHash + fingerprint)`, the
 *   same in every process of a fleet; `If-None-Match` (a list, weak tags, or `*`) that
 *   matches gives `304`;
 * - `x-module-cache`: how the cache answered (`l1 | l2 | transpiled | coalesced | fallback`).
 *
 * Other files are served raw with a content type from a small extension table (and an
 * ETag of their bytes). A path ending in `/` serves that directory's `index.html`. A
 * `*.glimmer-scoped.css` path (the `boxel` pipeline's `<style scoped>`) is answered as
 * `text/css` with the CSS decoded from the URL itself; no file is read.
 *
 * **Errors** are JSON `{ error, message, path, ... }` ({@link ErrorBody}):
 *
 * | failure | status |
 * |---|---|
 * | invalid path: malformed encoding, NUL, backslash, `..`, dotfile or dot directory, the data directory, a symlink leaving the realm, longer than 1024 characters | 400 |
 * | no such module | 404 |
 * | source over the size limit | 413 |
 * | transpile error (`line`, `column` when known) | 422 |
 * | the realm directory is gone, or another I/O failure | 503 |
 * | a transpile worker crashed or ran out of memory on the module (`reason`) | 500 |
 * | every transpile worker busy and the queue full (`retry-after: 1`) | 503 |
 * | the transpile ran past its time limit | 504 |
 *
 * Module and file responses carry `access-control-allow-origin: *`; `OPTIONS` answers their
 * preflights. Error bodies name realm-relative paths only, never a file-system path.
 *
 * **Admin routes** (`/_cache/*`: health, stats, invalidate, metrics and the live page) carry no
 * CORS headers; stats, metrics and invalidate need the {@link AdminToken}. See {@link AdminRoutes}
 * and {@link MetricsRoutes}. Answer times are recorded by outcome ({@link AnswerMetrics}).
 *
 * **Watcher** (one per realm, started by {@link Realms.Realms.mount}): a watch of every directory of the realm invalidates the key of
 * every file that is created, changed, deleted or renamed (and every cached key below a
 * directory that is), in batches (once the realm is quiet for 25 ms, or every 500 ms under
 * churn), each naming the source the file holds now, so that a fleet watching one directory
 * transpiles an edit once. Raw files cached in memory are dropped the same way. A lost watch is re-opened, and only the modules whose content changed are then
 * invalidated. See {@link Watcher}.
 *
 * **Fast path**: {@link layer} answers warm hits (a path the router answered as an L1 hit, while
 * that module is the key's current L1 entry, or a raw file in the {@link RawFileCache}) and
 * their 304s and HEADs from Node's request event, before the router ({@link FastPath}): same
 * status, headers and bytes, counted as `l1` hits, not traced. {@link routes} alone never
 * gets it. Raw files are cached in memory (bounded by the L1 byte bound, counted apart)
 * while the watcher runs, and dropped by its events and by the admin invalidations.
 *
 * **Preload**: before it listens, the server loads the realm's L2 rows into L1 (see
 * {@link preloader}), so that a restarted process answers from L1 at once.
 *
 * **In your own server**: {@link layer} is the whole thing on Node's HTTP server. To serve the
 * realms from an Effect HTTP server of your own, use {@link routes} (and {@link preloader}) over
 * {@link layerServices}, which mounts the realms with their watchers:
 *
 * ```ts
 * const realm = RealmServer.layerServices({ realms: [{ mount: "/", dir: "./realm" }], store: { _tag: "memory" } })
 * const app = Layer.mergeAll(RealmServer.routes, RealmServer.preloader).pipe(
 *   Layer.provide(realm),
 *   Layer.provide(BabelTranspiler.layer())
 * )
 * HttpRouter.serve(app).pipe(Layer.provide(NodeHttpServer.layer(createServer, { port: 3000 })))
 * ```
 *
 * @since 0.1.0
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Config from "effect/Config"
import type * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerError from "effect/http/HttpServerError"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as NetAddress from "effect/net/NetAddress"
import { createServer, type RequestListener } from "node:http"
import * as ChangeFeed from "../cache/ChangeFeed.ts"
import { ModuleCache, type ModuleCacheOptions } from "../cache/ModuleCache.ts"
import {
  type CachedModule,
  javascriptContentType,
  keyString,
  type ModuleKey,
  moduleKey,
  sourceMapContentType
} from "../domain/Domain.ts"
import { ModuleNotFoundError } from "../domain/Errors.ts"
import type { ModuleSources } from "../domain/ModuleSources.ts"
import type { Transpiler } from "../domain/Transpiler.ts"
import * as ModuleCacheLive from "../live/ModuleCacheLive.ts"
import * as Pruner from "../store/Pruner.ts"
import * as AdminRoutes from "./AdminRoutes.ts"
import { preloader } from "./Preloader.ts"
import * as AnswerMetrics from "./AnswerMetrics.ts"
import type * as MetricsRoutes from "./MetricsRoutes.ts"
import * as AdminToken from "./AdminToken.ts"
import { errorResponse } from "./ErrorMapping.ts"
import { ClockMap } from "../internal/ClockMap.ts"
import * as ContentCoding from "../internal/ContentCoding.ts"
import * as FastPath from "./FastPath.ts"
import * as ImmutableUrls from "./ImmutableUrls.ts"
import * as ImportMap from "./ImportMap.ts"
import * as JitWarmup from "./JitWarmup.ts"
import * as Listener from "./Listener.ts"
import * as LiveEvents from "./LiveEvents.ts"
import { CurrentResolution, type ResolvedPath } from "../realm/FileSystemSources.ts"
import type { ErrorBody } from "./HttpBodies.ts"
import { encodePath, pathOf, validatePath } from "../realm/PathRules.ts"
import type { CachedAnswer } from "../realm/RawFileCache.ts"
import * as Realms from "../realm/Realms.ts"
import * as ReadAccess from "./ReadAccess.ts"
import {
  adminJson,
  AnswersOnce,
  conditionalAnswer,
  contentTypeOf,
  isAdminPath,
  json,
  moduleEtag,
  preflight,
  rawEtag
} from "./Responses.ts"
import * as ScopedCss from "./ScopedCss.ts"
import * as SourceMapAnswers from "./SourceMapAnswers.ts"

export { errorBodyOf, errorResponse, scrubPaths, statusOf } from "./ErrorMapping.ts"
export { ifNoneMatches } from "./FastPath.ts"
export { ErrorBody, HealthBody, InvalidateBody, StatsBody } from "./HttpBodies.ts"
export { moduleEtag, rawContentTypes, rawEtag } from "./Responses.ts"

/** A glimmer-scoped CSS module (see {@link ScopedCss}): decoded from its URL, `text/css`; 400 when it does not decode. */
const scopedCss = (
  request: HttpServerRequest.HttpServerRequest,
  urlPath: string,
  answers: AnswersOnce<string>
): Effect.Effect<HttpServerResponse.HttpServerResponse> => {
  const css = ScopedCss.scopedCssOf(urlPath)
  if (css === undefined) {
    return Effect.succeed(
      json(400, { error: "InvalidPathError", message: "malformed scoped CSS", path: urlPath, reason: "malformed scoped CSS" } satisfies ErrorBody)
    )
  }
  const contentType = "text/css; charset=utf-8"
  // Made once per path (its CSS is in it): encoded, hashed and compressed once, not per request.
  return Effect.map(
    answers.of(urlPath, contentType, () => {
      const bytes = new TextEncoder().encode(css)
      return { bytes, etag: rawEtag(bytes) }
    }),
    (answer) => conditionalAnswer(request, answer, contentType)
  )
}

/** The 404 of a request path that no realm's mount prefixes: the same body as a missing module's. */
const noRealm = (urlPath: string) => errorResponse(new ModuleNotFoundError({ path: urlPath }))

/**
 * A request path decoded, with its empty segments dropped (`//a/%62/x` is `/a/b/x`), when that
 * differs from the path as sent; undefined when it does not, or does not decode (mounts are
 * matched on it: see `placeOf` in {@link routes}).
 */
const respelled = (urlPath: string): string | undefined => {
  if (!urlPath.includes("%") && !urlPath.includes("//")) return undefined
  let decoded: string
  try {
    decoded = decodeURIComponent(urlPath)
  } catch {
    return undefined
  }
  const segments = decoded.split("/").filter((segment) => segment !== "")
  const canonical = segments.length === 0 ? "/" : `/${segments.join("/")}${decoded.endsWith("/") ? "/" : ""}`
  return canonical === urlPath ? undefined : canonical
}

/** The 404 of a path below `/_cache/` that no admin route serves (no CORS headers). */
const noAdminRoute = (method: string, urlPath: string) =>
  adminJson(404, { error: "RouteNotFound", message: `no route for ${method} ${urlPath}`, path: urlPath } satisfies ErrorBody)

// -----------------------------------------------------------------------------
// Routes
// -----------------------------------------------------------------------------

/**
 * The routes of every mounted realm (modules, raw files, admin and preflight) over the
 * {@link ModuleCache} and {@link Realms.Realms} services. A request is served by the realm of the
 * longest mount that prefixes its path; a private realm's only to a reader that
 * {@link ReadAccess} lets in (401 otherwise, before the path is even resolved). Put it into any
 * Effect HTTP server with `HttpRouter.serve` (it claims `/*`, so mount it on a server of its own
 * or merge it under your other routes).
 */
export const routes: Layer.Layer<never, never, HttpRouter.HttpRouter | ModuleCache | Realms.Realms> = HttpRouter.use(
  Effect.fnUntraced(function*(router) {
    const cache = yield* ModuleCache
    const realms = yield* Realms.Realms
    const fast = Option.getOrUndefined(yield* Effect.serviceOption(FastPath.FastPath))
    const offered = yield* ContentCoding.offeredConfig
    // Import maps and pages with the map injected, by their bytes (one per build); scoped CSS by path.
    const renderedAnswers = new AnswersOnce<Uint8Array>(offered, new WeakMap())
    const scoped = new ClockMap<Deferred.Deferred<CachedAnswer>>(1024)
    const scopedAnswers = new AnswersOnce<string>(offered, { get: (path) => scoped.get(path), set: (path, made) => scoped.set(path, made, 1) })
    const access = Option.getOrUndefined(yield* Effect.serviceOption(ReadAccess.ReadAccessService))
    const feed = Option.getOrUndefined(yield* Effect.serviceOption(ChangeFeed.ChangeFeed))
    // Immutable URLs (`?_v=<version>`) and the import map of each realm's pages.
    const importMaps = new WeakMap<Realms.MountedRealm, ImportMap.RealmImportMap>()
    const importMapOf = (realm: Realms.MountedRealm) => {
      let map = importMaps.get(realm)
      if (map === undefined) {
        map = new ImportMap.RealmImportMap(
          cache,
          realm.files,
          realm.mount,
          (urlPath) => realms.lookup(urlPath) === realm,
          // A page lists the modules it reaches in other public realms too (a private one's never).
          (urlPath) => {
            const owner = realms.lookup(urlPath)
            return owner === undefined || owner.isPrivate ? undefined : importMapOf(owner)
          }
        )
        importMaps.set(realm, map)
      }
      return map
    }

    const mapAnswers = new SourceMapAnswers.SourceMapAnswers(offered)
    // An L1 hit returns the same module object each time: encode it and hash its ETag once.
    const answers = new WeakMap<CachedModule, CachedAnswer>()
    const encoder = new TextEncoder()
    const answerOfModule = (module: CachedModule) => {
      let answer = answers.get(module)
      if (answer === undefined) {
        const forms = FastPath.offeredForms(module, offered)
        answer = FastPath.answerOf(encoder.encode(module.body), moduleEtag(module), javascriptContentType, undefined, false, forms)
        answers.set(module, answer)
      }
      return answer
    }

    /** Whether the request may read the realm: any for a public one, the token's bearer for a private one. */
    const mayRead = (request: HttpServerRequest.HttpServerRequest, realm: Realms.MountedRealm) =>
      !realm.isPrivate
        ? Effect.succeed(true)
        : access === undefined
        ? Effect.succeed(false)
        : access.allows(request.headers["authorization"], realm.mount)

    /** The module of a resolved path, and how it was got (a miss reads the file this resolution found). */
    const moduleOf = (realm: Realms.MountedRealm, resolved: ResolvedPath, request?: HttpServerRequest.HttpServerRequest) => {
      const key = moduleKey(realm.realmUrl, resolved.path)
      const id = keyString(key)
      // A miss reads the file this resolution found, and makes the coding the answer is sent in
      // first (the rest may follow at a quiet moment: see `ModuleCache`).
      const got = cache.peekL1(id) === undefined
        ? cache.get(key).pipe(
          Effect.provideService(CurrentResolution, resolved),
          Effect.provideService(
            ContentCoding.RequestedCoding,
            request === undefined ? undefined : ContentCoding.negotiate(request.headers["accept-encoding"], offered)
          )
        )
        : cache.get(key)
      return Effect.map(got, ({ module, outcome }) => ({ id, module, outcome }))
    }

    /**
     * The answer of a module's source map (`<module path>.map`), or undefined when the path
     * names no module or the module has no map: then it is a file path like any other.
     */
    const mapAnswerOf = (
      request: HttpServerRequest.HttpServerRequest,
      realm: Realms.MountedRealm,
      urlPath: string,
      modulePath: string,
      captured: number
    ) =>
      Effect.gen(function*() {
        const resolved = yield* Effect.option(realm.files.resolve(modulePath))
        if (Option.isNone(resolved) || !resolved.value.executable) return undefined
        const { id, module, outcome } = yield* moduleOf(realm, resolved.value)
        const made = mapAnswers.of(module)
        if (made === undefined) return undefined
        const answer = yield* made
        if (outcome === "l1") fast?.rememberMap(realm, urlPath, id, module, answer, captured)
        const version = ImmutableUrls.requestedVersion(request.url)
        if (version !== undefined) return ImmutableUrls.answer(request, version, answer, sourceMapContentType)
        return conditionalAnswer(request, answer, sourceMapContentType)
      })

    /** Serves a request path of a realm (`urlPath` as sent, the mount included). */
    const serveIn = (request: HttpServerRequest.HttpServerRequest, realm: Realms.MountedRealm, urlPath: string) =>
      Effect.gen(function*() {
        const files = realm.files
        const relative = realm.relativeUrlPath(urlPath)
        if (ScopedCss.isScopedCssPath(relative)) return yield* scopedCss(request, relative, scopedAnswers)
        // Before resolving: a file event during the request keeps its resolution from the fast path.
        const captured = realm.generation
        const mapOf = SourceMapAnswers.modulePathOfMap(relative)
        if (mapOf !== undefined) {
          const mapAnswer = yield* mapAnswerOf(request, realm, urlPath, mapOf, captured)
          if (mapAnswer !== undefined) return mapAnswer
        }
        const resolved = yield* files.resolve(relative)
        const version = ImmutableUrls.requestedVersion(request.url)
        if (!resolved.executable) {
          const contentType = contentTypeOf(resolved.path)
          let answer = realm.raw.get(resolved.path)
          if (answer === undefined) {
            const before = realm.raw.capture()
            const file = yield* Effect.provideService(files.readRaw(resolved.path), CurrentResolution, resolved)
            // A text file's compressed forms are made once, here, off the event loop.
            const encoded = offered.length > 0 && ContentCoding.isCompressible(contentType, file.bytes.byteLength)
              ? yield* ContentCoding.compressAll(file.bytes, offered)
              : undefined
            answer = FastPath.answerOf(file.bytes, rawEtag(file.bytes), contentType, undefined, realm.isPrivate, encoded)
            realm.raw.fill(resolved.path, answer, before)
          }
          if (version !== undefined) return ImmutableUrls.answer(request, version, answer, contentType)
          if (ImportMap.mayOptIn(resolved.path)) {
            // A page that opts in gets the map, computed per request: never from the fast path.
            const page = yield* ImportMap.pageAnswer(importMapOf(realm), request, answer, contentType, renderedAnswers)
            if (page !== undefined) return page
          }
          fast?.remember(realm, urlPath, "raw", resolved.path, captured)
          return conditionalAnswer(request, answer, contentType)
        }
        // A miss reads the file this resolution found: the path is resolved once.
        const { id, module, outcome } = yield* moduleOf(realm, resolved, request)
        const answer = answerOfModule(module)
        // Only after an L1 hit answered here: the first hit of each path still gets its span.
        if (outcome === "l1") fast?.rememberModule(realm, urlPath, id, module, answer.bytes, answer.etag, captured)
        importMapOf(realm).noteRequest(urlPath, resolved)
        const cacheOutcome = { "x-module-cache": outcome }
        if (version !== undefined) return ImmutableUrls.answer(request, version, answer, javascriptContentType, cacheOutcome)
        return conditionalAnswer(request, answer, javascriptContentType, cacheOutcome)
      }).pipe(Effect.catch((error) => Effect.succeed(errorResponse(error, realm.hidden))))

    /**
     * The realm of a request path, and the path to serve in it. Another spelling of a mount
     * (`//alice/x`, `/%61lice/x`, `/alice%2Fx`) is that mount's, served as its canonical
     * spelling: a realm whose directory lies inside another realm's is never read through the
     * outer one (nor a private one past its read check).
     */
    const placeOf = (sent: string, canonical: string | undefined) => {
      const realm = realms.lookup(sent)
      if (canonical === undefined) return { realm, urlPath: sent }
      const owner = realms.lookup(canonical)
      if (owner === undefined || owner === realm) return { realm, urlPath: sent }
      return { realm: owner, urlPath: owner.mount + encodePath(canonical.slice(owner.mount.length)) }
    }

    const serveFile = (request: HttpServerRequest.HttpServerRequest) =>
      Effect.gen(function*() {
        const sent = pathOf(request.url)
        const canonical = respelled(sent)
        // `/_cache/*` is the admin routes', never a realm's (not even the one at `/`).
        if (isAdminPath(sent) || (canonical !== undefined && isAdminPath(canonical))) return noAdminRoute(request.method, sent)
        const { realm, urlPath } = placeOf(sent, canonical)
        if (realm === undefined) return noRealm(urlPath)
        // Before anything is resolved: the same 401 whether the path exists or not.
        if (!(yield* mayRead(request, realm))) return ReadAccess.unauthorized()
        const response = yield* AnswerMetrics.timed(realm.realmUrl, serveIn(request, realm, urlPath))
        if (!realm.isPrivate) return response
        // A compressed answer varies by its encoding too, as the fast path's does.
        const compressed = response.headers["vary"] === FastPath.varyOf(false, true)
        return HttpServerResponse.setHeaders(response, { ...ReadAccess.privateHeaders, vary: FastPath.varyOf(true, compressed)! })
      })

    /** A preflight: a private realm's allows `authorization`. */
    const preflightOf = (request: HttpServerRequest.HttpServerRequest) => {
      const sent = pathOf(request.url)
      const { realm } = placeOf(sent, respelled(sent))
      return Effect.succeed(preflight(request, realm?.isPrivate === true))
    }

    /**
     * The realm of `?realm=MOUNT` (the only realm, or the one at `/`, without it) when the request
     * may read it, else the answer: 404 for no such realm, 401 for a private one's non-reader.
     */
    const realmOfRequest = (request: HttpServerRequest.HttpServerRequest, routePath: string) =>
      Effect.gen(function*() {
        const mount = new URL(request.url, "http://localhost").searchParams.get("realm")
        const realm = mount === null
          ? (realms.get("/") ?? (realms.list().length === 1 ? realms.list()[0] : undefined))
          : realms.get(mount)
        if (realm === undefined) return noRealm(routePath)
        if (!(yield* mayRead(request, realm))) return ReadAccess.unauthorized()
        return realm
      })

    /** The import map of `?realm=MOUNT`: a private one's only to its readers. */
    const importMapOfRequest = (request: HttpServerRequest.HttpServerRequest) =>
      Effect.map(
        realmOfRequest(request, ImportMap.importMapPath),
        (realm) => HttpServerResponse.isHttpServerResponse(realm) ? realm : importMapOf(realm)
      )

    yield* AdminRoutes.add(router, { cache, realms })
    yield* ImportMap.addRoute(router, importMapOfRequest, renderedAnswers)
    if (feed !== undefined) {
      yield* LiveEvents.add(router, {
        cache,
        feed,
        realmOf: (request) => realmOfRequest(request, LiveEvents.eventsPath)
      })
    }
    yield* router.add("OPTIONS", "/*", preflightOf)
    yield* router.add("OPTIONS", "/", preflightOf)
    yield* router.add("GET", "/*", serveFile)
    yield* router.add("GET", "/", serveFile)
  })
)

/**
 * Middleware for a server that serves only the realm: a request the router cannot match
 * (its URL does not even decode, or its method is not served) gets a JSON error with the
 * CORS headers (none below `/_cache/`): 400 when the path is invalid, else 404 (405 for a
 * known path and another method is not distinguished).
 */
export const notFoundMiddleware = <E, R>(
  app: Effect.Effect<HttpServerResponse.HttpServerResponse, E | HttpServerError.HttpServerError, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, E | HttpServerError.HttpServerError, R | HttpServerRequest.HttpServerRequest> =>
  Effect.catchIf(
    app,
    (error): error is HttpServerError.HttpServerError =>
      HttpServerError.isHttpServerError(error) && error.reason._tag === "RouteNotFound",
    () =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const urlPath = pathOf(request.url)
        const checked = yield* Effect.exit(validatePath(urlPath))
        if (checked._tag === "Failure") {
          const error = Exit.findErrorOption(checked)
          if (error._tag === "Some") return errorResponse(error.value)
        }
        if (isAdminPath(urlPath)) return noAdminRoute(request.method, urlPath)
        return json(404, { error: "RouteNotFound", message: `no route for ${request.method} ${urlPath}`, path: urlPath } satisfies ErrorBody)
      })
  )


// -----------------------------------------------------------------------------
// Preload
// -----------------------------------------------------------------------------

export { preloader, routePreloaded } from "./Preloader.ts"

// -----------------------------------------------------------------------------
// Layers
// -----------------------------------------------------------------------------

/** What the realms are served from. */
export interface RealmOptions {
  /** One realm, mounted at `/` (what `serve <realmDir>` serves). */
  readonly realmDir?: string | undefined
  /** The URL of the realm of {@link realmDir}; defaults to the `file://` URL of the directory (with a trailing slash). */
  readonly realmUrl?: string | undefined
  /** The realms to mount at start (besides {@link realmDir}); more can be mounted while the server runs ({@link Realms.Realms}). */
  readonly realms?: ReadonlyArray<Realms.RealmSpec> | undefined
  /** A realm's URL is this + its mount, unless its spec names one (default: its directory's `file://` URL). */
  readonly realmUrlBase?: string | undefined
  readonly store: ModuleCacheLive.StoreChoice
  /** Largest source or raw file served (default 8 MiB). */
  readonly maxSourceBytes?: number | undefined
  /** Directories never served, besides dot directories (e.g. a data directory without a dot). */
  readonly excluded?: ReadonlyArray<string> | undefined
  readonly cache?: ModuleCacheOptions | undefined
  /** Prune L2 on a schedule while the layer lives (see {@link Pruner}); off when absent. */
  readonly prune?: Partial<Pruner.PrunerOptions> | undefined
  /** Watch every realm's directory for changes (default true). */
  readonly watch?: boolean | undefined
  /**
   * The secret of read tokens (`MTC_READ_SECRET`, at least 32 bytes): a private realm answers
   * the bearers of tokens signed with it that name its mount, and of the admin token. Without
   * one, only the admin token reads private realms.
   */
  readonly readSecret?: Redacted.Redacted<string> | undefined
}

/** The realms of the options: {@link RealmOptions.realmDir} at `/`, then {@link RealmOptions.realms}. */
export const realmSpecsOf = (options: RealmOptions): ReadonlyArray<Realms.RealmSpec> => [
  ...(options.realmDir === undefined ? [] : [{ mount: "/", dir: options.realmDir, realmUrl: options.realmUrl }]),
  ...(options.realms ?? [])
]

/** The options of {@link layer}. */
export interface ServeOptions extends RealmOptions {
  /** Default 4201; 0 picks a free port. */
  readonly port?: number | undefined
  /** Default 127.0.0.1. */
  readonly host?: string | undefined
  /**
   * How long a drain waits for the requests it accepted (default 10 s, `MTC_HTTP_DRAIN_TIMEOUT` in
   * `serve`); past it their connections are closed. See `Listener`.
   */
  readonly gracefulShutdownTimeout?: Duration.Input | undefined
  /**
   * The admin token (see {@link AdminToken}). Without one, the guarded admin routes refuse
   * every call.
   */
  readonly adminToken?: Redacted.Redacted<string> | undefined
  /** Write the token to the token file of the port it listens on, for the CLI (default false). */
  readonly writeTokenFile?: boolean | undefined
  /** Connection limits; see {@link ConnectionLimits} for the defaults. */
  readonly limits?: Partial<ConnectionLimits> | undefined
  /**
   * The fast path that answers warm hits before the router ({@link FastPath}): `false` turns
   * it off; a handler of your own lets you read its `answered` count. Default: on.
   */
  readonly fastPath?: FastPath.FastPathHandler | false | undefined
  /**
   * Requests of the start's JIT warm-up (`JitWarmup`): answered on a throwaway
   * listener from the preloaded modules, before the server listens. Default 1000; 0 turns it off.
   */
  readonly warmupRequests?: number | undefined
}

/** The HTTP server's timeouts and connection cap. */
export interface ConnectionLimits {
  /** Time to receive a request's headers, from the connection's start (idle or slow clients). Default 10 s. */
  readonly headersTimeoutMillis: number
  /** Time to receive a whole request. Default 30 s. */
  readonly requestTimeoutMillis: number
  /** How long an idle keep-alive connection stays open. Default 5 s. */
  readonly keepAliveTimeoutMillis: number
  /** Most open connections; further ones are closed at once. Default 1024. */
  readonly maxConnections: number
}

/** The defaults of {@link ConnectionLimits}. */
export const defaultLimits: ConnectionLimits = {
  headersTimeoutMillis: 10_000,
  requestTimeoutMillis: 30_000,
  keepAliveTimeoutMillis: 5_000,
  maxConnections: 1024
}

/** The limits from `MTC_HEADERS_TIMEOUT`, `MTC_REQUEST_TIMEOUT`, `MTC_KEEP_ALIVE_TIMEOUT` and `MTC_MAX_CONNECTIONS`. */
export const limitsConfig: Config.Config<ConnectionLimits> = Config.all({
  headersTimeoutMillis: Config.withDefault(
    Config.map(Config.Duration("MTC_HEADERS_TIMEOUT"), Duration.toMillis),
    defaultLimits.headersTimeoutMillis
  ),
  requestTimeoutMillis: Config.withDefault(
    Config.map(Config.Duration("MTC_REQUEST_TIMEOUT"), Duration.toMillis),
    defaultLimits.requestTimeoutMillis
  ),
  keepAliveTimeoutMillis: Config.withDefault(
    Config.map(Config.Duration("MTC_KEEP_ALIVE_TIMEOUT"), Duration.toMillis),
    defaultLimits.keepAliveTimeoutMillis
  ),
  maxConnections: Config.withDefault(Config.Int("MTC_MAX_CONNECTIONS"), defaultLimits.maxConnections)
})

/**
 * Node's HTTP server under the given limits, with the response class of `listener` (which closes
 * connections while it drains). It has no request handler yet: see {@link Listener.serve}.
 */
const makeNodeServer = (limits: ConnectionLimits, listener: Listener.Listener) => {
  const requestTimeout = Math.max(limits.requestTimeoutMillis, limits.headersTimeoutMillis)
  const server = createServer({
    keepAliveTimeout: limits.keepAliveTimeoutMillis,
    headersTimeout: limits.headersTimeoutMillis,
    requestTimeout,
    // How often Node checks the two timeouts above (its default, 30 s, would let a slow client stay that much longer).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMillis / 4))),
    ServerResponse: listener.ServerResponse
  })
  server.maxConnections = limits.maxConnections
  // Node applies the headers timeout only once a request's first bytes arrived: a connection
  // that sends nothing at all is closed here, after the same time.
  server.on("connection", (socket) => {
    const timer = setTimeout(() => {
      if (socket.bytesRead === 0) socket.destroy()
    }, limits.headersTimeoutMillis)
    timer.unref()
    socket.once("close", () => clearTimeout(timer))
  })
  return server
}

/**
 * A router layer without the request-level markers in its type (`HttpRouter.Request<...>`, which
 * exist only in types: what a middleware provides to or needs from each request), as
 * `HttpRouter.serve` drops them.
 */
const withoutRequestMarkers = <A, E, R>(
  layer: Layer.Layer<A, E, R>
): Layer.Layer<A, HttpRouter.Request.Without<E>, HttpRouter.Request.Without<R>> =>
  layer as Layer.Layer<A, never, never> as Layer.Layer<A, HttpRouter.Request.Without<E>, HttpRouter.Request.Without<R>>

/** The router's handler behind the fast path: a request the fast path answered never reaches the router. */
const withFastPath = (fast: FastPath.FastPathHandler | undefined, router: RequestListener): RequestListener =>
  fast === undefined ? router : (request, response) => {
    if (!fast.handle(request, response)) router(request, response)
  }

/** Why {@link layerServices} fails: the store's {@link ModuleCacheLive.LayerError}, a realm cannot be mounted, or the read secret is unusable. */
export type RealmLayerError = ModuleCacheLive.LayerError | Realms.MountError | ReadAccess.ReadSecretError

/**
 * The mounted realms ({@link Realms.Realms}, with their watchers), the {@link ModuleSources}
 * over them, a ModuleCache over the chosen store, and the {@link ReadAccess} of private realms.
 */
export const layerServices = (
  options: RealmOptions
): Layer.Layer<
  ModuleCache | Realms.Realms | ModuleSources | ReadAccess.ReadAccessService | ChangeFeed.ChangeFeed,
  RealmLayerError,
  Transpiler
> => {
  const cacheLayer = options.prune === undefined
    ? ModuleCacheLive.layer(options.store, options.cache ?? {})
    : Layer.merge(ModuleCacheLive.cacheLayer(options.store, options.cache), Pruner.layer(options.prune)).pipe(
      Layer.provide(ModuleCacheLive.services(options.store))
    )
  const realms = Realms.layer(realmSpecsOf(options), {
    realmUrlBase: options.realmUrlBase,
    maxSourceBytes: options.maxSourceBytes,
    excluded: options.excluded,
    watch: options.watch
  })
  return Layer.mergeAll(
    realms.pipe(
      Layer.provideMerge(cacheLayer),
      Layer.provideMerge(Realms.layerRegistry(options.cache?.l1MaxBytes)),
      // The live event streams' feed: the cache and the watchers announce to it.
      Layer.provideMerge(ChangeFeed.layer())
    ),
    ReadAccess.layer({ readSecret: options.readSecret })
  )
}

/**
 * Why {@link layer} fails: {@link RealmLayerError}, the HTTP server cannot listen (`ServeError`),
 * or the admin token file cannot be written (`AdminTokenError`).
 */
export type ServeLayerError = RealmLayerError | HttpServerError.ServeError | AdminToken.AdminTokenError

/**
 * Serves the realms on Node's HTTP server: {@link routes} and {@link preloader} over
 * {@link layerServices}. It listens only once the router is attached (see `Listener`), and
 * logs `listening on <url>` then. Closing the layer drains: it stops accepting, closes idle
 * keep-alive connections, answers every request it accepted (with `connection: close`), within
 * the graceful timeout; then it closes the cache and its store.
 */
export const layer = (options: ServeOptions): Layer.Layer<never, ServeLayerError, Transpiler> => {
  const limits = { ...defaultLimits, ...options.limits }
  const fast = options.fastPath === false ? undefined : options.fastPath ?? new FastPath.FastPathHandler()
  const listener = new Listener.Listener()
  // A global router middleware sees RouteNotFound (the `middleware` option of `HttpRouter.serve`
  // wraps the server after the router has answered, so it never would).
  const router = withoutRequestMarkers(
    Layer.merge(routes, HttpRouter.middleware(notFoundMiddleware, { global: true })).pipe(
      Layer.provideMerge(HttpRouter.layer)
    )
  )
  const server = Layer.effectDiscard(Effect.gen(function*() {
    const realms = yield* Realms.Realms
    // A drain ends the event streams at once: their clients reconnect elsewhere.
    listener.onDrain((yield* ChangeFeed.ChangeFeed).close)
    const app = (yield* HttpRouter.HttpRouter).asHttpEffect()
    // Request fibers run in a scope of their own, closed after the drain (which waits for them).
    const requests = yield* Scope.fork(yield* Effect.scope, "parallel")
    const handler = yield* NodeHttpServer.makeHandler(app, { scope: requests })
    const address = yield* Listener.serve(listener, makeNodeServer(limits, listener), withFastPath(fast, handler), {
      port: options.port ?? 4201,
      host: options.host ?? "127.0.0.1",
      drainTimeout: options.gracefulShutdownTimeout ?? Listener.defaultDrainTimeout
    })
    if (options.writeTokenFile === true && options.adminToken !== undefined) {
      // Before the listening line: whoever waits for it finds the file.
      yield* AdminToken.writeTokenFile(AdminToken.tokenFileOf(address.port), options.adminToken)
    }
    const url = yield* Effect.fromResult(NetAddress.inetAddressFromIpString(address.address, address.port)).pipe(
      Effect.map(HttpServer.formatAddress),
      Effect.orElseSucceed(() => `http://${address.address}:${address.port}`)
    )
    const mounted = realms.list()
    const served = mounted.length === 1 && mounted[0]!.mount === "/"
      ? `realm ${mounted[0]!.realmUrl}`
      : `${mounted.length} realm${mounted.length === 1 ? "" : "s"}: ${mounted.slice(0, 5).map((realm) => realm.mount).join(" ")}${mounted.length > 5 ? " ..." : ""}`
    yield* Effect.logInfo(`module-transpile-cache listening on ${url}/ (${served}, store ${options.store._tag})`)
  })).pipe(Layer.provide(router))
  // The realms are mounted (their watchers run), then the preload, then the server: an edit
  // during the preload is seen, and the server listens once L1 is warm.
  const preload = preloader
  // Then the JIT warm-up of the serving path, on a throwaway listener, before the real one listens.
  const jitWarmup = Layer.effectDiscard(Effect.gen(function*() {
    if (fast === undefined) return
    const requests = options.warmupRequests ?? JitWarmup.defaultRequests
    const makeServer = () => makeNodeServer(limits, new Listener.Listener())
    const summary = yield* JitWarmup.warmUp(makeServer, fast, fast.modulePaths(requests), requests)
    if (summary.requests > 0) {
      yield* Effect.logDebug(
        `module-transpile-cache: JIT warm-up, ${summary.requests} requests (${summary.fastPath} by the fast path) in ${summary.millis.toFixed(0)} ms`
      )
    }
  }))
  const warmStart = Layer.provide(jitWarmup, preload)
  // The warm start is built before the server listens; the server drains before the cache closes.
  const app = server.pipe(Layer.provide(warmStart))
  return app.pipe(
    Layer.provide(fast === undefined ? Layer.empty : Layer.effect(
      FastPath.FastPath,
      // Connected to the cache and the readers' check before the preload, the warm-up or the routes use it.
      Effect.gen(function*() {
        const access = yield* ReadAccess.ReadAccessService
        // The routes' layer read (and warned about) MTC_CONTENT_ENCODINGS already.
        const offered = yield* Effect.orElseSucceed(ContentCoding.encodingsConfig, () => ContentCoding.codings)
        fast.install(yield* ModuleCache, access.allowsCached, offered)
        return fast
      })
    )),
    Layer.provideMerge(layerServices(options)),
    Layer.provide(options.adminToken === undefined ? Layer.empty : AdminToken.layer(options.adminToken))
  )
}
