/**
 * The typed errors of the library. Every one is a `Schema.TaggedError`, so it can cross a
 * process boundary (an L2 row, an HTTP body) and come back as the same value.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/** A module failed to transpile: a syntax error, or an error of a Babel plugin. */
export class TranspileError extends Schema.TaggedError<TranspileError>()("TranspileError", {
  path: Schema.String,
  message: Schema.String,
  line: Schema.optional(Schema.Number),
  column: Schema.optional(Schema.Number)
}) {}

/** A module's source is larger than the configured limit. */
export class SourceTooLargeError extends Schema.TaggedError<SourceTooLargeError>()("SourceTooLargeError", {
  path: Schema.String,
  size: Schema.Number,
  limit: Schema.Number
}) {
  override get message() {
    return `${this.path} is ${this.size} bytes, over the limit of ${this.limit}`
  }
}

/** No module exists at the path. */
export class ModuleNotFoundError extends Schema.TaggedError<ModuleNotFoundError>()("ModuleNotFoundError", {
  path: Schema.String
}) {
  override get message() {
    return `module not found: ${this.path}`
  }
}

/** The path is not a module of the realm: it escapes the realm, names a dotfile or is malformed. */
export class InvalidPathError extends Schema.TaggedError<InvalidPathError>()("InvalidPathError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `invalid module path ${JSON.stringify(this.path)}: ${this.reason}`
  }
}

/** Reading a module's source failed for a reason other than its absence. */
export class SourceReadError extends Schema.TaggedError<SourceReadError>()("SourceReadError", {
  path: Schema.String,
  message: Schema.String
}) {}

/** An L2 store operation failed (the database is unreachable, a query failed). */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  message: Schema.String,
  /**
   * The database is up but refused a connection ("too many clients", ...): worth waiting
   * for, unlike an unreachable database.
   */
  refused: Schema.optional(Schema.Boolean),
  /**
   * Whether trying again can help: a lost, refused or timed-out connection, a server
   * shutting down, a serialization failure or a deadlock can pass; a syntax, constraint
   * or data error will not.
   */
  retryable: Schema.Boolean,
  /** The error of the driver (a `SqlError`, a schema error), as it was. */
  cause: Schema.optional(Schema.Defect())
}) {}

/** The failures a module's transpile can end in, recorded in L2 and shared with every waiter. */
export type ModuleBuildError = TranspileError | SourceTooLargeError

/** A transpile worker died (an uncaught error, an exit) while it ran this module. */
export class TranspileWorkerCrashError extends Schema.TaggedError<TranspileWorkerCrashError>()("TranspileWorkerCrashError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `the transpile worker crashed on ${this.path}: ${this.reason}`
  }
}

/** A transpile worker ran out of its heap limit (`MTC_TRANSPILE_MAX_MEMORY`) on this module. */
export class TranspileMemoryLimitError extends Schema.TaggedError<TranspileMemoryLimitError>()("TranspileMemoryLimitError", {
  path: Schema.String,
  /** The worker's heap limit in MiB, when one was set. */
  limitMb: Schema.optional(Schema.Number)
}) {
  override get message() {
    return `the transpile worker ran out of memory on ${this.path}${this.limitMb === undefined ? "" : ` (limit ${this.limitMb} MiB)`}`
  }
}

/** A transpile ran past its time limit (`MTC_TRANSPILE_TIMEOUT`); its worker was terminated. */
export class TranspileTimeoutError extends Schema.TaggedError<TranspileTimeoutError>()("TranspileTimeoutError", {
  path: Schema.String,
  timeoutMillis: Schema.Number
}) {
  override get message() {
    return `transpiling ${this.path} took longer than ${this.timeoutMillis} ms`
  }
}

/** Every transpile worker was busy and the queue held its maximum of jobs. */
export class TranspileQueueFullError extends Schema.TaggedError<TranspileQueueFullError>()("TranspileQueueFullError", {
  path: Schema.String,
  capacity: Schema.Number
}) {
  override get message() {
    return `the transpile queue is full (${this.capacity} jobs waiting); ${this.path} was not queued`
  }
}

/**
 * The faults of the transpile worker pool. Each concerns one attempt, never the module:
 * they are not recorded as its failure, and the next request tries again.
 */
export type TranspilePoolError =
  | TranspileWorkerCrashError
  | TranspileMemoryLimitError
  | TranspileTimeoutError
  | TranspileQueueFullError

const poolErrorTags: ReadonlySet<string> = new Set([
  "TranspileWorkerCrashError",
  "TranspileMemoryLimitError",
  "TranspileTimeoutError",
  "TranspileQueueFullError"
])

/** Whether an error is a {@link TranspilePoolError} (a fault of one attempt, not of the module). */
export const isTranspilePoolError = (error: { readonly _tag: string }): error is TranspilePoolError =>
  poolErrorTags.has(error._tag)

/** What a Transpiler can fail with: the module's own failure, or a fault of the attempt. */
export type TranspilerError = ModuleBuildError | TranspilePoolError

/** Every error `ModuleCache.get` can fail with. */
export type GetError = TranspilerError | ModuleNotFoundError | InvalidPathError | SourceReadError
