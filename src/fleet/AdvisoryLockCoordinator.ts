/**
 * The Coordinator on Postgres advisory locks, taken on the fleet session
 * ({@link PgSession}): a lock lives exactly as long as that session, so a lost session
 * frees its locks (and its waiters, woken by the loss, retry at once).
 *
 * **Solo mode** (with {@link PresenceOptions}): a process that knows it is the only
 * coordinating member of the fleet grants its locks itself, with no round trip. How it knows,
 * and why a transpile stays exactly once when a peer joins:
 *
 * - Every coordinating process holds one *presence* advisory lock on its fleet session: alone,
 *   exclusively (solo); in a fleet, shared. Exclusive and shared exclude each other across
 *   sessions, so while a process is solo no other process is in fleet mode, and the reverse.
 * - A process takes a key's lock only while it holds the presence lock (shared or
 *   exclusive) on the same session. One that finds it held exclusively by a peer is
 *   *joining*: it sends a "hello" notice, takes no key lock (every try-lock answers "not
 *   won", so its misses wait as losers do: polling L2, woken when it joins, with the usual
 *   deadline), and retries the shared lock until it gets it.
 * - A solo process grants a key's lock to a miss at once ("solo claims"). On a hello (or when
 *   its periodic check sees another fleet session) it stops granting solo claims, waits until
 *   every solo claim given so far is released, then swaps its exclusive presence lock for a
 *   shared one. A claim is released after the load's L2 write (committed or given up, as a key
 *   lock is), so every row a solo claim transpiled is committed before any peer can hold a
 *   shared presence lock, hence before any peer can take a key lock.
 * - Every winner reads L2 after it holds its grant (`ModuleCache`: lock first then read, or
 *   read, lock, read again). So of two processes that both win a key, the later one's read
 *   comes after the earlier one's row committed: it finds the row and transpiles nothing. The
 *   two grants never overlap: two key locks by the lock itself, a solo claim and a key lock (or
 *   two solo claims of two processes) by the presence lock's exclusion.
 * - Going solo needs the exclusive presence lock *and* no other fleet session on the database
 *   (by `application_name` in `pg_stat_activity`): a peer of a version without presence holds
 *   no presence lock, so it is told apart that way. A fleet member tries to go solo at each
 *   check (`check`, default the heartbeat); a solo one leaves when a check sees another fleet
 *   session. The one window left is a peer of such an older version that *starts* while a
 *   process is solo: until the next check the two may transpile a module twice (never a
 *   wrong byte: the OCC write settles the row), as with a lost fleet session.
 * - Losing the session loses the presence lock with the key locks; the next session
 *   negotiates again. Solo claims in flight then are like key locks of a lost session.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { Coordinator, CoordinatorError } from "../domain/Coordinator.ts"
import { hash64, lockKey } from "../domain/Domain.ts"
import type { SqlError } from "effect/sql/SqlError"
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
  /**
   * How long a lock operation waits for the session while the server refuses its connects
   * ("too many clients"): waited out, as the store's refusals are, not fallen back from at
   * once (default: `lockTimeout`). An unreachable database fails it at once.
   */
  readonly refusalWait?: Duration.Duration | undefined
  /** Sends the "populated" notice of a lock key, best effort. */
  readonly notifyPopulated: (hash: bigint) => Effect.Effect<void>
  /**
   * The channel of "populated" notices. Given, the notice of a key this process holds the
   * lock of rides with its unlock, in one statement (the notice first: it is sent when that
   * statement commits, by which time the row it announces has long committed).
   */
  readonly populatedChannel?: string
  /** Solo mode, when given (see the module's comment). */
  readonly presence?: PresenceOptions
}

/** Solo mode's settings. */
export interface PresenceOptions {
  /** The channel of presence notices ("hello" from a joining peer, "fleet" from a solo one that left). */
  readonly channel: string
  /** `application_name` pattern (`LIKE`) of the fleet sessions of the database. */
  readonly sessions: string
  /** Interval of the check: a fleet member tries to go solo, a solo one looks for peers (default: the heartbeat). */
  readonly check: Duration.Duration
  /** Interval of a joining process's retries of the shared presence lock. */
  readonly joinRetry: Duration.Duration
  /**
   * Told when this process becomes solo (`true`), and when it stops being solo (`false`: it
   * leaves, or its session, which held the presence lock, is lost). Called at once, in order.
   */
  readonly onSolo?: ((solo: boolean) => void) | undefined
}

/** The presence lock key (see the module's comment). */
export const presenceKey: bigint = hash64("module-transpile-cache|presence")

/** What this process is in the fleet, on the session of one generation. */
export type Mode = "solo" | "leaving" | "fleet" | "joining"

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

/** A try-lock's or unlock's answer: with the session generation, and whether it is a solo claim. */
interface OpAnswer {
  readonly generation: number
  readonly value: unknown
  readonly solo: boolean
}

type Connection = Parameters<Parameters<AdvisoryLockContext["session"]["use"]>[0]>[0]

/** The coordinator, plus solo mode's upkeep (see {@link makeFleet}). */
export interface FleetCoordinator {
  readonly coordinator: Coordinator["Service"]
  /**
   * Solo mode's upkeep, for the life of the fleet (fork it): negotiates the mode of each new
   * session, retries a join, leaves solo mode when asked, checks for peers. Never ends.
   */
  readonly presence: Effect.Effect<never>
  /** A presence notice arrived (its payload). */
  readonly onPresenceNotice: (payload: string) => void
  /** The session is up again, or lost: the mode is negotiated again. */
  readonly onSessionChange: () => void
  /** The mode on the session up now, if negotiated (for tests and stats). */
  readonly mode: () => Mode | undefined
}

/** Builds the coordinator. */
export const make = (context: AdvisoryLockContext): Coordinator["Service"] => makeFleet(context).coordinator

/** Builds the coordinator with solo mode's upkeep (`presence` is idle without {@link PresenceOptions}). */
export const makeFleet = (
  { lockTimeout, notifyPopulated, populatedChannel, presence, refusalWait, session, waiters }: AdvisoryLockContext
): FleetCoordinator => {
  /**
   * Lock keys this process holds (or is trying to take), with the generation of the session
   * that holds them. Advisory locks are re-entrant per session, so a second load of a key in
   * this process (after an invalidation dropped the first one's slot) must not take it
   * again: it waits like any loser.
   */
  const claims = new Map<bigint, number | "pending">()

  /** Keys whose "populated" notice waits for their unlock (see `populatedChannel`). */
  const populated = new Set<bigint>()

  // ---------------------------------------------------------------------------
  // Presence (solo mode)
  // ---------------------------------------------------------------------------

  /** The mode, on the session of `generation`. */
  let current: { readonly generation: number; mode: Mode } | undefined
  /** Keys granted by solo mode (no advisory lock taken), with their session's generation. */
  const soloClaims = new Map<bigint, number>()
  /** Completed (and replaced) to run the upkeep now rather than at its next interval. */
  let kick = Deferred.makeUnsafe<void>()
  const wakeUpkeep = () => {
    const fired = kick
    kick = Deferred.makeUnsafe<void>()
    Deferred.doneUnsafe(fired, Exit.void)
  }
  const modeOf = (generation: number | undefined): Mode | undefined =>
    generation !== undefined && current?.generation === generation ? current.mode : undefined
  /** Solo claims given on the session of `generation`, still held. */
  const soloHeld = (generation: number) => {
    for (const held of soloClaims.values()) if (held === generation) return true
    return false
  }

  const presenceParams = (options: PresenceOptions) => [presenceKey.toString(), options.sessions]
  /** Whether another fleet session is connected to the database (`param`: their `application_name` pattern). */
  const othersSql = (param: string) =>
    `EXISTS (SELECT 1 FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE ${param} AND pid <> pg_backend_pid())`

  /**
   * The mode of a new session: solo if the exclusive presence lock is free and no other fleet
   * session is connected; else fleet with the shared lock; else (a peer is solo) joining, with
   * a hello to the solo peer. CASE evaluates its branches in order and stops at the first
   * true one, so at most one presence lock is taken.
   */
  const negotiate = (connection: Connection, options: PresenceOptions) =>
    Effect.gen(function*() {
      const result = yield* connection.query(
        `SELECT CASE WHEN ${othersSql("$2")}
                       THEN CASE WHEN pg_try_advisory_lock_shared($1::int8) THEN 'fleet' ELSE 'joining' END
                     WHEN pg_try_advisory_lock($1::int8) THEN 'solo'
                     WHEN pg_try_advisory_lock_shared($1::int8) THEN 'fleet'
                     ELSE 'joining' END AS mode`,
        presenceParams(options)
      )
      const mode = modeText(result.rows[0]?.["mode"])
      if (mode === "joining") yield* hello(connection, options)
      return mode
    })

  const modeText = (value: unknown): Mode => (value === "solo" ? "solo" : value === "fleet" ? "fleet" : "joining")

  const hello = (connection: Connection, options: PresenceOptions) =>
    Effect.asVoid(connection.query("SELECT pg_notify($1, 'hello')", [options.channel]))

  /** What `presence.onSolo` was last told. */
  let toldSolo = false
  const tellSolo = (solo: boolean) => {
    if (solo === toldSolo) return
    toldSolo = solo
    presence?.onSolo?.(solo)
  }
  /** Sets the mode of the session of `generation`; a join wakes every waiter (they may take locks now). */
  const setMode = (generation: number, mode: Mode) => {
    const before = modeOf(generation)
    current = { generation, mode }
    tellSolo(mode === "solo")
    if (before === "joining" && mode === "fleet") waiters.wakeAll()
  }

  /** The mode on the session (negotiated first if this session has none yet); runs under the session's permit. */
  const presenceOf = (
    connection: Connection,
    generation: number
  ): Effect.Effect<Mode | undefined, SqlError | Cause.TimeoutError> =>
    Effect.suspend(() => {
      if (presence === undefined) return Effect.succeed(undefined)
      const known = modeOf(generation)
      if (known !== undefined) return Effect.succeed(known)
      return timeoutLenient(negotiate(connection, presence), lockTimeout).pipe(
        Effect.tapError(() => session.reset(generation)),
        Effect.tap((mode) => Effect.sync(() => setMode(generation, mode)))
      )
    })

  /** One step of the upkeep, on the session up now. */
  const upkeep = (options: PresenceOptions, checkDue: boolean) =>
    session.use(
      (connection, generation) =>
        timeoutLenient(Effect.gen(function*() {
          const mode = modeOf(generation)
          if (mode === undefined) {
            yield* presenceOf(connection, generation)
            return
          }
          switch (mode) {
            case "joining": {
              const result = yield* connection.query(
                "SELECT pg_try_advisory_lock_shared($1::int8) AS joined",
                presenceParams(options).slice(0, 1)
              )
              if (result.rows[0]?.["joined"] === true) setMode(generation, "fleet")
              else yield* hello(connection, options)
              return
            }
            case "leaving": {
              // Every solo claim is released (its row committed or given up): swap the
              // exclusive presence lock for a shared one (the shared first: the session holds
              // one or the other at every moment), then tell joining peers.
              if (soloHeld(generation)) return
              yield* connection.query("SELECT pg_advisory_lock_shared($1::int8)", presenceParams(options).slice(0, 1))
              yield* connection.query("SELECT pg_advisory_unlock($1::int8), pg_notify($2, 'fleet')", [
                presenceKey.toString(),
                options.channel
              ])
              setMode(generation, "fleet")
              return
            }
            case "solo": {
              if (!checkDue) return
              const result = yield* connection.query(`SELECT ${othersSql("$1")} AS others`, [options.sessions])
              if (result.rows[0]?.["others"] === true) leave(generation)
              return
            }
            case "fleet": {
              if (!checkDue) return
              // Alone again? The exclusive lock (this session's shared one does not stand in
              // its way), then the shared one given back.
              const result = yield* connection.query(
                `SELECT CASE WHEN ${othersSql("$2")} THEN false
                             WHEN pg_try_advisory_lock($1::int8) THEN pg_advisory_unlock_shared($1::int8)
                             ELSE false END AS solo`,
                presenceParams(options)
              )
              if (result.rows[0]?.["solo"] === true) setMode(generation, "solo")
              return
            }
          }
        }), lockTimeout).pipe(Effect.tapError(() => session.reset(generation))),
      lockTimeout
    )

  /** Stops granting solo claims; the upkeep gives the exclusive lock up once the last one is released. */
  const leave = (generation: number) => {
    if (modeOf(generation) !== "solo") return
    setMode(generation, "leaving")
    wakeUpkeep()
  }

  const presenceLoop = (options: PresenceOptions): Effect.Effect<never> =>
    Effect.gen(function*() {
      let nextCheck = Date.now() + Duration.toMillis(options.check)
      while (true) {
        const now = Date.now()
        const checkDue = now >= nextCheck
        if (checkDue) nextCheck = now + Duration.toMillis(options.check)
        yield* Effect.ignore(upkeep(options, checkDue))
        // Not negotiated yet (a wake-up during the step is not lost for long), joining or leaving: soon again.
        const mode = modeOf(session.generation())
        const wait = mode === undefined || mode === "joining" || mode === "leaving"
          ? options.joinRetry
          : Duration.millis(Math.max(1, nextCheck - Date.now()))
        yield* Effect.raceFirst(Effect.sleep(wait), Deferred.await(kick))
      }
    })

  /**
   * Runs lock operations on the session: those that arrive together (the misses of one
   * moment, the unlocks of transpiles that finished together) as one statement, one round
   * trip on the one session instead of one each.
   */
  const runOps = (ops: ReadonlyArray<LockOp>) =>
    session.use(
      (connection, generation) =>
        Effect.gen(function*() {
          const mode = presence === undefined ? undefined : yield* presenceOf(connection, generation)
          // Try-locks answered by the presence mode: granted (solo), or not won (joining).
          const local = (op: LockOp): OpAnswer | undefined =>
            op.op !== "try" || (mode !== "solo" && mode !== "joining")
              ? undefined
              : { generation, value: mode === "solo", solo: mode === "solo" }
          const sent = ops.filter((op) => local(op) === undefined)
          const rows = sent.length === 0 ? [] : yield* query(connection, generation, sent)
          let i = 0
          const answers = ops.map((op): OpAnswer => local(op) ?? { generation, value: rows[i++]?.["value"], solo: false })
          // Solo claims are recorded here, still under the session's permit, once nothing can
          // fail any more: the upkeep gives the exclusive presence lock up under the same permit,
          // and only when it finds no solo claim held.
          answers.forEach((answer, index) => {
            const op = ops[index]
            if (answer.solo && op !== undefined) soloClaims.set(op.hash, generation)
          })
          return answers
        }),
      refusalWait ?? lockTimeout
    )

  /** Runs the operations as one statement; a failed or hung one resets the session. */
  const query = (connection: Connection, generation: number, ops: ReadonlyArray<LockOp>) => {
    const { params, sql } = statementOf(ops, populatedChannel)
    return timeoutLenient(connection.query(sql, params), lockTimeout).pipe(
      // A lock query that fails or hangs leaves the session in doubt: replace it (its
      // locks go with it; waiters are woken and retry).
      Effect.tapError(() => session.reset(generation)),
      Effect.map((result) => result.rows)
    )
  }
  const lockOp = Batching.make(runOps)

  const tryLock = (hash: bigint) => {
    const attempt = lockOp({ op: "try", hash, populated: false })
    return Effect.suspend(() => {
      if (claims.has(hash)) return Effect.succeed(false)
      const generation = session.generation()
      const mode = modeOf(generation)
      // The mode known: a solo claim at once, or not won (joining), with no round trip.
      if (generation !== undefined && mode === "solo") {
        claims.set(hash, generation)
        soloClaims.set(hash, generation)
        return Effect.succeed(true)
      }
      if (mode === "joining") return Effect.succeed(false)
      claims.set(hash, "pending")
      // A session that died while idle (a database restart) is found out by its next
      // query: a try-lock tries once more on a fresh one.
      return attempt.pipe(
        Effect.catchIf((error) => !Cause.isTimeoutError(error), () => attempt),
        Effect.onExit((exit) => {
          if (exit._tag === "Success" && exit.value.value === true) {
            return Effect.sync(() => claims.set(hash, exit.value.generation))
          }
          // A solo claim granted to a caller that is gone (interrupted once its batch had run) is released.
          const solo = soloClaims.get(hash)
          return solo === undefined ? Effect.sync(() => claims.delete(hash)) : releaseSolo(hash, solo)
        }),
        Effect.map(({ value }) => value === true),
        Effect.mapError((error) => new CoordinatorError({ message: String(error), cause: error }))
      )
    })
  }

  /** Releases a solo claim: no statement; the last one of a solo process that is leaving lets it leave. */
  const releaseSolo = (hash: bigint, generation: number) =>
    Effect.sync(() => {
      claims.delete(hash)
      soloClaims.delete(hash)
      populated.delete(hash)
      if (modeOf(generation) === "leaving" && !soloHeld(generation)) wakeUpkeep()
    })

  const unlock = (hash: bigint) =>
    Effect.suspend(() => {
      const solo = soloClaims.get(hash)
      if (solo !== undefined) return releaseSolo(hash, solo)
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

  /**
   * The notice rides with the unlock when this process holds the key's lock on the session up
   * now. A solo claim's notice wakes the waiters of this process only: no other process takes
   * key locks while it is held, and a joining one re-reads L2 when it joins.
   */
  const notifyPopulatedOf = (hash: bigint) =>
    Effect.suspend(() => {
      if (soloClaims.has(hash)) return Effect.sync(() => waiters.wake(hash))
      const owner = claims.get(hash)
      if (populatedChannel !== undefined && typeof owner === "number" && owner === session.generation()) {
        populated.add(hash)
        return Effect.void
      }
      return notifyPopulated(hash)
    })

  // Data-first withSpan with no stack trace: the pipeable form captures one on every call, and
  // a solo miss makes these three calls with no statement at all.
  const span = { captureStackTrace: false } as const
  const coordinator = Coordinator.of({
    kind: "postgres",
    register: (key) => waiters.register(lockKey(key)),
    tryLock: (key) => Effect.withSpan(tryLock(lockKey(key)), "Coordinator.tryLock", span),
    unlock: (key) => Effect.withSpan(Effect.ignore(unlock(lockKey(key))), "Coordinator.unlock", span),
    notifyPopulated: (key) => Effect.withSpan(notifyPopulatedOf(lockKey(key)), "Coordinator.notifyPopulated", span),
    // "leaving" is not solo: a joiner waits for this process's claims, hence for its writes.
    solo: () => modeOf(session.generation()) === "solo"
  })

  return {
    coordinator,
    presence: presence === undefined ? Effect.never : presenceLoop(presence),
    onPresenceNotice: (payload) => {
      const generation = session.generation()
      if (payload === "hello" && generation !== undefined) leave(generation)
      else if (payload === "fleet" && modeOf(generation) === "joining") wakeUpkeep()
    },
    onSessionChange: () => {
      // The presence lock went with the session that held it.
      tellSolo(modeOf(session.generation()) === "solo")
      if (presence !== undefined) wakeUpkeep()
    },
    mode: () => modeOf(session.generation())
  }
}
