/**
 * The raw-file store's rules, on its own: kept only while watched, a fill that raced an
 * invalidation dropped, invalidation of a path and everything below it, and the byte bound
 * with CLOCK eviction (a used entry gets a second round).
 */
import { describe, expect, it } from "vitest"
import { answerOf } from "../src/http/FastPath.ts"
import { RawFiles, SharedRawFiles } from "../src/realm/RawFileCache.ts"

const answer = (bytes: number) => answerOf(new Uint8Array(bytes), `"${bytes}"`, "text/plain")

describe("RawFiles", () => {
  it("keeps nothing while no watcher reports changes", () => {
    const raw = new RawFiles(100)
    expect(raw.fill("a.txt", answer(10), raw.capture())).toBe(false)
    raw.watched(true)
    expect(raw.fill("a.txt", answer(10), raw.capture())).toBe(true)
    expect(raw.get("a.txt")?.bytes.byteLength).toBe(10)
    raw.watched(false)
    expect(raw.get("a.txt")).toBeUndefined()
    expect(raw.bytes).toBe(0)
  })

  it("drops a fill that raced an invalidation, and invalidates a path with everything below it", () => {
    const raw = new RawFiles(100)
    raw.watched(true)
    const captured = raw.capture()
    raw.invalidate("elsewhere.txt")
    expect(raw.fill("a.txt", answer(10), captured)).toBe(false)
    for (const path of ["dir/a.txt", "dir/sub/b.txt", "dirt.txt"]) raw.fill(path, answer(10), raw.capture())
    raw.invalidate("dir")
    expect([raw.get("dir/a.txt"), raw.get("dir/sub/b.txt")]).toEqual([undefined, undefined])
    expect(raw.get("dirt.txt")).toBeDefined()
    expect(raw.size).toBe(1)
    expect(raw.bytes).toBe(10)
  })

  it("holds its byte bound, evicting the oldest unused entry first", () => {
    const raw = new RawFiles(30)
    raw.watched(true)
    expect(raw.fill("big.txt", answer(31), raw.capture())).toBe(false)
    for (const path of ["a.txt", "b.txt", "c.txt"]) raw.fill(path, answer(10), raw.capture())
    raw.get("a.txt")
    raw.fill("d.txt", answer(10), raw.capture())
    // a was used, so b (the oldest unused) went.
    expect(["a.txt", "b.txt", "c.txt", "d.txt"].map((path) => raw.get(path) !== undefined)).toEqual([true, false, true, true])
    expect(raw.bytes).toBe(30)
  })

  it("is fair between the realms that share a bound: one realm's herd leaves another's files", () => {
    const shared = new SharedRawFiles(100)
    const a = shared.of("https://a.test/")
    const b = shared.of("https://b.test/")
    a.watched(true)
    b.watched(true)
    for (const path of ["1.txt", "2.txt"]) b.fill(path, answer(10), b.capture())
    for (let i = 0; i < 50; i++) a.fill(`${i}.txt`, answer(10), a.capture())
    expect([b.get("1.txt"), b.get("2.txt")].every((found) => found !== undefined)).toBe(true)
    expect(a.get("1.txt")).toBeUndefined()
    expect([a.bytes, b.bytes, shared.bytes]).toEqual([80, 20, 100])
    // A realm's clear and invalidations touch its own files only.
    a.clear()
    expect([a.bytes, b.bytes]).toEqual([0, 20])
  })
})
