/**
 * Invalidations with no LISTEN, for a database reached through a transaction pooler: a
 * per-realm invalidation log (`module_transpile_cache_log`, numbered per realm in
 * `module_transpile_cache_log_head`) that every process polls.
 *
 * - Publishing is one short transaction: bump the realm's head (its row lock orders a
 *   realm's numbers by commit), append the entry, and `pg_notify` it as the direct fleet
 *   does (NOTIFY works through a transaction pooler; a peer with a direct LISTEN hears it).
 *   Entries older than the retention are pruned by the publisher.
 * - Polling reads the heads (one row per realm) every `interval` (default 300 ms, so peers
 *   are fresh within about a second); only a realm whose head moved costs a second query.
 * - A gap (entries pruned before this process read them, after a long outage) or a first
 *   successful poll after a failed start flushes L1: invalidations may have been missed.
 * - A failed poll is retried at the next interval; the log keeps what was missed meanwhile.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import { keyHash, realmHash } from "../domain/Domain.ts"
import { Invalidations } from "../domain/Invalidations.ts"
import * as Tuning from "../internal/tuning.ts"
import * as InvalidationNotice from "./InvalidationNotice.ts"
import * as Subscribers from "./Subscribers.ts"

/** The defaults of {@link PolledInvalidationsOptions}. */
export const defaults = Tuning.defaults({
  /** How often the heads are read (default 300 ms). */
  interval: Duration.millis(300),
  /** How long entries are kept (default 10 minutes): a longer outage flushes L1. */
  retention: Duration.minutes(10),
  /** Time a publish or a poll may take (default 2 s). */
  timeout: Duration.seconds(2)
})

/** Tuning of the polled log. */
export type PolledInvalidationsOptions = Tuning.Tuning<typeof defaults>

interface HeadRow {
  readonly realm_url: string
  readonly seq: bigint | number | string
}
interface EntryRow {
  readonly seq: bigint | number | string
  readonly kind: string
  readonly hash: bigint | number | string
  readonly origin: string
  readonly source_hash: string | null
  readonly path: string | null
}

const toBigInt = (value: bigint | number | string): bigint => (typeof value === "bigint" ? value : BigInt(value))

/** Builds the polled invalidations over the SqlClient in context; polls for the life of the scope. */
export const make = Effect.fnUntraced(function*(options: PolledInvalidationsOptions = {}) {
  const sql = yield* SqlClient.SqlClient
  const scope = yield* Effect.scope
  const { interval, retention, timeout } = Tuning.resolve(defaults, options)
  const retentionMs = Math.round(Duration.toMillis(retention))
  const origin = InvalidationNotice.makeOrigin()
  const { deliver, subscribe } = Subscribers.make()
  /** The last sequence number read, by realm; undefined until a poll succeeded. */
  let cursors: Map<string, bigint> | undefined

  const publish = (realmUrl: string, kind: InvalidationNotice.Kind, hash: bigint, sourceHash?: string, path?: string) =>
    sql.withTransaction(Effect.gen(function*() {
      const head = yield* sql<{ seq: bigint | number | string }>`
        INSERT INTO module_transpile_cache_log_head (realm_url, seq) VALUES (${realmUrl}, 1)
        ON CONFLICT (realm_url) DO UPDATE SET seq = module_transpile_cache_log_head.seq + 1
        RETURNING seq`
      const seq = toBigInt(head[0]?.seq ?? 0)
      yield* sql`
        INSERT INTO module_transpile_cache_log (realm_url, seq, kind, hash, origin, source_hash, path)
        VALUES (${realmUrl}, ${seq.toString()}::int8, ${kind}, ${hash.toString()}::int8, ${origin}, ${sourceHash ?? null}::text, ${
        path ?? null
      }::text)`
      const place = path === undefined ? undefined : InvalidationNotice.placeOf(realmUrl, path)
      yield* sql`SELECT pg_notify(${InvalidationNotice.channel}, ${InvalidationNotice.encode(kind, hash, origin, sourceHash, place)})`
      yield* sql`
        DELETE FROM module_transpile_cache_log
        WHERE realm_url = ${realmUrl} AND created_at < now() - ${retentionMs} * interval '1 millisecond'`
    })).pipe(
      Effect.timeout(timeout),
      Effect.tapError((error) => Effect.logWarning("module-transpile-cache: invalidation log write failed", String(error))),
      Effect.ignore,
      Effect.withSpan("PolledInvalidations.publish", { attributes: { "mtc.kind": kind } })
    )

  const readHeads = sql<HeadRow>`SELECT realm_url, seq FROM module_transpile_cache_log_head`.pipe(
    Effect.map((rows) => new Map(rows.map((row) => [row.realm_url, toBigInt(row.seq)] as const)))
  )

  const poll = Effect.gen(function*() {
    const heads = yield* readHeads
    const known = cursors
    if (known === undefined) {
      // The first read after a failed start: anything may have been missed.
      cursors = heads
      deliver({ _tag: "Flush" })
      return
    }
    for (const [realmUrl, head] of heads) {
      const cursor = known.get(realmUrl) ?? 0n
      if (head <= cursor) continue
      const entries = yield* sql<EntryRow>`
        SELECT seq, kind, hash, origin, source_hash, path FROM module_transpile_cache_log
        WHERE realm_url = ${realmUrl} AND seq > ${cursor.toString()}::int8 AND seq <= ${head.toString()}::int8
        ORDER BY seq`
      known.set(realmUrl, head)
      const first = entries[0]
      if (first === undefined || toBigInt(first.seq) !== cursor + 1n) {
        // Pruned before this process read them.
        deliver({ _tag: "Flush" })
        continue
      }
      for (const entry of entries) {
        if (entry.origin === origin) continue
        const place = entry.path === null ? undefined : InvalidationNotice.placeOf(realmUrl, entry.path)
        const event = InvalidationNotice.eventOf(entry.kind, toBigInt(entry.hash), entry.source_hash, place)
        if (event !== undefined) deliver(event)
      }
    }
  }).pipe(Effect.timeout(timeout))

  // The heads at start: only later entries are news.
  const initial = yield* Effect.option(readHeads.pipe(Effect.timeout(timeout)))
  if (initial._tag === "Some") cursors = initial.value
  yield* Effect.forkIn(
    Effect.repeat(
      poll.pipe(
        Effect.tapError((error) => Effect.logDebug("module-transpile-cache: invalidation poll failed", String(error))),
        Effect.ignore
      ),
      Schedule.spaced(interval)
    ),
    scope
  )

  return Invalidations.of({
    kind: "postgres",
    publishKey: (key, sourceHash) => publish(key.realmUrl, "k", keyHash(key), sourceHash, key.path),
    publishRealm: (realmUrl) => publish(realmUrl, "r", realmHash(realmUrl)),
    subscribe
  })
})

/** The polled invalidations over the SqlClient in context. */
export const layer = (options?: PolledInvalidationsOptions): Layer.Layer<Invalidations, never, SqlClient.SqlClient> =>
  Layer.effect(Invalidations, make(options))
