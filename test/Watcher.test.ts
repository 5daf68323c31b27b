/**
 * The realm watcher as a Stream: batching under the TestClock (a batch after a quiet window
 * or the longest wait, never at the first event, so a file is read once its writes are done),
 * and the events of a real tree watch.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Queue, Stream } from "effect"
import { TestClock } from "effect/testing"
import { mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { afterAll } from "vitest"
import * as Watcher from "../src/realm/Watcher.ts"
import { makeRealm, removeRealms } from "./support/server.ts"

afterAll(() => removeRealms())

const changed = (p: string): Watcher.WatchEvent => ({ _tag: "Changed", path: p })

/** Lets the forked fibers run (the TestClock does not move). */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

/** Batches of the events offered to `input`, as they are emitted. */
const batching = Effect.gen(function*() {
  const input = yield* Queue.unbounded<Watcher.WatchEvent>()
  const batches: Array<ReadonlyArray<Watcher.WatchEvent>> = []
  yield* Stream.fromQueue(input).pipe(
    Watcher.batched(),
    Stream.runForEach((batch) => Effect.sync(() => batches.push(batch))),
    Effect.forkChild
  )
  yield* settle
  const offer = (...events: ReadonlyArray<Watcher.WatchEvent>) =>
    Effect.andThen(Effect.sync(() => events.forEach((event) => Queue.offerUnsafe(input, event))), settle)
  return { batches, offer }
})

describe("Watcher.batched", () => {
  it.effect("emits the first events once they are quiet for 25 ms, each path once", () =>
    Effect.gen(function*() {
      const { batches, offer } = yield* batching
      // A save in place: the truncation and the write come as two events of one path.
      yield* offer(changed("a.ts"), changed("b.ts"), changed("a.ts"))
      expect(batches).toEqual([])
      yield* TestClock.adjust("25 millis")
      yield* settle
      expect(batches).toEqual([[changed("a.ts"), changed("b.ts")]])
    }))

  it.effect("gathers what follows until the events are quiet for 25 ms", () =>
    Effect.gen(function*() {
      const { batches, offer } = yield* batching
      yield* offer(changed("a.ts"))
      yield* TestClock.adjust("10 millis")
      yield* offer(changed("b.ts"))
      yield* TestClock.adjust("10 millis")
      yield* offer(changed("c.ts"))
      yield* TestClock.adjust("5 millis")
      yield* settle
      // The first window saw b and c: one more window must pass quietly.
      expect(batches).toHaveLength(0)
      yield* TestClock.adjust("25 millis")
      yield* settle
      expect(batches).toEqual([[changed("a.ts"), changed("b.ts"), changed("c.ts")]])
      // Then a quiet spell: the next event starts a batch of its own.
      yield* offer(changed("d.ts"))
      yield* TestClock.adjust("25 millis")
      yield* settle
      expect(batches).toEqual([[changed("a.ts"), changed("b.ts"), changed("c.ts")], [changed("d.ts")]])
    }))

  it.effect("under constant churn, emits every 500 ms", () =>
    Effect.gen(function*() {
      const { batches, offer } = yield* batching
      // An event every 20 ms: no window of 25 ms is ever quiet.
      yield* offer(changed("churn0.ts"))
      for (let i = 1; i < 25; i++) {
        yield* TestClock.adjust("20 millis")
        yield* offer(changed(`churn${i}.ts`))
      }
      expect(batches).toHaveLength(0)
      yield* TestClock.adjust("20 millis")
      yield* settle
      expect(batches).toHaveLength(1)
      expect(batches[0]).toHaveLength(25)
    }))

  it.effect("keeps one Unknown per batch", () =>
    Effect.gen(function*() {
      const { batches, offer } = yield* batching
      yield* offer({ _tag: "Unknown" }, changed("a.ts"), { _tag: "Unknown" })
      yield* TestClock.adjust("25 millis")
      yield* settle
      expect(batches).toEqual([[{ _tag: "Unknown" }, changed("a.ts")]])
    }))
})

describe("Watcher.events", () => {
  it.live("reports changed paths of the tree, not ignored ones, and tells when it watches", () =>
    Effect.gen(function*() {
      const realm = makeRealm({ "a.ts": "1", "lib/b.ts": "2" })
      const watching: Array<boolean> = []
      let changes = 0
      const events = yield* Watcher.events({
        realmDir: realm,
        isIgnored: (relative) => relative.split("/").some((segment) => segment.startsWith(".")),
        onChange: () => changes++,
        onWatching: (value) => watching.push(value)
      })
      expect(watching).toEqual([true])
      const seen = new Set<string>()
      const collect = events.pipe(
        Stream.runForEach((event) => Effect.sync(() => event._tag === "Changed" && seen.add(event.path))),
        Effect.forkScoped
      )
      yield* collect
      writeFileSync(path.join(realm, ".hidden.ts"), "x")
      writeFileSync(path.join(realm, "lib", "b.ts"), "3")
      mkdirSync(path.join(realm, "new"))
      yield* Effect.sleep("200 millis")
      writeFileSync(path.join(realm, "new", "c.ts"), "4")
      for (let i = 0; i < 50 && !(seen.has("lib/b.ts") && seen.has("new/c.ts")); i++) yield* Effect.sleep("20 millis")
      expect(seen.has("lib/b.ts")).toBe(true)
      expect(seen.has("new")).toBe(true)
      expect(seen.has("new/c.ts")).toBe(true)
      expect(seen.has(".hidden.ts")).toBe(false)
      expect(changes).toBeGreaterThanOrEqual(seen.size)
    }).pipe(Effect.scoped))
})
