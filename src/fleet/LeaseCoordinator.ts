/**
 * A Coordinator with no session state, for a database reached through a transaction pooler
 * (PgBouncer in transaction mode, RDS Proxy, ...): a lease row per key being transpiled in
 * `module_transpile_cache_lease`, instead of advisory locks on a dedicated session.
 *
 * - `tryLock` is one short statement: insert the lease, or take over one whose `expires_at`
 *   passed (its owner died or stalled). No connection is held during the transpile.
 * - While the owner holds it, a heartbeat renews `expires_at` every third of the TTL.
 * - `unlock` stops the heartbeat and deletes the row (only if this process still owns it).
 * - Expired rows left behind are swept every minute.
 * - Losers poll L2 and the lease on the read path's backing-off schedule, so a dead winner
 *   costs its lease TTL, not a deadline. To keep that polling cheap in a herd, one watcher
 *   per process reads the leases of every key it waits on in one statement every
 *   `watchInterval` (default 100 ms), and wakes the waiters of a key whose lease is gone
 *   (released after the row was written, or expired): the read path's own polls can then
 *   back off far (see {@link pollDefaults}).
 *
 * Time is the server's (`now()`), so clocks of the fleet's hosts need not agree. A lease lost
 * to a takeover (a stalled owner) may cost a duplicate transpile, never a wrong byte: the
 * L2 write is OCC-conditioned as always.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import { hostname } from "node:os"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import { Coordinator, CoordinatorError } from "../domain/Coordinator.ts"
import { lockKey } from "../domain/Domain.ts"
import * as Tuning from "../internal/tuning.ts"
import { WaiterRegistry } from "./Waiters.ts"

/** The defaults of {@link LeaseOptions}. */
export const defaults = Tuning.defaults({
  /** How long a lease lives without renewal (default 3 s): what a dead winner costs its peers. */
  ttl: Duration.seconds(3),
  /** Time one lease statement may take before the coordinator gives up (default 2 s). */
  timeout: Duration.seconds(2),
  /** How often the leases of waited-on keys are read (default 100 ms). */
  watchInterval: Duration.millis(100)
})

/** Tuning of the leases. */
export type LeaseOptions = Tuning.Tuning<typeof defaults>

/**
 * The read path's poll schedule behind a transaction pooler (ModuleCache's `pollInitial` and
 * `pollMax`, unless set): the lease watcher (or, with a direct URL, the "populated" NOTIFY)
 * wakes losers promptly, so their own polls of L2 and the lease are only a backstop and back
 * off from 100 ms to 1 s.
 */
export const pollDefaults = { pollInitial: Duration.millis(100), pollMax: Duration.seconds(1) } as const

/** Builds the lease coordinator over the SqlClient in context (the pool, through the pooler). */
export const make = Effect.fnUntraced(function*(options: LeaseOptions = {}) {
  const sql = yield* SqlClient.SqlClient
  const scope = yield* Effect.scope
  const { timeout, ttl, watchInterval } = Tuning.resolve(defaults, options)
  const ttlMs = Math.max(1, Math.round(Duration.toMillis(ttl)))
  const owner = `${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`
  /** Keys this process holds (with their heartbeat) or is trying to take. */
  const held = new Map<bigint, Fiber.Fiber<void> | "pending">()
  const waiters = new WaiterRegistry()

  // One statement per tick for every key waited on (and not held here): a key whose lease
  // is gone wakes its waiters, who re-read L2 and try the lease.
  const watch = Effect.suspend(() => {
    const keys = [...waiters.keys()].filter((hash) => !held.has(hash))
    if (keys.length === 0) return Effect.void
    return sql<{ lock_key: string }>`
      SELECT lock_key::text AS lock_key FROM module_transpile_cache_lease
      WHERE lock_key = ANY(string_to_array(${keys.join(",")}, ',')::int8[]) AND expires_at > now()`.pipe(
      Effect.timeout(timeout),
      Effect.map((rows) => {
        const live = new Set(rows.map((row) => row.lock_key))
        for (const hash of keys) if (!live.has(hash.toString())) waiters.wake(hash)
      })
    )
  })
  yield* Effect.forkIn(
    Effect.repeat(Effect.ignore(watch), Schedule.spaced(watchInterval)),
    scope
  )

  const renew = (hash: bigint) =>
    sql`UPDATE module_transpile_cache_lease
        SET expires_at = now() + ${ttlMs} * interval '1 millisecond'
        WHERE lock_key = ${hash.toString()}::int8 AND owner = ${owner}`.pipe(Effect.timeout(timeout))

  // Renewed three times per TTL; a failed renewal is tried again at the next beat (the lease
  // may then expire and be taken over: a duplicate transpile at worst, never a wrong byte).
  const heartbeat = (hash: bigint) =>
    Effect.repeat(
      renew(hash).pipe(
        Effect.tapError((error) => Effect.logDebug("module-transpile-cache: lease renewal failed", String(error))),
        Effect.ignore
      ),
      Schedule.spaced(Duration.millis(Math.max(1, Math.floor(ttlMs / 3))))
    ).pipe(Effect.asVoid)

  const take = (hash: bigint) =>
    sql<{ owner: string }>`
      INSERT INTO module_transpile_cache_lease (lock_key, owner, expires_at)
      VALUES (${hash.toString()}::int8, ${owner}, now() + ${ttlMs} * interval '1 millisecond')
      ON CONFLICT (lock_key) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
      WHERE module_transpile_cache_lease.expires_at < now()
      RETURNING owner`.pipe(
      Effect.timeout(timeout),
      Effect.map((rows) => rows.length === 1 && rows[0]?.owner === owner)
    )

  const release = (hash: bigint) =>
    sql`DELETE FROM module_transpile_cache_lease WHERE lock_key = ${hash.toString()}::int8 AND owner = ${owner}`.pipe(
      Effect.timeout(timeout)
    )

  // Leases whose owner died, or could not delete them (the pooler was down), expire and are
  // taken over; rows of keys nobody loads again are swept here, long after they expired.
  yield* Effect.forkIn(
    Effect.repeat(
      sql`DELETE FROM module_transpile_cache_lease WHERE expires_at < now() - interval '1 minute'`.pipe(
        Effect.timeout(timeout),
        Effect.ignore
      ),
      Schedule.spaced(Duration.minutes(1))
    ),
    scope
  )

  yield* Effect.addFinalizer(() =>
    Effect.suspend(() => {
      const keys = [...held.keys()]
      held.clear()
      return Effect.forEach(keys, (hash) => Effect.ignore(release(hash)), { discard: true })
    })
  )

  return Coordinator.of({
    kind: "postgres",
    register: (key) => waiters.register(lockKey(key)),
    tryLock: (key) => {
      const hash = lockKey(key)
      return Effect.suspend(() => {
        // A second load of a key in this process (after an invalidation dropped the first
        // one's slot) waits like any loser.
        if (held.has(hash)) return Effect.succeed(false)
        held.set(hash, "pending")
        return take(hash).pipe(
          Effect.onExit((exit) => {
            if (exit._tag === "Success" && exit.value) {
              return Effect.map(Effect.forkIn(heartbeat(hash), scope), (fiber) => {
                held.set(hash, fiber)
              })
            }
            return Effect.sync(() => held.delete(hash))
          }),
          Effect.mapError((error) => new CoordinatorError({ message: String(error), cause: error }))
        )
      }).pipe(Effect.withSpan("Coordinator.tryLock"))
    },
    unlock: (key) => {
      const hash = lockKey(key)
      return Effect.suspend(() => {
        const fiber = held.get(hash)
        if (fiber === undefined || fiber === "pending") return Effect.void
        held.delete(hash)
        return Effect.andThen(Fiber.interrupt(fiber), release(hash))
      }).pipe(Effect.ignore, Effect.withSpan("Coordinator.unlock"))
    },
    // Nobody listens behind a pooler: losers find the row by polling.
    notifyPopulated: () => Effect.void
  })
})

/** The lease coordinator over the SqlClient in context. */
export const layer = (options?: LeaseOptions): Layer.Layer<Coordinator, never, SqlClient.SqlClient> =>
  Layer.effect(Coordinator, make(options))
