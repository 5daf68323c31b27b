/**
 * The {@link Transpiler} on a pool of worker threads, so that parsing and code generation
 * never run on the event loop: a process busy transpiling still answers warm hits and
 * health probes at once.
 *
 * - Up to `workers` workers run, with the same transpiler options (passed wholesale to
 *   `BabelTranspiler.make`), and are reused. Each reports its fingerprint, which must equal
 *   the one computed here, so rows are never written under a pipeline the main thread does
 *   not know. `startWorkers` (default 2) start with the pool, before it is ready, so that
 *   neither the first request nor the first cold herd waits for a worker's start (about
 *   400 ms of CPU each); on a machine of many cores the rest start on idle ones as the herd
 *   needs them. A worker idle for `idleTimeout` (default 30 s) leaves, down
 *   to `minWorkers` (default 1): an idle process holds one worker, not one per core. A job
 *   that finds every worker busy starts another, up to `workers`.
 * - One job per worker. When all are busy, jobs wait in FIFO order in a bounded queue; a job
 *   whose caller is interrupted before it starts leaves the queue. A started job runs to the
 *   end (its result is dropped when nobody waits for it): the cache's single-flight shares
 *   it between callers, and one caller giving up never cancels it.
 * - Faults fail that one job with a typed error, and the pool heals: a worker that crashes
 *   or exceeds its heap limit is replaced; a job past its timeout terminates its worker,
 *   which is replaced.
 * - One `Transpiler.transpile` span per job, in the calling fiber: `mtc.path`,
 *   `mtc.transpiler` (`pool`), the pool's `mtc.engine` and `mtc.pipeline`, and
 *   `mtc.worker.queue_wait_ms`, `mtc.worker.run_ms` and `mtc.worker.index`. Metrics: queue
 *   length, busy workers, worker restarts by reason, updated from the worker events through
 *   the context the pool was made in.
 *
 * With `workers: 0` the transpiler runs in-process (the Babel layer), as before.
 *
 * @since 0.2.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { availableParallelism } from "node:os"
import { extname } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { Worker } from "node:worker_threads"
import * as BabelTranspiler from "./BabelTranspiler.ts"
import { type Coding, codings, encodingsConfig } from "../internal/ContentCoding.ts"
import { messageOf } from "../internal/errors.ts"
import type { TranspiledModule } from "../domain/Domain.ts"
import {
  type TranspilerError,
  TranspileMemoryLimitError,
  TranspileQueueFullError,
  TranspileTimeoutError,
  TranspileWorkerCrashError
} from "../domain/Errors.ts"
import * as TranspileMetrics from "./TranspileMetrics.ts"
import { BuildFailure, isWorkerReply, type WorkerInit, type WorkerJob, type WorkerReply } from "./TranspileWorker.ts"
import { type TranspileInput, Transpiler } from "../domain/Transpiler.ts"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/** The options of {@link make}. */
export interface TranspilerPoolOptions {
  /** The transpiler's own options, the same in every worker and in the main thread. */
  readonly transpiler?: BabelTranspiler.BabelTranspilerOptions
  /** Worker threads at most (default: the machine's available parallelism; 0 runs in-process). */
  readonly workers?: number
  /**
   * Workers kept while the pool is idle (default 1, at most `workers`); 0 lets the last one
   * leave too, and the next job then waits for a worker's start.
   */
  readonly minWorkers?: number
  /**
   * Workers started with the pool, before it is ready (default 2, at most `workers`; at least
   * 1, which proves the pipeline loads). The rest start on demand, during the first cold herd:
   * on a machine of many cores they start on idle ones, while the first two work.
   */
  readonly startWorkers?: number
  /** How long a worker above `minWorkers` may sit idle before it leaves (default 30 s). */
  readonly idleTimeout?: Duration.Input
  /** Each worker's heap limit in MiB (`resourceLimits.maxOldGenerationSizeMb`; default: V8's). */
  readonly maxMemoryMb?: number
  /** How long one transpile may run before its worker is terminated (default 30 s). */
  readonly timeout?: Duration.Input
  /** Jobs that may wait for a worker (default 4096); one more fails with `TranspileQueueFullError`. */
  readonly maxQueue?: number
  /**
   * Nice levels the workers run below the process on Linux (default 10; 0 to 19), so that the
   * event loop wins the CPU. The price: on a host whose cores other processes keep busy, the
   * workers get a small share of them (at 10, about a tenth of a core against one busy process).
   */
  readonly nice?: number
  /** The worker entry module (default `TranspileWorker` next to this module). */
  readonly workerUrl?: URL
  /**
   * The content codings each worker compresses a module's body with after its transpile
   * (default br and gzip; `MTC_CONTENT_ENCODINGS`). The cache makes any a module still lacks.
   */
  readonly contentEncodings?: ReadonlyArray<Coding>
}

/** The defaults of {@link TranspilerPoolOptions}. */
export const defaults = {
  workers: availableParallelism(),
  startWorkers: 2,
  minWorkers: 1,
  idleTimeout: Duration.seconds(30),
  timeout: Duration.seconds(30),
  maxQueue: 4096,
  nice: 10
} as const

/**
 * Each worker's young generation in MiB (`resourceLimits.maxYoungGenerationSizeMb`): semi-spaces
 * of 4 MiB, where V8's default on 64-bit is 16 MiB. A transpile's garbage is short-lived, and
 * the default keeps about 12 MiB more of RSS per worker for no measurable speed
 * (scratchpad/RESULTS.md, issue 38).
 */
export const workerYoungGenerationMb = 12

/** The worker entry next to this module: `.ts` when run from `src`, `.js` from a build. */
export const defaultWorkerUrl: URL = new URL(
  `./TranspileWorker${extname(fileURLToPath(import.meta.url))}`,
  import.meta.url
)

/** A worker failed to start: its transpiler could not be built, or its fingerprint differs. */
export class TranspileWorkerStartError extends Schema.TaggedError<TranspileWorkerStartError>()("TranspileWorkerStartError", {
  message: Schema.String
}) {}

/** Why a pool could not start: a worker failed to, or the pipeline could not be loaded. */
export type TranspilerStartError = TranspileWorkerStartError | BabelTranspiler.PipelineError

// -----------------------------------------------------------------------------
// Metrics
// -----------------------------------------------------------------------------

/** Jobs waiting for a worker. */
export const queueLengthGauge = Metric.gauge("transpile_pool_queue_length", { description: "Transpile jobs waiting for a worker" })
/** Worker threads running, busy or idle. */
export const workersGauge = Metric.gauge("transpile_pool_workers", { description: "Transpile worker threads running, busy or idle" })
/** Workers running a job. */
export const busyWorkersGauge = Metric.gauge("transpile_pool_busy_workers", { description: "Transpile workers running a job" })
/** Workers replaced, by reason (`crash`, `memory`, `timeout`, `start`). */
export const restartCounter = Metric.counter("transpile_pool_worker_restarts_total", { description: "Transpile workers replaced, by reason" })

type RestartReason = "crash" | "memory" | "timeout" | "start"

const restartsBy: Readonly<Record<RestartReason, Metric.Counter<number>>> = {
  crash: Metric.withAttributes(restartCounter, { reason: "crash" }),
  memory: Metric.withAttributes(restartCounter, { reason: "memory" }),
  timeout: Metric.withAttributes(restartCounter, { reason: "timeout" }),
  start: Metric.withAttributes(restartCounter, { reason: "start" })
}

// -----------------------------------------------------------------------------
// Pool
// -----------------------------------------------------------------------------

interface Job {
  readonly id: number
  readonly input: TranspileInput
  /** `input.source` is a body to compress (`Transpiler.compress`), not a module to transpile. */
  readonly compressOnly: boolean
  readonly enqueuedAt: number
  state: "queued" | "running" | "settled"
  readonly settle: (effect: Effect.Effect<TranspiledModule, TranspilerError>) => void
}

interface Member {
  readonly index: number
  readonly worker: Worker
  ready: boolean
  /** The job running, with when it started. */
  job: { readonly job: Job; readonly startedAt: number; readonly timer: ReturnType<typeof setTimeout> } | undefined
  /** Set once the worker is given up (replaced, or left idle): later events of it are ignored. */
  gone: boolean
  /** The timer that retires the worker once it has been idle for `idleTimeout`. */
  idle: ReturnType<typeof setTimeout> | undefined
}

/** A snapshot of the pool, for tests and stats. */
export interface PoolState {
  /** Worker threads running or starting. */
  readonly workers: number
  /** Workers that left after `idleTimeout`. */
  readonly retired: number
  readonly busy: number
  readonly queued: number
  readonly restarts: number
}

/** The pool's Transpiler, with a view of its state. */
export interface TranspilerPool {
  readonly service: Transpiler["Service"]
  readonly state: () => PoolState
}

const decodeFailure = Schema.decodeUnknownExit(BuildFailure)

/**
 * Starts the pool's workers (in the current scope, which terminates them) and waits until
 * each has built its transpiler and reported the expected fingerprint.
 */
export const makePool = Effect.fnUntraced(function*(options: TranspilerPoolOptions = {}) {
  const transpilerOptions = options.transpiler ?? {}
  // Computed in-process: the same options give the same fingerprint everywhere.
  const pipeline = yield* BabelTranspiler.pipelineOf(transpilerOptions)
  const engine = BabelTranspiler.engineOf(pipeline, transpilerOptions)
  const sourceMaps = transpilerOptions.sourceMaps ?? true
  const fingerprint = BabelTranspiler.fingerprintOfPipeline(pipeline, engine, sourceMaps)
  const size = Math.max(1, options.workers ?? defaults.workers)
  const floor = Math.min(size, Math.max(0, options.minWorkers ?? defaults.minWorkers))
  const idleMillis = Duration.toMillis(Duration.fromInputUnsafe(options.idleTimeout ?? defaults.idleTimeout))
  const timeoutMillis = Duration.toMillis(Duration.fromInputUnsafe(options.timeout ?? defaults.timeout))
  const maxQueue = Math.max(0, options.maxQueue ?? defaults.maxQueue)
  const workerUrl = options.workerUrl ?? defaultWorkerUrl
  const maxMemoryMb = options.maxMemoryMb
  const nice = Math.min(19, Math.max(0, Math.trunc(options.nice ?? defaults.nice)))
  const contentEncodings = options.contentEncodings ?? codings
  // Worker events arrive outside any fiber: metrics are updated directly, in the pool's context.
  const context = yield* Effect.context<never>()
  const transpileTime = TranspileMetrics.transpileTimeOf(pipeline.name, engine)

  const members: Array<Member | undefined> = Array.from({ length: size }, () => undefined)
  /** FIFO of jobs; interrupted ones are marked settled and skipped. */
  let queue: Array<Job> = []
  let queueHead = 0
  let queued = 0
  let busy = 0
  let restarts = 0
  let retired = 0
  let nextId = 0
  let closed = false
  /** Set once the first workers are all ready: no worker idles out before then. */
  let poolStarted = false

  // The values last published: a gauge is updated only when its value changed (while every
  // worker is busy, a finished job's worker takes the next one and neither changes).
  let publishedQueued = -1
  let publishedBusy = -1
  let publishedWorkers = -1
  const publish = (): void => {
    if (queued !== publishedQueued) queueLengthGauge.updateUnsafe(publishedQueued = queued, context)
    if (busy !== publishedBusy) busyWorkersGauge.updateUnsafe(publishedBusy = busy, context)
    const running = live()
    if (running !== publishedWorkers) workersGauge.updateUnsafe(publishedWorkers = running, context)
  }
  /** Workers running or starting. */
  const live = (): number => members.reduce((count, m) => (m === undefined || m.gone ? count : count + 1), 0)
  /** Workers starting (spawned, not yet ready). */
  const starting = (): number => members.reduce((count, m) => (m === undefined || m.gone || m.ready ? count : count + 1), 0)
  const countRestart = (reason: RestartReason): void => {
    restarts++
    restartsBy[reason].updateUnsafe(1, context)
  }

  /** Starts a worker in a slot; `onStart` is told once whether it came up (and with the expected fingerprint). */
  const spawn = (index: number, onStart: (error: TranspileWorkerStartError | undefined) => void): void => {
    const init: WorkerInit = { entry: workerUrl.href, options: { ...transpilerOptions }, nice, codings: [...contentEncodings] }
    const worker = new Worker(workerUrl, {
      workerData: init,
      resourceLimits: {
        maxYoungGenerationSizeMb: workerYoungGenerationMb,
        ...(maxMemoryMb === undefined ? {} : { maxOldGenerationSizeMb: maxMemoryMb })
      }
    })
    const member: Member = { index, worker, ready: false, job: undefined, gone: false, idle: undefined }
    members[index] = member
    let started = false
    const startFailed = (message: string) => {
      if (started) return
      started = true
      member.gone = true
      void worker.terminate()
      onStart(new TranspileWorkerStartError({ message }))
    }
    worker.on("message", (message: unknown) => {
      if (member.gone || !isWorkerReply(message)) return
      switch (message._tag) {
        case "Ready":
          if (message.fingerprint !== fingerprint) {
            return startFailed(`worker fingerprint ${message.fingerprint} differs from ${fingerprint}`)
          }
          started = true
          member.ready = true
          onStart(undefined)
          return dispatch()
        case "StartFailed":
          return startFailed(message.message)
        default:
          return finish(member, message)
      }
    })
    worker.on("error", (error: unknown) => {
      if (member.gone) return
      const outOfMemory = typeof error === "object" && error !== null && "code" in error &&
        error.code === "ERR_WORKER_OUT_OF_MEMORY"
      const reason = messageOf(error)
      if (!started) return startFailed(reason)
      fault(member, outOfMemory ? "memory" : "crash", reason)
    })
    worker.on("exit", (code) => {
      if (member.gone || closed) return
      if (!started) return startFailed(`worker exited with code ${code} before it was ready`)
      fault(member, "crash", `worker exited with code ${code}`)
    })
  }

  /** Replaces a worker after a fault; a replacement that cannot start is retried after a pause. */
  const replace = (index: number): void => {
    if (closed) return
    spawn(index, (error) => {
      if (error === undefined || closed) return
      countRestart("start")
      setTimeout(() => replace(index), 1000).unref()
    })
  }

  const fault = (member: Member, reason: RestartReason, detail: string): void => {
    member.gone = true
    member.ready = false
    clearTimeout(member.idle)
    void member.worker.terminate()
    countRestart(reason)
    const running = member.job
    member.job = undefined
    if (running !== undefined) {
      clearTimeout(running.timer)
      busy--
      publish()
      const path = running.job.input.path
      settle(
        running.job,
        Effect.fail(
          reason === "timeout"
            ? new TranspileTimeoutError({ path, timeoutMillis })
            : reason === "memory"
            ? new TranspileMemoryLimitError(maxMemoryMb === undefined ? { path } : { path, limitMb: maxMemoryMb })
            : new TranspileWorkerCrashError({ path, reason: detail })
        ),
        member.index,
        running.startedAt
      )
    }
    replace(member.index)
    dispatch()
  }

  const settle = (
    job: Job,
    result: Effect.Effect<TranspiledModule, TranspilerError>,
    worker: number,
    startedAt: number,
    runMillis = performance.now() - startedAt
  ): void => {
    if (job.state === "settled") return
    job.state = "settled"
    const attributes = {
      "mtc.worker.queue_wait_ms": startedAt - job.enqueuedAt,
      "mtc.worker.run_ms": runMillis,
      "mtc.worker.index": worker
    }
    if (!job.compressOnly) transpileTime.updateUnsafe(runMillis / 1000, context)
    job.settle(Effect.andThen(Effect.annotateCurrentSpan(attributes), result))
  }

  const finish = (member: Member, reply: Exclude<WorkerReply, { readonly _tag: "Ready" | "StartFailed" }>): void => {
    const running = member.job
    if (running === undefined || running.job.id !== reply.id) return
    clearTimeout(running.timer)
    member.job = undefined
    busy--
    let result: Effect.Effect<TranspiledModule, TranspilerError>
    switch (reply._tag) {
      case "Done":
        result = Effect.succeed(reply.module)
        break
      case "Failed": {
        const decoded = decodeFailure(reply.error)
        result = decoded._tag === "Success"
          ? Effect.fail(decoded.value)
          : Effect.die(new Error(`undecodable transpile failure from a worker: ${JSON.stringify(reply.error)}`))
        break
      }
      case "Defect":
        result = Effect.die(new Error(reply.message))
        break
    }
    // The freed worker takes the next job first (which publishes the gauges): settling resumes
    // the caller's fiber at once, and the worker need not wait for what it does next.
    dispatch()
    settle(running.job, result, member.index, running.startedAt, reply.runMillis)
  }

  const nextQueued = (): Job | undefined => {
    while (queueHead < queue.length) {
      const job = queue[queueHead++]
      if (job !== undefined && job.state === "queued") {
        queued--
        if (queueHead > 1024 && queueHead * 2 > queue.length) {
          queue = queue.slice(queueHead)
          queueHead = 0
        }
        return job
      }
    }
    return undefined
  }

  /** Lets an idle worker leave after `idleTimeout`, while more than `floor` run. */
  const idleOut = (member: Member): void => {
    if (!poolStarted || member.idle !== undefined) return
    member.idle = setTimeout(() => {
      member.idle = undefined
      if (closed || member.gone || member.job !== undefined || live() <= floor) return
      member.gone = true
      member.ready = false
      members[member.index] = undefined
      retired++
      void member.worker.terminate()
      publish()
    }, idleMillis)
    member.idle.unref()
  }

  /** Starts a worker in a free slot for jobs that no running or starting worker will take. */
  const grow = (): void => {
    const index = members.findIndex((m) => m === undefined || m.gone)
    if (index === -1 || queued <= starting()) return
    spawn(index, (error) => {
      if (error === undefined || closed) return
      // A worker that cannot start on demand: the jobs wait for the others (or fail with
      // their timeout); the slot is tried again by the next job that finds none free.
      countRestart("start")
      members[index] = undefined
      setTimeout(dispatch, 1000).unref()
    })
  }

  function dispatch(): void {
    if (closed) return publish()
    for (const member of members) {
      if (member === undefined || !member.ready || member.gone || member.job !== undefined) continue
      const job = nextQueued()
      if (job === undefined) {
        idleOut(member)
        continue
      }
      clearTimeout(member.idle)
      member.idle = undefined
      job.state = "running"
      const startedAt = performance.now()
      const timer = setTimeout(() => {
        if (member.job?.job === job) fault(member, "timeout", `past ${timeoutMillis} ms`)
      }, timeoutMillis)
      member.job = { job, startedAt, timer }
      busy++
      const { codings, path, source } = job.input
      const message: WorkerJob = {
        id: job.id,
        path,
        source,
        ...(codings === undefined ? {} : { codings: [...codings] }),
        ...(job.compressOnly ? { compressOnly: true } : {})
      }
      member.worker.postMessage(message)
    }
    if (queued > 0) grow()
    publish()
  }

  const transpileRaw = (input: TranspileInput, compressOnly = false): Effect.Effect<TranspiledModule, TranspilerError> =>
    Effect.callback<TranspiledModule, TranspilerError>((resume) => {
      if (closed) {
        resume(Effect.interrupt)
        return
      }
      if (queued >= maxQueue && !members.some((m) => m !== undefined && m.ready && !m.gone && m.job === undefined)) {
        resume(Effect.fail(new TranspileQueueFullError({ path: input.path, capacity: maxQueue })))
        return
      }
      const job: Job = { id: nextId++, input, compressOnly, enqueuedAt: performance.now(), state: "queued", settle: resume }
      queue.push(job)
      queued++
      dispatch()
      return Effect.sync(() => {
        // Interrupted: a queued job leaves the queue; a running one finishes unobserved.
        if (job.state === "queued") {
          job.state = "settled"
          queued--
          publish()
        }
      })
    })

  // Data-first withSpan, as in the Babel layer: the pipeable form captures a stack trace per call.
  // The worker's own span stays in its thread: this is the only span of the job here.
  const transpile = (input: TranspileInput): Effect.Effect<TranspiledModule, TranspilerError> =>
    Effect.withSpan(transpileRaw(input), "Transpiler.transpile", {
      attributes: { "mtc.path": input.path, "mtc.transpiler": "pool", "mtc.engine": engine, "mtc.pipeline": pipeline.name },
      captureStackTrace: false
    })

  /** A module's body compressed in a worker, as a job of the queue like a transpile. */
  const compress = (module: TranspiledModule, codings: ReadonlyArray<Coding>) =>
    Effect.map(
      transpileRaw({ path: "(compress)", source: module.body, codings }, true),
      (made): TranspiledModule => made.encoded === undefined ? module : { ...module, encoded: { ...module.encoded, ...made.encoded } }
    )

  yield* Effect.addFinalizer(() =>
    Effect.promise(() => {
      closed = true
      for (const job of queue.slice(queueHead)) {
        if (job.state === "queued") {
          job.state = "settled"
          job.settle(Effect.interrupt)
        }
      }
      queue = []
      queueHead = 0
      queued = 0
      const running: Array<Promise<number>> = []
      for (const member of members) {
        if (member === undefined) continue
        member.gone = true
        clearTimeout(member.idle)
        if (member.job !== undefined) {
          clearTimeout(member.job.timer)
          const job = member.job.job
          if (job.state !== "settled") {
            job.state = "settled"
            job.settle(Effect.interrupt)
          }
        }
        running.push(member.worker.terminate())
      }
      return Promise.allSettled(running)
    })
  )

  // Start the first workers (at least one, which proves the pipeline loads and has the
  // fingerprint computed here) and wait until all are ready (or one fails). Those above the
  // floor leave once idle.
  const initial = Math.min(size, Math.max(1, options.startWorkers ?? defaults.startWorkers))
  yield* Effect.callback<void, TranspileWorkerStartError>((resume) => {
    let pending = initial
    let failed = false
    for (let index = 0; index < initial; index++) {
      spawn(index, (error) => {
        if (failed) return
        if (error !== undefined) {
          failed = true
          resume(Effect.fail(error))
        } else if (--pending === 0) {
          poolStarted = true
          dispatch()
          resume(Effect.void)
        }
      })
    }
  })

  return {
    service: Transpiler.of({ fingerprint, sourceMaps, transpile, compress }),
    state: () => ({ workers: live(), retired, busy, queued, restarts })
  } satisfies TranspilerPool
})

/**
 * Makes the {@link Transpiler}: a worker pool, or the in-process transpiler when
 * `workers` is 0. Workers are terminated when the scope closes.
 */
export const make = (
  options: TranspilerPoolOptions = {}
): Effect.Effect<Transpiler["Service"], TranspilerStartError, Scope.Scope> =>
  options.workers === 0
    ? BabelTranspiler.make(options.transpiler ?? {})
    : Effect.map(makePool(options), (pool) => pool.service)

/** A layer of the {@link Transpiler} on a worker pool (in-process when `workers` is 0). */
export const layer = (options: TranspilerPoolOptions = {}): Layer.Layer<Transpiler, TranspilerStartError> =>
  Layer.effect(Transpiler, make(options))

/**
 * The pool's settings from `MTC_TRANSPILE_WORKERS`, `MTC_TRANSPILE_MIN_WORKERS`,
 * `MTC_TRANSPILE_START_WORKERS`, `MTC_TRANSPILE_IDLE_TIMEOUT`, `MTC_TRANSPILE_MAX_MEMORY` (MiB), `MTC_TRANSPILE_TIMEOUT` and
 * `MTC_TRANSPILE_NICE`.
 */
export const optionsConfig: Config.Config<Omit<TranspilerPoolOptions, "transpiler" | "workerUrl">> = Config.all({
  workers: Config.withDefault(Config.Int("MTC_TRANSPILE_WORKERS"), defaults.workers),
  minWorkers: Config.withDefault(Config.Int("MTC_TRANSPILE_MIN_WORKERS"), defaults.minWorkers),
  startWorkers: Config.withDefault(Config.Int("MTC_TRANSPILE_START_WORKERS"), defaults.startWorkers),
  idleTimeout: Config.withDefault(Config.Duration("MTC_TRANSPILE_IDLE_TIMEOUT"), defaults.idleTimeout),
  maxMemoryMb: Config.option(Config.Int("MTC_TRANSPILE_MAX_MEMORY")),
  timeout: Config.withDefault(Config.Duration("MTC_TRANSPILE_TIMEOUT"), defaults.timeout),
  nice: Config.withDefault(Config.Int("MTC_TRANSPILE_NICE"), defaults.nice),
  contentEncodings: encodingsConfig
}).pipe(Config.map(({ contentEncodings, idleTimeout, maxMemoryMb, minWorkers, nice, startWorkers, timeout, workers }) => ({
  workers,
  minWorkers,
  idleTimeout,
  startWorkers,
  timeout,
  nice,
  contentEncodings,
  ...(maxMemoryMb._tag === "Some" ? { maxMemoryMb: maxMemoryMb.value } : {})
})))

/**
 * {@link layer} with its settings from {@link optionsConfig} and the transpiler's from
 * `BabelTranspiler.optionsConfig` (`MTC_MAX_SOURCE_BYTES`, `MTC_PIPELINE`, `MTC_EMBER_SOURCE`,
 * `MTC_HOST_PACKAGES`).
 */
export const layerConfig: Layer.Layer<Transpiler, TranspilerStartError | Config.ConfigError> = Layer.unwrap(
  Effect.gen(function*() {
    const pool = yield* optionsConfig
    const transpiler = yield* BabelTranspiler.optionsConfig
    return layer({ ...pool, transpiler })
  })
)
