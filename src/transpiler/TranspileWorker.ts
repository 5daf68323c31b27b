/**
 * The entry of a transpile worker thread, and the messages it exchanges with the pool
 * ({@link TranspilerPool}).
 *
 * A worker builds the in-process transpiler once, with the options the pool passed to it
 * wholesale, reports `Ready` with its fingerprint, then runs one job at a time: each reply
 * carries the module or its typed error (Schema-encoded, so it comes back as the same
 * value) and the time the transpile ran. A module's body is compressed here too, with the
 * codings the pool names (`ContentCoding.withFormsSync`): once per module version, in the
 * same run as its transpile, never on the event loop.
 *
 * The module starts serving only in the thread it was spawned as (`workerData.entry` names
 * the spawned URL), so importing it anywhere else has no effect; a test entry can import
 * {@link serve} and wrap the handler.
 *
 * @since 0.2.0
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import { getPriority, setPriority } from "node:os"
import { performance } from "node:perf_hooks"
import { isMainThread, type MessagePort, parentPort, workerData } from "node:worker_threads"
import * as BabelTranspiler from "./BabelTranspiler.ts"
import type { TranspiledModule } from "../domain/Domain.ts"
import { SourceTooLargeError, TranspileError } from "../domain/Errors.ts"
import type { TranspileInput } from "../domain/Transpiler.ts"
import { withFormsSync } from "../internal/ContentCoding.ts"
import { messageOf } from "../internal/errors.ts"

// -----------------------------------------------------------------------------
// Protocol
// -----------------------------------------------------------------------------

/** What the pool passes as `workerData`. */
export const WorkerInit = Schema.Struct({
  /** The URL the worker was spawned from: only that module starts serving. */
  entry: Schema.String,
  /** The transpiler's options, handed to `BabelTranspiler.make` as they are (plain data). */
  options: Schema.Record(Schema.String, Schema.Unknown),
  /** Nice levels the worker runs below its process (see `lowerPriority`). */
  nice: Schema.Number,
  /** The content codings each module's body is compressed with, here, after its transpile. */
  codings: Schema.Array(Schema.Literals(["br", "gzip"]))
})
export type WorkerInit = typeof WorkerInit.Type

/** One job, pool to worker. */
export const WorkerJob = Schema.Struct({
  id: Schema.Number,
  path: Schema.String,
  source: Schema.String,
  /** The codings to compress this module with (a subset of the init's); absent: the init's. */
  codings: Schema.optionalKey(Schema.Array(Schema.Literals(["br", "gzip"]))),
  /** `source` is a transpiled body to compress with `codings`, not a module to transpile. */
  compressOnly: Schema.optionalKey(Schema.Boolean)
})
export type WorkerJob = typeof WorkerJob.Type

/** The failures of a module that cross the thread boundary, encoded. */
export const BuildFailure = Schema.Union([TranspileError, SourceTooLargeError])

const ModuleFields = Schema.Struct({
  body: Schema.String,
  headers: Schema.Record(Schema.String, Schema.String),
  dependencyKeys: Schema.Array(Schema.String),
  sourceHash: Schema.String,
  encoded: Schema.optionalKey(Schema.Struct({ br: Schema.optionalKey(Schema.Uint8Array), gzip: Schema.optionalKey(Schema.Uint8Array) })),
  sourceMap: Schema.optionalKey(Schema.String)
})

/** A worker's messages to the pool. */
export const WorkerReply = Schema.Union([
  /** The transpiler is built: jobs can come. */
  Schema.TaggedStruct("Ready", { fingerprint: Schema.String }),
  /** The transpiler could not be built. */
  Schema.TaggedStruct("StartFailed", { message: Schema.String }),
  Schema.TaggedStruct("Done", { id: Schema.Number, runMillis: Schema.Number, module: ModuleFields }),
  /** The module failed: `error` is the encoded {@link BuildFailure}. */
  Schema.TaggedStruct("Failed", { id: Schema.Number, runMillis: Schema.Number, error: Schema.Unknown }),
  /** The transpiler died on the job (a defect, not a module failure). */
  Schema.TaggedStruct("Defect", { id: Schema.Number, runMillis: Schema.Number, message: Schema.String })
])
export type WorkerReply = typeof WorkerReply.Type

/** Whether a message from a worker is a {@link WorkerReply}. Extra module fields are kept. */
export const isWorkerReply = Schema.is(WorkerReply)
const isWorkerJob = Schema.is(WorkerJob)
const isWorkerInit = Schema.is(WorkerInit)
const encodeFailure = Schema.encodeSync(BuildFailure)

// -----------------------------------------------------------------------------
// Worker side
// -----------------------------------------------------------------------------

/** How a worker turns a job into a result; a test entry can wrap the default one. */
type Handler = (input: TranspileInput) => Promise<Exit.Exit<TranspiledModule, unknown>>

const reply = (port: MessagePort, id: number, started: number, exit: Exit.Exit<TranspiledModule, unknown>): void => {
  const runMillis = performance.now() - started
  if (Exit.isSuccess(exit)) {
    port.postMessage({ _tag: "Done", id, runMillis, module: exit.value } satisfies WorkerReply)
    return
  }
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "Some" && (error.value instanceof TranspileError || error.value instanceof SourceTooLargeError)) {
    port.postMessage({ _tag: "Failed", id, runMillis, error: encodeFailure(error.value) } satisfies WorkerReply)
    return
  }
  port.postMessage({ _tag: "Defect", id, runMillis, message: Cause.pretty(exit.cause) } satisfies WorkerReply)
}

/** Small modules a worker transpiles once before it reports `Ready` (their results are dropped). */
const warmUpInputs: ReadonlyArray<TranspileInput> = [
  { path: "__warm_up__.ts", source: "const typed: number = 1\nexport default typed\n" },
  { path: "__warm_up__.gts", source: "export default <template>warm</template>\n" }
]

/**
 * Transpiles are batch work: on Linux (where a priority is per thread) the worker runs `nice`
 * levels (default 10) below its process, so that the main thread (warm hits, health probes,
 * handing out jobs) is not preempted by the workers it wakes. Best effort: elsewhere, or when
 * refused, the worker keeps its priority.
 */
const lowerPriority = (nice: number): void => {
  if (process.platform !== "linux" || nice <= 0) return
  try {
    setPriority(Math.min(19, getPriority() + nice))
  } catch {
    // not permitted: keep the default priority
  }
}

/**
 * Serves jobs on the parent port: builds the transpiler from `workerData.options`, reports
 * `Ready`, then answers each job. `wrap` lets a test entry put a handler around the real one.
 */
export const serve = async (wrap: (handler: Handler) => Handler = (handler) => handler): Promise<void> => {
  const port = parentPort
  if (port === null) throw new Error("TranspileWorker.serve runs in a worker thread only")
  const init: unknown = workerData
  if (!isWorkerInit(init)) throw new Error("TranspileWorker: unexpected workerData")
  lowerPriority(init.nice)
  // A job may name fewer codings than the pool's (the cache makes the others later).
  const codingsOf = (job: { readonly codings?: ReadonlyArray<"br" | "gzip"> | undefined }) =>
    job.codings === undefined ? init.codings : init.codings.filter((coding) => job.codings!.includes(coding))
  let handler: Handler
  try {
    // The options are plain data of BabelTranspilerOptions, passed through without looking inside.
    const transpiler = await Effect.runPromise(BabelTranspiler.make(init.options as BabelTranspiler.BabelTranspilerOptions))
    // Warm up before reporting Ready: the first transpile of a fresh worker loads the pipeline's
    // plugins and content-tag's WASM. Paid here, it is not counted against a job's timeout.
    for (const input of warmUpInputs) await Effect.runPromiseExit(transpiler.transpile(input))
    handler = wrap((input) =>
      Effect.runPromiseExit(Effect.map(transpiler.transpile(input), (module) => withFormsSync(module, codingsOf(input))))
    )
    port.postMessage({ _tag: "Ready", fingerprint: transpiler.fingerprint } satisfies WorkerReply)
  } catch (cause) {
    port.postMessage({ _tag: "StartFailed", message: messageOf(cause) } satisfies WorkerReply)
    return
  }
  port.on("message", (message: unknown) => {
    if (!isWorkerJob(message)) return
    const started = performance.now()
    if (message.compressOnly === true) {
      const body = { body: message.source, headers: {}, dependencyKeys: [], sourceHash: "" }
      reply(port, message.id, started, Exit.succeed(withFormsSync(body, codingsOf(message))))
      return
    }
    handler({ path: message.path, source: message.source, codings: message.codings }).then(
      (exit) => reply(port, message.id, started, exit),
      (cause: unknown) => reply(port, message.id, started, Exit.die(cause))
    )
  })
}

const isEntry = (): boolean => {
  if (isMainThread) return false
  const init: unknown = workerData
  return isWorkerInit(init) && init.entry === import.meta.url
}

if (isEntry()) void serve()
