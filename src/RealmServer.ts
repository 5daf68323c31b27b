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
 * Every response carries `access-control-allow-origin: *`; `OPTIONS` answers preflights.
 *
 * **Admin routes**: `GET /_cache/health` (200 when the realm directory is readable, else
 * 503), `GET /_cache/stats` ({@link StatsBody}), `POST /_cache/invalidate?path=P` (one
 * module by its request path, canonicalised) or without `path` (the whole realm)
 * ({@link InvalidateBody}).
 *
 * **Watcher**: a recursive `fs.watch` of the realm invalidates the key of every file that
 * is created, changed, deleted or renamed (and every cached key below a directory that
 * is), batched over a few milliseconds. Dotfiles and the data directory are ignored. When
 * the watch is lost (the realm directory vanishes or is replaced) the whole realm is
 * invalidated, and again once the watch is back.
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
import { Duration, Effect, Exit, Layer, Queue, Schedule, Schema } from "effect"
import { HttpRouter, HttpServer, HttpServerError, HttpServerRequest, HttpServerResponse } from "effect/http"
import { type FSWatcher, watch } from "node:fs"
import { stat } from "node:fs/promises"
import { createServer } from "node:http"
import * as path from "node:path"
import { ConnectionStats } from "./DatabaseConnections.ts"
import { type CachedModule, hashSource, javascriptContentType, moduleKey } from "./Domain.ts"
import type { GetError, SourceReadError } from "./Errors.ts"
import * as FileSystemSources from "./FileSystemSources.ts"
import { RealmFiles } from "./FileSystemSources.ts"
import { ModuleCache, type ModuleCacheOptions } from "./ModuleCache.ts"
import * as ModuleCacheLive from "./ModuleCacheLive.ts"
import * as Preload from "./Preload.ts"
import type { ModuleSources } from "./ModuleSources.ts"
import * as ScopedCss from "./ScopedCss.ts"
import type { Transpiler } from "./Transpiler.ts"

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
  realmUrl: Schema.String,
  message: Schema.optional(Schema.String)
})
export type HealthBody = typeof HealthBody.Type

/** The query of `POST /_cache/invalidate`. */
const InvalidateQuery = Schema.Struct({ path: Schema.optional(Schema.String) })

// -----------------------------------------------------------------------------
// Headers
// -----------------------------------------------------------------------------

/** Headers of every response: CORS for any origin, and no content sniffing. */
const corsHeaders = {
  "access-control-allow-origin": "*",
  "access-control-expose-headers": "etag, x-module-cache",
  "x-content-type-options": "nosniff"
} as const

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
export const ifNoneMatches = (header: string | undefined, etag: string): boolean => {
  if (header === undefined) return false
  if (header.length > 8192) return false
  for (const raw of header.split(",")) {
    const entry = raw.trim()
    if (entry === "*") return true
    const tag = entry.startsWith("W/") ? entry.slice(2) : entry
    if (tag.length >= 2 && tag.startsWith("\"") && tag.endsWith("\"") && tag === etag) return true
  }
  return false
}

// -----------------------------------------------------------------------------
// Responses
// -----------------------------------------------------------------------------

const json = (status: number, body: unknown, extra: Record<string, string> = {}) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { ...corsHeaders, "cache-control": "no-cache", ...extra } })

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

/** The JSON error response of a failure. */
export const errorResponse = (error: GetError): HttpServerResponse.HttpServerResponse => {
  const base = { error: error._tag, message: error.message, path: error.path }
  switch (error._tag) {
    case "InvalidPathError":
      return json(statusOf(error), { ...base, reason: error.reason } satisfies ErrorBody)
    case "TranspileError":
      return json(statusOf(error), { ...base, line: error.line ?? null, column: error.column ?? null } satisfies ErrorBody)
    case "SourceTooLargeError":
      return json(statusOf(error), { ...base, size: error.size, limit: error.limit } satisfies ErrorBody)
    case "ModuleNotFoundError":
    case "SourceReadError":
    case "TranspileMemoryLimitError":
    case "TranspileTimeoutError":
      return json(statusOf(error), base satisfies ErrorBody)
    case "TranspileWorkerCrashError":
      return json(statusOf(error), { ...base, reason: error.reason } satisfies ErrorBody)
    case "TranspileQueueFullError":
      return json(statusOf(error), base satisfies ErrorBody, { "retry-after": "1" })
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
        if (ScopedCss.isScopedCssPath(pathOf(request.url))) return scopedCss(request)
        const resolved = yield* files.resolve(pathOf(request.url))
        const ifNoneMatch = request.headers["if-none-match"]
        if (!resolved.executable) {
          const raw = yield* files.readRaw(resolved.path)
          const etag = rawEtag(raw.bytes)
          const headers = { ...corsHeaders, etag, "cache-control": "no-cache" }
          if (ifNoneMatches(ifNoneMatch, etag)) return HttpServerResponse.empty({ status: 304, headers })
          return HttpServerResponse.uint8Array(raw.bytes, { headers, contentType: contentTypeOf(resolved.path) })
        }
        const { module, outcome } = yield* cache.get(moduleKey(files.realmUrl, resolved.path))
        const { bytes, etag } = encoded(module)
        const headers = { ...corsHeaders, etag, "cache-control": "no-cache", "x-module-cache": outcome }
        if (ifNoneMatches(ifNoneMatch, etag)) return HttpServerResponse.empty({ status: 304, headers })
        return HttpServerResponse.uint8Array(bytes, { headers, contentType: javascriptContentType })
      }).pipe(Effect.catch((error) => Effect.succeed(errorResponse(error))))

    const health = Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.tryPromise(() => stat(files.realmDir)))
      if (exit._tag === "Success" && exit.value.isDirectory()) {
        return json(200, { status: "ok", realmUrl: files.realmUrl } satisfies HealthBody)
      }
      return json(503, {
        status: "unavailable",
        realmUrl: files.realmUrl,
        message: `realm directory ${files.realmDir} is not available`
      } satisfies HealthBody)
    })

    const stats = Effect.map(cache.stats, (counters) => {
      const body: StatsBody = { realmUrl: files.realmUrl, ...counters }
      return json(200, body)
    })

    /** The keys a request path names: its canonical path, or (when it is gone) its candidates, plus cached keys below it. */
    const keysOf = (plain: string) =>
      Effect.gen(function*() {
        const encoded = encodePath(plain.startsWith("/") ? plain : `/${plain}`)
        const lexical = yield* FileSystemSources.validatePath(encoded)
        const resolved = yield* Effect.exit(files.resolve(encoded))
        const keys = new Set<string>()
        if (resolved._tag === "Success") {
          keys.add(resolved.value.path)
        } else if (FileSystemSources.isExecutable(lexical)) {
          keys.add(lexical)
        } else {
          for (const extension of FileSystemSources.executableExtensions) keys.add(lexical + extension)
        }
        const prefix = lexical.replace(/\/?index\.html$/, "")
        for (const known of files.knownPaths()) {
          if (prefix !== "" && known.startsWith(`${prefix}/`)) keys.add(known)
        }
        return Array.from(keys).sort()
      })

    const invalidate = Effect.gen(function*() {
      const query = yield* Effect.exit(HttpRouter.schemaParams(InvalidateQuery))
      if (query._tag === "Failure") {
        return json(400, { error: "BadRequest", message: "path must be given at most once", path: "" } satisfies ErrorBody)
      }
      const target = query.value.path
      if (target === undefined || target === "" || target === "/") {
        yield* cache.invalidateRealm(files.realmUrl)
        return json(200, { invalidated: "realm", realmUrl: files.realmUrl, paths: [] } satisfies InvalidateBody)
      }
      const keys = yield* keysOf(target)
      yield* Effect.forEach(keys, (key) => cache.invalidate(moduleKey(files.realmUrl, key)), { discard: true })
      return json(200, { invalidated: "module", realmUrl: files.realmUrl, paths: keys } satisfies InvalidateBody)
    }).pipe(Effect.catch((error) => Effect.succeed(errorResponse(error))))

    yield* router.add("GET", "/_cache/health", health)
    yield* router.add("GET", "/_cache/stats", stats)
    yield* router.add("POST", "/_cache/invalidate", invalidate)
    yield* router.add("OPTIONS", "/*", (request) => Effect.succeed(preflight(request)))
    yield* router.add("OPTIONS", "/", (request) => Effect.succeed(preflight(request)))
    yield* router.add("GET", "/*", serveFile)
    yield* router.add("GET", "/", serveFile)
  })
)

/**
 * Middleware for a server that serves only the realm: a request the router cannot match
 * (its URL does not even decode, or its method is not served) gets a JSON error with the
 * CORS headers: 400 when the path is invalid, else 404 (405 for a known path and another
 * method is not distinguished).
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
        return json(404, { error: "RouteNotFound", message: `no route for ${request.method} ${urlPath}`, path: urlPath } satisfies ErrorBody)
      })
  )

// -----------------------------------------------------------------------------
// Watcher
// -----------------------------------------------------------------------------

/** What the watcher reports to its consumer: changed paths, or that the watch was lost or regained. */
type WatchEvent =
  | { readonly _tag: "Changed"; readonly path: string }
  | { readonly _tag: "Unknown" }

/** How long the watcher gathers events before it invalidates (atomic saves come as several events). */
const batchWindow = Duration.millis(25)

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

  let current: { readonly watcher: FSWatcher; readonly ino: number } | undefined
  let lost = false

  const close = () => {
    if (current === undefined) return
    const { watcher } = current
    current = undefined
    files.watched(false)
    try {
      watcher.close()
    } catch {
      // already closed
    }
  }

  const open = Effect.tryPromise(async () => {
    const info = await stat(files.realmDir)
    const giveUp = () => {
      if (current?.watcher !== handle) return
      close()
      lost = true
      Queue.offerUnsafe(events, { _tag: "Unknown" })
    }
    const handle = watch(files.realmDir, { recursive: true }, (_event, filename) => {
      // An event without a file name is about the realm directory itself (moved or deleted):
      // Node's recursive watcher delivers nothing more after it, so the watch is re-opened.
      if (typeof filename !== "string" || filename === "") giveUp()
      else if (!files.isIgnored(filename.split(path.sep).join("/"))) {
        // (The embedded store's own writes land in the ignored data directory.)
        files.changed()
        Queue.offerUnsafe(events, { _tag: "Changed", path: filename })
      }
    })
    handle.on("error", giveUp)
    current = { watcher: handle, ino: info.ino }
    files.watched(true)
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

  const apply = (batch: ReadonlyArray<WatchEvent>) =>
    Effect.gen(function*() {
      if (batch.some((event) => event._tag === "Unknown")) {
        yield* cache.invalidateRealm(files.realmUrl)
        return
      }
      const keys = new Set<string>()
      for (const event of batch) if (event._tag === "Changed") for (const key of keysOf(event.path)) keys.add(key)
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
    const head = yield* Queue.takeAll(events)
    yield* Effect.sleep(batchWindow)
    const rest = yield* Queue.clear(events)
    yield* apply([...head, ...rest])
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
}

/** Why {@link layerServices} fails: the store's {@link ModuleCacheLive.LayerError}, or the realm directory cannot be read. */
export type RealmLayerError = ModuleCacheLive.LayerError | SourceReadError

/** The realm's files, its module sources and a ModuleCache over the chosen store. */
export const layerServices = (
  options: RealmOptions
): Layer.Layer<ModuleCache | RealmFiles | ModuleSources, RealmLayerError, Transpiler> =>
  ModuleCacheLive.layer(options.store, options.cache ?? {}).pipe(
    Layer.provideMerge(FileSystemSources.layer({
      realmDir: options.realmDir,
      realmUrl: options.realmUrl,
      maxSourceBytes: options.maxSourceBytes,
      excluded: options.excluded
    }))
  )

/** Why {@link layer} fails: {@link RealmLayerError}, or the HTTP server cannot listen (`ServeError`). */
export type ServeLayerError = RealmLayerError | HttpServerError.ServeError

/**
 * Serves a realm on Node's HTTP server: {@link routes} and {@link watcher} over
 * {@link layerServices}. Logs `listening on <url>` once it accepts requests. Closing the
 * layer stops accepting, lets in-flight requests finish (up to the graceful timeout),
 * then closes the cache and its store.
 */
export const layer = (options: ServeOptions): Layer.Layer<never, ServeLayerError, Transpiler> => {
  const node = NodeHttpServer.layer(() => createServer({ keepAliveTimeout: 5_000 }), {
    port: options.port ?? 4201,
    host: options.host ?? "127.0.0.1",
    gracefulShutdownTimeout: options.gracefulShutdownTimeout ?? Duration.seconds(10)
  })
  const listenLog = Layer.effectDiscard(Effect.gen(function*() {
    const files = yield* RealmFiles
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
      }).pipe(Layer.provideMerge(node))
    )
  )
  // The watcher, then the preload, then the server: an edit during the preload is seen, and
  // the server listens once L1 is warm.
  const warmStart = options.watch === false ? preloader : Layer.provideMerge(preloader, watcher)
  // The drain is built first, so it is released last: after the server stopped taking requests.
  const app = server.pipe(Layer.provide(warmStart))
  return app.pipe(Layer.provide(layerServices(options)))
}
