/**
 * What an operator scrapes and looks at:
 *
 * - `GET /_cache/metrics` (admin token): every metric of the process's Metric registry in
 *   Prometheus' text format, rendered by Effect's own `PrometheusMetrics.formatUnsafe`. Before
 *   it renders, the gauges read at scrape time are set (L1, raw files, loads in flight,
 *   Postgres connections), and the fast path's plain counters are folded in: its module
 *   hits into `module_cache_gets_total{outcome="l1"}`, its answer times registered as the
 *   `module_cache_answer_seconds{path="fast_path"}` series for the length of the render.
 * - `GET /_cache/` the live page ({@link LivePage}; `/_cache` redirects there), `GET /_cache/live.js` its script and
 *   `GET /_cache/uplot.js` / `uplot.css` the chart library, served from the installed `uplot`
 *   package. No credential: they hold no figure and no path; the page asks for the admin
 *   token and reads `stats` and `metrics` with it.
 *
 * @since 0.5.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as HttpRouter from "effect/http/HttpRouter"
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import { readFile } from "node:fs/promises"
import { createRequire } from "node:module"
import { getsOf, touchCounters } from "../cache/CacheCounters.ts"
import { ChangeFeed } from "../cache/ChangeFeed.ts"
import { realmLabel } from "../internal/realmLabel.ts"
import type { ModuleCache } from "../cache/ModuleCache.ts"
import * as TranspilerPool from "../transpiler/TranspilerPool.ts"
import { fastPathSeriesOf } from "./AnswerMetrics.ts"
import { FastPath, type FastPathHandler } from "./FastPath.ts"
import * as LiveEvents from "./LiveEvents.ts"
import * as LivePage from "./LivePage.ts"
import type { MountedRealm, Realms } from "../realm/Realms.ts"

/** The content type Prometheus' text format is served with. */
export const prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

const gauge = (name: string, description: string) => Metric.gauge(name, { description })
/** Gauges set from the cache's stats when metrics are read. */
const gauges = {
  l1Bytes: gauge("module_cache_l1_bytes", "Bytes of transpiled modules in L1"),
  l1Entries: gauge("module_cache_l1_entries", "Modules in L1"),
  l1MaxBytes: gauge("module_cache_l1_max_bytes", "The bound on L1's bytes"),
  rawFileBytes: gauge("module_cache_raw_file_bytes", "Bytes of raw files the server keeps in memory"),
  inFlight: gauge("module_cache_loads_in_flight", "Loads running, including those writing L2 after they answered"),
  pgConnections: gauge("module_cache_pg_connections", "Postgres connections this process holds, as the server counts them"),
  pgServerConnections: gauge("module_cache_pg_server_connections", "Connections the Postgres server holds, from every client"),
  pgServerMax: gauge("module_cache_pg_server_max_connections", "The Postgres server's max_connections"),
  pgBudget: gauge("module_cache_pg_connection_budget", "Postgres connections this process may open at most")
} as const
const l2BytesGauge = gauge("module_cache_l2_bytes", "Bytes of a realm's live L2 rows (every version), as the L2 cap counts them")
const l2RowsGauge = gauge("module_cache_l2_rows", "A realm's live L2 rows (modules and recorded failures, every version)")

/** Guards an admin route (see `AdminRoutes`): the admin token, and no cross-origin browser. */
export type Guard = <E, R>(
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
) => Effect.Effect<HttpServerResponse.HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest>

/** What the metrics route reads. */
export interface MetricsContext {
  readonly cache: ModuleCache["Service"]
  readonly realms: Realms["Service"]
  readonly guarded: Guard
}

/**
 * Folds a fast path's plain counters of each realm into the registry: its module hits since
 * the last fold into `module_cache_gets_total{outcome="l1"}`; returns a function that
 * registers their answer times for one render (and returns their removal).
 */
const folder = (fast: FastPathHandler) => {
  const folded = new WeakMap<MountedRealm, number>()
  const noop = () => {}
  return (realms: ReadonlyArray<MountedRealm>, context: Parameters<typeof PrometheusMetrics.formatUnsafe>[0]) => {
    const registrations: Array<{ readonly remove: () => void }> = []
    for (const realm of realms) {
      const answers = fast.answersOf(realm)
      const before = folded.get(realm) ?? 0
      if (answers.moduleHits > before) {
        getsOf(realm.realmUrl, "l1").updateUnsafe(answers.moduleHits - before, context)
        folded.set(realm, answers.moduleHits)
      }
      registrations.push(
        Metric.registerUnsafe(fastPathSeriesOf(realm.realmUrl, "l1"), context, { get: () => answers.answerTimes.l1.state(), update: noop, modify: noop }),
        Metric.registerUnsafe(fastPathSeriesOf(realm.realmUrl, "raw"), context, { get: () => answers.answerTimes.raw.state(), update: noop, modify: noop })
      )
    }
    return () => {
      for (const registration of registrations) registration.remove()
    }
  }
}

/** A static asset of the page: no CORS, `no-cache`, and a content-security policy for the page itself. */
const asset = (body: string, contentType: string) =>
  HttpServerResponse.text(body, {
    contentType,
    headers: {
      "x-content-type-options": "nosniff",
      "cache-control": "no-cache",
      "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
      "referrer-policy": "no-referrer",
      "x-frame-options": "DENY"
    }
  })

const requireHere = createRequire(import.meta.url)
/** A file of the installed `uplot` package, read once. */
const uplotFile = (file: string) => {
  let text: Promise<string> | undefined
  return Effect.tryPromise(() => (text ??= readFile(requireHere.resolve(`uplot/dist/${file}`), "utf8")))
}
const uplotJs = uplotFile("uPlot.iife.min.js")
const uplotCss = uplotFile("uPlot.min.css")

/** Adds `/_cache/metrics` and the live page's routes to a router. */
export const add = Effect.fnUntraced(function*(router: HttpRouter.HttpRouter, context: MetricsContext) {
  const { cache, guarded, realms } = context
  const fast = yield* Effect.serviceOption(FastPath)
  const feed = Option.getOrUndefined(yield* Effect.serviceOption(ChangeFeed))
  const fold = Option.map(fast, folder)
  const registry = yield* Effect.context<never>()
  for (const reason of ["crash", "memory", "timeout", "start"]) {
    Metric.withAttributes(TranspilerPool.restartCounter, { reason }).updateUnsafe(0, registry)
  }

  const metrics = Effect.gen(function*() {
    const mounted = realms.list()
    for (const realm of mounted) touchCounters(realm.realmUrl, registry)
    const [stats, usages] = yield* Effect.all([
      cache.stats,
      Effect.forEach(mounted, (realm) => cache.realmUsage(realm.realmUrl), { concurrency: 8 })
    ])
    yield* Effect.all([
      Metric.update(gauges.l1Bytes, stats.l1Bytes),
      Metric.update(gauges.l1Entries, stats.l1Entries),
      Metric.update(gauges.l1MaxBytes, stats.l1MaxBytes),
      Metric.update(gauges.rawFileBytes, realms.raw.bytes),
      Metric.update(gauges.inFlight, stats.inFlight),
      feed === undefined ? Effect.void : LiveEvents.updateStreamsGauge(feed, mounted),
      ...mounted.flatMap((realm, i) => {
        const usage = usages[i]
        if (usage === undefined) return []
        const realm_ = realmLabel(realm.realmUrl)
        return [
          Metric.update(Metric.withAttributes(l2BytesGauge, { realm: realm_ }), usage.bytes),
          Metric.update(Metric.withAttributes(l2RowsGauge, { realm: realm_ }), usage.rows)
        ]
      }),
      ...(stats.connections === undefined ? [] : [
        Metric.update(gauges.pgConnections, stats.connections.open),
        Metric.update(gauges.pgServerConnections, stats.connections.serverOpen),
        Metric.update(gauges.pgServerMax, stats.connections.serverMax),
        Metric.update(gauges.pgBudget, stats.connections.budget)
      ])
    ], { discard: true })
    const services = yield* Effect.context<never>()
    // Synchronous from the fold to the removal: a concurrent scrape never sees the registration of another.
    let unregister: (() => void) | undefined
    try {
      if (fold._tag === "Some") unregister = fold.value(mounted, services)
      const body = PrometheusMetrics.formatUnsafe(services)
      return HttpServerResponse.text(body, {
        contentType: prometheusContentType,
        headers: { "x-content-type-options": "nosniff", "cache-control": "no-store" }
      })
    } finally {
      unregister?.()
    }
  })

  const failed = () => HttpServerResponse.text("not available\n", { status: 500 })

  yield* router.add("GET", "/_cache/metrics", guarded(metrics))
  // The router matches `/_cache` here too; the page's relative URLs need the trailing slash.
  yield* router.add("GET", "/_cache/", (request) =>
    Effect.succeed(
      request.url.split("?")[0] === "/_cache"
        ? HttpServerResponse.redirect("/_cache/", { status: 308 })
        : asset(LivePage.html, "text/html; charset=utf-8")
    ))
  yield* router.add("GET", "/_cache/live.js", Effect.succeed(asset(LivePage.script, "text/javascript; charset=utf-8")))
  yield* router.add(
    "GET",
    "/_cache/uplot.js",
    Effect.match(uplotJs, { onFailure: failed, onSuccess: (text) => asset(text, "text/javascript; charset=utf-8") })
  )
  yield* router.add(
    "GET",
    "/_cache/uplot.css",
    Effect.match(uplotCss, { onFailure: failed, onSuccess: (text) => asset(text, "text/css; charset=utf-8") })
  )
})
