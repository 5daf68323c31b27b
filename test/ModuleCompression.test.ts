/**
 * The cache keeps every module body in the codings it offers (src/cache/ModuleCache.ts,
 * `contentEncodings`): made once per version, stored in L2 with the row, counted in L1's
 * bytes, and made here only for a module that lacks them (an in-process transpile, a row of an
 * earlier release).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as TestClock from "effect/testing/TestClock"
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import { emptyCapture } from "../src/domain/TranspileStore.ts"
import { hashSource, moduleBytes } from "../src/domain/Domain.ts"
import { RequestedCoding } from "../src/internal/ContentCoding.ts"
import { idle, keyOf, makeCache, makeWorld } from "./support/world.ts"

/** A source whose transpiled body is well over the 256 bytes below which bodies stay identity. */
const large = Array.from({ length: 20 }, (_, i) => `export const field${i}: number = ${i}`).join("\n")

describe("module compression", () => {
  it.effect("a transpiled body gets br and gzip once, written to L2 with it; L1 counts their bytes", () =>
    Effect.scoped(Effect.gen(function*() {
      const world = yield* makeWorld({ "big.ts": large, "small.ts": "export {}\n" })
      const cache = yield* makeCache(world, { fleet: false })
      const { module } = yield* cache.get(keyOf("big.ts"))
      expect(brotliDecompressSync(module.encoded!.br!).toString("utf8")).toBe(module.body)
      expect(gunzipSync(module.encoded!.gzip!).toString("utf8")).toBe(module.body)
      // Too small to gain: identity only.
      const small = yield* cache.get(keyOf("small.ts"))
      expect(small.module.encoded).toBeUndefined()
      // Again: an L1 hit, no second compression.
      yield* cache.get(keyOf("big.ts"))
      yield* idle(cache)
      const stats = yield* cache.stats
      expect(stats.compressions).toBe(1)
      expect(stats.l1Bytes).toBe(moduleBytes(module) + moduleBytes(small.module))
      const row = yield* world.readRow(keyOf("big.ts"))
      expect(row._tag === "Module" ? row.module.encoded : undefined).toEqual(module.encoded)
    })))

  it.effect("a row of an earlier release, with no forms, is compressed once per load and counted; the row is left as it is", () =>
    Effect.scoped(Effect.gen(function*() {
      const world = yield* makeWorld({ "old.ts": large })
      const key = keyOf("old.ts")
      const body = `// written by an earlier release\n${large}`
      yield* Effect.orDie(world.store.write({
        key,
        captured: emptyCapture,
        fingerprint: world.transpiler.service.fingerprint,
        sourceHash: hashSource(large),
        content: { _tag: "Module", module: { body, headers: { "content-type": "text/javascript; charset=utf-8" }, dependencyKeys: [], sourceHash: hashSource(large) } }
      }))
      const cache = yield* makeCache(world, { fleet: false })
      const { module, outcome } = yield* cache.get(key)
      expect(outcome).toBe("l2")
      expect(module.body).toBe(body)
      expect(brotliDecompressSync(module.encoded!.br!).toString("utf8")).toBe(body)
      expect(world.transpiler.calls()).toBe(0)
      expect((yield* cache.stats).compressions).toBe(1)
      const row = yield* world.readRow(key)
      expect(row._tag === "Module" ? row.module.encoded : "none").toBeUndefined()
    })))

  it.effect("with no codings offered nothing is compressed; with gzip only, no br is made", () =>
    Effect.scoped(Effect.gen(function*() {
      const none = yield* makeWorld({ "big.ts": large })
      const plain = yield* makeCache(none, { fleet: false, contentEncodings: [] })
      expect((yield* plain.get(keyOf("big.ts"))).module.encoded).toBeUndefined()
      expect((yield* plain.stats).compressions).toBe(0)
      const gzipOnly = yield* makeWorld({ "big.ts": large })
      const cache = yield* makeCache(gzipOnly, { fleet: false, contentEncodings: ["gzip"] })
      const { module } = yield* cache.get(keyOf("big.ts"))
      expect(Object.keys(module.encoded ?? {})).toEqual(["gzip"])
    })))
  describe("on a process with no peers, a cold load waits only for the coding its answer is sent in", () => {
    /** Real time for libuv's thread pool (where the later forms are made), until `done`. */
    const waitFor = <A>(look: Effect.Effect<A>, done: (a: A) => boolean) =>
      Effect.andThen(Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5))), look).pipe(
        Effect.repeat({ until: done, times: 400 })
      )

    it.effect("identity: none made with the transpile; both at the quiet moment, in L1 and in the row, counted once", () =>
      Effect.scoped(Effect.gen(function*() {
        const world = yield* makeWorld({ "big.ts": large })
        const cache = yield* makeCache(world, { fleet: false })
        const { module } = yield* Effect.provideService(cache.get(keyOf("big.ts")), RequestedCoding, "identity")
        expect(module.encoded).toBeUndefined()
        expect((yield* cache.stats).compressions).toBe(0)
        // Not before the quiet moment: the row is not written yet either.
        expect((yield* world.readRow(keyOf("big.ts")))._tag).toBe("Absent")
        yield* TestClock.adjust("1 second")
        const row = yield* waitFor(world.readRow(keyOf("big.ts")), (row) => row._tag === "Module")
        const encoded = row._tag === "Module" ? row.module.encoded : undefined
        expect(brotliDecompressSync(encoded!.br!).toString("utf8")).toBe(module.body)
        expect(gunzipSync(encoded!.gzip!).toString("utf8")).toBe(module.body)
        const again = yield* cache.get(keyOf("big.ts"))
        expect(again.outcome).toBe("l1")
        expect(again.module.encoded).toEqual(encoded)
        expect((yield* cache.stats).compressions).toBe(1)
        expect((yield* cache.stats).l1Bytes).toBe(moduleBytes(again.module))
      })))

    it.effect("br: br with the transpile, gzip later; an L1 hit before the quiet moment makes it at once, once", () =>
      Effect.scoped(Effect.gen(function*() {
        const world = yield* makeWorld({ "big.ts": large })
        const cache = yield* makeCache(world, { fleet: false })
        const { module } = yield* Effect.provideService(cache.get(keyOf("big.ts")), RequestedCoding, "br")
        expect(Object.keys(module.encoded ?? {})).toEqual(["br"])
        // An L1 hit (its coding unknown) while gzip is still to come: answered with both.
        const hit = yield* cache.get(keyOf("big.ts"))
        expect(hit.outcome).toBe("l1")
        expect(Object.keys(hit.module.encoded ?? {}).sort()).toEqual(["br", "gzip"])
        expect(gunzipSync(hit.module.encoded!.gzip!).toString("utf8")).toBe(module.body)
        yield* TestClock.adjust("1 second")
        const row = yield* waitFor(world.readRow(keyOf("big.ts")), (row) => row._tag === "Module")
        expect(row._tag === "Module" ? row.module.encoded : undefined).toEqual(hit.module.encoded)
        expect((yield* cache.stats).compressions).toBe(1)
      })))

    it.effect("in a fleet, where a peer may wait for the row, every coding is made with the transpile", () =>
      Effect.scoped(Effect.gen(function*() {
        const world = yield* makeWorld({ "big.ts": large })
        const cache = yield* makeCache(world, { fleet: true })
        const { module } = yield* Effect.provideService(cache.get(keyOf("big.ts")), RequestedCoding, "identity")
        expect(Object.keys(module.encoded ?? {}).sort()).toEqual(["br", "gzip"])
        yield* idle(cache)
        const row = yield* world.readRow(keyOf("big.ts"))
        expect(row._tag === "Module" ? row.module.encoded : undefined).toEqual(module.encoded)
      })))
  })
})
