/**
 * SingleFlight on its own, with Deferred gates around the work: joiners share one run, an
 * interrupted caller never cancels it, an early answer frees the id, and `forget` makes
 * later calls start afresh.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, FiberSet } from "effect"
import { SingleFlight } from "../src/cache/SingleFlight.ts"

/** Lets forked fibers run until they block. */
const settle = Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow, { discard: true })

/** A SingleFlight whose runs are forked into a FiberSet of the test's scope; joiners' answers are marked. */
const makeFlight = Effect.gen(function*() {
  const runs = yield* FiberSet.make()
  const flight = new SingleFlight<string, string, string>({
    fork: (work) => FiberSet.run(runs, work, { startImmediately: false }),
    joined: (answer) => `${answer} (joined)`
  })
  return { flight, runs }
})

/** Work that counts its runs, signals `started`, then waits for `release` and answers with its value. */
const gatedWork = Effect.gen(function*() {
  const started = yield* Deferred.make<void>()
  const release = yield* Deferred.make<Exit.Exit<string, string>>()
  let runs = 0
  const work = () =>
    Effect.gen(function*() {
      runs++
      yield* Deferred.succeed(started, undefined)
      return yield* Effect.flatten(Deferred.await(release))
    })
  return { started, release, work, runs: () => runs }
})

describe("SingleFlight", () => {
  it.effect("concurrent calls of one id share one run; the joiners' answers are marked", () =>
    Effect.gen(function*() {
      const { flight } = yield* makeFlight
      const gate = yield* gatedWork
      const leader = yield* Effect.forkChild(flight.run("a", "realm", gate.work))
      yield* Deferred.await(gate.started)
      const joiners = yield* Effect.forEach([1, 2, 3], () => Effect.forkChild(flight.run("a", "realm", gate.work)))
      yield* settle
      yield* Deferred.succeed(gate.release, Exit.succeed("module"))
      expect(yield* Fiber.join(leader)).toBe("module")
      expect(yield* Fiber.joinAll(joiners)).toEqual(["module (joined)", "module (joined)", "module (joined)"])
      expect(gate.runs()).toBe(1)
    }))

  it.effect("a failure reaches every caller", () =>
    Effect.gen(function*() {
      const { flight } = yield* makeFlight
      const gate = yield* gatedWork
      const callers = yield* Effect.forEach([1, 2], () => Effect.forkChild(Effect.flip(flight.run("a", "realm", gate.work))))
      yield* Deferred.await(gate.started)
      yield* Deferred.succeed(gate.release, Exit.fail("broken"))
      expect(yield* Fiber.joinAll(callers)).toEqual(["broken", "broken"])
      expect(gate.runs()).toBe(1)
    }))

  it.effect("an interrupted caller does not cancel the shared run", () =>
    Effect.gen(function*() {
      const { flight } = yield* makeFlight
      const gate = yield* gatedWork
      const leader = yield* Effect.forkChild(flight.run("a", "realm", gate.work))
      yield* Deferred.await(gate.started)
      const joiner = yield* Effect.forkChild(flight.run("a", "realm", gate.work))
      const quitter = yield* Effect.forkChild(flight.run("a", "realm", gate.work))
      yield* settle
      yield* Fiber.interrupt(leader)
      yield* Fiber.interrupt(quitter)
      yield* Deferred.succeed(gate.release, Exit.succeed("module"))
      expect(yield* Fiber.join(joiner)).toBe("module (joined)")
      expect(Exit.hasInterrupts(yield* Fiber.await(quitter))).toBe(true)
      expect(gate.runs()).toBe(1)
    }))

  it.effect("an early answer reaches the callers at once and frees the id while the run goes on", () =>
    Effect.gen(function*() {
      const { flight, runs } = yield* makeFlight
      const finish = yield* Deferred.make<void>()
      let runCount = 0
      const work = (answer: (exit: Exit.Exit<string, string>) => Effect.Effect<void>) =>
        Effect.gen(function*() {
          runCount++
          yield* answer(Exit.succeed(`early ${runCount}`))
          yield* Deferred.await(finish)
          return "late"
        })
      expect(yield* flight.run("a", "realm", work)).toBe("early 1")
      expect(yield* FiberSet.size(runs)).toBe(1)
      // The first run still goes on, but a new call does not join it.
      expect(yield* flight.run("a", "realm", work)).toBe("early 2")
      yield* Deferred.succeed(finish, undefined)
      yield* FiberSet.awaitEmpty(runs)
      expect(runCount).toBe(2)
    }))

  it.effect("after forget, a call of a matching id starts a new run; other ids are still joined", () =>
    Effect.gen(function*() {
      const { flight } = yield* makeFlight
      const first = yield* gatedWork
      const second = yield* gatedWork
      const other = yield* gatedWork
      const old = yield* Effect.forkChild(flight.run("a", "realm-1", first.work))
      const unrelated = yield* Effect.forkChild(flight.run("b", "realm-2", other.work))
      yield* Deferred.await(first.started)
      yield* Deferred.await(other.started)
      flight.forget((tag) => tag === "realm-1")
      const fresh = yield* Effect.forkChild(flight.run("a", "realm-1", second.work))
      const joiner = yield* Effect.forkChild(flight.run("b", "realm-2", other.work))
      yield* Deferred.await(second.started)
      yield* Deferred.succeed(second.release, Exit.succeed("new"))
      yield* Deferred.succeed(first.release, Exit.succeed("old"))
      yield* Deferred.succeed(other.release, Exit.succeed("b"))
      expect(yield* Fiber.join(fresh)).toBe("new")
      expect(yield* Fiber.join(old)).toBe("old")
      expect(yield* Fiber.join(unrelated)).toBe("b")
      expect(yield* Fiber.join(joiner)).toBe("b (joined)")
      expect([first.runs(), second.runs(), other.runs()]).toEqual([1, 1, 1])
    }))

  it.effect("a run is interrupted with its owner's FiberSet, and its callers with it", () =>
    Effect.gen(function*() {
      const gate = yield* gatedWork
      const caller = yield* Effect.scoped(Effect.gen(function*() {
        const { flight } = yield* makeFlight
        const caller = yield* Effect.forkDetach(flight.run("a", "realm", gate.work))
        yield* Deferred.await(gate.started)
        return caller
      }))
      expect(Exit.hasInterrupts(yield* Fiber.await(caller))).toBe(true)
    }))
})
