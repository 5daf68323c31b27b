/**
 * The ChangeFeed service: what changed in each realm, as this process learns it, for the
 * live event streams (`/_cache/events`, see `LiveEvents`).
 *
 * - **What feeds it.** `ModuleCache` announces every invalidation it makes (a watcher's, the
 *   API's, the CLI's through a peer) and every one it hears from a peer, whose notice names the
 *   realm and path (see `InvalidationNotice`); a realm's watcher announces the files that are not
 *   modules (pages, CSS), which peers do not hear of.
 * - **One event per change.** An edit that several processes' watchers see reaches this
 *   process several times: from its own watcher, and from the peer whose watcher published it.
 *   Each names the source the file now holds, and a path's event is sent only when that source
 *   differs from the last one announced. An announcement that names no source (a forced
 *   invalidation, a file that is not a module) is always sent.
 * - **Realm-wide.** A wipe of the realm, here or at a peer, is one `Everything` event; so is a
 *   fleet notice that invalidations may have been missed (a reconnect, a gap in the polled log).
 * - **Ids and resumption.** Each event has an id `<epoch>-<n>`: the epoch is this process's, `n`
 *   counts the realm's events. A subscriber that names the last id it saw gets what it missed,
 *   from the last {@link defaults.retained} events of the realm, or one `Everything` event when
 *   they are gone, or when the id is another process's (it reconnected elsewhere).
 * - **Bounded.** A realm's feed exists once something subscribed to it; what it remembers per
 *   path is bounded. An idle subscriber costs one entry in a set and a keep-alive write every
 *   {@link defaults.keepAlive}, from one timer for the whole process.
 *
 * @since 0.6.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { realmHash } from "../domain/Domain.ts"
import { realmLabel } from "../internal/realmLabel.ts"

/** Why a realm-wide event was sent: the realm was wiped, or changes may have been missed. */
export type EverythingReason = "wipe" | "missed"

/** An event of a realm's feed. */
export type FeedEvent =
  /** A module or file of the realm changed: `path` is its canonical realm path (`dir/card.gts`). */
  | {
    readonly _tag: "Changed"
    readonly id: string
    readonly path: string
    /** The source the module holds now (`goneSourceHash` when deleted); undefined when unknown. */
    readonly sourceHash: string | undefined
  }
  /** Anything in the realm may have changed. */
  | { readonly _tag: "Everything"; readonly id: string; readonly reason: EverythingReason }

/** What a subscriber is told. Called synchronously; must be quick and must not throw. */
export interface FeedListener {
  readonly event: (event: FeedEvent) => void
  /** Nothing happened for a while: write something, so that proxies keep the stream open. */
  readonly keepAlive: () => void
  /** The feed closed (the server drains): end the stream. */
  readonly end: () => void
}

/** The defaults of {@link make}. */
export const defaults = {
  /** Events kept per realm for subscribers that reconnect (default 256). */
  retained: 256,
  /** Paths whose last source is remembered per realm, for one event per change (default 20,000). */
  rememberedPaths: 20_000,
  /** How often an idle stream gets a keep-alive comment (default 20 s, below the 25 s many proxies allow). */
  keepAlive: Duration.seconds(20)
} as const

/** The options of {@link make}. */
export interface ChangeFeedOptions {
  readonly retained?: number | undefined
  readonly rememberedPaths?: number | undefined
  readonly keepAlive?: Duration.Input | undefined
}

/** `module_cache_events_sent_total`: events written to live streams, by realm. */
export const eventsSentCounter = Metric.counter("module_cache_events_sent_total", {
  description: "Change events written to live event streams, by realm"
})

/** The changes of the realms of this process. */
export class ChangeFeed extends Context.Service<ChangeFeed, {
  /** A module or file of a realm changed (here): sent unless `sourceHash` is the last one announced. */
  readonly changed: (realmUrl: string, path: string, sourceHash: string | undefined) => void
  /** A peer's notice of a change, by the realm's hash (see `Domain.realmHash`). */
  readonly changedAt: (realmHashOf: bigint, path: string, sourceHash: string | undefined) => void
  /** Everything in a realm may have changed. */
  readonly everything: (realmUrl: string, reason: EverythingReason) => void
  /** A peer wiped a realm, by its hash. */
  readonly everythingAt: (realmHashOf: bigint, reason: EverythingReason) => void
  /** Changes may have been missed in every realm. */
  readonly everywhere: (reason: EverythingReason) => void
  /**
   * Subscribes `listener` to a realm's events for the life of the scope; returns, at once, the
   * events it missed since `lastEventId` (none without one). After `close`, the listener
   * is ended at once.
   */
  readonly subscribe: (
    realmUrl: string,
    lastEventId: string | undefined,
    listener: FeedListener
  ) => Effect.Effect<ReadonlyArray<FeedEvent>, never, Scope.Scope>
  /** How many subscribers a realm has now. */
  readonly subscribers: (realmUrl: string) => number
  /** Ends every subscriber, and every later one at once (a drain: clients reconnect elsewhere). */
  readonly close: () => void
}>()("module-transpile-cache/ChangeFeed") {}

/** The feed of one realm. */
interface RealmFeed {
  readonly realmUrl: string
  readonly label: string
  /** The number of the realm's last event. */
  seq: number
  /** The last events, oldest first. */
  readonly log: Array<FeedEvent>
  /** The last source announced per path (insertion order: the oldest is forgotten first). */
  readonly announced: Map<string, string | undefined>
  readonly listeners: Set<FeedListener>
}

/** The epoch and number of an event id, or undefined when it is not one of {@link make}'s. */
const parseId = (id: string): { readonly epoch: string; readonly seq: number } | undefined => {
  const match = /^([0-9a-f]{12})-(\d{1,15})$/.exec(id)
  return match === null ? undefined : { epoch: match[1]!, seq: Number(match[2]) }
}

/** Makes a feed; its keep-alive timer runs while anything subscribes, and it closes with the scope. */
export const make = Effect.fnUntraced(function*(options: ChangeFeedOptions = {}) {
  const retained = Math.max(1, options.retained ?? defaults.retained)
  const rememberedPaths = Math.max(1, options.rememberedPaths ?? defaults.rememberedPaths)
  const keepAliveMillis = Duration.toMillis(Duration.fromInputUnsafe(options.keepAlive ?? defaults.keepAlive))
  const context = yield* Effect.context<never>()
  const epoch = randomBytes(6).toString("hex")
  const feeds = new Map<string, RealmFeed>()
  const byHash = new Map<bigint, RealmFeed>()
  let subscriberCount = 0
  let timer: ReturnType<typeof setInterval> | undefined
  let closed = false

  const countSent = (feed: RealmFeed, events: number) => {
    if (events > 0) Metric.withAttributes(eventsSentCounter, { realm: feed.label }).updateUnsafe(events, context)
  }

  const send = (feed: RealmFeed, event: FeedEvent) => {
    feed.log.push(event)
    if (feed.log.length > retained) feed.log.shift()
    for (const listener of feed.listeners) listener.event(event)
    countSent(feed, feed.listeners.size)
  }

  const changedIn = (feed: RealmFeed | undefined, path: string, sourceHash: string | undefined) => {
    if (feed === undefined) return
    if (sourceHash !== undefined && feed.announced.get(path) === sourceHash) return
    feed.announced.delete(path)
    feed.announced.set(path, sourceHash)
    if (feed.announced.size > rememberedPaths) feed.announced.delete(feed.announced.keys().next().value!)
    send(feed, { _tag: "Changed", id: `${epoch}-${++feed.seq}`, path, sourceHash })
  }

  const everythingIn = (feed: RealmFeed | undefined, reason: EverythingReason) => {
    if (feed === undefined) return
    // What was announced before is no reason to skip what comes after.
    feed.announced.clear()
    send(feed, { _tag: "Everything", id: `${epoch}-${++feed.seq}`, reason })
  }

  const feedOf = (realmUrl: string): RealmFeed => {
    let feed = feeds.get(realmUrl)
    if (feed === undefined) {
      feed = { realmUrl, label: realmLabel(realmUrl), seq: 0, log: [], announced: new Map(), listeners: new Set() }
      feeds.set(realmUrl, feed)
      byHash.set(realmHash(realmUrl), feed)
    }
    return feed
  }

  /** The events after `lastEventId`: the retained ones, else one `Everything` at the current number. */
  const missedSince = (feed: RealmFeed, lastEventId: string | undefined): ReadonlyArray<FeedEvent> => {
    if (lastEventId === undefined) return []
    const last = parseId(lastEventId)
    if (last !== undefined && last.epoch === epoch && last.seq <= feed.seq) {
      if (last.seq === feed.seq) return []
      const firstSeq = feed.seq - feed.log.length + 1
      if (last.seq + 1 >= firstSeq) return feed.log.slice(last.seq + 1 - firstSeq)
    }
    return [{ _tag: "Everything", id: `${epoch}-${feed.seq}`, reason: "missed" }]
  }

  const keepAlive = () => {
    for (const feed of feeds.values()) for (const listener of feed.listeners) listener.keepAlive()
  }

  const subscribe = (realmUrl: string, lastEventId: string | undefined, listener: FeedListener) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const feed = feedOf(realmUrl)
        const missed = missedSince(feed, lastEventId)
        if (closed) {
          listener.end()
          return { feed, missed, added: false }
        }
        feed.listeners.add(listener)
        subscriberCount++
        countSent(feed, missed.length)
        if (timer === undefined) {
          timer = setInterval(keepAlive, keepAliveMillis)
          timer.unref()
        }
        return { feed, missed, added: true }
      }),
      ({ added, feed }) =>
        Effect.sync(() => {
          if (!added || !feed.listeners.delete(listener)) return
          subscriberCount--
          if (subscriberCount === 0 && timer !== undefined) {
            clearInterval(timer)
            timer = undefined
          }
        })
    ).pipe(Effect.map(({ missed }) => missed))

  const close = () => {
    closed = true
    for (const feed of feeds.values()) {
      for (const listener of feed.listeners) listener.end()
    }
  }

  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      close()
      if (timer !== undefined) clearInterval(timer)
    })
  )

  return ChangeFeed.of({
    changed: (realmUrl, path, sourceHash) => changedIn(feeds.get(realmUrl), path, sourceHash),
    changedAt: (hash, path, sourceHash) => changedIn(byHash.get(hash), path, sourceHash),
    everything: (realmUrl, reason) => everythingIn(feeds.get(realmUrl), reason),
    everythingAt: (hash, reason) => everythingIn(byHash.get(hash), reason),
    everywhere: (reason) => {
      for (const feed of feeds.values()) everythingIn(feed, reason)
    },
    subscribe,
    subscribers: (realmUrl) => feeds.get(realmUrl)?.listeners.size ?? 0,
    close
  })
})

/** A {@link ChangeFeed} with the given options. */
export const layer = (options?: ChangeFeedOptions): Layer.Layer<ChangeFeed> => Layer.effect(ChangeFeed, make(options))
