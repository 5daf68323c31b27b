/**
 * Refused connections: Postgres is up but will not take one more session ("sorry, too many
 * clients already", a role's or database's connection limit, a server starting up or
 * shutting down). Unlike an unreachable database, a refusal passes: sessions close every
 * moment. So a refused caller waits for a connection on a bounded, jittered backoff
 * instead of falling back to a local transpile at once.
 */
import { Duration, Metric, Schedule } from "effect"

/** Connects refused by a database that is up, by this process (fleet session, pool, L2 operations). */
export const refusalCounter = Metric.counter("module_cache_pg_refusals", {
  description: "Postgres connects refused by a server that is up (too many clients, ...)"
})

/**
 * SQLSTATEs of a refusal by a database that is up: class 53 (insufficient resources: 53300
 * too_many_connections, ...) and 57P03 (cannot_connect_now).
 */
export const isRefusalCode = (code: string | undefined): boolean =>
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

/** First delay of {@link refusalSchedule}; it grows by 1.5x up to {@link refusalMaxDelay}. */
export const refusalBaseDelay = Duration.millis(20)
/** Longest delay between two tries of a refused connection. */
export const refusalMaxDelay = Duration.millis(500)

/**
 * The wait of a refused caller: jittered exponential delays from 20 ms up to 500 ms, for at
 * most `bound` in total (then the caller falls back, as for an unreachable database).
 */
export const refusalSchedule = (bound: Duration.Input) =>
  Schedule.max([
    Schedule.min([Schedule.exponential(refusalBaseDelay, 1.5), Schedule.spaced(refusalMaxDelay)]),
    Schedule.during(bound)
  ]).pipe(Schedule.jittered)
