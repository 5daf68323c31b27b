/**
 * Live push of edits to open pages: `GET /_cache/events?realm=MOUNT`, a `text/event-stream` of
 * a realm's changes, and `GET /_cache/live-reload.js`, a client that reloads a page when
 * something it loaded changed.
 *
 * - **The stream** (MOUNT defaults as for `/_cache/importmap.json`) starts with a `retry:` line,
 *   then sends, for every change the {@link ChangeFeed} announces, `event: change` with an
 *   `id:` and `data:` JSON ({@link ChangeEventBody}): the request paths that changed, under the
 *   mount, each with the new immutable URL of a module whose source is known (none for a
 *   deleted file, nor for a file that is not a module), or `everything: true` for a realm-wide
 *   change. A comment line goes out every 20 s, so that proxies keep the stream open. A client
 *   that reconnects with `Last-Event-ID` gets what it missed (see `ChangeFeed`).
 * - **Private realms** answer only to their readers, with `Authorization: Bearer`, exactly as
 *   their modules do: 401 otherwise. `EventSource` cannot send that header, so the client reads
 *   the stream with `fetch` instead. No token ever goes into a URL, where access logs and proxies
 *   would keep it.
 * - **Bounded and drained.** A stream is a connection like any other (`MTC_MAX_CONNECTIONS`
 *   counts it); a drain ends every stream at once (the client reconnects elsewhere). An idle
 *   stream holds a fiber and a small queue; nothing touches the hot path.
 *
 * @since 0.6.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type * as HttpRouter from "effect/http/HttpRouter"
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import { ChangeFeed, type FeedEvent } from "../cache/ChangeFeed.ts"
import type { ModuleCache } from "../cache/ModuleCache.ts"
import { goneSourceHash, moduleVersion } from "../domain/Domain.ts"
import { realmLabel } from "../internal/realmLabel.ts"
import { encodePath, isExecutable } from "../realm/PathRules.ts"
import type { MountedRealm } from "../realm/Realms.ts"
import { immutableUrl } from "./ImmutableUrls.ts"
import * as LiveReloadClient from "./LiveReloadClient.ts"

/** The path of the event stream. */
export const eventsPath = "/_cache/events"

/** The path of the live-reload client. */
export const clientPath = "/_cache/live-reload.js"

/** How long a client waits before it reconnects, in ms (the stream's `retry:` line). */
export const retryMillis = 1000

/** One changed path of a {@link ChangeEventBody}. */
export interface ChangedPath {
  /** The request path, as a browser requests it (percent-encoded, the mount included). */
  readonly path: string
  /** The new immutable URL of a module, when its source is known. */
  readonly url?: string
  /** True when the file is gone. */
  readonly deleted?: true
}

/** The `data` of an `event: change`. */
export interface ChangeEventBody {
  /** The realm's mount. */
  readonly realm: string
  /** True when anything in the realm may have changed (a wipe, or changes that were missed). */
  readonly everything: boolean
  /** Why, when `everything`: `wipe` or `missed`. */
  readonly reason?: string
  readonly changed: ReadonlyArray<ChangedPath>
}

/** `module_cache_event_streams`: the open event streams, by realm (set when metrics are read). */
export const streamsGauge = Metric.gauge("module_cache_event_streams", { description: "Open live event streams, by realm" })

/** Sets {@link streamsGauge} for each mounted realm (before metrics are formatted). */
export const updateStreamsGauge = (feed: ChangeFeed["Service"], realms: ReadonlyArray<MountedRealm>) =>
  Effect.forEach(realms, (realm) =>
    Metric.update(Metric.withAttributes(streamsGauge, { realm: realmLabel(realm.realmUrl) }), feed.subscribers(realm.realmUrl)), {
    discard: true
  })

/** The `data` of a feed's event for a realm, whose modules are at `fingerprint`'s versions. */
export const bodyOf = (realm: MountedRealm, fingerprint: string, event: FeedEvent): ChangeEventBody => {
  if (event._tag === "Everything") return { realm: realm.mount, everything: true, reason: event.reason, changed: [] }
  const path = realm.urlPathOf(encodePath(event.path))
  const { sourceHash } = event
  const changed: ChangedPath = sourceHash === goneSourceHash
    ? { path, deleted: true }
    : sourceHash !== undefined && isExecutable(event.path)
    ? { path, url: immutableUrl(path, moduleVersion(sourceHash, fingerprint)) }
    : { path }
  return { realm: realm.mount, everything: false, changed: [changed] }
}

const encoder = new TextEncoder()

/** The text of one event on the stream. */
export const frameOf = (realm: MountedRealm, fingerprint: string, event: FeedEvent): string =>
  `event: change\nid: ${event.id}\ndata: ${JSON.stringify(bodyOf(realm, fingerprint, event))}\n\n`

/**
 * The bytes of an event's frame, rendered once: the feed hands every subscriber of a realm the
 * same event object (a realm has one mount, the process one fingerprint).
 */
const frames = new WeakMap<FeedEvent, Uint8Array>()
const frameBytesOf = (realm: MountedRealm, fingerprint: string, event: FeedEvent): Uint8Array => {
  let bytes = frames.get(event)
  if (bytes === undefined) {
    bytes = encoder.encode(frameOf(realm, fingerprint, event))
    frames.set(event, bytes)
  }
  return bytes
}

const keepAliveBytes = encoder.encode(": keep-alive\n\n")

/** What the routes need. */
export interface LiveEventsContext {
  readonly cache: ModuleCache["Service"]
  readonly feed: ChangeFeed["Service"]
  /** The realm of `?realm=MOUNT` (defaulted), or the answer that refuses the request (404, 401). */
  readonly realmOf: (
    request: HttpServerRequest.HttpServerRequest
  ) => Effect.Effect<MountedRealm | HttpServerResponse.HttpServerResponse>
}

/** The most events a slow stream holds; past it, the oldest are dropped. */
const streamBuffer = 512

/** The stream of a realm's events, after those missed since `lastEventId`. */
const streamOf = (context: LiveEventsContext, realm: MountedRealm, lastEventId: string | undefined) =>
  Stream.callback<Uint8Array>((queue) =>
    Effect.gen(function*() {
      const { fingerprint } = context.cache
      const write = (bytes: Uint8Array) => {
        Queue.offerUnsafe(queue, bytes)
      }
      write(encoder.encode(`retry: ${retryMillis}\n: ${realm.mount}\n\n`))
      const missed = yield* context.feed.subscribe(realm.realmUrl, lastEventId, {
        event: (event) => write(frameBytesOf(realm, fingerprint, event)),
        keepAlive: () => write(keepAliveBytes),
        end: () => {
          Queue.endUnsafe(queue)
        }
      })
      for (const event of missed) write(frameBytesOf(realm, fingerprint, event))
    }), { bufferSize: streamBuffer, strategy: "sliding" })

/** Adds the event stream and the client to a router. */
export const add = Effect.fnUntraced(function*(router: HttpRouter.HttpRouter, context: LiveEventsContext) {
  yield* router.add("GET", eventsPath, (request) =>
    Effect.gen(function*() {
      const realm = yield* context.realmOf(request)
      if (HttpServerResponse.isHttpServerResponse(realm)) return realm
      const lastEventId = request.headers["last-event-id"]
      return HttpServerResponse.stream(streamOf(context, realm, lastEventId), {
        contentType: "text/event-stream; charset=utf-8",
        headers: {
          "cache-control": "no-store",
          "x-accel-buffering": "no",
          "x-content-type-options": "nosniff",
          ...(realm.isPrivate ? { vary: "authorization" } : { "access-control-allow-origin": "*" })
        }
      })
    }))
  yield* router.add("GET", clientPath, () =>
    Effect.succeed(HttpServerResponse.text(LiveReloadClient.source, {
      contentType: "text/javascript; charset=utf-8",
      headers: { "cache-control": "no-cache", "access-control-allow-origin": "*", "x-content-type-options": "nosniff" }
    })))
})
