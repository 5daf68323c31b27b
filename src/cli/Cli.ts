/**
 * The `transpile-cache` command line:
 *
 * - `serve [realmDir] [--realm MOUNT=DIR ...] [--private MOUNT ...] [--realm-url-base URL] [--port 4201]
 *   [--host 127.0.0.1] [--realm-url URL] [--data-dir DIR] [--store pg|pglite|memory]
 *   [--pipeline standard|ember|boxel] [--engine native|babel] [--ember-source DIR] [--host-packages DIR]`
 *   serves realms (see {@link RealmServer}): the positional directory at `/` (the same as
 *   `--realm /=DIR`), and each `--realm` at its mount; `--private` marks a mount's realm as
 *   private (read tokens signed with `MTC_READ_SECRET`, or the admin token). It runs until SIGINT or SIGTERM, then drains (see
 *   {@link Listener}: it stops accepting, answers what it accepted with `connection: close`,
 *   within `MTC_HTTP_DRAIN_TIMEOUT`) and exits 0. It listens only once the router is attached,
 *   and logs one line `... listening on http://HOST:PORT/ ...` then.
 * - `warm [realmDir] [--realm MOUNT=DIR ...] [same store flags] [--concurrency N]` transpiles every executable
 *   module of every realm into L2. Progress goes to stderr (one `\r` line on a terminal, a line per tenth
 *   otherwise), the summary to stdout; it ends with the line of a preload run afterwards
 *   (what a server starting now would load into L1). **Exits 1 when any module failed**, 0
 *   otherwise.
 * - `read-token --realm MOUNT [--realm ...] [--ttl "1 hour"]` prints a read token of private realms,
 *   signed with `MTC_READ_SECRET`.
 * - `stats [--url http://127.0.0.1:4201]` and `invalidate [path] [--realm MOUNT] [--url ...]` call a running
 *   server's admin routes and print their JSON. They send the admin token: `MTC_ADMIN_TOKEN`,
 *   else the token file `serve` wrote for that port (see {@link AdminToken}).
 *
 * Store selection: `--store` wins; without it, Postgres when `DATABASE_URL` is set, else the
 * embedded PGlite store in the data directory: `--data-dir`, else `<realmDir>/.transpile-cache`
 * for one positional realm, else `./.transpile-cache` (one data directory for every realm of the process).
 * Postgres TLS follows libpq: `sslmode`, `sslrootcert`, `sslcert`, `sslkey` in the URL, or
 * `PGSSLMODE` & co. (see `store/PgTls.ts`); a TLS failure is one line naming its cause. The
 * realm URL is `--realm-url-base` + the mount when given, else the `file://` URL of the realm
 * directory with a trailing slash, so processes serving the same directory share rows. `MTC_MAX_SOURCE_BYTES` bounds both the
 * transpiler and the files served; the `MTC_*` cache tuning variables are read as in
 * `ModuleCache.optionsConfig`. The pipeline comes from `--pipeline`, else `MTC_PIPELINE`, else
 * `standard`; the ember-source of `ember`/`boxel` from `--ember-source`, else `MTC_EMBER_SOURCE`;
 * the host's `node_modules` (where the packages whose runtimes the output imports come from)
 * from `--host-packages`, else `MTC_HOST_PACKAGES`;
 * the engine of `standard` from `--engine`, else `MTC_ENGINE`, else `native` (oxc).
 *
 * Transpiles run in a pool of worker threads (see {@link TranspilerPool}): `--transpile-workers N`
 * (or `MTC_TRANSPILE_WORKERS`, default the available parallelism; 0 runs Babel in-process),
 * `MTC_TRANSPILE_MAX_MEMORY` (MiB per worker) and `MTC_TRANSPILE_TIMEOUT` (default 30 s).
 * `warm` keeps every worker busy: its default concurrency is twice the workers (at least 4).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Argument from "effect/cli/Argument"
import * as CliError from "effect/cli/CliError"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as path from "node:path"
import * as AdminToken from "../http/AdminToken.ts"
import * as BabelTranspiler from "../transpiler/BabelTranspiler.ts"
import * as DataDirLock from "../store/DataDirLock.ts"
import { type GetResult, moduleKey, type Outcome } from "../domain/Domain.ts"
import type { GetError } from "../domain/Errors.ts"
import { messageOf } from "../internal/errors.ts"
import * as FileSystemSources from "../realm/FileSystemSources.ts"
import * as JitWarmup from "../http/JitWarmup.ts"
import * as Listener from "../http/Listener.ts"
import * as Realms from "../realm/Realms.ts"
import * as ReadAccess from "../http/ReadAccess.ts"
import { ModuleCache, optionsConfig } from "../cache/ModuleCache.ts"
import * as ModuleCacheLive from "../live/ModuleCacheLive.ts"
import * as PgConnectError from "../store/PgConnectError.ts"
import * as Preload from "../cache/Preload.ts"
import * as Pruner from "../store/Pruner.ts"
import * as RealmServer from "../http/RealmServer.ts"
import * as StatsTable from "./StatsTable.ts"
import * as Tracing from "../live/Tracing.ts"
import * as TranspilerPool from "../transpiler/TranspilerPool.ts"

/** The version printed by `--version`. */
const version = "0.1.0"

/** A failure shown to the user as its message alone (exit code 1). */
class CliFailure extends Schema.TaggedError<CliFailure>()("CliFailure", {
  message: Schema.String
}) {
  override get [CliError.userMessage]() {
    return this.message
  }
}

// -----------------------------------------------------------------------------
// Store selection
// -----------------------------------------------------------------------------

/** The values of `--store`: `pg` and `postgres` are the same. */
const storeFlagValues = ["pg", "postgres", "pglite", "memory"] as const
type StoreFlag = (typeof storeFlagValues)[number]

/** Where a realm's cache lives, as chosen by the flags and the environment. */
interface StoreSelection {
  readonly store: ModuleCacheLive.StoreChoice
  /** Directories the server must not serve (the data directory). */
  readonly excluded: ReadonlyArray<string>
}

/**
 * Picks the store: `--store` wins; otherwise Postgres when `DATABASE_URL` is set, else
 * PGlite in the data directory (default `<realmDir>/.transpile-cache`).
 */
const selectStore = (options: {
  /** The directory of the one positional realm; without it the data directory defaults to `./.transpile-cache`. */
  readonly realmDir: string | undefined
  readonly store: StoreFlag | undefined
  readonly dataDir: string | undefined
  /** The Postgres choice from the environment (`DATABASE_URL` and its tuning), if any. */
  readonly postgres: ModuleCacheLive.StoreChoice | undefined
}): Effect.Effect<StoreSelection, CliFailure> => {
  const dataDir = path.resolve(options.dataDir ?? path.join(options.realmDir ?? ".", FileSystemSources.dataDirName))
  const kind = options.store ?? (options.postgres !== undefined ? "pg" : "pglite")
  switch (kind) {
    case "pg":
    case "postgres":
      return options.postgres === undefined
        ? Effect.fail(new CliFailure({ message: "--store pg needs DATABASE_URL" }))
        : Effect.succeed({ store: options.postgres, excluded: [] })
    case "pglite":
      return Effect.succeed({ store: { _tag: "pglite", dataDir }, excluded: [dataDir, DataDirLock.lockFileOf(dataDir)] })
    case "memory":
      return Effect.succeed({ store: { _tag: "memory" }, excluded: [] })
  }
}

// -----------------------------------------------------------------------------
// Shared flags
// -----------------------------------------------------------------------------

const realmDirArgument = Argument.Directory("realmDir", { mustExist: true }).pipe(
  Argument.withDescription("The realm directory, served at / (optional with --realm)"),
  Argument.optional
)

/** A flag that may be left out, with its help text. */
const optionalFlag = <A>(flag: Flag.Flag<A>, description: string): Flag.Flag<Option.Option<A>> =>
  flag.pipe(Flag.withDescription(description), Flag.optional)

const storeFlags = {
  realms: Flag.String("realm").pipe(
    Flag.withDescription("A realm to serve, MOUNT=DIR (e.g. /base/=./base), repeatable; the longest matching mount wins"),
    Flag.atLeast(0)
  ),
  realmUrlBase: optionalFlag(
    Flag.String("realm-url-base"),
    "A realm's URL is this + its mount (default: the file:// URL of its directory)"
  ),
  realmUrl: optionalFlag(Flag.String("realm-url"), "The URL of the positional realm (default: the file:// URL of the realm directory)"),
  dataDir: optionalFlag(
    Flag.String("data-dir"),
    "Data directory of the embedded store (default: <realmDir>/.transpile-cache for one positional realm, else ./.transpile-cache)"
  ),
  store: optionalFlag(Flag.Literals("store", storeFlagValues), "L2 store (default: pg when DATABASE_URL is set, else pglite)"),
  pipeline: optionalFlag(
    Flag.Literals("pipeline", BabelTranspiler.pipelineNames),
    "Transpile pipeline: standard, ember or boxel (default: MTC_PIPELINE, else standard)"
  ),
  engine: optionalFlag(
    Flag.Literals("engine", BabelTranspiler.engineNames),
    "Engine of the standard pipeline: native (oxc) or babel (default: MTC_ENGINE, else native)"
  ),
  emberSource: optionalFlag(
    Flag.String("ember-source"),
    "ember-source directory whose template compiler ember/boxel use (default: MTC_EMBER_SOURCE, else the installed one)"
  ),
  hostPackages: optionalFlag(
    Flag.String("host-packages"),
    "The host's node_modules: ember/boxel take decorator-transforms, ember-concurrency and ember-source from there (default: MTC_HOST_PACKAGES, else the installed ones)"
  ),
  transpileWorkers: optionalFlag(
    Flag.Int("transpile-workers"),
    "Transpile worker threads (default: MTC_TRANSPILE_WORKERS, else the available parallelism; 0: in-process)"
  )
}

/** A configuration error as the user sees it. */
const configurationFailure = (error: Config.ConfigError): CliFailure =>
  new CliFailure({ message: `configuration: ${error.message}` })

interface RealmInput {
  readonly realmDir: Option.Option<string>
  readonly realms: ReadonlyArray<string>
  readonly private?: ReadonlyArray<string> | undefined
  readonly realmUrlBase: Option.Option<string>
  readonly realmUrl: Option.Option<string>
  readonly dataDir: Option.Option<string>
  readonly store: Option.Option<StoreFlag>
  readonly transpileWorkers: Option.Option<number>
  readonly pipeline: Option.Option<BabelTranspiler.PipelineName>
  readonly engine: Option.Option<BabelTranspiler.EngineName>
  readonly emberSource: Option.Option<string>
  readonly hostPackages: Option.Option<string>
}

/** The transpiler's options: the flags win over `MTC_PIPELINE`, `MTC_ENGINE`, `MTC_EMBER_SOURCE` and `MTC_HOST_PACKAGES`. */
const transpilerOptions = Effect.fnUntraced(function*(input: RealmInput) {
  const fromEnv = yield* BabelTranspiler.optionsConfig.pipe(
    Effect.mapError(configurationFailure)
  )
  const emberSource = Option.getOrUndefined(input.emberSource) ?? fromEnv.emberSource
  const hostPackages = Option.getOrUndefined(input.hostPackages) ?? fromEnv.hostPackages
  return {
    ...fromEnv,
    pipeline: Option.getOrElse(input.pipeline, () => fromEnv.pipeline ?? BabelTranspiler.defaultPipeline),
    engine: Option.getOrElse(input.engine, () => fromEnv.engine ?? BabelTranspiler.defaultEngine),
    ...(emberSource === undefined ? {} : { emberSource: path.resolve(emberSource) }),
    ...(hostPackages === undefined ? {} : { hostPackages: path.resolve(hostPackages) })
  } satisfies BabelTranspiler.BabelTranspilerOptions
})

/** The realms of `--realm MOUNT=DIR` (and the positional directory at `/`), `--private` marking some. */
const realmSpecs = (input: RealmInput): Effect.Effect<ReadonlyArray<Realms.RealmSpec>, CliFailure> =>
  Effect.gen(function*() {
    const specs: Array<Realms.RealmSpec> = []
    const privateMounts = new Set(input.private ?? [])
    if (Option.isSome(input.realmDir)) {
      specs.push({ mount: "/", dir: path.resolve(input.realmDir.value), realmUrl: Option.getOrUndefined(input.realmUrl) })
    }
    for (const value of input.realms) {
      const separator = value.indexOf("=")
      if (separator <= 0 || separator === value.length - 1) {
        return yield* new CliFailure({ message: `--realm ${value}: expected MOUNT=DIR, e.g. /base/=./base` })
      }
      const mount = value.slice(0, separator)
      yield* Realms.validateMount(mount).pipe(Effect.mapError((error) => new CliFailure({ message: `--realm: ${error.message}` })))
      if (specs.some((spec) => spec.mount === mount)) return yield* new CliFailure({ message: `--realm: ${mount} is given twice` })
      specs.push({ mount, dir: path.resolve(value.slice(separator + 1)) })
    }
    if (specs.length === 0) return yield* new CliFailure({ message: "no realm: give a realm directory, or --realm MOUNT=DIR" })
    for (const mount of privateMounts) {
      if (!specs.some((spec) => spec.mount === mount)) {
        return yield* new CliFailure({ message: `--private ${mount}: no --realm is mounted there` })
      }
    }
    return specs.map((spec) => ({ ...spec, private: privateMounts.has(spec.mount) }))
  })

/** The realm options of `serve` and `warm`, from flags and environment. */
const realmOptions = Effect.fnUntraced(function*(input: RealmInput) {
  const realms = yield* realmSpecs(input)
  if (Option.isSome(input.realmUrlBase) && !URL.canParse(input.realmUrlBase.value)) {
    return yield* new CliFailure({ message: `--realm-url-base ${input.realmUrlBase.value}: not a URL` })
  }
  // One positional realm keeps its data directory inside it; with mounts the process has one, here.
  const realmDir = realms.length === 1 && Option.isSome(input.realmDir) ? realms[0]!.dir : undefined
  const postgres = yield* ModuleCacheLive.postgresFromEnv.pipe(
    Effect.mapError(configurationFailure)
  )
  const selection = yield* selectStore({
    realmDir,
    store: Option.getOrUndefined(input.store),
    dataDir: Option.getOrUndefined(input.dataDir),
    postgres: Option.getOrUndefined(postgres)
  })
  const config = yield* Config.all({
    maxSourceBytes: BabelTranspiler.maxSourceBytesConfig,
    cache: optionsConfig,
    pool: TranspilerPool.optionsConfig
  }).pipe(
    Effect.mapError(configurationFailure)
  )
  const workers = Option.getOrElse(input.transpileWorkers, () => config.pool.workers ?? TranspilerPool.defaults.workers)
  if (workers < 0) return yield* new CliFailure({ message: "--transpile-workers must be 0 or more" })
  const realm = {
    realms,
    realmUrlBase: Option.getOrUndefined(input.realmUrlBase),
    store: selection.store,
    excluded: selection.excluded,
    maxSourceBytes: config.maxSourceBytes,
    cache: config.cache
  } satisfies RealmServer.RealmOptions
  // The transpiler's source limit is the same MTC_MAX_SOURCE_BYTES as the files served.
  const transpiler = yield* transpilerOptions(input)
  return { realm, pool: { ...config.pool, workers, transpiler } }
})

/** Why `serve` or `warm` could not build their layers (the realm, its store, the server, the transpiler). */
type LayerFailure = RealmServer.ServeLayerError | TranspilerPool.TranspilerStartError

/** Why a call to a running server's admin routes failed, besides a {@link CliFailure}. */
type AdminCallFailure = HttpClientError.HttpClientError | Schema.SchemaError

/** An error's own message; a `ServeError` (the server cannot listen) has none and says why in its cause. */
const detailOf = (error: LayerFailure | AdminCallFailure): string => {
  switch (error._tag) {
    case "ServeError":
      return messageOf(error.cause)
    default:
      return error.message
  }
}

/** A typed failure as one line for the user, naming the cause of a failed Postgres connection. */
const explain = (what: string) => (error: LayerFailure | AdminCallFailure): CliFailure => {
  // A TLS failure's message already names its cause, in one line.
  if (error._tag === "PgTlsError") return new CliFailure({ message: `${what}: ${error.message}` })
  const connect = PgConnectError.classify(error)
  const detail = detailOf(error).split("\n")[0] ?? ""
  const named = connect === undefined ? "" : PgConnectError.describe(connect)
  return new CliFailure({
    message: connect === undefined || detail.includes(named) ? `${what}: ${detail}` : `${what}: ${named}: ${detail}`
  })
}

// -----------------------------------------------------------------------------
// serve
// -----------------------------------------------------------------------------

/** `serve <realmDir>`: serves the realm until interrupted. */
const serve = Command.make(
  "serve",
  {
    realmDir: realmDirArgument,
    private: Flag.String("private").pipe(
      Flag.withDescription("A mount whose realm is private (read tokens or the admin token), repeatable"),
      Flag.atLeast(0)
    ),
    port: Flag.Int("port").pipe(Flag.withDescription("Port (0 picks a free one)"), Flag.withDefault(4201)),
    host: Flag.String("host").pipe(Flag.withDescription("Host to listen on"), Flag.withDefault("127.0.0.1")),
    ...storeFlags
  },
  Effect.fnUntraced(function*(input) {
    if (!Number.isInteger(input.port) || input.port < 0 || input.port > 65535) {
      return yield* new CliFailure({ message: `--port must be between 0 and 65535 (got ${input.port})` })
    }
    const { pool, realm: options } = yield* realmOptions(input)
    const admin = yield* AdminToken.serverToken.pipe(Effect.mapError((error) => new CliFailure({ message: error.message })))
    const { drainTimeout, limits, prune, readSecret, warmupRequests } = yield* Config.all({
      readSecret: ReadAccess.readSecretConfig,
      limits: RealmServer.limitsConfig,
      prune: Pruner.optionsConfig,
      warmupRequests: JitWarmup.requestsConfig,
      drainTimeout: Listener.drainTimeoutConfig
    }).pipe(
      Effect.mapError(configurationFailure)
    )
    const server = RealmServer.layer({
      ...options,
      port: input.port,
      host: input.host,
      adminToken: admin.token,
      writeTokenFile: admin.generated,
      readSecret: Option.getOrUndefined(readSecret),
      limits,
      prune,
      warmupRequests,
      gracefulShutdownTimeout: drainTimeout
    }).pipe(
      Layer.provide(TranspilerPool.layer(pool)),
      Layer.provide(Tracing.layer)
    )
    return yield* Layer.launch(server).pipe(Effect.mapError(explain("serve")))
  })
).pipe(Command.withDescription("Serve realm directories, transpiled and cached"))

// -----------------------------------------------------------------------------
// warm
// -----------------------------------------------------------------------------

/** One module's result in a warm run. */
interface WarmEntry {
  readonly path: string
  readonly outcome: Outcome | undefined
  readonly error: GetError | undefined
}

/** The summary of a warm run, as printed. */
const formatSummary = (entries: ReadonlyArray<WarmEntry>, elapsedMillis: number): string => {
  const ok = entries.filter((entry) => entry.error === undefined)
  const failed = entries.filter((entry) => entry.error !== undefined)
  const byOutcome = new Map<string, number>()
  for (const entry of ok) {
    const key = entry.outcome ?? "unknown"
    byOutcome.set(key, (byOutcome.get(key) ?? 0) + 1)
  }
  const outcomes = Array.from(byOutcome, ([outcome, count]) => `${outcome} ${count}`).join(", ")
  const lines = [
    `warmed ${entries.length} module${entries.length === 1 ? "" : "s"} in ${(elapsedMillis / 1000).toFixed(2)} s`,
    `  ok: ${ok.length}${outcomes === "" ? "" : ` (${outcomes})`}`,
    `  errors: ${failed.length}`
  ]
  for (const entry of failed) {
    const error = entry.error
    if (error === undefined) continue
    const where = error._tag === "TranspileError" && error.line !== undefined
      ? `${entry.path}:${error.line}${error.column !== undefined ? `:${error.column}` : ""}`
      : entry.path
    lines.push(`    ${where} ${error._tag}: ${error.message}`)
  }
  return lines.join("\n")
}

/** Reports progress on stderr (synchronously: it runs once per module). */
const progress = (total: number) => {
  const tty = process.stderr.isTTY === true
  let lastTenth = -1
  return (done: number, current: string): void => {
    if (tty) {
      const width = 24
      const filled = total === 0 ? width : Math.round((done / total) * width)
      const line = `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total} ${current}`
      const columns = process.stderr.columns ?? 100
      process.stderr.write(`\r${line.slice(0, columns - 1).padEnd(columns - 1)}`)
      if (done === total) process.stderr.write("\n")
      return
    }
    const tenth = total === 0 ? 10 : Math.floor((done / total) * 10)
    if (tenth !== lastTenth || done === total) {
      lastTenth = tenth
      process.stderr.write(`warm: ${done}/${total}\n`)
    }
  }
}

/**
 * Gets every path through the cache, `concurrency` at a time, and records each one's
 * result. The work per module is the `get` and a few assignments: `concurrency` fibers each
 * take the next path until none is left (no fiber or generator per module).
 */
const warmAll = (
  cache: ModuleCache["Service"],
  realmUrl: string,
  paths: ReadonlyArray<string>,
  concurrency: number
): Effect.Effect<Array<WarmEntry>> =>
  Effect.suspend(() => {
    const entries = new Array<WarmEntry>(paths.length)
    const report = progress(paths.length)
    let next = 0
    let done = 0
    const record = (index: number, exit: Exit.Exit<GetResult, GetError>): void => {
      const modulePath = paths[index]!
      entries[index] = Exit.isSuccess(exit)
        ? { path: modulePath, outcome: exit.value.outcome, error: undefined }
        : { path: modulePath, outcome: undefined, error: Option.getOrUndefined(Exit.findErrorOption(exit)) }
      report(++done, modulePath)
    }
    const takeNext = (): Effect.Effect<void> => {
      if (next >= paths.length) return Effect.void
      const index = next++
      return Effect.flatMap(Effect.exit(cache.get(moduleKey(realmUrl, paths[index]!))), (exit) => {
        record(index, exit)
        return takeNext()
      })
    }
    if (paths.length === 0) report(0, "")
    return Effect.as(
      Effect.all(Array.from({ length: Math.min(concurrency, paths.length) }, takeNext), {
        concurrency: "unbounded",
        discard: true
      }),
      entries
    )
  })

/** `warm <realmDir>`: transpiles every executable module into L2. */
const warm = Command.make(
  "warm",
  {
    realmDir: realmDirArgument,
    concurrency: Flag.Int("concurrency").pipe(
      Flag.withDescription("Modules in flight (default: twice the transpile workers, at least 4)"),
      Flag.optional
    ),
    ...storeFlags
  },
  Effect.fnUntraced(function*(input) {
    const { pool, realm: options } = yield* realmOptions(input)
    const concurrency = Math.max(1, Option.getOrElse(input.concurrency, () => Math.max(4, 2 * (pool.workers ?? 0))))
    const run = Effect.gen(function*() {
      const realms = yield* Realms.Realms
      const cache = yield* ModuleCache
      const started = yield* Clock.currentTimeMillis
      const entries: Array<WarmEntry> = []
      const mounted = realms.list()
      for (const realm of mounted) {
        const paths = yield* realm.files.walk
        const shown = mounted.length === 1 ? paths : paths.map((p) => realm.mount.slice(1) + p)
        const warmed = yield* warmAll(cache, realm.realmUrl, paths, concurrency)
        entries.push(...warmed.map((entry, i) => ({ ...entry, path: shown[i]! })))
      }
      const elapsed = (yield* Clock.currentTimeMillis) - started
      // A load answers before its L2 write commits (writes go in batches, PGlite in its
      // thread): wait for those writes, so that the preload below counts every module.
      const written: Effect.Effect<void> = Effect.flatMap(cache.stats, (stats) =>
        stats.inFlight === 0 ? Effect.void : Effect.andThen(Effect.sleep("10 millis"), written)
      )
      yield* Effect.timeoutOption(written, "10 seconds")
      // What a server starting now would preload (the same bulk read and source check).
      const preloaded = yield* Effect.forEach(mounted, (realm) => cache.preload(realm.realmUrl))
      const lines = preloaded.map((summary, i) => `  ${mounted.length === 1 ? "" : `${mounted[i]!.mount} `}${Preload.formatSummary(summary)}`)
      yield* Console.log(`${formatSummary(entries, elapsed)}\n${lines.join("\n")}`)
      if (entries.some((entry) => entry.error !== undefined)) process.exitCode = 1
    })
    return yield* run.pipe(
      Effect.provide(RealmServer.layerServices({ ...options, watch: false }).pipe(Layer.provide(TranspilerPool.layer(pool)))),
      Effect.provide(Tracing.layer),
      Effect.mapError(explain("warm"))
    )
  })
).pipe(Command.withDescription("Transpile every module of a realm into the cache (exit 1 if any fails)"))

// -----------------------------------------------------------------------------
// stats / invalidate
// -----------------------------------------------------------------------------

const urlFlag = Flag.String("url").pipe(
  Flag.withDescription("Base URL of a running server"),
  Flag.withDefault("http://127.0.0.1:4201")
)

const adminUrl = (base: string, route: string) => `${base.endsWith("/") ? base.slice(0, -1) : base}${route}`

/** Reads a JSON response, checks it against a schema and returns it pretty-printed. */
const printJson = <S extends Schema.Top & { readonly DecodingServices: never }>(
  schema: S,
  response: HttpClientResponse.HttpClientResponse
) =>
  Effect.gen(function*() {
    const body = yield* response.json
    if (response.status >= 400) {
      return yield* new CliFailure({ message: `${response.status}: ${JSON.stringify(body)}` })
    }
    yield* Schema.decodeUnknownEffect(schema)(body)
    yield* Console.log(JSON.stringify(body, null, 2))
  })

/** The admin token for the server at `url` (see {@link AdminToken.forClient}), as request headers. */
const authorization = (url: string) =>
  Effect.gen(function*() {
    let port: number
    try {
      const parsed = new URL(url)
      port = parsed.port === "" ? (parsed.protocol === "https:" ? 443 : 80) : Number(parsed.port)
    } catch {
      return yield* new CliFailure({ message: `not a URL: ${url}` })
    }
    const token = yield* AdminToken.forClient(port)
    return Option.match(token, {
      onNone: (): Record<string, string> => ({}),
      onSome: (value): Record<string, string> => ({ authorization: `Bearer ${Redacted.value(value)}` })
    })
  })

const callServer = <A>(url: string, effect: Effect.Effect<A, CliFailure | AdminCallFailure, HttpClient.HttpClient>) =>
  effect.pipe(
    Effect.provide(FetchHttpClient.layer),
    Effect.mapError((error) => error._tag === "CliFailure" ? error : explain(`cannot reach ${url}`)(error))
  )

/** `stats`: prints a running server's cache counters. */
const stats = Command.make(
  "stats",
  {
    url: urlFlag,
    json: Flag.Boolean("json").pipe(Flag.withDescription("Print the server's JSON instead of a table"), Flag.withDefault(false))
  },
  Effect.fnUntraced(function*({ json, url }) {
    const target = adminUrl(url, "/_cache/stats")
    return yield* callServer(
      target,
      Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        const headers = yield* authorization(url)
        const response = yield* client.get(target, { headers })
        if (json) return yield* printJson(RealmServer.StatsBody, response)
        const body = yield* response.json
        if (response.status >= 400) return yield* new CliFailure({ message: `${response.status}: ${JSON.stringify(body)}` })
        yield* Console.log(StatsTable.format(yield* Schema.decodeUnknownEffect(RealmServer.StatsBody)(body)))
      })
    )
  })
).pipe(Command.withDescription("Print a running server's cache statistics"))

/** `invalidate [path]`: drops one module (by its request path), or the whole realm. */
const invalidate = Command.make(
  "invalidate",
  {
    path: Argument.String("path").pipe(
      Argument.withDescription("Module path, e.g. components/card.gts (default: the whole realm)"),
      Argument.optional
    ),
    realm: optionalFlag(Flag.String("realm"), "The realm's mount (needed when the server mounts several)"),
    url: urlFlag
  },
  Effect.fnUntraced(function*(input) {
    const params = new URLSearchParams()
    if (Option.isSome(input.realm)) params.set("realm", input.realm.value)
    if (Option.isSome(input.path)) params.set("path", input.path.value)
    const query = params.size === 0 ? "" : `?${params.toString().replace(/%2F/g, "/")}`
    const target = adminUrl(input.url, `/_cache/invalidate${query}`)
    return yield* callServer(
      target,
      Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        const headers = yield* authorization(input.url)
        yield* printJson(RealmServer.InvalidateBody, yield* client.post(target, { headers }))
      })
    )
  })
).pipe(Command.withDescription("Invalidate a module, or the whole realm, on a running server"))

// -----------------------------------------------------------------------------
// read-token
// -----------------------------------------------------------------------------

/** `read-token --realm MOUNT [--realm ...] [--ttl "1 hour"]`: prints a read token of private realms, signed with `MTC_READ_SECRET`. */
const readToken = Command.make(
  "read-token",
  {
    realms: Flag.String("realm").pipe(
      Flag.withDescription("A mount the token may read, e.g. /alice/notes/ (repeatable)"),
      Flag.atLeast(1)
    ),
    ttl: Flag.String("ttl").pipe(
      Flag.withDescription("How long the token is valid, e.g. \"15 minutes\", \"1 hour\", \"7 days\""),
      Flag.withDefault("1 hour")
    )
  },
  Effect.fnUntraced(function*(input) {
    for (const mount of input.realms) {
      yield* Realms.validateMount(mount).pipe(Effect.mapError((error) => new CliFailure({ message: `--realm: ${error.message}` })))
    }
    const ttl = Duration.fromInput(input.ttl as Duration.Input)
    if (Option.isNone(ttl) || Duration.toMillis(ttl.value) <= 0) {
      return yield* new CliFailure({ message: `--ttl ${input.ttl}: expected a duration such as "1 hour"` })
    }
    const secret = yield* ReadAccess.readSecretConfig.pipe(Effect.mapError(configurationFailure))
    if (Option.isNone(secret)) return yield* new CliFailure({ message: `${ReadAccess.envVar} is not set` })
    const token = yield* ReadAccess.issueReadToken(secret.value, input.realms, ttl.value).pipe(
      Effect.mapError((error) => new CliFailure({ message: error.message }))
    )
    yield* Console.log(token)
  })
).pipe(Command.withDescription("Print a read token of private realms, signed with MTC_READ_SECRET"))

// -----------------------------------------------------------------------------
// Root
// -----------------------------------------------------------------------------

/** The root command with every subcommand. */
const command = Command.make("transpile-cache").pipe(
  Command.withDescription("Fleet-wide transpile cache for realm modules"),
  Command.withSubcommands([serve, warm, stats, invalidate, readToken])
)

/** Runs the command line on the process arguments (needs the Node services). */
export const run = Command.run(command, { version })
