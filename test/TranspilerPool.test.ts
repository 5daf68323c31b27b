import { codeOf } from "../src/transpiler/SourceMaps.ts"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Metric, Option, Scope, Tracer } from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { BroadcastChannel } from "node:worker_threads"
import { fileURLToPath } from "node:url"
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import {
  TranspileMemoryLimitError,
  TranspileQueueFullError,
  TranspileTimeoutError,
  TranspileWorkerCrashError
} from "../src/domain/Errors.ts"
import * as ModuleCache from "../src/cache/ModuleCache.ts"
import { Transpiler } from "../src/domain/Transpiler.ts"
import * as TranspilerPool from "../src/transpiler/TranspilerPool.ts"
import { keyOf, makeCache, makeWorld } from "./support/world.ts"

const fixturesDir = fileURLToPath(new URL("./fixtures/transpiler/", import.meta.url))
const faultWorkerUrl = new URL("./support/fault-worker.ts", import.meta.url)
/** The fault worker's BroadcastChannel (see test/support/fault-worker.ts). */
const channelName = "mtc-fault-worker"

/** Every fixture as a module: TypeScript fixtures are stored as `<name>.ts.txt`. */
const fixtures = readdirSync(fixturesDir)
  .filter((name) => name !== "README.md")
  .map((name) => ({ path: `cards/${name.replace(/\.txt$/, "")}`, source: readFileSync(`${fixturesDir}${name}`, "utf8") }))

const small = (name: string) => ({ path: `${name}.ts`, source: `export const ${name}: number = 1\n` })

/** Listens to the fault worker's channel: which jobs started, and a way to release held ones. */
const faultChannel = Effect.acquireRelease(
  Effect.sync(() => {
    const channel = new BroadcastChannel(channelName)
    const started: Array<string> = []
    const waiters: Array<() => void> = []
    channel.onmessage = (event: { readonly data: unknown }) => {
      if (typeof event.data === "string" && event.data.startsWith("started:")) {
        started.push(event.data.slice("started:".length))
        for (const wake of waiters.splice(0)) wake()
      }
    }
    /** Waits until a job of that path has started in a worker. */
    const awaitStarted = (path: string): Effect.Effect<void> =>
      Effect.callback<void>((resume) => {
        const check = () => {
          if (started.includes(path)) resume(Effect.void)
          else waiters.push(check)
        }
        check()
      })
    return { channel, started, awaitStarted, release: () => channel.postMessage("release") }
  }),
  ({ channel }) => Effect.sync(() => channel.close())
)

const faultPool = (options: TranspilerPool.TranspilerPoolOptions = {}) =>
  TranspilerPool.makePool({ workers: 1, workerUrl: faultWorkerUrl, ...options })

// One fault pool (1 worker, room for 1 queued job) shared by the tests that need no other
// settings: starting a worker loads Babel, which is most of a test's time.
let shared: TranspilerPool.TranspilerPool | undefined
const sharedScope = Effect.runSync(Scope.make())
beforeAll(async () => {
  shared = await Effect.runPromise(Scope.provide(faultPool({ maxQueue: 1 }), sharedScope))
})
afterAll(() => Effect.runPromise(Scope.close(sharedScope, Exit.void)))
const sharedPool = Effect.sync(() => {
  if (shared === undefined) throw new Error("the shared pool did not start")
  return shared
})

/** Waits (by yielding, not by time) until the pool's state satisfies a predicate. */
const until = (pool: TranspilerPool.TranspilerPool, predicate: (state: TranspilerPool.PoolState) => boolean) =>
  Effect.gen(function*() {
    while (!predicate(pool.state())) yield* Effect.sleep(5)
  })

const restarts = (reason: string) =>
  Effect.map(Metric.value(Metric.withAttributes(TranspilerPool.restartCounter, { reason })), (state) => state.count)

const gaugeValue = (gauge: Metric.Gauge<number>) => Effect.map(Metric.value(gauge), (state) => state.value)

describe("TranspilerPool", () => {
  it.live("gives the bytes and errors of the in-process transpiler on every fixture, with its fingerprint", () =>
    Effect.scoped(Effect.gen(function*() {
      const inProcess = yield* BabelTranspiler.make()
      const pool = yield* TranspilerPool.makePool({ workers: 2 })
      expect(pool.service.fingerprint).toBe(inProcess.fingerprint)
      expect(fixtures.length).toBeGreaterThanOrEqual(9)
      // All at once, so that jobs queue behind the two workers.
      const fromPool = yield* Effect.forEach(fixtures, (input) => Effect.exit(pool.service.transpile(input)), {
        concurrency: "unbounded"
      })
      let compressedBodies = 0
      for (const [i, input] of fixtures.entries()) {
        const expected = yield* Effect.exit(inProcess.transpile(input))
        const actual = fromPool[i]
        if (actual === undefined) throw new Error("missing result")
        if (Exit.isSuccess(expected)) {
          expect(Exit.isSuccess(actual), input.path).toBe(true)
          if (Exit.isSuccess(actual)) {
            // The worker compresses the body with its transpile: each form decodes to the body.
            const { encoded, ...module } = actual.value
            expect(module, input.path).toStrictEqual(expected.value)
            if (Buffer.byteLength(module.body) >= 256) {
              expect(brotliDecompressSync(encoded!.br!).toString("utf8"), input.path).toBe(module.body)
              expect(gunzipSync(encoded!.gzip!).toString("utf8"), input.path).toBe(module.body)
              compressedBodies++
            } else {
              expect(encoded, input.path).toBeUndefined()
            }
          }
        } else {
          const want = Option.getOrThrow(Exit.findErrorOption(expected))
          const got = Option.getOrThrow(Exit.findErrorOption(actual))
          expect(got.constructor, input.path).toBe(want.constructor)
          expect({ ...got, message: got.message }, input.path).toStrictEqual({ ...want, message: want.message })
        }
      }
      // Both kinds of outcome are covered, and bodies large enough to compress.
      expect(compressedBodies).toBeGreaterThan(0)
      expect(fromPool.some(Exit.isSuccess)).toBe(true)
      expect(fromPool.some(Exit.isFailure)).toBe(true)
      expect(pool.state()).toMatchObject({ busy: 0, queued: 0, restarts: 0 })

      // A job may name fewer codings (the cache makes the rest later), and a compress job makes
      // them in a worker: each form decodes to the body, and the forms it had are kept.
      const big = fixtures.find((input) => input.path.endsWith(".ts") && input.source.length > 600) ?? fixtures[0]!
      const source = `${big.source}\n${Array.from({ length: 30 }, (_, i) => `export const padding${i} = ${i}`).join("\n")}\n`
      const bare = yield* pool.service.transpile({ path: "big.ts", source, codings: [] })
      expect(bare.encoded).toBeUndefined()
      const brOnly = yield* pool.service.transpile({ path: "big.ts", source, codings: ["br"] })
      expect(Object.keys(brOnly.encoded ?? {})).toEqual(["br"])
      const complete = yield* pool.service.compress!(brOnly, ["gzip"])
      expect(complete.encoded!.br).toBe(brOnly.encoded!.br)
      expect(gunzipSync(complete.encoded!.gzip!).toString("utf8")).toBe(brOnly.body)
      const both = yield* pool.service.compress!(bare, ["br", "gzip"])
      expect(brotliDecompressSync(both.encoded!.br!).toString("utf8")).toBe(bare.body)
      expect({ ...both, encoded: undefined }).toStrictEqual({ ...bare, encoded: undefined })
    })))

  it.live("a crashing worker fails its job with TranspileWorkerCrashError, is replaced, and the next job succeeds", () =>
    Effect.scoped(Effect.gen(function*() {
      const pool = yield* sharedPool
      const before = yield* restarts("crash")
      const restartsBefore = pool.state().restarts
      const crash = yield* Effect.flip(pool.service.transpile({ path: "crash.ts", source: "// __CRASH__" }))
      expect(crash).toBeInstanceOf(TranspileWorkerCrashError)
      expect(crash).toMatchObject({ path: "crash.ts", reason: "injected crash" })
      const exit = yield* Effect.flip(pool.service.transpile({ path: "exit.ts", source: "// __EXIT__" }))
      expect(exit).toBeInstanceOf(TranspileWorkerCrashError)
      expect(exit.message).toContain("code 3")
      const next = yield* pool.service.transpile(small("after"))
      expect(codeOf(next.body)).toBe("export const after = 1;")
      expect(pool.state().restarts - restartsBefore).toBe(2)
      expect((yield* restarts("crash")) - before).toBe(2)
    })))

  it.live("a worker over its memory limit fails its job with TranspileMemoryLimitError and is replaced", () =>
    Effect.scoped(Effect.gen(function*() {
      const pool = yield* faultPool({ maxMemoryMb: 128 })
      const before = yield* restarts("memory")
      const error = yield* Effect.flip(pool.service.transpile({ path: "hog.ts", source: "// __HOG__" }))
      expect(error).toBeInstanceOf(TranspileMemoryLimitError)
      expect(error).toMatchObject({ path: "hog.ts", limitMb: 128 })
      const next = yield* pool.service.transpile(small("afterHog"))
      expect(codeOf(next.body)).toBe("export const afterHog = 1;")
      expect((yield* restarts("memory")) - before).toBe(1)
    })))

  it.live("a transpile past its timeout terminates its worker and fails with TranspileTimeoutError", () =>
    Effect.scoped(Effect.gen(function*() {
      const pool = yield* faultPool({ timeout: "1500 millis" })
      const before = yield* restarts("timeout")
      const error = yield* Effect.flip(pool.service.transpile({ path: "hang.ts", source: "// __HANG__" }))
      expect(error).toBeInstanceOf(TranspileTimeoutError)
      expect(error).toMatchObject({ path: "hang.ts", timeoutMillis: 1500 })
      const next = yield* pool.service.transpile(small("afterHang"))
      expect(codeOf(next.body)).toBe("export const afterHang = 1;")
      expect((yield* restarts("timeout")) - before).toBe(1)
    })))

  it.live("an interrupted queued job leaves the queue and never runs; a started one finishes", () =>
    Effect.scoped(Effect.gen(function*() {
      const faults = yield* faultChannel
      const pool = yield* sharedPool
      const held = yield* Effect.forkChild(pool.service.transpile({ path: "held.ts", source: "// __HOLD__\nexport {}" }))
      yield* faults.awaitStarted("held.ts")
      expect(yield* gaugeValue(TranspilerPool.busyWorkersGauge)).toBe(1)
      const queued = yield* Effect.forkChild(pool.service.transpile(small("queued")))
      yield* until(pool, (state) => state.queued === 1)
      expect(yield* gaugeValue(TranspilerPool.queueLengthGauge)).toBe(1)
      yield* Fiber.interrupt(queued)
      expect(pool.state().queued).toBe(0)
      expect(yield* gaugeValue(TranspilerPool.queueLengthGauge)).toBe(0)
      faults.release()
      const heldModule = yield* Fiber.join(held)
      expect(heldModule.body).toContain("export {};")
      const next = yield* pool.service.transpile(small("next"))
      expect(codeOf(next.body)).toBe("export const next = 1;")
      // The interrupted job never reached the worker.
      // Notes and replies travel on different channels: wait for the last note.
      yield* faults.awaitStarted("next.ts")
      expect(faults.started).toEqual(["held.ts", "next.ts"])
      expect(pool.state()).toMatchObject({ busy: 0, queued: 0 })
      expect(yield* gaugeValue(TranspilerPool.busyWorkersGauge)).toBe(0)
    })))

  it.live("a caller interrupted while its job runs leaves the worker running: the job finishes, nothing restarts", () =>
    Effect.scoped(Effect.gen(function*() {
      const faults = yield* faultChannel
      const pool = yield* sharedPool
      const held = yield* Effect.forkChild(pool.service.transpile({ path: "held.ts", source: "// __HOLD__\nexport {}" }))
      yield* faults.awaitStarted("held.ts")
      const restartsBefore = pool.state().restarts
      yield* Fiber.interrupt(held)
      expect(pool.state()).toMatchObject({ busy: 1, queued: 0 })
      const next = yield* Effect.forkChild(pool.service.transpile(small("next")))
      yield* until(pool, (state) => state.queued === 1)
      faults.release()
      expect(codeOf((yield* Fiber.join(next)).body)).toBe("export const next = 1;")
      // Notes and replies travel on different channels: wait for the last note.
      yield* faults.awaitStarted("next.ts")
      expect(faults.started).toEqual(["held.ts", "next.ts"])
      expect(pool.state()).toMatchObject({ busy: 0, queued: 0, restarts: restartsBefore })
    })))

  it.live("a finished job's worker takes the next queued job before the finished job's caller resumes", () =>
    Effect.scoped(Effect.gen(function*() {
      const faults = yield* faultChannel
      const pool = yield* sharedPool
      // What the pool looked like when the held job's caller resumed, synchronously on its reply.
      let seen: TranspilerPool.PoolState | undefined
      const held = yield* Effect.forkChild(
        pool.service.transpile({ path: "held.ts", source: "// __HOLD__\nexport {}" }).pipe(
          Effect.tap(() => Effect.sync(() => (seen = pool.state())))
        )
      )
      yield* faults.awaitStarted("held.ts")
      const queued = yield* Effect.forkChild(pool.service.transpile(small("queued")))
      yield* until(pool, (state) => state.queued === 1)
      faults.release()
      yield* Fiber.join(held)
      expect(seen).toMatchObject({ busy: 1, queued: 0 })
      expect(codeOf((yield* Fiber.join(queued)).body)).toBe("export const queued = 1;")
      yield* faults.awaitStarted("queued.ts")
      expect(pool.state()).toMatchObject({ busy: 0, queued: 0 })
      expect(yield* gaugeValue(TranspilerPool.busyWorkersGauge)).toBe(0)
    })))

  it.live("a full queue fails the job with TranspileQueueFullError; queued jobs still run, and so does the next", () =>
    Effect.scoped(Effect.gen(function*() {
      const faults = yield* faultChannel
      const pool = yield* sharedPool
      const held = yield* Effect.forkChild(pool.service.transpile({ path: "held.ts", source: "// __HOLD__\nexport {}" }))
      yield* faults.awaitStarted("held.ts")
      const queued = yield* Effect.forkChild(pool.service.transpile(small("queued")))
      yield* until(pool, (state) => state.queued === 1)
      const full = yield* Effect.flip(pool.service.transpile(small("rejected")))
      expect(full).toBeInstanceOf(TranspileQueueFullError)
      expect(full).toMatchObject({ path: "rejected.ts", capacity: 1 })
      faults.release()
      yield* Fiber.join(held)
      expect(codeOf((yield* Fiber.join(queued)).body)).toBe("export const queued = 1;")
      expect(codeOf((yield* pool.service.transpile(small("later"))).body)).toBe("export const later = 1;")
      // Notes and replies travel on different channels: wait for the last note.
      yield* faults.awaitStarted("later.ts")
      expect(faults.started).toEqual(["held.ts", "queued.ts", "later.ts"])
    })))

  it.live("Transpiler.transpile spans carry the queue wait and the run time", () =>
    Effect.scoped(Effect.gen(function*() {
      const spans: Array<Tracer.Span> = []
      const tracer = Tracer.make({
        span: (options) => {
          const span = new Tracer.NativeSpan(options)
          spans.push(span)
          return span
        }
      })
      const faults = yield* faultChannel
      const pool = yield* sharedPool
      const held = yield* Effect.forkChild(
        Effect.withTracer(pool.service.transpile({ path: "held.ts", source: "// __HOLD__\nexport {}" }), tracer)
      )
      yield* faults.awaitStarted("held.ts")
      const queued = yield* Effect.forkChild(Effect.withTracer(pool.service.transpile(small("queued")), tracer))
      yield* until(pool, (state) => state.queued === 1)
      faults.release()
      yield* Fiber.join(held)
      yield* Fiber.join(queued)
      const transpileSpans = spans.filter((span) => span.name === "Transpiler.transpile")
      expect(transpileSpans.map((span) => span.attributes.get("mtc.path"))).toEqual(["held.ts", "queued.ts"])
      for (const span of transpileSpans) {
        expect(span.attributes.get("mtc.transpiler")).toBe("pool")
        const wait = span.attributes.get("mtc.worker.queue_wait_ms")
        const run = span.attributes.get("mtc.worker.run_ms")
        expect(typeof wait === "number" && wait >= 0).toBe(true)
        expect(typeof run === "number" && run >= 0).toBe(true)
        expect(span.attributes.get("mtc.worker.index")).toBe(0)
      }
      // The queued job waited at least as long as the held one ran (it could only start after it).
      const [heldSpan, queuedSpan] = transpileSpans
      expect(Number(queuedSpan?.attributes.get("mtc.worker.queue_wait_ms"))).toBeGreaterThan(0)
      expect(heldSpan?.status._tag).toBe("Ended")
    })))

  it.live.skipIf(process.platform !== "linux")("on Linux, its workers run 10 nice levels below the main thread, or as many as `nice` says", () =>
    Effect.gen(function*() {
      yield* sharedPool
      // Field 19 of /proc/<pid>/task/<tid>/stat is the thread's nice value (after the `(comm)` field).
      const niceOf = (stat: string) => Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16])
      const own = niceOf(readFileSync("/proc/thread-self/stat", "utf8"))
      const threads = () => readdirSync("/proc/self/task").map((tid) => niceOf(readFileSync(`/proc/self/task/${tid}/stat`, "utf8")))
      expect(threads()).toContain(Math.min(19, own + 10))
      expect(threads()).not.toContain(Math.min(19, own + 3))
      yield* Effect.scoped(Effect.gen(function*() {
        yield* faultPool({ nice: 3 })
        expect(threads()).toContain(Math.min(19, own + 3))
      }))
    }))

  it.live("stops its workers when its scope closes: jobs still queued are interrupted", () =>
    Effect.gen(function*() {
      const outcome = yield* Effect.scoped(Effect.gen(function*() {
        const pool = yield* faultPool()
        const held = yield* Effect.forkDetach(pool.service.transpile({ path: "held.ts", source: "// __HOLD__" }))
        const queued = yield* Effect.forkDetach(pool.service.transpile(small("queued")))
        yield* until(pool, (state) => state.busy === 1 && state.queued === 1)
        return { held, queued }
      }))
      const held = yield* Fiber.await(outcome.held)
      const queued = yield* Fiber.await(outcome.queued)
      expect(Exit.isFailure(held) && Cause.hasInterrupts(held.cause)).toBe(true)
      expect(Exit.isFailure(queued) && Cause.hasInterrupts(queued.cause)).toBe(true)
    }))
})

describe("TranspilerPool in a ModuleCache", () => {
  /** A world whose caches transpile on the pool. */
  const poolWorld = (pool: TranspilerPool.TranspilerPool, files: Record<string, string>) =>
    Effect.map(makeWorld(files), (world) => ({ ...world, transpiler: { ...world.transpiler, service: pool.service } }))

  it.live("a fault is not recorded as the module's failure: the lock is released and the next get transpiles again", () =>
    Effect.scoped(Effect.gen(function*() {
      const pool = yield* sharedPool
      const restartsBefore = pool.state().restarts
      const world = yield* poolWorld(pool, { "crash.ts": "// __CRASH__", "ok.ts": "export const ok = 1" })
      // A lock left held would make the second get wait for this deadline (past the test's timeout).
      const cache = yield* makeCache(world, { deadline: "10 minutes" })
      const first = yield* Effect.flip(cache.get(keyOf("crash.ts")))
      expect(first).toBeInstanceOf(TranspileWorkerCrashError)
      expect((yield* world.readRow(keyOf("crash.ts")))._tag).toBe("Absent")
      const second = yield* Effect.flip(cache.get(keyOf("crash.ts")))
      expect(second).toBeInstanceOf(TranspileWorkerCrashError)
      // Each get ran the job again (a crashing thread may die before its "started" note is sent).
      expect(pool.state().restarts - restartsBefore).toBe(2)
      const ok = yield* cache.get(keyOf("ok.ts"))
      expect(codeOf(ok.module.body)).toBe("export const ok = 1;")
    })))

  it.live("a joiner's interruption never cancels the started transpile: the other caller gets it", () =>
    Effect.scoped(Effect.gen(function*() {
      const faults = yield* faultChannel
      const pool = yield* sharedPool
      const world = yield* poolWorld(pool, { "held.ts": "// __HOLD__\nexport const held = 1" })
      const cache = yield* makeCache(world)
      const first = yield* Effect.forkChild(cache.get(keyOf("held.ts")))
      yield* faults.awaitStarted("held.ts")
      const second = yield* Effect.forkChild(cache.get(keyOf("held.ts")))
      yield* Effect.yieldNow
      yield* Fiber.interrupt(first)
      faults.release()
      const result = yield* Fiber.join(second)
      expect(result.module.body).toContain("export const held = 1;")
      expect(result.outcome).toBe("coalesced")
      expect(faults.started).toEqual(["held.ts"])
    })))
})

describe("TranspilerPool on demand", () => {
  it.live("starts startWorkers; a job that finds every worker busy starts another; idle ones leave down to the floor", () =>
    Effect.scoped(Effect.gen(function*() {
      const faults = yield* faultChannel
      const pool = yield* faultPool({ workers: 2, startWorkers: 1, minWorkers: 1, idleTimeout: "100 millis" })
      expect(pool.state()).toMatchObject({ workers: 1, retired: 0 })
      expect(yield* gaugeValue(TranspilerPool.workersGauge)).toBe(1)
      const held = yield* Effect.forkChild(pool.service.transpile({ path: "held.ts", source: "// __HOLD__\nexport {}" }))
      yield* faults.awaitStarted("held.ts")
      expect(pool.state().workers).toBe(1)
      // The only worker is held: this job starts the second one and runs there meanwhile.
      const other = yield* pool.service.transpile(small("other"))
      expect(codeOf(other.body)).toBe("export const other = 1;")
      expect(pool.state()).toMatchObject({ workers: 2, busy: 1 })
      faults.release()
      yield* Fiber.join(held)
      // Both idle now: one leaves after the idle timeout, the floor's stays.
      yield* until(pool, (state) => state.retired === 1)
      expect(pool.state()).toMatchObject({ workers: 1, busy: 0, restarts: 0 })
      expect(yield* gaugeValue(TranspilerPool.workersGauge)).toBe(1)
      const after = yield* pool.service.transpile(small("after"))
      expect(codeOf(after.body)).toBe("export const after = 1;")
      expect(pool.state()).toMatchObject({ workers: 1, retired: 1, restarts: 0 })
    })))

  it.live("by default two start with the pool (here all of them), and those above the floor of 1 leave once idle", () =>
    Effect.scoped(Effect.gen(function*() {
      const pool = yield* TranspilerPool.makePool({ workers: 2, idleTimeout: "50 millis" })
      expect(pool.state()).toMatchObject({ workers: 2, retired: 0 })
      yield* until(pool, (state) => state.retired === 1)
      expect(pool.state()).toMatchObject({ workers: 1, restarts: 0 })
      const module = yield* pool.service.transpile(small("floor"))
      expect(codeOf(module.body)).toBe("export const floor = 1;")
    })))

  it.live("with minWorkers 0 the last worker leaves too, and the next job starts one", () =>
    Effect.scoped(Effect.gen(function*() {
      const pool = yield* TranspilerPool.makePool({ workers: 2, startWorkers: 0, minWorkers: 0, idleTimeout: "50 millis" })
      // One worker starts with the pool all the same: it proves the pipeline loads.
      expect(pool.state().workers).toBe(1)
      yield* until(pool, (state) => state.workers === 0)
      const module = yield* pool.service.transpile(small("woken"))
      expect(codeOf(module.body)).toBe("export const woken = 1;")
      expect(pool.state()).toMatchObject({ retired: 1, restarts: 0 })
    })))

  it.live("a job queued while every slot's worker is starting waits for one, and does not start more than the slots", () =>
    Effect.scoped(Effect.gen(function*() {
      const pool = yield* TranspilerPool.makePool({ workers: 2, startWorkers: 1 })
      const modules = yield* Effect.forEach(Array.from({ length: 12 }, (_, i) => small(`m${i}`)), (input) => pool.service.transpile(input), {
        concurrency: "unbounded"
      })
      expect(modules.map((m) => codeOf(m.body))).toEqual(Array.from({ length: 12 }, (_, i) => `export const m${i} = 1;`))
      expect(pool.state()).toMatchObject({ workers: 2, queued: 0, busy: 0, restarts: 0 })
    })))
})
