/**
 * The Coordinator on Postgres advisory locks, taken on the fleet session
 * ({@link PgSession}): a lock lives exactly as long as that session, so a lost session
 * frees its locks (and its waiters, woken by the loss, retry at once).
 *
 * @since 0.1.0
 */
import { Cause, Duration, Effect } from "effect"
import { Coordinator, CoordinatorError } from "../domain/Coordinator.ts"
import { lockKey } from "../domain/Domain.ts"
import { timeoutLenient } from "../internal/timeout.ts"
import type { PgSession } from "./PgSession.ts"
import type { WaiterRegistry } from "./Waiters.ts"

/** What the coordinator runs on. */
interface AdvisoryLockContext {
  readonly session: Pick<PgSession["Service"], "use" | "reset" | "generation">
  /** The waiters of the process, woken by "populated" notices and session losses. */
  readonly waiters: WaiterRegistry
  /** Time a lock query may take. */
  readonly lockTimeout: Duration.Duration
  /** Sends the "populated" notice of a lock key, best effort. */
  readonly notifyPopulated: (hash: bigint) => Effect.Effect<void>
}

/** Builds the coordinator. */
export const make = ({ lockTimeout, notifyPopulated, session, waiters }: AdvisoryLockContext): Coordinator["Service"] => {
  /**
   * Lock keys this process holds (or is trying to take), with the generation of the session
   * that holds them. Advisory locks are re-entrant per session, so a second load of a key in
   * this process (after an invalidation dropped the first one's slot) must not take it
   * again: it waits like any loser.
   */
  const claims = new Map<bigint, number | "pending">()

  const lockQuery = (sql: string, hash: bigint) =>
    session.use(
      (connection, generation) =>
        timeoutLenient(connection.query(sql, [hash.toString()]), lockTimeout).pipe(
          // A lock query that fails or hangs leaves the session in doubt: replace it (its
          // locks go with it; waiters are woken and retry).
          Effect.tapError(() => session.reset(generation)),
          Effect.map((result) => ({ generation, value: result.rows[0]?.["value"] }))
        ),
      lockTimeout
    )

  const tryLock = (hash: bigint) => {
    const attempt = lockQuery("SELECT pg_try_advisory_lock($1::int8) AS value", hash)
    return Effect.suspend(() => {
      if (claims.has(hash)) return Effect.succeed(false)
      claims.set(hash, "pending")
      // A session that died while idle (a database restart) is found out by its next
      // query: a try-lock tries once more on a fresh one.
      return attempt.pipe(
        Effect.catchIf((error) => !Cause.isTimeoutError(error), () => attempt),
        Effect.onExit((exit) =>
          Effect.sync(() => {
            if (exit._tag === "Success" && exit.value.value === true) claims.set(hash, exit.value.generation)
            else claims.delete(hash)
          })
        ),
        Effect.map(({ value }) => value === true),
        Effect.mapError((error) => new CoordinatorError({ message: String(error), cause: error }))
      )
    })
  }

  const unlock = (hash: bigint) =>
    Effect.suspend(() => {
      const owner = claims.get(hash)
      if (owner === undefined || owner === "pending") return Effect.void
      // The locks of a lost session are gone already; an unlock has no second chance.
      if (owner !== session.generation()) return Effect.sync(() => claims.delete(hash))
      return lockQuery("SELECT pg_advisory_unlock($1::int8) AS value", hash).pipe(
        Effect.ensuring(Effect.sync(() => claims.delete(hash)))
      )
    })

  return Coordinator.of({
    kind: "postgres",
    register: (key) => waiters.register(lockKey(key)),
    tryLock: (key) => tryLock(lockKey(key)).pipe(Effect.withSpan("Coordinator.tryLock")),
    unlock: (key) => unlock(lockKey(key)).pipe(Effect.ignore, Effect.withSpan("Coordinator.unlock")),
    notifyPopulated: (key) => notifyPopulated(lockKey(key)).pipe(Effect.withSpan("Coordinator.notifyPopulated"))
  })
}
