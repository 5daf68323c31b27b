/**
 * Live push (src/cache/ChangeFeed.ts, src/http/LiveEvents.ts): the feed's logic (one event per
 * change, ids, resumption with Last-Event-ID, the drain), the notices that carry a module's
 * place to peers, and the event stream of a real server in this process with its watcher: an
 * edit on disk, a stylesheet, a deletion, a wipe, a reconnect, and a private realm's readers.
 * Peers, PgBouncer and SIGTERM are in LiveEvents.fleet.test.ts; a real browser in
 * BrowserLiveReload.test.ts.
 */
import { Effect, Exit, Layer, Redacted, Scope } from "effect"
import { rmSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import * as ChangeFeed from "../src/cache/ChangeFeed.ts"
import { goneSourceHash, hashSource, realmHash } from "../src/domain/Domain.ts"
import * as InvalidationNotice from "../src/fleet/InvalidationNotice.ts"
import type { ChangeEventBody } from "../src/http/LiveEvents.ts"
import * as ReadAccess from "../src/http/ReadAccess.ts"
import * as RealmServer from "../src/http/RealmServer.ts"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import { freePort, makeRealm, removeRealms, request } from "./support/server.ts"

const token = "live-events-test-admin-token-0123456789"
const admin = { authorization: `Bearer ${token}` }
const readSecret = Redacted.make("live-events-read-secret-0123456789abcdef")
const scopes: Array<Scope.Closeable> = []

afterAll(async () => {
  for (const scope of scopes) await Effect.runPromise(Scope.close(scope, Exit.void))
  removeRealms()
})

// -----------------------------------------------------------------------------
// The feed
// -----------------------------------------------------------------------------

/** A feed in a scope of its own, with a recording listener per subscription. */
const withFeed = <A>(body: (feed: ChangeFeed.ChangeFeed["Service"], scope: Scope.Scope) => Effect.Effect<A, never, Scope.Scope>) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const feed = yield* ChangeFeed.make({ retained: 3 })
    return yield* body(feed, yield* Effect.scope)
  })))

const recorder = () => {
  const events: Array<ChangeFeed.FeedEvent> = []
  let ended = false
  return {
    events,
    ended: () => ended,
    listener: { event: (event: ChangeFeed.FeedEvent) => void events.push(event), keepAlive: () => {}, end: () => void (ended = true) }
  }
}

const realmUrl = "file:///realm/"
const hashA = hashSource("a")
const hashB = hashSource("b")

describe("ChangeFeed", () => {
  it("sends one event per change: the same source announced again, here or by a peer, is not sent twice", () =>
    withFeed((feed) =>
      Effect.gen(function*() {
        const seen = recorder()
        expect(yield* feed.subscribe(realmUrl, undefined, seen.listener)).toEqual([])
        feed.changed(realmUrl, "card.gts", hashA)
        feed.changedAt(realmHash(realmUrl), "card.gts", hashA)
        feed.changed(realmUrl, "card.gts", hashA)
        feed.changed(realmUrl, "card.gts", hashB)
        feed.changedAt(realmHash(realmUrl), "card.gts", hashA)
        // No source named (a forced invalidation, a stylesheet): always sent.
        feed.changed(realmUrl, "style.css", undefined)
        feed.changed(realmUrl, "style.css", undefined)
        // Another realm's, and a realm hash nobody subscribed to: not this subscriber's.
        feed.changed("file:///other/", "card.gts", hashA)
        feed.changedAt(realmHash("file:///other/"), "card.gts", hashB)
        expect(seen.events.map((event) => event._tag === "Changed" ? `${event.path}@${event.sourceHash?.slice(0, 4)}` : "all"))
          .toEqual([`card.gts@${hashA.slice(0, 4)}`, `card.gts@${hashB.slice(0, 4)}`, `card.gts@${hashA.slice(0, 4)}`, "style.css@undefined", "style.css@undefined"])
        // A wipe forgets what was announced: the same source after it is news.
        feed.everything(realmUrl, "wipe")
        feed.changed(realmUrl, "card.gts", hashA)
        expect(seen.events.slice(5).map((event) => event._tag)).toEqual(["Everything", "Changed"])
        expect(feed.subscribers(realmUrl)).toBe(1)
        // Ids count the realm's events under one epoch.
        const ids = seen.events.map((event) => event.id)
        expect(new Set(ids.map((id) => id.split("-")[0])).size).toBe(1)
        expect(ids.map((id) => Number(id.split("-")[1]))).toEqual([1, 2, 3, 4, 5, 6, 7])
      })))

  it("a subscriber that names its last id gets what it missed, or one Everything when that is gone or another process's", () =>
    withFeed((feed, scope) =>
      Effect.gen(function*() {
        const first = recorder()
        const subscription = yield* Scope.fork(scope, "sequential")
        yield* feed.subscribe(realmUrl, undefined, first.listener).pipe(Scope.provide(subscription))
        feed.changed(realmUrl, "a.ts", hashA)
        const lastSeen = first.events[0]!.id
        yield* Scope.close(subscription, Exit.void)
        expect(feed.subscribers(realmUrl)).toBe(0)
        feed.changed(realmUrl, "b.ts", hashA)
        feed.changed(realmUrl, "c.ts", hashA)
        const missed = yield* feed.subscribe(realmUrl, lastSeen, recorder().listener)
        expect(missed.map((event) => event._tag === "Changed" ? event.path : "all")).toEqual(["b.ts", "c.ts"])
        // Up to date: nothing.
        expect(yield* feed.subscribe(realmUrl, missed[1]!.id, recorder().listener)).toEqual([])
        // Past the 3 retained events.
        feed.changed(realmUrl, "d.ts", hashA)
        feed.changed(realmUrl, "e.ts", hashA)
        const gone = yield* feed.subscribe(realmUrl, lastSeen, recorder().listener)
        expect(gone).toHaveLength(1)
        expect(gone[0]).toMatchObject({ _tag: "Everything", reason: "missed" })
        // Another process's id, a malformed one, one from the future.
        for (const id of ["000000000000-1", "nonsense", `${lastSeen.split("-")[0]}-99`]) {
          expect((yield* feed.subscribe(realmUrl, id, recorder().listener)).map((event) => event._tag)).toEqual(["Everything"])
        }
      })))

  it("a peer's flush is an Everything in every realm; close ends every subscriber, and later ones at once", () =>
    withFeed((feed) =>
      Effect.gen(function*() {
        const one = recorder()
        const two = recorder()
        yield* feed.subscribe(realmUrl, undefined, one.listener)
        yield* feed.subscribe("file:///other/", undefined, two.listener)
        feed.everywhere("missed")
        feed.everythingAt(realmHash("file:///other/"), "wipe")
        expect(one.events.map((event) => event._tag === "Everything" && event.reason)).toEqual(["missed"])
        expect(two.events.map((event) => event._tag === "Everything" && event.reason)).toEqual(["missed", "wipe"])
        feed.close()
        expect([one.ended(), two.ended()]).toEqual([true, true])
        const late = recorder()
        yield* feed.subscribe(realmUrl, undefined, late.listener)
        expect(late.ended()).toBe(true)
        expect(feed.subscribers(realmUrl)).toBe(1)
      })))
})

describe("InvalidationNotice places", () => {
  const origin = "aaaaaaaaaaaa"
  it("a key's notice carries the realm hash and path, a path with colons too; its own sender ignores it", () => {
    const place = InvalidationNotice.placeOf(realmUrl, "dir/a:b.gts")
    for (const sourceHash of [hashA, goneSourceHash, undefined]) {
      const payload = InvalidationNotice.encode("k", 42n, origin, sourceHash, place)
      expect(InvalidationNotice.decode(payload, "bbbbbbbbbbbb")).toEqual({
        _tag: "Key",
        hash: 42n,
        ...(sourceHash === undefined ? {} : { sourceHash }),
        place
      })
      expect(InvalidationNotice.decode(payload, origin)).toBeUndefined()
    }
    // What an earlier release reads: the first four fields; `-` is no source (drop whatever it holds).
    const [kind, hash, from, source] = InvalidationNotice.encode("k", 42n, origin, undefined, place).split(":")
    expect([kind, hash, from]).toEqual(["k", "42", origin])
    expect(InvalidationNotice.eventOf(kind, 42n, source)).toEqual({ _tag: "Key", hash: 42n })
  })

  it("a path that would pass NOTIFY's limit goes without a place", () => {
    const payload = InvalidationNotice.encode("k", 42n, origin, hashA, InvalidationNotice.placeOf(realmUrl, "x/".repeat(4000)))
    expect(Buffer.byteLength(payload)).toBeLessThan(8000)
    expect(InvalidationNotice.decode(payload, "bbbbbbbbbbbb")).toEqual({ _tag: "Key", hash: 42n, sourceHash: hashA })
  })
})

// -----------------------------------------------------------------------------
// The stream of a real server
// -----------------------------------------------------------------------------

interface Frame {
  readonly id: string | undefined
  readonly data: ChangeEventBody | undefined
  readonly raw: string
}

/** An open event stream: the frames so far, and a way to wait for more. */
const openStream = async (url: string, headers: Record<string, string> = {}) => {
  const controller = new AbortController()
  const response = await fetch(url, { headers, signal: controller.signal })
  const frames: Array<Frame> = []
  let ended = false
  const done = (async () => {
    if (response.body === null) return
    const decoder = new TextDecoder()
    let buffer = ""
    try {
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true })
        let end: number
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const raw = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const id = /^id: (.*)$/m.exec(raw)?.[1]
          const data = /^data: (.*)$/m.exec(raw)?.[1]
          frames.push({ id, data: data === undefined ? undefined : JSON.parse(data) as ChangeEventBody, raw })
        }
      }
    } catch {
      // aborted
    }
    ended = true
  })()
  const events = () => frames.filter((frame) => frame.data !== undefined)
  return {
    response,
    frames,
    events,
    ended: () => ended,
    /** Waits until `count` events came (at most 10 s, then fails). */
    waitFor: async (count: number) => {
      const deadline = Date.now() + 10_000
      while (events().length < count) {
        if (Date.now() > deadline) throw new Error(`waited 10 s for ${count} events, got ${JSON.stringify(events())}`)
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
      return events()
    },
    close: async () => {
      controller.abort()
      await done
    }
  }
}

const serve = async (options: Partial<RealmServer.ServeOptions>) => {
  const port = await freePort()
  const scope = Effect.runSync(Scope.make())
  scopes.push(scope)
  await Effect.runPromise(Layer.buildWithScope(
    RealmServer.layer({ store: { _tag: "memory" }, ...options, port, adminToken: Redacted.make(token), readSecret })
      .pipe(Layer.provide(BabelTranspiler.layer())),
    scope
  ))
  return `http://127.0.0.1:${port}`
}

describe("GET /_cache/events", () => {
  it("an edit, a stylesheet, a deletion and a wipe reach the stream; a reconnect with Last-Event-ID gets what it missed", async () => {
    const realm = makeRealm({
      "index.html": "<!doctype html><script type=\"module\" src=\"/_cache/live-reload.js\"></script>",
      "cards/card.gts": "export const card = 1\n",
      "style.css": "body { color: red }\n",
      "gone.ts": "export const gone = 1\n"
    })
    const url = await serve({ realmDir: realm })
    expect((await request(url, "/cards/card.gts")).status).toBe(200)
    expect((await request(url, "/gone.ts")).status).toBe(200)

    const stream = await openStream(`${url}/_cache/events`)
    expect(stream.response.status).toBe(200)
    expect(stream.response.headers.get("content-type")).toBe("text/event-stream; charset=utf-8")
    expect(stream.response.headers.get("cache-control")).toBe("no-store")
    while (stream.frames.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(stream.frames[0]!.raw).toMatch(/^retry: 1000$/m)

    writeFileSync(path.join(realm, "cards/card.gts"), "export const card = 2\n")
    const [edit] = await stream.waitFor(1)
    expect(edit!.data!.everything).toBe(false)
    expect(edit!.data!.changed).toHaveLength(1)
    const changed = edit!.data!.changed[0]!
    expect(changed.path).toBe("/cards/card.gts")
    // The URL it names serves the new bytes, and is the module's current immutable URL.
    const fresh = await request(url, changed.url!)
    expect(fresh.status).toBe(200)
    expect(fresh.body).toContain("card = 2")
    expect(changed.url).toBe(`/cards/card.gts?_v=${(await request(url, "/cards/card.gts")).headers.etag!.slice(1, 17)}`)

    writeFileSync(path.join(realm, "style.css"), "body { color: blue }\n")
    const css = (await stream.waitFor(2))[1]!
    expect(css.data!.changed).toEqual([{ path: "/style.css" }])

    rmSync(path.join(realm, "gone.ts"))
    const deleted = (await stream.waitFor(3))[2]!
    expect(deleted.data!.changed).toEqual([{ path: "/gone.ts", deleted: true }])

    // A reconnect that saw only the edit gets the stylesheet and the deletion, then nothing else.
    const resumed = await openStream(`${url}/_cache/events`, { "last-event-id": edit!.id! })
    const missed = await resumed.waitFor(2)
    expect(missed.map((frame) => frame.id)).toEqual([css.id, deleted.id])

    const wipe = await request(url, "/_cache/invalidate", { method: "POST", headers: admin })
    expect(wipe.status).toBe(200)
    const everything = (await stream.waitFor(4))[3]!
    expect(everything.data).toEqual({ realm: "/", everything: true, reason: "wipe", changed: [] })
    expect((await resumed.waitFor(3))[2]!.id).toBe(everything.id)
    // Each change was one event on each stream.
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(stream.events()).toHaveLength(4)
    expect(resumed.events()).toHaveLength(3)

    // Metrics: the open streams and the events written, by realm.
    const metrics = (await request(url, "/_cache/metrics", { headers: admin })).body
    const { realmUrl: servedRealmUrl } = JSON.parse((await request(url, "/_cache/stats", { headers: admin })).body) as { realmUrl: string }
    const realmLabel = `realm="${servedRealmUrl}"`
    expect(metrics).toContain(`module_cache_event_streams{${realmLabel}} 2`)
    // 4 events to the first stream, 3 to the resumed one (the 2 it missed were written too).
    expect(metrics).toContain(`module_cache_events_sent_total{${realmLabel}} 7`)

    // A reconnect with an id of another process: one Everything.
    const elsewhere = await openStream(`${url}/_cache/events`, { "last-event-id": "000000000000-3" })
    expect((await elsewhere.waitFor(1))[0]!.data).toMatchObject({ everything: true, reason: "missed" })
    await Promise.all([stream.close(), resumed.close(), elsewhere.close()])

    const client = await request(url, "/_cache/live-reload.js")
    expect(client.status).toBe(200)
    expect(client.headers["content-type"]).toBe("text/javascript; charset=utf-8")
    expect(client.body).toContain("export function connect")
  })

  it("a private realm's stream answers only its readers: 401 without a token or with another realm's", async () => {
    const open = makeRealm({ "a.ts": "export const a = 1\n" })
    const closed = makeRealm({ "b.ts": "export const b = 1\n" })
    const url = await serve({
      realms: [{ mount: "/open/", dir: open }, { mount: "/closed/", dir: closed, private: true }]
    })
    const otherReader = await Effect.runPromise(ReadAccess.issueReadToken(readSecret, ["/open/"], "1 hour"))
    const reader = await Effect.runPromise(ReadAccess.issueReadToken(readSecret, ["/closed/"], "1 hour"))
    for (const headers of [{}, { authorization: `Bearer ${otherReader}` }, { authorization: "Bearer nonsense" }]) {
      const refused = await request(url, "/_cache/events?realm=/closed/", { headers })
      expect(refused.status).toBe(401)
      expect(refused.body).not.toContain("b.ts")
    }
    expect((await request(url, "/_cache/events?realm=/nowhere/")).status).toBe(404)
    // Without ?realm= and no realm at /: there is no default among two.
    expect((await request(url, "/_cache/events")).status).toBe(404)

    const readers = await Promise.all([
      openStream(`${url}/_cache/events?realm=/closed/`, { authorization: `Bearer ${reader}` }),
      openStream(`${url}/_cache/events?realm=/closed/`, admin)
    ])
    const bystander = await openStream(`${url}/_cache/events?realm=/open/`, { authorization: `Bearer ${otherReader}` })
    for (const stream of [...readers, bystander]) expect(stream.response.status).toBe(200)
    expect(readers[0]!.response.headers.get("access-control-allow-origin")).toBeNull()
    expect((await request(url, "/closed/b.ts", { headers: admin })).status).toBe(200)
    writeFileSync(path.join(closed, "b.ts"), "export const b = 2\n")
    for (const stream of readers) {
      const [event] = await stream.waitFor(1)
      expect(event!.data!.changed[0]!.path).toBe("/closed/b.ts")
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
    // The other realm's reader heard nothing of it.
    expect(bystander.events()).toEqual([])
    await Promise.all([...readers, bystander].map((stream) => stream.close()))
  })
})
