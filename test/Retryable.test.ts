/**
 * Which store errors a retry can help with: `isRetryable` over the errors of
 * `@effect/sql-pg` and PGlite (a `SqlError` whose reason carries the server's SQLSTATE or
 * the socket's error code), and the `StoreError` the SQL store builds from them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Schema } from "effect"
import {
  ConnectionError,
  ConstraintError,
  DeadlockError,
  SerializationError,
  SqlError,
  SqlSyntaxError,
  StatementTimeoutError,
  UnknownError
} from "effect/sql/SqlError"
import { StoreError } from "../src/domain/Errors.ts"
import { isRefusal, isRetryable } from "../src/internal/refusal.ts"

/** A server error with SQLSTATE `code`, as sql-pg reports one it has no class for. */
const withCode = (code: string) =>
  new SqlError({ reason: new UnknownError({ message: `server error ${code}`, operation: "query", cause: { code } }) })

describe("retryable store errors", () => {
  it("lost, refused and timed-out connections, shutdowns, serialization failures and deadlocks are retryable", () => {
    const socket = (code: string) => Object.assign(new Error(code), { code })
    expect(isRetryable(new SqlError({ reason: new ConnectionError({ cause: socket("ECONNREFUSED") }) }))).toBe(true)
    expect(isRetryable(new SqlError({ reason: new ConnectionError({ cause: new Error("closed") }) }))).toBe(true)
    expect(isRetryable(withCode("08006"))).toBe(true) // connection failure
    expect(isRetryable(withCode("53300"))).toBe(true) // too many clients
    expect(isRetryable(withCode("57P01"))).toBe(true) // admin shutdown
    expect(isRetryable(withCode("57P03"))).toBe(true) // cannot connect now
    expect(isRetryable(new SqlError({ reason: new SerializationError({ cause: { code: "40001" } }) }))).toBe(true)
    expect(isRetryable(new SqlError({ reason: new DeadlockError({ cause: { code: "40P01" } }) }))).toBe(true)
    expect(isRetryable(new SqlError({ reason: new StatementTimeoutError({ cause: { code: "57014" } }) }))).toBe(true)
    expect(isRetryable(new Cause.TimeoutError())).toBe(true)
    expect(isRetryable(Object.assign(new Error("read failed", { cause: socket("ECONNRESET") })))).toBe(true)
  })

  it("syntax, constraint and data errors are not", () => {
    expect(isRetryable(new SqlError({ reason: new SqlSyntaxError({ cause: { code: "42601" } }) }))).toBe(false)
    expect(isRetryable(new SqlError({ reason: new ConstraintError({ cause: { code: "23502" } }) }))).toBe(false)
    expect(isRetryable(withCode("22P02"))).toBe(false) // invalid text representation
    expect(isRetryable(withCode("22021"))).toBe(false) // invalid byte sequence
    expect(isRetryable(withCode("3D000"))).toBe(false) // unknown database
    expect(isRetryable(withCode("28P01"))).toBe(false) // authentication
    expect(isRetryable(new Error("something else"))).toBe(false)
    expect(isRetryable(undefined)).toBe(false)
  })

  it("a refusal is retryable, and not every retryable error is a refusal", () => {
    expect(isRefusal(withCode("53300")) && isRetryable(withCode("53300"))).toBe(true)
    expect(isRefusal(withCode("57P01"))).toBe(false)
    expect(isRetryable(withCode("57P01"))).toBe(true)
  })

  it("a StoreError keeps its cause", () => {
    const cause = withCode("40001")
    const error = new StoreError({ operation: "write", message: cause.message, retryable: isRetryable(cause), cause })
    expect(error.cause).toBe(cause)
    expect(error.retryable).toBe(true)
    // Its schema accepts it as it is (the cause is a defect: any value).
    expect(Schema.is(StoreError)(error)).toBe(true)
  })
})
