/**
 * Live push across a fleet (src/http/LiveEvents.ts, src/cache/ChangeFeed.ts): real
 * `serve --store pg` processes on one realm directory (each watching it) and one fresh Postgres
 * database, their `/_cache/events` streams read with Node's fetch:
 *
 * 1. Direct Postgres (NOTIFY): a stream open on B, `POST /_cache/invalidate?path=` of a module
 *    through A's API: B's stream gets exactly one `change` event naming that path.
 * 2. The same behind PgBouncer in transaction mode with no direct URL (the polled log).
 * 3. Three processes, a stream open on each: one module edited on disk, then three at once; once
 *    every process serves the new bytes (and a second more), each stream got exactly one event
 *    per edited path, although every process's watcher saw the edit and every peer heard of it.
 * 4. SIGTERM with 100 streams open on one process: it exits within a few seconds (a drain ends
 *    the streams at once instead of waiting out the drain timeout, 10 s), and every stream ends.
 *
 * Latencies (an API invalidation to the peer's event; SIGTERM to exit) are printed as
 * `[LiveEvents.fleet] ...` lines; arrival is asserted (within 10 s, so a lost event fails
 * loudly), the latencies are not. A test that cannot reach Postgres fails (see support/database.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freshDatabase } from "./support/database.ts"
import {
  fleetServeEnv,
  moduleSource,
  pollFresh,
  quiet,
  stampOf,
  startFleetServers,
  urlOf,
  warm,
  writeInPlace
} from "./support/edits.ts"
import { endFleet, stats } from "./support/load.ts"
import { type PgBouncer, startPgBouncer } from "./support/pgbouncer.ts"
import { makeRealm, request, type ServerProcess, sleep } from "./support/server.ts"

const log = (line: string) => console.log(`[LiveEvents.fleet] ${line}`)

/** Few small modules: m0 (API invalidation), m1 (one edit), m2..m4 (three at once). */
const names = ["m0", "m1", "m2", "m3", "m4"]
const forced = "m0"
const single = "m1"
const batch = ["m2", "m3", "m4"]

/** How long an event may take to arrive before the test fails (never hangs). */
const arrivalDeadlineMs = 10_000
/** After every process serves an edit: how long late events (duplicates, if any) get to land. */
const settleMs = 1000


const makeFleetRealm = (prefix: string) => {
  const versions = new Map(names.map((name) => [name, 1]))
  const realm = makeRealm(Object.fromEntries(names.map((name) => [`${name}.ts`, moduleSource(name, 1)])), prefix)
  return { realm, versions }
}

// -----------------------------------------------------------------------------
// Reading event streams
// -----------------------------------------------------------------------------

interface ChangedPath {
  readonly path: string
  readonly url?: string
  readonly deleted?: true
}

interface ChangeBody {
  readonly realm: string
  readonly everything: boolean
  readonly reason?: string
  readonly changed: ReadonlyArray<ChangedPath>
}

interface Frame {
  readonly event: string | undefined
  readonly id: string | undefined
  readonly data: ChangeBody | undefined
  readonly raw: string
  /** `performance.now()` when the frame was parsed. */
  readonly at: number
}

/** An open `/_cache/events` stream: its frames so far (parsed on blank lines), and how it ended. */
interface EventStream {
  readonly status: number
  readonly contentType: string | null
  readonly frames: Array<Frame>
  /** The `change` events so far. */
  readonly events: () => Array<Frame>
  /** Resolves when the body ended: `done` (the server ended it) or `error` (reset, or aborted). */
  readonly ended: Promise<"done" | "error">
  readonly isEnded: () => boolean
  /** `performance.now()` when the body ended (undefined while open). */
  readonly endedAt: () => number | undefined
  /** Waits until the first frame (the `retry:` line) came; fails after `timeoutMs`. */
  readonly opened: (timeoutMs?: number) => Promise<void>
  /** Waits until `predicate` holds on the events; fails loudly after `timeoutMs`. */
  readonly waitFor: (what: string, predicate: (events: Array<Frame>) => boolean, timeoutMs?: number) => Promise<Array<Frame>>
  /** Aborts the request (if still open) and waits for the reader to stop. */
  readonly close: () => Promise<void>
}

const parseFrame = (raw: string, at: number): Frame => {
  const field = (name: string) => new RegExp(`^${name}: ?(.*)$`, "m").exec(raw)?.[1]
  const data = field("data")
  return { event: field("event"), id: field("id"), data: data === undefined ? undefined : JSON.parse(data) as ChangeBody, raw, at }
}

const openStream = async (server: ServerProcess, mount = "/"): Promise<EventStream> => {
  const controller = new AbortController()
  const response = await fetch(`${server.url}/_cache/events?realm=${encodeURIComponent(mount)}`, { signal: controller.signal })
  const frames: Array<Frame> = []
  let ended = false
  let endedAt: number | undefined
  const body = response.body
  const done = (async (): Promise<"done" | "error"> => {
    if (body === null) return "done"
    const reader = body.getReader()
    const decoder = new TextDecoder()
    let buffer = ""
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) return "done"
        buffer += decoder.decode(value, { stream: true })
        let end: number
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const raw = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          frames.push(parseFrame(raw, performance.now()))
        }
      }
    } catch {
      return "error"
    } finally {
      ended = true
      endedAt = performance.now()
      reader.releaseLock()
    }
  })()
  const events = () => frames.filter((frame) => frame.event === "change")
  const until = async (what: string, check: () => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs
    while (!check()) {
      if (Date.now() > deadline) {
        throw new Error(`not within ${timeoutMs} ms on ${server.url}: ${what}; frames so far: ${JSON.stringify(frames.map((f) => f.raw))}`)
      }
      if (ended && !check()) throw new Error(`stream on ${server.url} ended before ${what}; frames: ${JSON.stringify(frames.map((f) => f.raw))}`)
      await sleep(5)
    }
  }
  return {
    status: response.status,
    contentType: response.headers.get("content-type"),
    frames,
    events,
    ended: done,
    isEnded: () => ended,
    endedAt: () => endedAt,
    opened: (timeoutMs = arrivalDeadlineMs) => until("the retry: line", () => frames.length > 0, timeoutMs),
    waitFor: async (what, predicate, timeoutMs = arrivalDeadlineMs) => {
      await until(what, () => predicate(events()), timeoutMs)
      return events()
    },
    close: async () => {
      controller.abort()
      await done
    }
  }
}

/** Opens a stream on each server and waits for each one's `retry:` line (closing them all if one fails). */
const openStreams = async (servers: ReadonlyArray<ServerProcess>): Promise<Array<EventStream>> => {
  const settled = await Promise.allSettled(servers.map((server) => openStream(server)))
  const streams = settled.flatMap((result) => result.status === "fulfilled" ? [result.value] : [])
  try {
    const failed = settled.find((result) => result.status === "rejected")
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
    for (const stream of streams) {
      expect(stream.status).toBe(200)
      expect(stream.contentType).toBe("text/event-stream; charset=utf-8")
    }
    await Promise.all(streams.map((stream) => stream.opened()))
    for (const stream of streams) {
      expect(stream.frames[0]!.raw).toMatch(/^retry: 1000$/m)
      expect(stream.frames[0]!.raw).toMatch(/^: \/$/m)
    }
    return streams
  } catch (error) {
    await closeAll(streams)
    throw error
  }
}

const closeAll = (streams: ReadonlyArray<EventStream>) => Promise.all(streams.map((stream) => stream.close()))

/** The paths named by the `change` events of a stream, one entry per changed path of each event. */
const pathsOf = (stream: EventStream): Array<string> =>
  stream.events().flatMap((frame) => frame.data?.changed.map((changed) => changed.path) ?? [])

/** How many `change` events of a stream name `path` (an `everything` event names none). */
const countOf = (stream: EventStream, path: string) => pathsOf(stream).filter((p) => p === path).length

const describeEvents = (stream: EventStream) => JSON.stringify(stream.events().map((frame) => frame.data))

// -----------------------------------------------------------------------------
// One API invalidation, to a peer's stream
// -----------------------------------------------------------------------------

/**
 * Warms `name` on every process (so that its L2 row exists: a forced invalidation of a module
 * with no row changes nothing, and tells no peer), opens a stream on `listener`, POSTs
 * `/_cache/invalidate?path=` on `origin`, and waits (at most 10 s) for the event on the
 * listener's stream. Returns the latency from the POST to the event; asserts exactly one event
 * naming the path after a settle.
 */
const invalidateThroughPeer = async (
  label: string,
  fleet: ReadonlyArray<ServerProcess>,
  origin: ServerProcess,
  listener: ServerProcess,
  name: string
): Promise<number> => {
  await warm(fleet, new Map([[name, 1]]))
  await quiet(fleet)
  const [stream] = await openStreams([listener])
  try {
    const path = urlOf(name)
    const startedAt = performance.now()
    const response = await request(origin.url, `/_cache/invalidate?path=${encodeURIComponent(path)}`, { method: "POST" })
    const answeredMs = performance.now() - startedAt
    expect(response.status, response.body).toBe(200)
    expect(JSON.parse(response.body)).toMatchObject({ invalidated: "module" })
    const [event] = await stream!.waitFor(`an event naming ${path}`, (events) => events.length > 0)
    const latencyMs = event!.at - startedAt
    log(`${label}: POST /_cache/invalidate on A answered in ${answeredMs.toFixed(0)} ms; B's stream got the event ${latencyMs.toFixed(0)} ms after the POST began`)
    expect(event!.id).toMatch(/^[0-9a-f]{12}-\d+$/)
    expect(event!.data).toEqual({ realm: "/", everything: false, changed: [expect.objectContaining({ path })] })
    // No second event for the one invalidation (late notices, the log read again).
    await sleep(settleMs)
    expect(stream!.events(), describeEvents(stream!)).toHaveLength(1)
    return latencyMs
  } finally {
    await stream!.close()
  }
}

// -----------------------------------------------------------------------------
// The fleet
// -----------------------------------------------------------------------------

let dbUrl: string
beforeAll(() => {
  dbUrl = freshDatabase("live_events_fleet")
})
// Stops every process left, waits until their sessions closed (no advisory lock left), drops
// the database and the realms. The pooler fleet's PgBouncer is closed by its own block first.
afterAll(() => endFleet(dbUrl, { noLocksLeft: true }), 60_000)

describe("3 processes (and a fourth to stop) on Postgres (direct: LISTEN/NOTIFY), every one watching one realm directory", () => {
  const { realm, versions } = makeFleetRealm("mtc-live-fleet-")
  const servers: Array<ServerProcess> = []
  /**
   * A fourth process on the same realm, for the SIGTERM test only: no stream of it was ever
   * aborted by this client, so that fetch's own spare connections (see the test) play no part.
   */
  let drained: ServerProcess

  beforeAll(async () => {
    const started = await startFleetServers(realm, 4, fleetServeEnv(4, dbUrl))
    servers.push(...started.servers.slice(0, 3))
    drained = started.servers[3]!
    log(`4 processes up in ${started.ms.toFixed(0)} ms (${(await stats(servers[0]!)).coordinator} coordinator)`)
    await warm(servers, versions)
    await quiet(servers)
  }, 150_000)
  afterAll(async () => {
    await Promise.all([...servers, drained].map((s) => s.stop()))
  }, 60_000)

  it("a POST /_cache/invalidate on A reaches a stream open on B: exactly one change event naming the path", async () => {
    await invalidateThroughPeer("direct", servers, servers[0]!, servers[1]!, forced)
  }, 60_000)

  it("a stream on each of 3 processes: one edit on disk, then 3 at once, are exactly one event per path on each stream", async () => {
    const streams = await openStreams(servers)
    try {
      // One file, written in place (truncated first, as many editors do).
      const version = versions.get(single)! + 1
      const startedAt = performance.now()
      writeInPlace(realm, single, version)
      const fresh = await pollFresh(servers, new Map([[single, version]]), startedAt, 30_000)
      versions.set(single, version)
      await Promise.all(streams.map((stream) => stream.waitFor(`an event naming ${urlOf(single)}`, () => countOf(stream, urlOf(single)) > 0)))
      const arrived = streams.map((stream) => stream.events()[0]!.at - startedAt)
      await sleep(settleMs)
      log(
        `one edit: every process fresh ${fresh.lastMs.toFixed(0)} ms after the write; events arrived ` +
          `${arrived.map((ms) => ms.toFixed(0)).join("/")} ms after it; events per stream ${streams.map((s) => s.events().length).join("/")}`
      )
      expect(fresh.regressions).toEqual([])
      for (const [s, stream] of streams.entries()) {
        expect(stream.events(), `process ${s}: ${describeEvents(stream)}`).toHaveLength(1)
        const body = stream.events()[0]!.data!
        expect(body.everything).toBe(false)
        expect(body.changed).toHaveLength(1)
        const changed = body.changed[0]!
        expect(changed.path).toBe(urlOf(single))
        // The URL it names is the module's new immutable URL on that process: the new bytes.
        expect(changed.url).toMatch(new RegExp(`^/${single}\\.ts\\?_v=[0-9a-f]{16}$`))
        const served = await request(servers[s]!.url, changed.url!)
        expect(served.status).toBe(200)
        expect(served.body).toContain(stampOf(single, version))
      }
      // Every process names the same immutable URL (one fingerprint, one source).
      expect(new Set(streams.map((stream) => stream.events()[0]!.data!.changed[0]!.url)).size).toBe(1)

      // Three files at once.
      const edits = new Map(batch.map((name) => [name, versions.get(name)! + 1]))
      const batchStartedAt = performance.now()
      for (const [name, v] of edits) writeInPlace(realm, name, v)
      const batchFresh = await pollFresh(servers, edits, batchStartedAt, 30_000)
      for (const [name, v] of edits) versions.set(name, v)
      await Promise.all(streams.map((stream) =>
        stream.waitFor("an event naming each of the 3 paths", () => batch.every((name) => countOf(stream, urlOf(name)) > 0))
      ))
      await sleep(settleMs)
      log(
        `3 edits at once: every process fresh ${batchFresh.lastMs.toFixed(0)} ms after the writes; ` +
          `events per stream ${streams.map((s) => s.events().length).join("/")} (1 + 3 expected)`
      )
      expect(batchFresh.regressions).toEqual([])
      for (const [s, stream] of streams.entries()) {
        expect(stream.events().some((frame) => frame.data?.everything === true), `process ${s}: no realm-wide event`).toBe(false)
        const counts = Object.fromEntries([single, ...batch].map((name) => [urlOf(name), countOf(stream, urlOf(name))]))
        expect(counts, `process ${s}: ${describeEvents(stream)}`).toEqual(
          Object.fromEntries([single, ...batch].map((name) => [urlOf(name), 1]))
        )
        expect(stream.events(), `process ${s}: nothing else`).toHaveLength(4)
      }
    } finally {
      await closeAll(streams)
    }
  }, 90_000)

  it("SIGTERM with 100 streams open on one process: it exits within a few seconds, and every stream ends", async () => {
    // A process none of whose streams this client aborted before: after an aborted fetch, Node's
    // fetch (undici) holds a new connection to the origin open for about 3 s without sending a
    // request on it, and a drain waits for a connection that never sent a byte (up to the drain
    // timeout), which would measure that instead of the streams.
    const target = drained
    const count = 100
    const streams: Array<EventStream> = []
    try {
      const opened = await Promise.allSettled(Array.from({ length: count }, () => openStream(target)))
      for (const result of opened) if (result.status === "fulfilled") streams.push(result.value)
      const failed = opened.filter((result) => result.status === "rejected")
      expect(failed.map((result) => String((result as PromiseRejectedResult).reason)), "every stream opened").toEqual([])
      await Promise.all(streams.map((stream) => stream.opened()))
      for (const stream of streams) {
        expect(stream.status).toBe(200)
        expect(stream.frames[0]!.raw).toMatch(/^retry: 1000$/m)
      }
      const exited = new Promise<number | string | null>((resolve) => {
        if (target.child.exitCode !== null || target.child.signalCode !== null) resolve(target.child.exitCode ?? target.child.signalCode)
        target.child.once("exit", (code, signal) => resolve(code ?? signal))
      })
      const sentAt = performance.now()
      target.child.kill("SIGTERM")
      // Bounded: past 10 s the test fails instead of waiting for `stop`'s SIGKILL.
      const outcome = await Promise.race([
        exited.then((code) => ({ code, ms: performance.now() - sentAt })),
        sleep(10_000).then(() => undefined)
      ])
      const endings = await Promise.race([
        Promise.all(streams.map((stream) => stream.ended)),
        sleep(5_000).then(() => undefined)
      ])
      const lastEndMs = Math.max(...streams.flatMap((s) => {
        const at = s.endedAt()
        return at === undefined ? [] : [at - sentAt]
      }))
      log(
        `SIGTERM with ${count} streams: exited ${outcome === undefined ? "not within 10 s" : `in ${outcome.ms.toFixed(0)} ms (code ${String(outcome.code)})`}; ` +
          `streams ended: ${streams.filter((s) => s.isEnded()).length}/${count}` +
          (endings === undefined ? "" : ` (${endings.filter((e) => e === "done").length} done, ${endings.filter((e) => e === "error").length} error; all by ${lastEndMs.toFixed(0)} ms)`)
      )
      if (outcome === undefined) log(`the process's output:\n${target.output().slice(-3000)}`)
      expect(outcome, "the process exited within 10 s of SIGTERM").toBeDefined()
      expect(outcome!.ms, "SIGTERM to exit (ms); the drain timeout is 10 s").toBeLessThan(5000)
      expect(endings, "every stream ended").toBeDefined()
      expect(streams.filter((s) => !s.isEnded())).toHaveLength(0)
    } finally {
      await closeAll(streams)
      await target.stop("SIGKILL")
    }
  }, 60_000)
})

describe("2 processes behind PgBouncer in transaction mode, no direct URL (the polled invalidation log)", () => {
  const { realm } = makeFleetRealm("mtc-live-fleet-pooler-")
  const servers: Array<ServerProcess> = []
  let bouncer: PgBouncer | undefined

  beforeAll(async () => {
    bouncer = await startPgBouncer()
    const started = await startFleetServers(realm, 2, fleetServeEnv(4, bouncer.urlFor(dbUrl), { MTC_PG_POOLER: "transaction" }))
    servers.push(...started.servers)
    log(`2 processes behind PgBouncer up in ${started.ms.toFixed(0)} ms (${(await stats(servers[0]!)).coordinator} coordinator)`)
  }, 150_000)
  afterAll(async () => {
    // The processes first, then PgBouncer, whose server connections would keep sessions open.
    await Promise.all(servers.map((s) => s.stop()))
    await bouncer?.close()
  }, 60_000)

  it("behind PgBouncer: a POST /_cache/invalidate on A reaches a stream open on B: exactly one change event naming the path", async () => {
    await invalidateThroughPeer("behind PgBouncer", servers, servers[0]!, servers[1]!, forced)
  }, 60_000)
})
