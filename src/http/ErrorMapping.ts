/**
 * Failures as HTTP answers: the status of each error of a module request, and its JSON
 * body with every file-system path of the realm hidden.
 *
 * @since 0.3.0
 */
import type * as HttpServerResponse from "effect/http/HttpServerResponse"
import type { GetError } from "../domain/Errors.ts"
import type { ErrorBody } from "./HttpBodies.ts"
import { json } from "./Responses.ts"

/**
 * Replaces every occurrence of the given absolute directories in a text by `<realm>`, so
 * that no answer shows a file-system path. With `systemError`, also any other quoted
 * absolute path (`'/...'`, as Node's system errors quote them).
 */
export const scrubPaths = (text: string, directories: ReadonlyArray<string>, systemError = false): string => {
  let result = text
  for (const dir of [...directories].sort((a, b) => b.length - a.length)) {
    if (dir.length > 1) result = result.split(dir).join("<realm>")
  }
  return systemError ? result.replace(/'\/[^']*'/g, "'<path>'") : result
}

/** The status of each failure of a module request. */
export const statusOf = (error: GetError): number => {
  switch (error._tag) {
    case "InvalidPathError":
      return 400
    case "ModuleNotFoundError":
      return 404
    case "SourceTooLargeError":
      return 413
    case "TranspileError":
      return 422
    case "SourceReadError":
      return 503
    case "TranspileWorkerCrashError":
    case "TranspileMemoryLimitError":
      return 500
    case "TranspileQueueFullError":
      return 503
    case "TranspileTimeoutError":
      return 504
  }
}

/** The body of a failure's error response, with the `hidden` directories replaced by `<realm>`. */
export const errorBodyOf = (error: GetError, hidden: ReadonlyArray<string> = []): ErrorBody => {
  // A transpile error's message is about the module's own text: only the realm's path is hidden there.
  const systemError = error._tag === "SourceReadError" || error._tag === "InvalidPathError"
  const base = {
    error: error._tag,
    message: scrubPaths(error.message, hidden, systemError),
    path: scrubPaths(error.path, hidden, systemError)
  }
  switch (error._tag) {
    case "InvalidPathError":
      return { ...base, reason: scrubPaths(error.reason, hidden, true) }
    case "TranspileError":
      return { ...base, line: error.line ?? null, column: error.column ?? null }
    case "SourceTooLargeError":
      return { ...base, size: error.size, limit: error.limit }
    case "ModuleNotFoundError":
    case "SourceReadError":
    case "TranspileMemoryLimitError":
    case "TranspileTimeoutError":
    case "TranspileQueueFullError":
      return base
    case "TranspileWorkerCrashError":
      return { ...base, reason: error.reason }
  }
}

/**
 * The JSON error response of a failure. `hidden` lists absolute directories (the realm's)
 * that must not appear in the answer: they are replaced by `<realm>`.
 */
export const errorResponse = (
  error: GetError,
  hidden: ReadonlyArray<string> = []
): HttpServerResponse.HttpServerResponse =>
  json(
    statusOf(error),
    errorBodyOf(error, hidden),
    error._tag === "TranspileQueueFullError" ? { "retry-after": "1" } : undefined
  )
