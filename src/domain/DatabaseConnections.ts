/**
 * The database connections of one process, for `stats`: the budget it was given, the
 * connections it holds now and the server's `max_connections`, so that an operator can
 * check "fleet size x budget <= max_connections - headroom".
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/** What a process reports about its Postgres connections. */
export const ConnectionStats = Schema.Struct({
  /** Connections this process may open at most (its budget). */
  budget: Schema.Number,
  /** The pool's part of the budget; 0 when everything runs on the fleet session. */
  poolSize: Schema.Number,
  /** Connections this process holds now, as the server counts them. */
  open: Schema.Number,
  /** The server's `max_connections`. */
  serverMax: Schema.Number,
  /** Every connection the server holds now, from all clients. */
  serverOpen: Schema.Number,
  /** Connects of this process the server refused ("too many clients", ...), each waited out. */
  refusals: Schema.Number,
  /** The fleet size the operator stated (`MTC_FLEET_SIZE`), if any. */
  fleetSize: Schema.optional(Schema.Number)
})
export type ConnectionStats = typeof ConnectionStats.Type

/** The connection report of a process; the default (no database) reports nothing. */
export const DatabaseConnections = Context.Reference<{
  readonly stats: Effect.Effect<ConnectionStats | undefined>
}>("module-transpile-cache/DatabaseConnections", {
  defaultValue: () => ({ stats: Effect.succeed(undefined) })
})

/** Whether `fleetSize` processes of `budget` connections fit `serverMax` minus `headroom`. */
export const fits = (fleetSize: number, budget: number, serverMax: number, headroom: number): boolean =>
  fleetSize * budget <= serverMax - headroom
