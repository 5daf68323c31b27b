/** Failures as HTTP answers: statuses, bodies, and no file-system path in any of them. */
import { describe, expect, it } from "@effect/vitest"
import * as Errors from "../src/domain/Errors.ts"
import { errorBodyOf, errorResponse, scrubPaths, statusOf } from "../src/http/ErrorMapping.ts"

describe("ErrorMapping", () => {
  it("maps every failure to its documented status", () => {
    expect(statusOf(new Errors.InvalidPathError({ path: "/x", reason: "r" }))).toBe(400)
    expect(statusOf(new Errors.ModuleNotFoundError({ path: "x" }))).toBe(404)
    expect(statusOf(new Errors.SourceTooLargeError({ path: "x", size: 2, limit: 1 }))).toBe(413)
    expect(statusOf(new Errors.TranspileError({ path: "x", message: "m" }))).toBe(422)
    expect(statusOf(new Errors.SourceReadError({ path: "x", message: "m" }))).toBe(503)
    expect(statusOf(new Errors.TranspileWorkerCrashError({ path: "x", reason: "r" }))).toBe(500)
    expect(statusOf(new Errors.TranspileMemoryLimitError({ path: "x" }))).toBe(500)
    expect(statusOf(new Errors.TranspileQueueFullError({ path: "x", capacity: 1 }))).toBe(503)
    expect(statusOf(new Errors.TranspileTimeoutError({ path: "x", timeoutMillis: 1 }))).toBe(504)
  })

  it("scrubPaths hides the realm's directories (longest first) and, for system errors, any quoted path", () => {
    expect(scrubPaths("/srv/realm/sub/a.ts and /srv/realm", ["/srv/realm", "/srv/realm/sub"]))
      .toBe("<realm>/a.ts and <realm>")
    expect(scrubPaths("ENOENT '/etc/x'", [], true)).toBe("ENOENT '<path>'")
    expect(scrubPaths("ENOENT '/etc/x'", [])).toBe("ENOENT '/etc/x'")
    expect(scrubPaths("a / b", ["/"])).toBe("a / b")
  })

  it("errorBodyOf keeps each failure's fields and hides the realm", () => {
    const hidden = ["/srv/realm"]
    expect(errorBodyOf(new Errors.TranspileError({ path: "a.ts", message: "bad at /srv/realm/a.ts", line: 2 }), hidden))
      .toEqual({ error: "TranspileError", message: "bad at <realm>/a.ts", path: "a.ts", line: 2, column: null })
    expect(errorBodyOf(new Errors.SourceTooLargeError({ path: "a.ts", size: 9, limit: 8 })))
      .toMatchObject({ error: "SourceTooLargeError", size: 9, limit: 8 })
    expect(errorBodyOf(new Errors.InvalidPathError({ path: "/x", reason: "resolves to '/etc/passwd'" }), hidden))
      .toMatchObject({ reason: "resolves to '<path>'" })
    expect(errorBodyOf(new Errors.SourceReadError({ path: "/srv/realm", message: "EACCES '/srv/realm/a'" }), hidden))
      .toEqual({ error: "SourceReadError", message: "EACCES '<realm>/a'", path: "<realm>" })
    expect(errorBodyOf(new Errors.TranspileWorkerCrashError({ path: "a.ts", reason: "exit 1" })))
      .toMatchObject({ reason: "exit 1" })
  })

  it("errorResponse: JSON with CORS, and retry-after when the queue is full", () => {
    const full = errorResponse(new Errors.TranspileQueueFullError({ path: "a.ts", capacity: 4 }))
    expect(full.status).toBe(503)
    expect(full.headers["retry-after"]).toBe("1")
    expect(full.headers["access-control-allow-origin"]).toBe("*")
    const missing = errorResponse(new Errors.ModuleNotFoundError({ path: "a.ts" }))
    expect(missing.status).toBe(404)
    expect(missing.headers["retry-after"]).toBeUndefined()
  })
})
