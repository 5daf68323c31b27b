/**
 * The byte-bounded CLOCK map on its own: with one group it evicts exactly as the plain CLOCK
 * map did (checked against a copy of it on random operations); with many, the group holding
 * the most bytes pays, so one group's herd never takes another below its fair share; and the
 * byte accounting stays exact through replacements and deletes.
 */
import { describe, expect, it } from "vitest"
import { ClockMap } from "../src/internal/ClockMap.ts"
import { PlainClock } from "./support/plainClock.ts"

/** A small deterministic generator (LCG), so that a failure replays. */
const random = (seed: number) => {
  let state = seed >>> 0
  return (below: number): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    return state % below
  }
}

/** A map whose values are their ids, recording what leaves it. */
const recording = (maxBytes: number) => {
  const removed: Array<string> = []
  return { map: new ClockMap<string>(maxBytes, (id) => removed.push(id)), removed }
}

/** Sums the bytes of a map's groups from scratch. */
const recount = (map: ClockMap<string>, sizes: Map<string, number>, groupOf: Map<string, string>) => {
  const byGroup = new Map<string, { bytes: number; size: number }>()
  let total = 0
  for (const [id] of map) {
    const bytes = sizes.get(id)!
    const group = groupOf.get(id)!
    const counted = byGroup.get(group) ?? { bytes: 0, size: 0 }
    counted.bytes += bytes
    counted.size++
    byGroup.set(group, counted)
    total += bytes
  }
  return { total, byGroup }
}

describe("ClockMap", () => {
  for (const group of [undefined, "realm"]) {
    it(`with one group (${group ?? "the default"}) evicts exactly as plain CLOCK on random operations`, () => {
      for (const seed of [1, 2, 3, 4, 5]) {
        const next = random(seed)
        const plainRemoved: Array<string> = []
        const plain = new PlainClock<string>(500, (id) => plainRemoved.push(id))
        const { map, removed } = recording(500)
        for (let step = 0; step < 20_000; step++) {
          const id = `k${next(120)}`
          const op = next(10)
          if (op < 5) {
            expect(map.get(id)).toBe(plain.get(id))
          } else if (op < 9) {
            const bytes = 1 + next(next(20) === 0 ? 600 : 60)
            expect(map.set(id, id, bytes, group)).toBe(plain.set(id, id, bytes))
          } else {
            map.delete(id)
            plain.delete(id)
          }
          expect(removed.length).toBe(plainRemoved.length)
        }
        expect(removed).toEqual(plainRemoved)
        expect(map.bytes).toBe(plain.total)
        expect(new Set([...map].map(([id]) => id))).toEqual(new Set(plain.entries.keys()))
      }
    })
  }

  it("a used entry gets a second round within its group", () => {
    const { map, removed } = recording(100)
    for (let i = 0; i < 10; i++) map.set(`a${i}`, `a${i}`, 10, "a")
    map.get("a0")
    map.set("a10", "a10", 10, "a")
    expect(removed).toEqual(["a1"])
    expect(map.get("a0")).toBe("a0")
  })

  it("one group's herd many times the bound leaves another group's set within its fair share whole", () => {
    const { map } = recording(1000)
    // B holds 200 bytes: under half the bound. Its entries are never read again.
    for (let i = 0; i < 20; i++) map.set(`b${i}`, `b${i}`, 10, "b")
    for (let i = 0; i < 1000; i++) map.set(`a${i}`, `a${i}`, 10, "a")
    for (let i = 0; i < 20; i++) expect(map.get(`b${i}`)).toBe(`b${i}`)
    expect(map.bytesOf("b")).toBe(200)
    expect(map.bytesOf("a")).toBe(800)
    expect(map.bytes).toBe(1000)
    // A's own newest entries are the ones it kept.
    expect(map.get("a999")).toBe("a999")
    expect(map.get("a199")).toBeUndefined()
  })

  it("a group over its fair share gives up bytes to a growing one until they are equal", () => {
    const { map } = recording(1000)
    for (let i = 0; i < 80; i++) map.set(`b${i}`, `b${i}`, 10, "b")
    for (let i = 0; i < 1000; i++) map.set(`a${i}`, `a${i}`, 10, "a")
    // B pays while it holds more; from half each, A, then the bigger, pays for its own herd.
    expect(map.bytesOf("b")).toBe(500)
    expect(map.bytesOf("a")).toBe(500)
    // B lost its oldest.
    expect(map.get("b29")).toBeUndefined()
    expect(map.get("b30")).toBe("b30")
  })

  it("a newcomer that alone is the biggest group makes the next biggest pay", () => {
    const { map } = recording(100)
    for (let i = 0; i < 5; i++) map.set(`b${i}`, `b${i}`, 10, "b")
    for (let i = 0; i < 4; i++) map.set(`a${i}`, `a${i}`, 10, "a")
    expect(map.set("c", "c", 60, "c")).toBe(true)
    expect(map.get("c")).toBe("c")
    expect(map.bytes).toBeLessThanOrEqual(100)
    expect(map.bytesOf("c")).toBe(60)
    // B (50 bytes) paid first, then whichever of A and B was bigger.
    expect(map.bytesOf("a") + map.bytesOf("b")).toBe(40)
    expect(map.bytesOf("b")).toBeLessThanOrEqual(20)
  })

  it("shares the bound evenly between 200 groups filling in turn", () => {
    const { map } = recording(200 * 50)
    for (let round = 0; round < 20; round++) {
      for (let group = 0; group < 200; group++) map.set(`g${group}/${round}`, "", 10, `g${group}`)
    }
    expect(map.bytes).toBe(200 * 50)
    for (let group = 0; group < 200; group++) expect(map.bytesOf(`g${group}`)).toBe(50)
  })

  it("keeps its byte accounting exact through replacements across groups, deletes and emptied groups", () => {
    const next = random(42)
    const { map, removed } = recording(2000)
    const sizes = new Map<string, number>()
    const groupOf = new Map<string, string>()
    const groups = ["a", "b", "c", "d", "e"]
    for (let step = 0; step < 20_000; step++) {
      const id = `k${next(200)}`
      const op = next(10)
      if (op < 3) {
        map.get(id)
      } else if (op < 8) {
        const bytes = 1 + next(100)
        const group = groups[next(groups.length)]!
        if (map.set(id, id, bytes, group)) {
          sizes.set(id, bytes)
          groupOf.set(id, group)
        }
      } else {
        map.delete(id)
      }
      expect(map.bytes).toBeLessThanOrEqual(2000)
    }
    expect(removed.length).toBeGreaterThan(0)
    const { total, byGroup } = recount(map, sizes, groupOf)
    expect(map.bytes).toBe(total)
    for (const group of groups) {
      expect(map.bytesOf(group)).toBe(byGroup.get(group)?.bytes ?? 0)
      expect(map.sizeOf(group)).toBe(byGroup.get(group)?.size ?? 0)
      expect([...map.ofGroup(group)].length).toBe(byGroup.get(group)?.size ?? 0)
    }
    // Emptying a group leaves nothing of it.
    for (const [id] of [...map.ofGroup("a")]) map.delete(id)
    expect(map.bytesOf("a")).toBe(0)
    expect(map.sizeOf("a")).toBe(0)
    expect(map.bytes).toBe(total - (byGroup.get("a")?.bytes ?? 0))
    // And a group can come back after.
    expect(map.set("again", "again", 10, "a")).toBe(true)
    expect(map.bytesOf("a")).toBe(10)
  })

  it("a replacement in another group moves the id's bytes to it", () => {
    const { map, removed } = recording(100)
    map.set("x", "x1", 30, "a")
    map.set("x", "x2", 20, "b")
    expect(removed).toEqual(["x1"])
    expect([map.bytesOf("a"), map.bytesOf("b"), map.bytes, map.size]).toEqual([0, 20, 20, 1])
    expect(map.get("x")).toBe("x2")
  })

  it("refuses a value larger than the bound, and everything when the bound is 0", () => {
    expect(new ClockMap<string>(10).set("x", "x", 11, "a")).toBe(false)
    expect(new ClockMap<string>(0).set("x", "x", 1, "a")).toBe(false)
  })
})
