/**
 * PGlite in a worker thread: the entry of that thread, and the main thread's handle on it.
 *
 * PGlite runs Postgres compiled to WebAssembly: every statement is CPU work on the thread
 * that owns the instance. On the event loop, each L2 read and write of the embedded store
 * held up routing and hits for as long as the statement ran. Here the instance lives in a
 * worker of its own, and the main thread only posts statements and receives their rows.
 *
 * The thread runs {@link defaultNice} levels below the process (on Linux), as the transpile
 * workers do: under load the event loop gets the CPU first.
 *
 * Still one instance, one session and one writer per data directory: the worker is the only
 * owner of the directory, which the process keeps locked ({@link DataDirLock}) for as long as
 * the worker runs; `PgliteClient` keeps serialising statements and transactions over it.
 *
 * Messages: the worker posts `Ready` (or `Failed`) once PGlite is open, then answers each
 * `Query` with its `Results` (structured clone: int8 stays a bigint) or the error's fields
 * (`message`, `code`, `constraint`: what the client classifies). `Close` closes PGlite and
 * answers; the thread then ends. The module starts serving only in the thread it was spawned
 * as (`workerData.entry` names the spawned URL).
 *
 * @since 0.3.0
 */
import type { PGlite, Results } from "@electric-sql/pglite"
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { getPriority, setPriority } from "node:os"
import { join } from "node:path"
import { extname } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads"

/** What the main thread passes as `workerData`. */
interface WorkerInit {
  /** The URL the worker was spawned from: only that module starts serving. */
  readonly entry: string
  readonly dataDir: string | undefined
  /** Nice levels the thread runs below its process (Linux). */
  readonly nice: number
  /** Postgres's `shared_buffers` (see {@link defaultSharedBuffers}). */
  readonly sharedBuffers: string
}

/**
 * The nice levels the PGlite thread runs below the process by default: those of the transpile
 * workers (`MTC_TRANSPILE_NICE`'s default), so that the event loop (routing, hits) wins the
 * CPU over L2 writes, which no request waits for.
 */
export const defaultNice = 10

/** Lowers this thread's priority by `nice` (on Linux, a worker thread's own). */
const lowerPriority = (nice: number): void => {
  if (process.platform !== "linux" || nice <= 0) return
  try {
    setPriority(Math.min(19, getPriority() + nice))
  } catch {
    // not permitted: keep the default priority
  }
}

/** The query options the store uses. */
export interface QueryOptions {
  readonly rowMode?: "object" | "array"
  readonly paramTypes?: Array<number>
}

type Request =
  | { readonly _tag: "Query"; readonly id: number; readonly sql: string; readonly params: Array<unknown>; readonly options: QueryOptions }
  | { readonly _tag: "Close"; readonly id: number }

/** An error's fields that survive the thread boundary. */
interface ErrorFields {
  readonly message: string
  readonly code?: string
  readonly constraint?: string
}

type Reply =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Failed"; readonly error: ErrorFields }
  | { readonly _tag: "Done"; readonly id: number; readonly result: unknown }
  | { readonly _tag: "Error"; readonly id: number; readonly error: ErrorFields }

/** OIDs with parsers of their own: int8 as bigint, date as its text (as `PgliteClient` sets them). */
const OID = { int8: 20, date: 1082 } as const

/**
 * Postgres's `shared_buffers` in PGlite by default. Postgres's own default, 128MB, is all
 * WebAssembly memory that is touched as the cache fills and never given back; a cache's
 * rows are read once into L1 and then rarely, and the file system's page cache still holds
 * the data files. At 16MB a PGlite with 60 MB of rows holds about 250 MiB of RSS, against
 * 410 MiB at 128MB (scratchpad/RESULTS.md).
 */
export const defaultSharedBuffers = "16MB"

/** A valid `shared_buffers` setting: a number with an optional unit (`kB`, `MB`, `GB`; else 8 kB pages). */
export const sharedBuffersPattern = /^[1-9][0-9]*(kB|MB|GB)?$/

/** Whether a string is a valid `shared_buffers` setting ({@link sharedBuffersPattern}). */
export const isSharedBuffers = (value: string): boolean => sharedBuffersPattern.test(value)

/** PGlite opened in this thread with the store's settings (int8 as bigint, as on sql-pg; date as its text). */
export const openHere = async (dataDir: string | undefined, sharedBuffers: string = defaultSharedBuffers): Promise<PGlite> => {
  if (!isSharedBuffers(sharedBuffers)) throw new Error(`invalid shared_buffers ${JSON.stringify(sharedBuffers)}`)
  // Loaded here: a process on another store never loads PGlite's code.
  const { PGlite } = await import("@electric-sql/pglite")
  return PGlite.create(dataDir, {
    parsers: { [OID.int8]: (value: string) => BigInt(value), [OID.date]: (value: string) => value },
    startParams: [...PGlite.defaultStartParams, "-c", `shared_buffers=${sharedBuffers}`]
  })
}

const fieldsOf = (error: unknown): ErrorFields => {
  const record = typeof error === "object" && error !== null ? (error as Record<string, unknown>) : {}
  return {
    message: error instanceof Error ? error.message : String(error),
    ...(typeof record["code"] === "string" ? { code: record["code"] } : {}),
    ...(typeof record["constraint"] === "string" ? { constraint: record["constraint"] } : {})
  }
}

/** An Error carrying the fields of a worker's error, as PGlite's own would. */
const errorOf = (fields: ErrorFields): Error => Object.assign(new Error(fields.message), fields)

// -----------------------------------------------------------------------------
// The worker
// -----------------------------------------------------------------------------

const serve = async (init: WorkerInit) => {
  const port = parentPort
  if (port === null) return
  lowerPriority(init.nice)
  let db: PGlite
  try {
    db = await openHere(init.dataDir, init.sharedBuffers)
  } catch (error) {
    port.postMessage({ _tag: "Failed", error: fieldsOf(error) } satisfies Reply)
    return
  }
  port.on("message", (request: Request) => {
    if (request._tag === "Close") {
      void db.close().finally(() => {
        port.postMessage({ _tag: "Done", id: request.id, result: null } satisfies Reply)
        port.close()
      })
      return
    }
    db.query(request.sql, request.params, request.options).then(
      (result) => port.postMessage({ _tag: "Done", id: request.id, result } satisfies Reply),
      (error: unknown) => port.postMessage({ _tag: "Error", id: request.id, error: fieldsOf(error) } satisfies Reply)
    )
  })
  port.postMessage({ _tag: "Ready" } satisfies Reply)
}

const isInit = (u: unknown): u is WorkerInit =>
  typeof u === "object" && u !== null && "entry" in u && (u as { entry: unknown }).entry === import.meta.url

if (!isMainThread && isInit(workerData)) void serve(workerData)

// Run as a script (`node PgliteWorker.ts --create DIR`): creates the database of a fresh data
// directory, then exits (see `open`).
if (isMainThread && process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url && process.argv[2] === "--create") {
  void openHere(process.argv[3]).then((db) => db.close()).then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`)
      process.exit(1)
    }
  )
}

// -----------------------------------------------------------------------------
// The main thread's handle
// -----------------------------------------------------------------------------

/** The calls the client makes on a PGlite session, in this thread or in a worker. */
export interface PgliteSession {
  readonly query: <T>(sql: string, params?: Array<unknown>, options?: QueryOptions) => Promise<Results<T>>
  readonly close: () => Promise<void>
}

/** The worker entry next to this module: `.ts` when run from `src`, `.js` from a build. */
const workerUrl = new URL(`./PgliteWorker${extname(fileURLToPath(import.meta.url))}`, import.meta.url)

/** The settings of a PGlite worker. */
export interface WorkerOptions {
  /** Nice levels below the process (default {@link defaultNice}). */
  readonly nice?: number | undefined
  /** Postgres's `shared_buffers` (default {@link defaultSharedBuffers}). */
  readonly sharedBuffers?: string | undefined
}

/**
 * Starts PGlite at `dataDir` in a worker thread; resolves once it is open. A worker that
 * dies fails every statement in flight and every later one (as a closed PGlite would).
 *
 * A data directory that holds no database yet is created first by a child process, which
 * then exits: `initdb` grows the WebAssembly memory by about 250 MiB, which an instance never
 * gives back (nor does a thread's allocator, once the thread is gone), while an instance that
 * opens an existing database stays near 150 MiB above Node's own. So only the first start of a
 * data directory pays a second open, about 2 s.
 */
export const open = async (dataDir: string | undefined, options: WorkerOptions = {}): Promise<PgliteSession> => {
  if (dataDir !== undefined && !existsSync(join(dataDir, "PG_VERSION"))) await createInChild(dataDir)
  return openWorker(dataDir, options)
}

/** Creates the database of a fresh data directory in a child process (this module run as a script). */
const createInChild = (dataDir: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(workerUrl), "--create", dataDir], { stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8")
    })
    child.once("error", reject)
    child.once("exit", (code, signal) =>
      code === 0
        ? resolve()
        : reject(new Error(`creating the PGlite database in ${dataDir} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`)))
  })

const openWorker = (dataDir: string | undefined, options: WorkerOptions): Promise<PgliteSession> =>
  new Promise((resolve, reject) => {
    const init: WorkerInit = {
      entry: workerUrl.href,
      dataDir,
      nice: options.nice ?? defaultNice,
      sharedBuffers: options.sharedBuffers ?? defaultSharedBuffers
    }
    const worker = new Worker(workerUrl, { workerData: init })
    const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>()
    let nextId = 0
    let gone: Error | undefined
    let started = false
    const fail = (error: Error) => {
      gone ??= error
      if (!started) {
        started = true
        reject(error)
      }
      for (const call of pending.values()) call.reject(error)
      pending.clear()
    }
    worker.on("error", (error) => fail(error))
    worker.on("exit", (code) => fail(new Error(`the PGlite worker exited (code ${code})`)))
    const call = (request: Request) =>
      new Promise<unknown>((resolveCall, rejectCall) => {
        if (gone !== undefined) return rejectCall(gone)
        pending.set(request.id, { resolve: resolveCall, reject: rejectCall })
        worker.postMessage(request)
      })
    worker.on("message", (reply: Reply) => {
      switch (reply._tag) {
        case "Ready": {
          started = true
          resolve({
            query: <T>(sql: string, params: Array<unknown> = [], options: QueryOptions = {}) =>
              call({ _tag: "Query", id: nextId++, sql, params, options }) as Promise<Results<T>>,
            close: () =>
              gone !== undefined
                ? Promise.resolve()
                : call({ _tag: "Close", id: nextId++ }).then(() => worker.terminate()).then(() => undefined)
          })
          return
        }
        case "Failed": {
          fail(errorOf(reply.error))
          void worker.terminate()
          return
        }
        case "Done":
        case "Error": {
          const call = pending.get(reply.id)
          if (call === undefined) return
          pending.delete(reply.id)
          if (reply._tag === "Done") call.resolve(reply.result)
          else call.reject(errorOf(reply.error))
        }
      }
    })
  })
