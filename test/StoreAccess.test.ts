import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as CacheCounters from "../src/cache/CacheCounters.ts"
import * as StoreAccess from "../src/cache/StoreAccess.ts"
import { moduleKey, versionedKey } from "../src/domain/Domain.ts"
import { StoreError } from "../src/domain/Errors.ts"
import { emptyCapture, none, TranspileStore } from "../src/domain/TranspileStore.ts"

const key = versionedKey(moduleKey("http://realm/", "a.ts"), "f")
const request = {
  key,
  captured: emptyCapture,
  fingerprint: "f",
  sourceHash: "h",
  content: { _tag: "Module", module: { body: "", headers: {}, dependencyKeys: [], sourceHash: "h" } }
} as const

/** A store whose writes and reads fail with the given errors, in turn, then succeed; it counts the attempts. */
const failingStore = (failures: ReadonlyArray<StoreError>) => {
  const queue = [...failures]
  const attempts = { read: 0, write: 0 }
  const next = <A>(operation: "read" | "write", value: Effect.Effect<A, StoreError>) =>
    Effect.suspend(() => {
      attempts[operation]++
      const failure = queue.shift()
      return failure === undefined ? value : Effect.fail(failure)
    })
  const store = TranspileStore.of({
    ...none,
    read: (k) => next("read", none.read(k)),
    write: (r) => next("write", none.write(r))
  })
  return { store, attempts }
}

const access = (store: TranspileStore["Service"]) =>
  Effect.map(Effect.context<never>(), (context) => {
    const counters = new CacheCounters.CacheCounters(context)
    return {
      counters,
      l2: StoreAccess.make(store, counters, { refusalBound: "1 second", retryBase: "1 millis", retries: 3, batchMisses: false, batchWrites: false })
    }
  })

const transient = new StoreError({ operation: "write", message: "lost", retryable: true })
const permanent = new StoreError({ operation: "write", message: "syntax", retryable: false })
const refused = new StoreError({ operation: "read", message: "too many clients", refused: true, retryable: true })

describe("StoreAccess", () => {
  it.effect("an operation that succeeds at once runs once", () =>
    Effect.gen(function*() {
      const { attempts, store } = failingStore([])
      const { counters, l2 } = yield* access(store)
      yield* l2.persist(request)
      yield* l2.read(key)
      expect(attempts).toEqual({ read: 1, write: 1 })
      expect(counters.snapshot()).toMatchObject({ persistFailures: 0, refusals: 0 })
    }))

  const writes = [
    { name: "a write that fails transiently is retried until it succeeds", failures: [transient, transient], attempts: 3, given: 0 },
    { name: "a write is given up after its retries, and counted", failures: Array(5).fill(transient), attempts: 4, given: 1 },
    { name: "a write that cannot succeed is not retried", failures: [permanent], attempts: 1, given: 1 }
  ]
  for (const write of writes) {
    it.live(write.name, () =>
      Effect.gen(function*() {
        const { attempts, store } = failingStore(write.failures)
        const { counters, l2 } = yield* access(store)
        yield* l2.persist(request)
        expect(attempts.write).toBe(write.attempts)
        expect(counters.snapshot().persistFailures).toBe(write.given)
      }))
  }

  it.live("a refused read is waited out: each refusal counted, then the read answers", () =>
    Effect.gen(function*() {
      const { attempts, store } = failingStore([refused, refused])
      const { counters, l2 } = yield* access(store)
      const row = yield* l2.read(key)
      expect(row._tag).toBe("Absent")
      expect(attempts.read).toBe(3)
      expect(counters.snapshot().refusals).toBe(2)
    }))
})
