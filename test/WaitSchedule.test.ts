/**
 * The loser's wait under the TestClock (no real sleeps): the poll delays grow from
 * `pollInitial` by 1.5x up to `pollMax`, a wake-up cuts a delay short, an answer ends the
 * wait at once, and the deadline ends it with `None`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, Option, Schedule } from "effect"
import { TestClock } from "effect/testing"
import { pollSchedule, pollUntil } from "../src/cache/WaitSchedule.ts"

/** Lets forked fibers run until they block. */
const settle = Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow, { discard: true })

/** A poll that records the clock at each call and answers `Some` from call number `answerAt` on. */
const recordingPoll = (answerAt = Infinity) => {
  const times: Array<number> = []
  const poll = Effect.gen(function*() {
    times.push(yield* Effect.clockWith((clock) => clock.currentTimeMillis))
    return times.length >= answerAt ? Option.some(times.length) : Option.none()
  })
  return { poll, times }
}

describe("WaitSchedule", () => {
  it.effect("the poll delays grow 1.5x from pollInitial and stop growing at pollMax", () =>
    Effect.gen(function*() {
      const step = yield* Schedule.toStep(pollSchedule("20 millis", "200 millis"))
      const delays: Array<number> = []
      for (let i = 0; i < 9; i++) delays.push(Duration.toMillis((yield* step(0, undefined))[1]))
      expect(delays).toEqual([20, 30, 45, 67.5, 101.25, 151.875, 200, 200, 200])
    }))

  it.effect("polls after each delay (the first one included) until the deadline, then gives None", () =>
    Effect.gen(function*() {
      const { poll, times } = recordingPoll()
      const waiting = yield* Effect.forkChild(
        pollUntil(poll, { schedule: pollSchedule("20 millis", "200 millis"), wake: Effect.never, deadline: "1 second" })
      )
      yield* settle
      expect(times).toEqual([])
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(waiting)).toEqual(Option.none())
      expect(times).toEqual([20, 50, 95, 162.5, 263.75, 415.625, 615.625, 815.625])
    }))

  it.effect("an answer ends the wait at once", () =>
    Effect.gen(function*() {
      const { poll, times } = recordingPoll(3)
      const waiting = yield* Effect.forkChild(
        pollUntil(poll, { schedule: pollSchedule("20 millis", "200 millis"), wake: Effect.never, deadline: "10 seconds" })
      )
      yield* TestClock.adjust("95 millis")
      expect(yield* Fiber.join(waiting)).toEqual(Option.some(3))
      expect(times).toEqual([20, 50, 95])
    }))

  it.effect("a wake-up cuts the delay short, with no clock movement", () =>
    Effect.gen(function*() {
      const { poll, times } = recordingPoll(2)
      const wake = yield* Deferred.make<void>()
      const waiting = yield* Effect.forkChild(
        pollUntil(poll, { schedule: pollSchedule("20 millis", "200 millis"), wake: Deferred.await(wake), deadline: "10 seconds" })
      )
      yield* settle
      yield* Deferred.succeed(wake, undefined)
      // The wake-up stays completed: each later delay ends at once too.
      expect(yield* Fiber.join(waiting)).toEqual(Option.some(2))
      expect(times).toEqual([0, 0])
    }))

  it.effect("the deadline ends a wait that is polling", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      let calls = 0
      const slowPoll = Effect.andThen(Effect.sync(() => calls++), Effect.as(Deferred.await(release), Option.some("late")))
      const waiting = yield* Effect.forkChild(
        pollUntil(slowPoll, { schedule: pollSchedule("20 millis", "200 millis"), wake: Effect.never, deadline: "100 millis" })
      )
      yield* TestClock.adjust("100 millis")
      expect(yield* Fiber.join(waiting)).toEqual(Option.none())
      expect(calls).toBe(1)
    }))
})
