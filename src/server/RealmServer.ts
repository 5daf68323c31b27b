/**
 * The realm server: serves a realm directory over HTTP, transpiled through a
 * {@link ModuleCache}, and invalidates modules as their files change on disk.
 *
 * **Modules.** `GET` and `HEAD` of a path below the server root resolve it with
 * {@link FileSystemSources.resolve}. An executable module (`.gts .gjs .ts .mts .js .mjs`)
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
 * **Admin routes** (`/_cache/*`) carry no CORS headers, and their preflights are refused (403):
 * `GET /_cache/health` (200 when the realm directory is readable, else 503; no credential),
 * `GET /_cache/stats` ({@link StatsBody}) and `POST /_cache/invalidate?path=P` (one module by
 * its request path, canonicalised; a path that names no module of the realm writes nothing)
 * or without `path` (the whole realm) ({@link InvalidateBody}). Stats and invalidate need
 * `Authorization: Bearer <token>` of the {@link AdminToken} service (401 without it or with
 * another token, 403 for a browser request carrying `Origin`, and every call refused when
 * the service is absent). Stats needs it too: it names the realm URL, which by default is the
 * realm's `file://` URL.
 *
 * **Watcher**: a watch of every directory of the realm ({@link RealmWatcher}) invalidates the
 * key of every file that is created, changed, deleted or renamed (and every cached key below
 * a directory that is): the first changes after a quiet spell at once (leading edge), then
 * the changes that follow them once the realm is quiet for 25 ms, or every 500 ms under
 * constant churn (trailing edge, so a burst such as an atomic save or a checkout costs one
 * more invalidation, not one per event). Raw files cached in memory are dropped the same way. Dotfiles and the data directory are ignored. When the watch is lost (the
 * realm directory vanishes or is replaced) it is re-opened, and the modules read so far are
 * read again: only those whose content hash changed (or that are gone) are invalidated.
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
 * realm from an Effect HTTP server of your own, use {@link routes} (and {@link watcher}, then {@link preloader}) over
 * {@link layerServices}:
 *
 * ```ts
 * const realm = RealmServer.layerServices({ realmDir: "./realm", store: { _tag: "memory" } })
 * // The preload after the watcher, so that an edit during it is never missed.
 * const warmStart = Layer.provideMerge(RealmServer.preloader, RealmServer.watcher)
 * const app = Layer.mergeAll(RealmServer.routes, warmStart).pipe(
 *   Layer.provide(realm),
 *   Layer.provide(BabelTranspiler.layer())
 * )
 * HttpRouter.serve(app).pipe(Layer.provide(NodeHttpServer.layer(createServer, { port: 3000 })))
 * ```
 *
 * @since 0.1.0
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Config, Duration, Effect, Exit, Layer, Option, Queue, type Redacted, Schedule, Schema } from "effect"
import { HttpRouter, HttpServer, HttpServerError, HttpServerRequest, HttpServerResponse } from "effect/http"
import { realpathSync } from "node:fs"
import { stat } from "node:fs/promises"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import * as path from "node:path"
import { ConnectionStats } from "../domain/DatabaseConnections.ts"
import * as AdminToken from "./AdminToken.ts"
import { type CachedModule, hashSource, javascriptContentType, keyString, moduleKey } from "../domain/Domain.ts"
import type { GetError, SourceReadError } from "../domain/Errors.ts"
import * as FastPath from "./FastPath.ts"
import { corsHeaders } from "./FastPath.ts"
import * as FileSystemSources from "./FileSystemSources.ts"
import { RealmFiles } from "./FileSystemSources.ts"
import * as ModuleCacheModule from "../cache/ModuleCache.ts"
import { ModuleCache, type ModuleCacheOptions } from "../cache/ModuleCache.ts"
import * as ModuleCacheLive from "../live/ModuleCacheLive.ts"
import * as Preload from "../cache/Preload.ts"
import type { ModuleSources } from "../domain/ModuleSources.ts"
import * as ScopedCss from "./ScopedCss.ts"
import * as Pruner from "../store/Pruner.ts"
import * as RawFileCache from "./RawFileCache.ts"
import * as RealmWatcher from "./RealmWatcher.ts"
import type { Transpiler } from "../domain/Transpiler.ts"

// -----------------------------------------------------------------------------
// Bodies
// -----------------------------------------------------------------------------

/** The JSON body of every error response. */
export const ErrorBody = Schema.Struct({
  error: Schema.String,
  message: Schema.String,
  path: Schema.String,
  reason: Schema.optional(Schema.String),
  line: Schema.optional(Schema.NullOr(Schema.Number)),
  column: Schema.optional(Schema.NullOr(Schema.Number)),
  size: Schema.optional(Schema.Number),
  limit: Schema.optional(Schema.Number)
})
export type ErrorBody = typeof ErrorBody.Type

/** The body of `GET /_cache/stats`: the cache's counters and the realm URL. */
export const StatsBody = Schema.Struct({
  realmUrl: Schema.String,
  transpiles: Schema.Number,
  l1Hits: Schema.Number,
  l2Hits: Schema.Number,
  coalesced: Schema.Number,
  fallbacks: Schema.Number,
  errors: Schema.Number,
  persistFailures: Schema.Number,
  l1Bytes: Schema.Number,
  l1Entries: Schema.Number,
  inFlight: Schema.Number,
  preloadedEntries: Schema.Number,
  preloadedBytes: Schema.Number,
  preloadMillis: Schema.Number,
  store: Schema.String,
  coordinator: Schema.String,
  refusals: Schema.Number,
  connections: Schema.optional(ConnectionStats)
})
export type StatsBody = typeof StatsBody.Type

/** The body of `POST /_cache/invalidate`. */
export const InvalidateBody = Schema.Struct({
  invalidated: Schema.Literals(["module", "realm"]),
  realmUrl: Schema.String,
  /** The canonical paths invalidated (empty for a realm). */
  paths: Schema.Array(Schema.String)
})
export type InvalidateBody = typeof InvalidateBody.Type

/** The body of `GET /_cache/health`. */
export const HealthBody = Schema.Struct({
  status: Schema.Literals(["ok", "unavailable"]),
  /** Omitted when it is a `file:` URL (it would show a file-system path to anyone). */
  realmUrl: Schema.optional(Schema.String),
  message: Schema.optional(Schema.String)
})
export type HealthBody = typeof HealthBody.Type

/** The query of `POST /_cache/invalidate`. */
const InvalidateQuery = Schema.Struct({ path: Schema.optional(Schema.String) })

// -----------------------------------------------------------------------------
// Headers
// -----------------------------------------------------------------------------

/** Headers of the admin routes: no CORS, no content sniffing. */
const adminHeaders = { "x-content-type-options": "nosniff" } as const


const preflight = (request: HttpServerRequest.HttpServerRequest) =>
  HttpServerResponse.empty({
    status: 204,
    headers: {
      ...corsHeaders,
      "access-control-allow-methods": "GET, HEAD, POST, OPTIONS",
      "access-control-allow-headers": request.headers["access-control-request-headers"] ?? "*",
      "access-control-max-age": "86400"
    }
  })

/** Content types of raw files, by extension; anything else is `application/octet-stream`. */
export const rawContentTypes: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/x-icon",
  ".wasm": "application/wasm",
  ".woff": "font/woff",
  ".woff2": "font/woff2"
}

const contentTypeOf = (file: string): string =>
  rawContentTypes[path.posix.extname(file).toLowerCase()] ?? "application/octet-stream"

const quoted = (hex: string) => `"${hex.slice(0, 32)}"`

/** The strong ETag of a transpiled module: the same in every process that has the same source and pipeline. */
export const moduleEtag = (module: Pick<CachedModule, "sourceHash" | "fingerprint">): string =>
  quoted(hashSource(module.sourceHash + module.fingerprint))

/** The strong ETag of a raw file's bytes. */
export const rawEtag = (bytes: Uint8Array): string => quoted(hashSource(bytes))

/**
 * Whether an `If-None-Match` header matches an ETag: `*`, or a comma-separated list of
 * entity tags compared weakly (as RFC 9110 prescribes for If-None-Match). Malformed
 * entries never match.
 */
export const ifNoneMatches: (header: string | undefined, etag: string) => boolean = FastPath.ifNoneMatches

// -----------------------------------------------------------------------------
// Responses
// -----------------------------------------------------------------------------

const json = (status: number, body: unknown, extra: Record<string, string> = {}) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { ...corsHeaders, "cache-control": "no-cache", ...extra } })

/** A JSON answer of an admin route: no CORS headers. */
const adminJson = (status: number, body: unknown, extra: Record<string, string> = {}) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { ...adminHeaders, "cache-control": "no-store", ...extra } })

const isAdminPath = (urlPath: string): boolean => urlPath === "/_cache" || urlPath.startsWith("/_cache/")

/**
 * Replaces every occurrence of the given absolute directories in a text by `<realm>`, so
 * that no answer shows a file-system path. With `systemError`, also any other quoted
 * absolute path (`'/...'`, as Node's system errors quote them).
 */
export const scrubPaths = (text: string, directories: ReadonlyArray<string>, systemError = false): string => {
  let result = text
  for (const dir of [...directories].sort((a, b) => b.length - a.length)) {
    if (dir.length > 1) result = result.split(dir).join("<realm>")
  }
  return systemError ? result.replace(/'\/[^']*'/g, "'<path>'") : result
}

/** The status of each failure of a module request. */
export const statusOf = (error: GetError): number => {
  switch (error._tag) {
    case "InvalidPathError":
      return 400
    case "ModuleNotFoundError":
      return 404
    case "SourceTooLargeError":
      return 413
    case "TranspileError":
      return 422
    case "SourceReadError":
      return 503
    case "TranspileWorkerCrashError":
    case "TranspileMemoryLimitError":
      return 500
    case "TranspileQueueFullError":
      return 503
    case "TranspileTimeoutError":
      return 504
  }
}

/**
 * The JSON error response of a failure. `hidden` lists absolute directories (the realm's)
 * that must not appear in the answer: they are replaced by `<realm>`.
 */
export const errorResponse = (
  error: GetError,
  hidden: ReadonlyArray<string> = []
): HttpServerResponse.HttpServerResponse =>
  json(
    statusOf(error),
    errorBodyOf(error, hidden),
    error._tag === "TranspileQueueFullError" ? { "retry-after": "1" } : undefined
  )

/** The body of a failure's error response, with the `hidden` directories replaced by `<realm>`. */
export const errorBodyOf = (error: GetError, hidden: ReadonlyArray<string> = []): ErrorBody => {
  // A transpile error's message is about the module's own text: only the realm's path is hidden there.
  const systemError = error._tag === "SourceReadError" || error._tag === "InvalidPathError"
  const base = {
    error: error._tag,
    message: scrubPaths(error.message, hidden, systemError),
    path: scrubPaths(error.path, hidden, systemError)
  }
  switch (error._tag) {
    case "InvalidPathError":
      return { ...base, reason: scrubPaths(error.reason, hidden, true) }
    case "TranspileError":
      return { ...base, line: error.line ?? null, column: error.column ?? null }
    case "SourceTooLargeError":
      return { ...base, size: error.size, limit: error.limit }
    case "ModuleNotFoundError":
    case "SourceReadError":
    case "TranspileMemoryLimitError":
    case "TranspileTimeoutError":
    case "TranspileQueueFullError":
      return base
    case "TranspileWorkerCrashError":
      return { ...base, reason: error.reason }
  }
}

/** The realm directory as given and as its real path: never shown in an answer. */
const hiddenDirectories = (realmDir: string): ReadonlyArray<string> => {
  try {
    return [realmDir, realpathSync(realmDir)]
  } catch {
    return [realmDir]
  }
}

/** The path part of a request URL, as sent (still percent-encoded). */
const pathOf = (url: string): string => {
  const end = url.search(/[?#]/)
  const pathname = end === -1 ? url : url.slice(0, end)
  return pathname.startsWith("/") ? pathname : `/${pathname}`
}

const encodePath = (plain: string): string => plain.split("/").map(encodeURIComponent).join("/")

/** A glimmer-scoped CSS module (see {@link ScopedCss}): decoded from its URL, `text/css`; 400 when it does not decode. */
const scopedCss = (request: HttpServerRequest.HttpServerRequest): HttpServerResponse.HttpServerResponse => {
  const urlPath = pathOf(request.url)
  const css = ScopedCss.scopedCssOf(urlPath)
  if (css === undefined) {
    return json(400, { error: "InvalidPathError", message: "malformed scoped CSS", path: urlPath, reason: "malformed scoped CSS" } satisfies ErrorBody)
  }
  const body = new TextEncoder().encode(css)
  const etag = rawEtag(body)
  const headers = { ...corsHeaders, etag, "cache-control": "no-cache" }
  if (ifNoneMatches(request.headers["if-none-match"], etag)) return HttpServerResponse.empty({ status: 304, headers })
  return HttpServerResponse.uint8Array(body, { headers, contentType: "text/css; charset=utf-8" })
}

// -----------------------------------------------------------------------------
// Routes
// -----------------------------------------------------------------------------

/**
 * The realm's routes (modules, raw files, admin and preflight) over the {@link ModuleCache}
 * and {@link RealmFiles} services. Put it into any Effect HTTP server with `HttpRouter.serve`
 * (it claims `/*`, so mount it on a server of its own or merge it under your other routes).
 */
export const routes: Layer.Layer<never, never, HttpRouter.HttpRouter | ModuleCache | RealmFiles> = HttpRouter.use(
  Effect.fnUntraced(function*(router) {
    const cache = yield* ModuleCache
    const files = yield* RealmFiles
    const adminToken = yield* Effect.serviceOption(AdminToken.AdminToken)
    const hidden = hiddenDirectories(files.realmDir)

    const raw = Option.getOrElse(
      yield* Effect.serviceOption(RawFileCache.RawFileCache),
      // Without the layer's cache no watcher tells about changes: raw files are read each time.
      () => new RawFileCache.RawFiles(0)
    )
    const fast = yield* Effect.serviceOption(FastPath.FastPath)
    if (fast._tag === "Some") fast.value.install(cache, raw)

    // An L1 hit returns the same module object each time: encode it and hash its ETag once.
    const encodings = new WeakMap<CachedModule, { readonly bytes: Uint8Array; readonly etag: string }>()
    const encoder = new TextEncoder()
    const encoded = (module: CachedModule) => {
      let encoding = encodings.get(module)
      if (encoding === undefined) {
        encoding = { bytes: encoder.encode(module.body), etag: moduleEtag(module) }
        encodings.set(module, encoding)
      }
      return encoding
    }

    const serveFile = (request: HttpServerRequest.HttpServerRequest) =>
      Effect.gen(function*() {
        const urlPath = pathOf(request.url)
        if (ScopedCss.isScopedCssPath(urlPath)) return scopedCss(request)
        // Before resolving: a file event during the request keeps its resolution from the fast path.
        const captured = fast._tag === "Some" ? fast.value.capture() : 0
        const resolved = yield* files.resolve(urlPath)
        const ifNoneMatch = request.headers["if-none-match"]
        if (!resolved.executable) {
          let answer = raw.get(resolved.path)
          if (answer === undefined) {
            const before = raw.capture()
            const file = yield* files.readRaw(resolved.path)
            answer = FastPath.answerOf(file.bytes, rawEtag(file.bytes), contentTypeOf(resolved.path))
            raw.fill(resolved.path, answer, before)
          }
          if (fast._tag === "Some") fast.value.remember(urlPath, false, resolved.path, captured)
          const headers = { ...corsHeaders, etag: answer.etag, "cache-control": "no-cache" }
          if (ifNoneMatches(ifNoneMatch, answer.etag)) return HttpServerResponse.empty({ status: 304, headers })
          return HttpServerResponse.uint8Array(answer.bytes, { headers, contentType: contentTypeOf(resolved.path) })
        }
        const key = moduleKey(files.realmUrl, resolved.path)
        const { module, outcome } = yield* cache.get(key)
        const { bytes, etag } = encoded(module)
        // Only after an L1 hit answered here: the first hit of each path still gets its span.
        if (fast._tag === "Some" && outcome === "l1") {
          fast.value.l1Answer(module, bytes, etag, javascriptContentType)
          fast.value.remember(urlPath, true, keyString(key), captured)
        }
        const headers = { ...corsHeaders, etag, "cache-control": "no-cache", "x-module-cache": outcome }
        if (ifNoneMatches(ifNoneMatch, etag)) return HttpServerResponse.empty({ status: 304, headers })
        return HttpServerResponse.uint8Array(bytes, { headers, contentType: javascriptContentType })
      }).pipe(Effect.catch((error) => Effect.succeed(errorResponse(error, hidden))))

    const health = Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.tryPromise(() => stat(files.realmDir)))
      const shown = files.realmUrl.startsWith("file:") ? {} : { realmUrl: files.realmUrl }
      if (exit._tag === "Success" && exit.value.isDirectory()) {
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

    const stats = Effect.map(cache.stats, (counters) => {
      const body: StatsBody = { realmUrl: files.realmUrl, ...counters }
      return adminJson(200, body)
    })

    /** The keys a request path names: its canonical path, or (when it is gone) its candidates, plus cached keys below it. */
    const keysOf = (plain: string) =>
      Effect.gen(function*() {
        const encoded = encodePath(plain.startsWith("/") ? plain : `/${plain}`)
        const lexical = yield* FileSystemSources.validatePath(encoded)
        const resolved = yield* Effect.exit(files.resolve(encoded))
        const keys = new Set<string>()
        const known = files.knownPaths()
        if (resolved._tag === "Success") {
          keys.add(resolved.value.path)
        } else {
          // A path that names no file now: only keys this process has read (and may cache)
          // are invalidated, so that invalidating made-up paths writes nothing.
          const candidates = FileSystemSources.isExecutable(lexical)
            ? [lexical]
            : FileSystemSources.executableExtensions.map((extension) => lexical + extension)
          for (const candidate of candidates) if (known.includes(candidate)) keys.add(candidate)
        }
        const prefix = lexical.replace(/\/?index\.html$/, "")
        for (const path of known) {
          if (prefix !== "" && path.startsWith(`${prefix}/`)) keys.add(path)
        }
        return Array.from(keys).sort()
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
      const keys = yield* keysOf(target)
      const lexical = yield* FileSystemSources.validatePath(encodePath(target.startsWith("/") ? target : `/${target}`))
      raw.invalidate(lexical.replace(/\/?index\.html$/, ""))
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
    yield* router.add("OPTIONS", "/*", (request) => Effect.succeed(preflight(request)))
    yield* router.add("OPTIONS", "/", (request) => Effect.succeed(preflight(request)))
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
        const checked = yield* Effect.exit(FileSystemSources.validatePath(urlPath))
        if (checked._tag === "Failure") {
          const error = Exit.findErrorOption(checked)
          if (error._tag === "Some") return errorResponse(error.value)
        }
        const body = { error: "RouteNotFound", message: `no route for ${request.method} ${urlPath}`, path: urlPath } satisfies ErrorBody
        return isAdminPath(urlPath) ? adminJson(404, body) : json(404, body)
      })
  )

// -----------------------------------------------------------------------------
// Watcher
// -----------------------------------------------------------------------------

/** What the watcher reports to its consumer: changed paths, or that the watch was lost or regained. */
type WatchEvent =
  | { readonly _tag: "Changed"; readonly path: string }
  | { readonly _tag: "Unknown" }

/** How long the realm must be quiet before the watcher invalidates (atomic saves come as several events). */
const batchWindow = Duration.millis(25)

/** The longest the watcher gathers events under constant churn before it invalidates. */
const maxBatchWait = Duration.millis(500)

/** How often the watcher checks that its watch is alive, and re-opens a lost one. */
const superviseInterval = Duration.millis(500)

/**
 * Watches the realm directory and invalidates changed modules through
 * {@link ModuleCache.invalidate} (which also tells peers).
 */
export const watcher: Layer.Layer<never, never, ModuleCache | RealmFiles> = Layer.effectDiscard(Effect.gen(function*() {
  const cache = yield* ModuleCache
  const files = yield* RealmFiles
  const events = yield* Queue.unbounded<WatchEvent>()
  const fast = Option.getOrUndefined(yield* Effect.serviceOption(FastPath.FastPath))
  const raw = Option.getOrUndefined(yield* Effect.serviceOption(RawFileCache.RawFileCache))
  const watching = (value: boolean) => {
    files.watched(value)
    fast?.watched(value)
    raw?.watched(value)
  }

  let current: { readonly watcher: RealmWatcher.TreeWatch; readonly ino: number } | undefined
  let lost = false

  const close = () => {
    if (current === undefined) return
    const { watcher } = current
    current = undefined
    watching(false)
    try {
      watcher.close()
    } catch {
      // already closed
    }
  }

  const open = Effect.tryPromise(async () => {
    const info = await stat(files.realmDir)
    let handle: RealmWatcher.TreeWatch | undefined
    // An event about the realm directory itself (moved or deleted): the watch is re-opened.
    const giveUp = () => {
      if (handle === undefined || current?.watcher !== handle) return
      close()
      lost = true
      Queue.offerUnsafe(events, { _tag: "Unknown" })
    }
    handle = await RealmWatcher.watchTree({
      root: files.realmDir,
      // (The embedded store's own writes land in the ignored data directory.)
      isIgnored: files.isIgnored,
      onChange: (relative) => {
        files.changed()
        fast?.changed()
        Queue.offerUnsafe(events, { _tag: "Changed", path: relative })
      },
      onLost: giveUp
    })
    current = { watcher: handle, ino: info.ino }
    watching(true)
  })

  /** Re-opens a lost watch; notices a realm directory that vanished or was replaced. */
  const supervise = Effect.gen(function*() {
    if (current !== undefined) {
      const info = yield* Effect.exit(Effect.tryPromise(() => stat(files.realmDir)))
      if (info._tag === "Success" && info.value.ino === current.ino) return
      yield* Effect.logWarning(`module-transpile-cache: lost the watch of ${files.realmDir}`)
      close()
      lost = true
      Queue.offerUnsafe(events, { _tag: "Unknown" })
    }
    const opened = yield* Effect.exit(open)
    if (opened._tag === "Success" && lost) {
      lost = false
      yield* Effect.logInfo(`module-transpile-cache: watching ${files.realmDir} again`)
      Queue.offerUnsafe(events, { _tag: "Unknown" })
    }
  })

  const keysOf = (changed: string): ReadonlyArray<string> => {
    const relative = changed.split(path.sep).join("/")
    if (relative === "" || files.isIgnored(relative)) return []
    const keys = new Set<string>()
    if (FileSystemSources.isExecutable(relative)) keys.add(relative)
    for (const known of files.knownPaths()) {
      if (known === relative || known.startsWith(`${relative}/`)) keys.add(known)
    }
    return Array.from(keys)
  }

  /**
   * After a lost watch: re-reads every module this process has read, and invalidates only
   * those whose content hash changed (or that are gone). Never a realm-wide wipe.
   */
  const rescan = Effect.gen(function*() {
    let invalidated = 0
    yield* Effect.forEach(files.knownPaths(), (known) =>
      Effect.gen(function*() {
        const before = files.knownHash(known)
        const key = moduleKey(files.realmUrl, known)
        const now = yield* Effect.exit(files.read(key))
        const gone = now._tag === "Failure"
        if (!gone && now.value.hash === before) return
        invalidated++
        yield* cache.invalidate(key)
        if (gone) files.forget(known)
      }), { discard: true, concurrency: 8 })
    yield* Effect.logInfo(`module-transpile-cache: rescanned the realm; ${invalidated} module(s) changed`)
  })

  const apply = (batch: ReadonlyArray<WatchEvent>) =>
    Effect.gen(function*() {
      if (batch.some((event) => event._tag === "Unknown")) {
        raw?.clear()
        yield* rescan
        return
      }
      const keys = new Set<string>()
      for (const event of batch) {
        if (event._tag !== "Changed") continue
        raw?.invalidate(event.path.split(path.sep).join("/"))
        for (const key of keysOf(event.path)) keys.add(key)
      }
      yield* Effect.forEach(keys, (key) =>
        Effect.andThen(
          cache.invalidate(moduleKey(files.realmUrl, key)),
          Effect.promise(() =>
            stat(path.join(files.realmDir, ...key.split("/"))).then(() => undefined, () => files.forget(key))
          )
        ), { discard: true, concurrency: 8 })
    })

  yield* Effect.addFinalizer(() => Effect.sync(close))
  const first = yield* Effect.exit(open)
  if (first._tag === "Failure") {
    lost = true
    yield* Effect.logWarning(`module-transpile-cache: cannot watch ${files.realmDir} yet; retrying`)
  }
  yield* supervise.pipe(Effect.repeat(Schedule.spaced(superviseInterval)), Effect.forkScoped)
  yield* Effect.gen(function*() {
    // Debounced: gathers events until the realm is quiet for a batch window, or for at most
    // maxBatchWait under constant churn.
    // Keeps only what apply needs: each changed path once, and one Unknown (under "").
    const batch = new Map<string, WatchEvent>()
    const add = (gathered: Iterable<WatchEvent>) => {
      for (const event of gathered) batch.set(event._tag === "Changed" ? event.path : "", event)
    }
    // Leading edge: the first changes after a quiet spell are applied at once, so that an
    // edit reaches the next request without waiting for the window.
    add(yield* Queue.takeAll(events))
    const leading = Array.from(batch.values())
    batch.clear()
    yield* apply(leading)
    // Trailing edge: what follows (the rest of an atomic save, a checkout) is gathered and
    // applied once, so that a half-written state is never the last one applied.
    const started = Date.now()
    for (;;) {
      yield* Effect.sleep(batchWindow)
      const rest = yield* Queue.clear(events)
      add(rest)
      if (rest.length === 0 || Date.now() - started >= Duration.toMillis(maxBatchWait)) break
    }
    if (batch.size > 0) yield* apply(Array.from(batch.values()))
  }).pipe(
    Effect.catchCause((cause) => Effect.logWarning("module-transpile-cache: watcher batch failed", cause)),
    Effect.forever,
    Effect.forkScoped
  )
}))

// -----------------------------------------------------------------------------
// Preload
// -----------------------------------------------------------------------------

/**
 * Preloads the realm into L1 from L2 (see {@link ModuleCache.preload}) and logs a summary.
 * {@link layer} builds it after the {@link watcher} and before it listens, so that an edit
 * during the preload is never missed and the first request already finds L1 warm.
 */
export const preloader: Layer.Layer<never, never, ModuleCache | RealmFiles> = Layer.effectDiscard(Effect.gen(function*() {
  const cache = yield* ModuleCache
  const files = yield* RealmFiles
  const summary = yield* cache.preload(files.realmUrl)
  if (summary.rows > 0 || summary.error !== undefined) {
    yield* Effect.logInfo(`module-transpile-cache: ${Preload.formatSummary(summary)}`)
  }
}))

// -----------------------------------------------------------------------------
// Layers
// -----------------------------------------------------------------------------

/** What a realm is served from. */
export interface RealmOptions {
  readonly realmDir: string
  /** Defaults to the `file://` URL of the realm directory (with a trailing slash). */
  readonly realmUrl?: string | undefined
  readonly store: ModuleCacheLive.StoreChoice
  /** Largest source or raw file served (default 8 MiB). */
  readonly maxSourceBytes?: number | undefined
  /** Directories never served, besides dot directories (e.g. a data directory without a dot). */
  readonly excluded?: ReadonlyArray<string> | undefined
  readonly cache?: ModuleCacheOptions | undefined
  /** Prune L2 on a schedule while the layer lives (see {@link Pruner}); off when absent. */
  readonly prune?: Partial<Pruner.PrunerOptions> | undefined
}

/** The options of {@link layer}. */
export interface ServeOptions extends RealmOptions {
  /** Default 4201; 0 picks a free port. */
  readonly port?: number | undefined
  /** Default 127.0.0.1. */
  readonly host?: string | undefined
  /** Watch the realm directory for changes (default true). */
  readonly watch?: boolean | undefined
  /** How long shutdown waits for in-flight requests (default 10 s). */
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

/** Node's HTTP server under the given limits; `fast` answers warm requests before the router sees them. */
const makeNodeServer = (limits: ConnectionLimits, fast?: FastPath.FastPathHandler) => {
  const requestTimeout = Math.max(limits.requestTimeoutMillis, limits.headersTimeoutMillis)
  const server = createServer({
    keepAliveTimeout: limits.keepAliveTimeoutMillis,
    headersTimeout: limits.headersTimeoutMillis,
    requestTimeout,
    // How often Node checks the two timeouts above (its default, 30 s, would let a slow client stay that much longer).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMillis / 4)))
  })
  server.maxConnections = limits.maxConnections
  if (fast !== undefined) {
    // The router listens to "request" (NodeHttpServer); a request the fast path answered never reaches it.
    const emit = server.emit
    server.emit = function(this: typeof server, event: string | symbol, ...args: Array<unknown>): boolean {
      if (event === "request" && fast.handle(args[0] as IncomingMessage, args[1] as ServerResponse)) return true
      return emit.apply(this, [event, ...args] as Parameters<typeof emit>)
    } as typeof server.emit
  }
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

/** Why {@link layerServices} fails: the store's {@link ModuleCacheLive.LayerError}, or the realm directory cannot be read. */
export type RealmLayerError = ModuleCacheLive.LayerError | SourceReadError

/** The realm's files, its module sources and a ModuleCache over the chosen store. */
export const layerServices = (
  options: RealmOptions
): Layer.Layer<ModuleCache | RealmFiles | ModuleSources | RawFileCache.RawFileCache, RealmLayerError, Transpiler> =>
  Layer.merge((options.prune === undefined
    ? ModuleCacheLive.layer(options.store, options.cache ?? {})
    : Layer.merge(ModuleCacheModule.layer(options.cache ?? {}), Pruner.layer(options.prune)).pipe(
      Layer.provide(ModuleCacheLive.services(options.store))
    )).pipe(
    Layer.provideMerge(FileSystemSources.layer({
      realmDir: options.realmDir,
      realmUrl: options.realmUrl,
      maxSourceBytes: options.maxSourceBytes,
      excluded: options.excluded
    }))
  ), RawFileCache.layer(options.cache?.l1MaxBytes))

/**
 * Why {@link layer} fails: {@link RealmLayerError}, the HTTP server cannot listen (`ServeError`),
 * or the admin token file cannot be written (`AdminTokenError`).
 */
export type ServeLayerError = RealmLayerError | HttpServerError.ServeError | AdminToken.AdminTokenError

/**
 * Serves a realm on Node's HTTP server: {@link routes} and {@link watcher} over
 * {@link layerServices}. Logs `listening on <url>` once it accepts requests. Closing the
 * layer stops accepting, lets in-flight requests finish (up to the graceful timeout),
 * then closes the cache and its store.
 */
export const layer = (options: ServeOptions): Layer.Layer<never, ServeLayerError, Transpiler> => {
  const limits = { ...defaultLimits, ...options.limits }
  const fast = options.fastPath === false ? undefined : options.fastPath ?? new FastPath.FastPathHandler()
  const node = NodeHttpServer.layer(() => makeNodeServer(limits, fast), {
    port: options.port ?? 4201,
    host: options.host ?? "127.0.0.1",
    gracefulShutdownTimeout: options.gracefulShutdownTimeout ?? Duration.seconds(10)
  })
  const listenLog = Layer.effectDiscard(Effect.gen(function*() {
    const files = yield* RealmFiles
    const server = yield* HttpServer.HttpServer
    if (options.writeTokenFile === true && options.adminToken !== undefined && server.address._tag !== "UnixPathAddress") {
      // Before the listening line: whoever waits for it finds the file.
      yield* AdminToken.writeTokenFile(AdminToken.tokenFileOf(server.address.port), options.adminToken)
    }
    yield* HttpServer.addressFormattedWith((url) =>
      Effect.logInfo(`module-transpile-cache listening on ${url}/ (realm ${files.realmUrl}, store ${options.store._tag})`)
    )
  }))
  const server = listenLog.pipe(
    Layer.provide(
      // A global router middleware sees RouteNotFound (the `middleware` option of `serve`
      // wraps the server after the router has answered, so it never would).
      HttpRouter.serve(Layer.merge(routes, HttpRouter.middleware(notFoundMiddleware, { global: true })), {
        disableListenLog: true,
        disableLogger: true
      }).pipe(
        Layer.provideMerge(node),
        Layer.provide(options.adminToken === undefined ? Layer.empty : AdminToken.layer(options.adminToken))
      )
    )
  )
  // The watcher, then the preload, then the server: an edit during the preload is seen, and
  // the server listens once L1 is warm.
  const warmStart = options.watch === false ? preloader : Layer.provideMerge(preloader, watcher)
  // The drain is built first, so it is released last: after the server stopped taking requests.
  const app = server.pipe(Layer.provide(warmStart))
  return app.pipe(
    Layer.provide(fast === undefined ? Layer.empty : Layer.succeed(FastPath.FastPath, fast)),
    Layer.provide(layerServices(options))
  )
}
