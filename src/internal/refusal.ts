/**
 * Transient database errors: which errors a retry can help with ({@link isRetryable}), and
 * among them refused connections.
 *
 * A refusal: Postgres is up but will not take one more session ("sorry, too many clients
 * already", a role's or database's connection limit, a server starting up or shutting
 * down). Unlike an unreachable database, a refusal passes: sessions close every moment. So
 * a refused caller waits for a connection on a bounded, jittered backoff instead of falling
 * back to a local transpile at once.
 */
import * as Duration from "effect/Duration"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"

/** Connects refused by a database that is up, by this process (fleet session, pool, L2 operations). */
export const refusalCounter = Metric.counter("module_cache_pg_refusals_total", {
  description: "Postgres connects refused by a server that is up (too many clients, ...)"
})

/**
 * SQLSTATEs of a refusal by a database that is up: class 53 (insufficient resources: 53300
 * too_many_connections, ...) and 57P03 (cannot_connect_now).
 */
const isRefusalCode = (code: string | undefined): boolean =>
  code !== undefined && (code.startsWith("53") || code === "57P03")

const codeOf = (u: unknown): string | undefined =>
  typeof u === "object" && u !== null && "code" in u && typeof u.code === "string" ? u.code : undefined

/**
 * Whether an error (a `SqlError` of `@effect/sql-pg`, or any error carrying the server's
 * `code`, directly or in its `reason.cause` / `cause`) is a refusal by a database that is up.
 */
export const isRefusal = (error: unknown): boolean => {
  if (typeof error !== "object" || error === null) return false
  if (isRefusalCode(codeOf(error))) return true
  const reason = "reason" in error ? error.reason : undefined
  if (typeof reason === "object" && reason !== null && "cause" in reason && isRefusalCode(codeOf(reason.cause))) {
    return true
  }
  return "cause" in error && error.cause !== error && isRefusalCode(codeOf(error.cause))
}

/**
 * SQLSTATEs and socket errors a retry can help with: a lost or refused connection (class 08,
 * a refusal), a server shutting down (57P01, 57P02), a serialization failure (40001), a
 * deadlock (40P01), a lock or statement timeout (55P03, 57014).
 */
const transientCodes: ReadonlySet<string> = new Set([
  "57P01",
  "57P02",
  "40001",
  "40P01",
  "55P03",
  "57014",
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN"
])

const isTransientLink = (link: object): boolean => {
  // A `SqlError` (or its reason) says so itself for the connection, deadlock, serialization and timeout cases.
  if ("isRetryable" in link && link.isRetryable === true) return true
  if ("_tag" in link && link._tag === "TimeoutError") return true
  const code = codeOf(link)
  return code !== undefined && (code.startsWith("08") || isRefusalCode(code) || transientCodes.has(code))
}

/**
 * Whether a retry can help with an error: it, or an error in its `reason` / `cause` chain, is
 * a lost, refused or timed-out connection, a server shutting down, a serialization failure or
 * a deadlock. Syntax, constraint and data errors (and anything unknown) are not retryable.
 */
export const isRetryable = (error: unknown): boolean => {
  let link = error
  for (let depth = 0; depth < 8 && typeof link === "object" && link !== null; depth++) {
    if (isTransientLink(link)) return true
    const next: unknown = "reason" in link ? link.reason : "cause" in link ? link.cause : undefined
    if (next === link) return false
    link = next
  }
  return false
}

/** First delay of {@link refusalSchedule}; it grows by 1.5x up to {@link refusalMaxDelay}. */
const refusalBaseDelay = Duration.millis(20)
/** Longest delay between two tries of a refused connection. */
const refusalMaxDelay = Duration.millis(500)

/**
 * The wait of a refused caller: jittered exponential delays from 20 ms up to 500 ms, for at
 * most `bound` in total (then the caller falls back, as for an unreachable database).
 */
export const refusalSchedule = (bound: Duration.Input) =>
  Schedule.max([
    Schedule.min([Schedule.exponential(refusalBaseDelay, 1.5), Schedule.spaced(refusalMaxDelay)]),
    Schedule.during(bound)
  ]).pipe(Schedule.jittered)
