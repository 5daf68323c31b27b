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
import * as Batching from "../internal/batching.ts"
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
  /**
   * The channel of "populated" notices. Given, the notice of a key this process holds the
   * lock of rides with its unlock, in one statement (the notice first: it is sent when that
   * statement commits, by which time the row it announces has long committed).
   */
  readonly populatedChannel?: string
}

/** One lock operation: a try-lock, or an unlock (with the "populated" notice, or not). */
interface LockOp {
  readonly op: "try" | "unlock"
  readonly hash: bigint
  readonly populated: boolean
}

/** The statement of one operation, or of many in one (`unnest`, one row per operation, in order). */
const statementOf = (ops: ReadonlyArray<LockOp>, channel: string | undefined): { sql: string; params: Array<string> } => {
  const [first] = ops
  if (ops.length === 1 && first !== undefined) {
    const hash = first.hash.toString()
    if (first.op === "try") return { sql: "SELECT pg_try_advisory_lock($1::int8) AS value", params: [hash] }
    if (!first.populated || channel === undefined) return { sql: "SELECT pg_advisory_unlock($1::int8) AS value", params: [hash] }
    return { sql: "SELECT pg_notify($2, $1::text) AS notified, pg_advisory_unlock($1::int8) AS value", params: [hash, channel] }
  }
  return {
    sql: `SELECT t.ord,
                 CASE WHEN t.populated THEN pg_notify($4, t.k::text) END AS notified,
                 CASE t.op WHEN 't' THEN pg_try_advisory_lock(t.k) ELSE pg_advisory_unlock(t.k) END AS value
          FROM unnest($1::text[], $2::int8[], $3::bool[]) WITH ORDINALITY AS t(op, k, populated, ord)
          ORDER BY t.ord`,
    params: [
      `{${ops.map((op) => (op.op === "try" ? "t" : "u")).join(",")}}`,
      `{${ops.map((op) => op.hash.toString()).join(",")}}`,
      `{${ops.map((op) => (op.populated && channel !== undefined ? "t" : "f")).join(",")}}`,
      channel ?? ""
    ]
  }
}

/** Builds the coordinator. */
export const make = (
  { lockTimeout, notifyPopulated, populatedChannel, session, waiters }: AdvisoryLockContext
): Coordinator["Service"] => {
  /**
   * Lock keys this process holds (or is trying to take), with the generation of the session
   * that holds them. Advisory locks are re-entrant per session, so a second load of a key in
   * this process (after an invalidation dropped the first one's slot) must not take it
   * again: it waits like any loser.
   */
  const claims = new Map<bigint, number | "pending">()

  /** Keys whose "populated" notice waits for their unlock (see `populatedChannel`). */
  const populated = new Set<bigint>()

  /**
   * Runs lock operations on the session: those that arrive together (the misses of one
   * moment, the unlocks of transpiles that finished together) as one statement, one round
   * trip on the one session instead of one each.
   */
  const runOps = (ops: ReadonlyArray<LockOp>) =>
    session.use(
      (connection, generation) => {
        const { params, sql } = statementOf(ops, populatedChannel)
        return timeoutLenient(connection.query(sql, params), lockTimeout).pipe(
          // A lock query that fails or hangs leaves the session in doubt: replace it (its
          // locks go with it; waiters are woken and retry).
          Effect.tapError(() => session.reset(generation)),
          Effect.map((result) => ops.map((_, i) => ({ generation, value: result.rows[i]?.["value"] })))
        )
      },
      lockTimeout
    )
  const lockOp = Batching.make(runOps)

  const tryLock = (hash: bigint) => {
    const attempt = lockOp({ op: "try", hash, populated: false })
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
      const notice = populated.delete(hash)
      // A notice that cannot ride with an unlock goes on its own.
      const alone = notice ? notifyPopulated(hash) : Effect.void
      if (owner === undefined || owner === "pending") return alone
      // The locks of a lost session are gone already; an unlock has no second chance.
      if (owner !== session.generation()) return Effect.andThen(Effect.sync(() => claims.delete(hash)), alone)
      return lockOp({ op: "unlock", hash, populated: notice }).pipe(
        Effect.tapError(() => alone),
        Effect.ensuring(Effect.sync(() => claims.delete(hash)))
      )
    })

  /** The notice rides with the unlock when this process holds the key's lock on the session up now. */
  const notifyPopulatedOf = (hash: bigint) =>
    Effect.suspend(() => {
      const owner = claims.get(hash)
      if (populatedChannel !== undefined && typeof owner === "number" && owner === session.generation()) {
        populated.add(hash)
        return Effect.void
      }
      return notifyPopulated(hash)
    })

  return Coordinator.of({
    kind: "postgres",
    register: (key) => waiters.register(lockKey(key)),
    tryLock: (key) => tryLock(lockKey(key)).pipe(Effect.withSpan("Coordinator.tryLock")),
    unlock: (key) => unlock(lockKey(key)).pipe(Effect.ignore, Effect.withSpan("Coordinator.unlock")),
    notifyPopulated: (key) => notifyPopulatedOf(lockKey(key)).pipe(Effect.withSpan("Coordinator.notifyPopulated"))
  })
}
