/**
 * Held batches (`internal/batching.ts`'s `hold`, what L2 writes use while no peer can wait for
 * their rows), on the TestClock: no sleeps.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Batching from "../src/internal/batching.ts"

/** A batching caller over a `run` that records each batch it is given. */
const recording = (options: Batching.BatchingOptions) => {
  const batches: Array<ReadonlyArray<number>> = []
  const call = Batching.make((inputs: ReadonlyArray<number>) =>
    Effect.sync(() => {
      batches.push(inputs)
      return inputs.map((input) => input * 10)
    }), options)
  return { batches, call }
}

const hold = (allowed: () => boolean = () => true): Batching.Hold => ({ quiet: "50 millis", maxDelay: "1 second", allowed })

describe("held batches", () => {
  it.effect("a held batch runs once no call arrived for `quiet`, with every call of the meantime", () =>
    Effect.gen(function*() {
      const { batches, call } = recording({ hold: hold() })
      const fibers = [yield* Effect.forkChild(call(1))]
      yield* TestClock.adjust("30 millis")
      fibers.push(yield* Effect.forkChild(call(2)))
      yield* TestClock.adjust("30 millis")
      fibers.push(yield* Effect.forkChild(call(3)))
      yield* TestClock.adjust("49 millis")
      expect(batches).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(batches).toEqual([[1, 2, 3]])
      expect(yield* Fiber.joinAll(fibers)).toEqual([10, 20, 30])
    }))

  it.effect("a held batch runs `maxDelay` after it opened, though calls keep arriving", () =>
    Effect.gen(function*() {
      const { batches, call } = recording({ hold: hold() })
      const fibers = [yield* Effect.forkChild(call(0))]
      for (let i = 1; i < 50; i++) {
        yield* TestClock.adjust("20 millis")
        fibers.push(yield* Effect.forkChild(call(i)))
      }
      // 49 calls by 980 ms, the batch still open; it runs at 1 s with the calls so far.
      expect(batches).toEqual([])
      yield* TestClock.adjust("20 millis")
      expect(batches.length).toBe(1)
      expect(batches[0]).toEqual(Array.from({ length: 50 }, (_, i) => i))
      yield* TestClock.adjust("50 millis")
      expect(yield* Fiber.joinAll(fibers)).toHaveLength(50)
    }))

  it.effect("a held batch runs at `maxBatch` calls at once", () =>
    Effect.gen(function*() {
      const { batches, call } = recording({ hold: hold(), maxBatch: 3 })
      const fiber = yield* Effect.forkChild(Effect.forEach([1, 2, 3, 4], call, { concurrency: "unbounded" }))
      yield* Effect.yieldNow
      expect(batches[0]).toEqual([1, 2, 3])
      yield* TestClock.adjust("50 millis")
      expect(batches).toEqual([[1, 2, 3], [4]])
      expect(yield* Fiber.join(fiber)).toEqual([10, 20, 30, 40])
    }))

  it.effect("when `allowed` turns false, a held batch runs within the recheck", () =>
    Effect.gen(function*() {
      let allowed = true
      const { batches, call } = recording({ hold: hold(() => allowed) })
      const fiber = yield* Effect.forkChild(call(1))
      yield* TestClock.adjust("10 millis")
      // Calls keep arriving: only the flag can end the hold early.
      const second = yield* Effect.forkChild(call(2))
      allowed = false
      expect(batches).toEqual([])
      yield* TestClock.adjust(Batching.holdRecheck)
      expect(batches).toEqual([[1, 2]])
      expect([yield* Fiber.join(fiber), yield* Fiber.join(second)]).toEqual([10, 20])
    }))

  it.effect("while `allowed` is false, a batch runs after one yield, as without a hold", () =>
    Effect.gen(function*() {
      const { batches, call } = recording({ hold: hold(() => false) })
      expect(yield* call(7)).toBe(70)
      expect(batches).toEqual([[7]])
    }))
})
