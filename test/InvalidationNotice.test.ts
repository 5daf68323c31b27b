/** The invalidation notice's payload (src/fleet/InvalidationNotice.ts): encode, decode, own notices ignored. */
import { describe, expect, it } from "@effect/vitest"
import * as InvalidationNotice from "../src/fleet/InvalidationNotice.ts"

describe("InvalidationNotice", () => {
  it("round-trips a key and a realm notice from a peer", () => {
    const hash = -9_223_372_036_854_775_808n
    expect(InvalidationNotice.encode("k", hash, "peer")).toBe(`k:${hash}:peer`)
    expect(InvalidationNotice.decode(InvalidationNotice.encode("k", hash, "peer"), "me")).toEqual({ _tag: "Key", hash })
    expect(InvalidationNotice.decode(InvalidationNotice.encode("r", 42n, "peer"), "me")).toEqual({ _tag: "Realm", hash: 42n })
  })

  it("an edit's notice names its source hash, within NOTIFY's 8000 bytes; a malformed source drops all", () => {
    const hash = -9_223_372_036_854_775_808n
    const source = "ab".repeat(32)
    const payload = InvalidationNotice.encode("k", hash, InvalidationNotice.makeOrigin(), source)
    expect(Buffer.byteLength(payload)).toBeLessThan(120)
    expect(InvalidationNotice.decode(payload, "me")).toEqual({ _tag: "Key", hash, sourceHash: source })
    expect(InvalidationNotice.decode(`k:1:peer:gone`, "me")).toEqual({ _tag: "Key", hash: 1n, sourceHash: "gone" })
    expect(InvalidationNotice.decode(`k:1:peer:not-a-hash`, "me")).toEqual({ _tag: "Key", hash: 1n })
    expect(InvalidationNotice.eventOf("k", 1n, null)).toEqual({ _tag: "Key", hash: 1n })
  })

  it("ignores its own notices, unknown kinds and malformed payloads", () => {
    expect(InvalidationNotice.decode("k:1:me", "me")).toBeUndefined()
    expect(InvalidationNotice.decode("x:1:peer", "me")).toBeUndefined()
    expect(InvalidationNotice.decode("k:nope:peer", "me")).toBeUndefined()
    expect(InvalidationNotice.decode("k", "me")).toBeUndefined()
    expect(InvalidationNotice.decode("", "me")).toBeUndefined()
  })

  it("parses hashes and makes distinct origins", () => {
    expect(InvalidationNotice.parseHash("123")).toBe(123n)
    expect(InvalidationNotice.parseHash("12a")).toBeUndefined()
    expect(InvalidationNotice.eventOf("r", 1n)).toEqual({ _tag: "Realm", hash: 1n })
    expect(InvalidationNotice.eventOf(undefined, 1n)).toBeUndefined()
    const origin = InvalidationNotice.makeOrigin()
    expect(origin).toMatch(/^[0-9a-f]{12}$/)
    expect(InvalidationNotice.makeOrigin()).not.toBe(origin)
  })
})
