/** The subscribers of an Invalidations service (src/fleet/Subscribers.ts). */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import type { InvalidationEvent } from "../src/domain/Invalidations.ts"
import * as Subscribers from "../src/fleet/Subscribers.ts"

describe("Subscribers", () => {
  it.effect("delivers synchronously, in subscription order, for the life of each scope", () =>
    Effect.gen(function*() {
      const subscribers = Subscribers.make()
      const heard: Array<string> = []
      const first = yield* Scope.make()
      const second = yield* Scope.make()
      yield* subscribers.subscribe((event) => { heard.push(`1:${event._tag}`) }).pipe(Scope.provide(first))
      yield* subscribers.subscribe((event) => { heard.push(`2:${event._tag}`) }).pipe(Scope.provide(second))
      subscribers.deliver({ _tag: "Flush" })
      // Delivered before `deliver` returns.
      expect(heard).toEqual(["1:Flush", "2:Flush"])
      yield* Scope.close(first, Exit.void)
      subscribers.deliver({ _tag: "Key", hash: 1n })
      expect(heard).toEqual(["1:Flush", "2:Flush", "2:Key"])
      yield* Scope.close(second, Exit.void)
      subscribers.deliver({ _tag: "Flush" })
      expect(heard).toHaveLength(3)
    }))

  it.effect("a handler subscribed twice hears every event twice, until each subscription ends", () =>
    Effect.gen(function*() {
      const subscribers = Subscribers.make()
      const heard: Array<InvalidationEvent> = []
      const handler = (event: InvalidationEvent) => { heard.push(event) }
      const scope = yield* Scope.make()
      yield* subscribers.subscribe(handler).pipe(Scope.provide(scope))
      yield* subscribers.subscribe(handler)
      subscribers.deliver({ _tag: "Realm", hash: 7n })
      expect(heard).toHaveLength(2)
      yield* Scope.close(scope, Exit.void)
      subscribers.deliver({ _tag: "Realm", hash: 7n })
      expect(heard).toHaveLength(3)
    }))
})
