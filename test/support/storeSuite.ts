/**
 * The TranspileStore conformance suite: one set of cases that every store (Postgres,
 * PGlite, memory) must pass with the same results.
 */
import { randomUUID } from "node:crypto"
import { assert, expect, type Vitest } from "@effect/vitest"
import { Deferred, Effect, type Scope, Stream } from "effect"
import {
  moduleBytes,
  moduleKey as plainKey,
  type ModuleKey,
  type TranspiledModule,
  type VersionedKey,
  versionedKey
} from "../../src/domain/Domain.ts"
import { SourceTooLargeError, TranspileError } from "../../src/domain/Errors.ts"
import {
  type Captured,
  isUsable,
  type StoredRow,
  TranspileStore,
  type WriteContent
} from "../../src/domain/TranspileStore.ts"

/** How the suite drives one store. */
export interface StoreBackend<R> {
  readonly name: string
  /** A store to test. Stores made for one backend may share their data; each case uses its own realm. */
  readonly makeStore: Effect.Effect<TranspileStore["Service"], never, R | Scope.Scope>
  /**
   * Moves every row of the realm `millis` into the past: its content's age and its last
   * read. (The memory store moves its clock instead, which ages every row of that store.)
   */
  readonly age: (realmUrl: string, millis: number) => Effect.Effect<void, unknown, R>
  /**
   * A second store on the same data through its own connections, as another process of the
   * fleet would have. The concurrency case wipes through it, so that the wipe does not queue
   * for a connection behind the writes it races. Default: the store itself.
   */
  readonly makePeerStore?: Effect.Effect<TranspileStore["Service"], unknown, R | Scope.Scope>
  /** Writers racing one realm wipe in the concurrency case. */
  readonly racingWriters?: number
}

const fingerprint = "fp-1"

/** A key of the suite's version (fingerprint `fp-1`). */
const moduleKey = (realmUrl: string, path: string): VersionedKey => versionedKey(plainKey(realmUrl, path), fingerprint)

/** The same key of another version. */
const ofVersion = (key: ModuleKey, other: string): VersionedKey => versionedKey(key, other)
const hour = 60 * 60 * 1000

const freshRealm = (backend: string): string => `https://realm.test/${backend}/${randomUUID()}/`

const moduleOf = (body: string, sourceHash: string): TranspiledModule => ({
  body,
  headers: { "content-type": "text/javascript; charset=utf-8", "x-test": body.slice(0, 8) },
  dependencyKeys: ["https://realm.test/dep.gts", "https://cdn.test/lib.js"],
  sourceHash
})

const moduleContent = (body: string, sourceHash = "hash-1"): WriteContent => ({
  _tag: "Module",
  module: moduleOf(body, sourceHash)
})

const write = (
  store: TranspileStore["Service"],
  key: ModuleKey,
  captured: Captured,
  content: WriteContent,
  options: { readonly fingerprint?: string; readonly sourceHash?: string } = {}
) =>
  store.write({
    key,
    captured,
    fingerprint: options.fingerprint ?? fingerprint,
    sourceHash: options.sourceHash ?? (content._tag === "Module" ? content.module.sourceHash : "hash-1"),
    content
  })

const expectModule = (row: StoredRow, body: string): Extract<StoredRow, { _tag: "Module" }> => {
  assert(row._tag === "Module", `expected a Module, got ${row._tag}`)
  expect(row.module.body).toBe(body)
  return row
}

/** Registers the conformance cases for one backend. */
export const storeSuite = <R>(it: Vitest.MethodsNonLive<R>, backend: StoreBackend<R>): void => {
  const realmOf = () => freshRealm(backend.name)

  it.effect("a missing key reads Absent at generation 0 and realm epoch 0", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const row = yield* store.read(moduleKey(realmOf(), "missing.gts"))
      expect(row).toEqual({ _tag: "Absent", captured: { generation: 0, realmEpoch: 0 } })
    }))

  it.effect("a written module reads back whole, with the captured state it was written under", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const key = moduleKey(realmOf(), "dir/a.gts")
      const before = yield* store.read(key)
      expect(yield* write(store, key, before.captured, moduleContent("export const a = 1"))).toBe(true)
      const row = expectModule(yield* store.read(key), "export const a = 1")
      expect(row).toEqual({
        _tag: "Module",
        captured: { generation: 0, realmEpoch: 0 },
        fingerprint,
        sourceHash: "hash-1",
        module: moduleOf("export const a = 1", "hash-1")
      })
    }))

  it.effect("a module's compressed forms and source map go with its row: written alone or in a batch, read, preloaded, counted, and cleared by a tombstone", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const empty = { generation: 0, realmEpoch: 0 }
      const full: TranspiledModule = {
        ...moduleOf("export const full = 1", "hash-full"),
        encoded: { br: new Uint8Array([1, 2, 3, 250]), gzip: new Uint8Array([31, 139, 0, 7, 9]) },
        sourceMap: "{\"version\":3,\"sources\":[\"a.gts\"],\"mappings\":\"AAAA\"}"
      }
      const brOnly: TranspiledModule = { ...moduleOf("export const br = 1", "hash-br"), encoded: { br: new Uint8Array([0, 255]) } }
      const key = (name: string) => moduleKey(realm, name)
      expect(yield* write(store, key("single.ts"), empty, { _tag: "Module", module: full })).toBe(true)
      const batch = [
        { key: key("batch.ts"), module: full },
        { key: key("br.ts"), module: brOnly },
        { key: key("plain.ts"), module: moduleOf("export const plain = 1", "hash-plain") }
      ]
      const requests = batch.map(({ key, module }) => ({
        key,
        captured: empty,
        fingerprint,
        sourceHash: module.sourceHash,
        content: { _tag: "Module" as const, module }
      }))
      expect(yield* (store.writeMany?.(requests) ?? Effect.forEach(requests, (request) => store.write(request)))).toEqual([true, true, true])
      for (const [name, module] of [["single.ts", full], ...batch.map(({ key, module }) => [key.path, module] as const)] as const) {
        const row = yield* store.read(key(name))
        assert(row._tag === "Module", name)
        expect(row.module, name).toEqual(module)
      }
      // Preloaded whole, and counted with their bodies by the preload bound and `versions`.
      const preloaded = yield* Stream.runCollect(store.preload({ realmUrls: [realm], fingerprint, maxBytes: 1 << 20 }))
      expect(new Map(preloaded.map((row) => [row.key.path, row.module])).get("single.ts")).toEqual(full)
      const bytes = 2 * moduleBytes(full) + moduleBytes(brOnly) + moduleBytes(moduleOf("export const plain = 1", "x"))
      expect((yield* store.versions(realm)).map((version) => version.bytes)).toEqual([bytes])
      // A tombstone clears them with the body; a new write of a plain module has none.
      yield* store.tombstone(plainKey(realm, "single.ts"))
      const after = yield* store.read(key("single.ts"))
      expect(after._tag).toBe("Absent")
      expect(yield* write(store, key("single.ts"), after.captured, moduleContent("export const full = 2", "hash-2"))).toBe(true)
      expect(yield* store.read(key("single.ts"))).toMatchObject({ _tag: "Module", module: moduleOf("export const full = 2", "hash-2") })
      const reread = yield* store.read(key("single.ts"))
      assert(reread._tag === "Module")
      expect(reread.module.encoded).toBeUndefined()
      expect(reread.module.sourceMap).toBeUndefined()
    }))

  it.effect("writeMany of more content than one statement takes (3 rows of 3.5 MiB) writes every row, each whole", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const empty = { generation: 0, realmEpoch: 0 }
      const bodies = ["a", "b", "c"].map((letter) => letter.repeat(3.5 * 1024 * 1024))
      const requests = bodies.map((body, i) => ({
        key: moduleKey(realm, `big${i}.ts`),
        captured: empty,
        fingerprint,
        sourceHash: `hash-${i}`,
        content: moduleContent(body, `hash-${i}`)
      }))
      expect(yield* (store.writeMany?.(requests) ?? Effect.forEach(requests, (request) => store.write(request)))).toEqual([true, true, true])
      for (const [i, body] of bodies.entries()) expectModule(yield* store.read(moduleKey(realm, `big${i}.ts`)), body)
    }))

  it.effect("a write whose capture predates a tombstone is rejected", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const key = moduleKey(realmOf(), "stale.ts")
      yield* write(store, key, { generation: 0, realmEpoch: 0 }, moduleContent("v1"))
      const captured = (yield* store.read(key)).captured
      expect(captured).toEqual({ generation: 0, realmEpoch: 0 })
      // An invalidation lands while the writer transpiles.
      expect((yield* store.tombstone(key)).generation).toBe(1)
      expect(yield* write(store, key, captured, moduleContent("stale v2"))).toBe(false)
      expect(yield* store.read(key)).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } })
      // A writer that captured the tombstone's generation succeeds, and stores that generation.
      expect(yield* write(store, key, { generation: 1, realmEpoch: 0 }, moduleContent("fresh v2"))).toBe(true)
      const row = expectModule(yield* store.read(key), "fresh v2")
      expect(row.captured).toEqual({ generation: 1, realmEpoch: 0 })
    }))

  it.effect("a write of an equal generation overwrites; a lower one of another source does not", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const key = moduleKey(realmOf(), "equal.ts")
      const captured = { generation: 0, realmEpoch: 0 }
      expect(yield* write(store, key, captured, moduleContent("first"))).toBe(true)
      expect(yield* write(store, key, captured, moduleContent("second", "hash-2"))).toBe(true)
      const row = expectModule(yield* store.read(key), "second")
      expect(row.sourceHash).toBe("hash-2")
      expect(row.captured.generation).toBe(0)
      yield* store.tombstone(key)
      yield* store.tombstone(key)
      expect(yield* write(store, key, { generation: 3, realmEpoch: 0 }, moduleContent("third"))).toBe(true)
      expect(yield* write(store, key, { generation: 2, realmEpoch: 0 }, moduleContent("older", "hash-old"))).toBe(false)
      expect(expectModule(yield* store.read(key), "third").captured.generation).toBe(3)
    }))

  it.effect("an edit's tombstone names the new source: rows of it stay, a second report changes nothing", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const key = moduleKey(realmOf(), "edited.ts")
      const other = ofVersion(key, "fp-other")
      expect(yield* write(store, key, { generation: 0, realmEpoch: 0 }, moduleContent("old", "hash-old"))).toBe(true)
      expect(yield* write(store, other, { generation: 0, realmEpoch: 0 }, moduleContent("new", "hash-new"), { fingerprint: "fp-other" }))
        .toBe(true)
      // The edit to hash-new: this version's row of the old source goes, the other's (already new) stays.
      expect(yield* store.tombstone(key, "hash-new")).toEqual({ generation: 1, changed: true })
      expect(yield* store.read(key)).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } })
      expectModule(yield* store.read(other), "new")
      // Every later report of the same edit finds it satisfied.
      expect(yield* store.tombstone(key, "hash-new")).toEqual({ generation: 1, changed: false })
      // A slow writer of the old source, captured before the edit, loses.
      expect(yield* write(store, key, { generation: 0, realmEpoch: 0 }, moduleContent("slow old", "hash-old"))).toBe(false)
      // A writer of the new source wins even on a capture from before the tombstone, at the key's generation.
      expect(yield* write(store, key, { generation: 0, realmEpoch: 0 }, moduleContent("new", "hash-new"))).toBe(true)
      expect(expectModule(yield* store.read(key), "new").captured.generation).toBe(1)
      expect(yield* store.tombstone(key, "hash-new")).toEqual({ generation: 1, changed: false })
      // Still no old source after it, even on the capture of the new row.
      expect(yield* write(store, key, { generation: 0, realmEpoch: 0 }, moduleContent("slow old", "hash-old"))).toBe(false)
      // A forced invalidation (no source named) takes every row, and defeats every earlier capture.
      expect(yield* store.tombstone(key)).toEqual({ generation: 2, changed: true })
      expect(yield* store.read(other)).toEqual({ _tag: "Absent", captured: { generation: 2, realmEpoch: 0 } })
      expect(yield* write(store, key, { generation: 1, realmEpoch: 0 }, moduleContent("new", "hash-new"))).toBe(false)
      // Back to the old source, then forward again: each edit changes the rows once.
      expect(yield* store.tombstone(key, "hash-old")).toEqual({ generation: 3, changed: true })
      expect(yield* store.tombstone(key, "hash-old")).toEqual({ generation: 3, changed: false })
      expect(yield* store.tombstone(key, "hash-new")).toEqual({ generation: 4, changed: true })
      expect(yield* write(store, key, { generation: 3, realmEpoch: 0 }, moduleContent("old", "hash-old"))).toBe(false)
    }))

  it.effect("an edit's tombstone of a key with no row makes one awaiting the source; a wipe still beats earlier captures", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const key = moduleKey(realm, "new.ts")
      expect(yield* store.tombstone(key, "hash-new")).toEqual({ generation: 1, changed: true })
      expect(yield* store.tombstone(key, "hash-new")).toEqual({ generation: 1, changed: false })
      expect(yield* write(store, key, { generation: 0, realmEpoch: 0 }, moduleContent("old", "hash-old"))).toBe(false)
      // A wipe: a capture from before it loses, whatever source it writes.
      yield* store.wipeRealm(realm)
      expect(yield* write(store, key, { generation: 0, realmEpoch: 0 }, moduleContent("new", "hash-new"))).toBe(false)
      expect(yield* write(store, moduleKey(realm, "rowless.ts"), { generation: 0, realmEpoch: 0 }, moduleContent("x"))).toBe(false)
      const after = (yield* store.read(key)).captured
      expect(after.realmEpoch).toBe(1)
      expect(yield* write(store, key, after, moduleContent("new", "hash-new"))).toBe(true)
      expectModule(yield* store.read(key), "new")
    }))

  it.effect("a tombstone bumps the generation; one of a missing key makes generation 1", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const key = moduleKey(realmOf(), "tomb.gts")
      expect((yield* store.tombstone(key)).generation).toBe(1)
      expect(yield* store.read(key)).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } })
      expect((yield* store.tombstone(key)).generation).toBe(2)
      expect(yield* write(store, key, { generation: 2, realmEpoch: 0 }, moduleContent("live"))).toBe(true)
      expect(expectModule(yield* store.read(key), "live").captured.generation).toBe(2)
      expect((yield* store.tombstone(key)).generation).toBe(3)
      expect(yield* store.read(key)).toEqual({ _tag: "Absent", captured: { generation: 3, realmEpoch: 0 } })
    }))

  it.effect("a realm wipe defeats earlier captures, including one of a key that had no row", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const other = realmOf()
      const noRow = moduleKey(realm, "never-written.gts")
      const live = moduleKey(realm, "live.gts")
      const elsewhere = moduleKey(other, "live.gts")
      yield* write(store, live, { generation: 0, realmEpoch: 0 }, moduleContent("live"))
      yield* write(store, elsewhere, { generation: 0, realmEpoch: 0 }, moduleContent("elsewhere"))
      const noRowCapture = (yield* store.read(noRow)).captured
      const liveCapture = (yield* store.read(live)).captured
      expect(noRowCapture).toEqual({ generation: 0, realmEpoch: 0 })

      yield* store.wipeRealm(realm)

      expect(yield* write(store, noRow, noRowCapture, moduleContent("stale"))).toBe(false)
      expect(yield* write(store, live, liveCapture, moduleContent("stale"))).toBe(false)
      expect(yield* store.read(noRow)).toEqual({ _tag: "Absent", captured: { generation: 0, realmEpoch: 1 } })
      expect(yield* store.read(live)).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 1 } })
      // Another realm is untouched.
      expect(expectModule(yield* store.read(elsewhere), "elsewhere").captured).toEqual({
        generation: 0,
        realmEpoch: 0
      })
      // Captures made after the wipe write.
      expect(yield* write(store, noRow, { generation: 0, realmEpoch: 1 }, moduleContent("new"))).toBe(true)
      expect(expectModule(yield* store.read(noRow), "new").captured).toEqual({ generation: 0, realmEpoch: 1 })
      // A second wipe moves the epoch again.
      yield* store.wipeRealm(realm)
      expect(yield* store.read(noRow)).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 2 } })
    }))

  it.effect("another source hash counts as a miss; another fingerprint reads a row of its own", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const key = moduleKey(realmOf(), "fp.gts")
      yield* write(store, key, { generation: 0, realmEpoch: 0 }, moduleContent("body", "hash-1"))
      const row = yield* store.read(key)
      expect(row._tag).toBe("Module")
      expect(isUsable(row, fingerprint, "hash-1")).toBe(true)
      expect(isUsable(row, fingerprint, "hash-2")).toBe(false)
      // Another version has no row of this key yet, but captures the key's generation.
      const other = yield* store.read(ofVersion(key, "fp-2"))
      expect(other).toEqual({ _tag: "Absent", captured: { generation: 0, realmEpoch: 0 } })
      expect(
        yield* write(store, key, other.captured, moduleContent("body 2", "hash-2"), { fingerprint: "fp-2" })
      ).toBe(true)
      const rewritten = yield* store.read(ofVersion(key, "fp-2"))
      expect(isUsable(rewritten, "fp-2", "hash-2")).toBe(true)
      // The first version's row is untouched.
      expect(isUsable(yield* store.read(key), fingerprint, "hash-1")).toBe(true)
    }))

  it.effect("versions side by side: each fingerprint writes and reads its own row, neither overwrites the other", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const v1 = moduleKey(realm, "a.gts")
      const v2 = ofVersion(v1, "fp-2")
      const zero = { generation: 0, realmEpoch: 0 }
      expect(yield* write(store, v1, zero, moduleContent("v1 bytes"))).toBe(true)
      expect(yield* write(store, v2, zero, moduleContent("v2 bytes"), { fingerprint: "fp-2" })).toBe(true)
      // Each version rewrites its row as often as it likes; the other's stays.
      expect(yield* write(store, v1, zero, moduleContent("v1 again"))).toBe(true)
      expectModule(yield* store.read(v1), "v1 again")
      const second = expectModule(yield* store.read(v2), "v2 bytes")
      expect(second.fingerprint).toBe("fp-2")
      expect((yield* store.readMany([v1, v2, v1])).map((row) => row._tag === "Module" ? row.module.body : row._tag))
        .toEqual(["v1 again", "v2 bytes", "v1 again"])
      // Preload reads one version's rows only.
      const preloaded = yield* Effect.map(
        Stream.runCollect(store.preload({ realmUrls: [realm], fingerprint: "fp-2", maxBytes: 10_000 })),
        (rows) => Array.from(rows, (row) => row.module.body)
      )
      expect(preloaded).toEqual(["v2 bytes"])
      // The versions present, most recently read first.
      yield* store.read(v2)
      const versions = yield* store.versions(realm)
      expect(versions.map((version) => [version.fingerprint, version.rows, version.bytes]).sort()).toEqual([
        [fingerprint, 1, "v1 again".length],
        ["fp-2", 1, "v2 bytes".length]
      ])
      expect(versions.every((version) => !Number.isNaN(Date.parse(version.lastReadAt)))).toBe(true)
      expect(yield* store.versions(realmOf())).toEqual([])
    }))

  it.effect("a tombstone covers every version, and defeats a write of a version that had no row when it landed", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const v1 = moduleKey(realm, "edited.gts")
      const v2 = ofVersion(v1, "fp-2")
      const v3 = ofVersion(v1, "fp-3")
      const zero = { generation: 0, realmEpoch: 0 }
      yield* write(store, v1, zero, moduleContent("v1"))
      yield* write(store, v2, zero, moduleContent("v2"), { fingerprint: "fp-2" })
      // Version 3 captures (no row yet), then the edit lands while it transpiles.
      const captured3 = (yield* store.read(v3)).captured
      expect(captured3).toEqual(zero)
      expect((yield* store.tombstone(plainKey(realm, "edited.gts"))).generation).toBe(1)
      const after = { _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } }
      expect(yield* store.read(v1)).toEqual(after)
      expect(yield* store.read(v2)).toEqual(after)
      expect(yield* store.read(v3)).toEqual(after)
      expect(yield* write(store, v3, captured3, moduleContent("stale v3"), { fingerprint: "fp-3" })).toBe(false)
      expect(yield* write(store, v2, zero, moduleContent("stale v2"), { fingerprint: "fp-2" })).toBe(false)
      expect(yield* store.read(v3)).toEqual(after)
      expect(yield* store.versions(realm)).toEqual([])
      // Writers that captured the tombstone write, each its own row.
      expect(yield* write(store, v1, after.captured, moduleContent("fresh v1"))).toBe(true)
      expect(yield* write(store, v3, after.captured, moduleContent("fresh v3"), { fingerprint: "fp-3" })).toBe(true)
      expectModule(yield* store.read(v1), "fresh v1")
      expectModule(yield* store.read(v3), "fresh v3")
      expect(yield* store.read(v2)).toEqual(after)
      // A realm wipe covers every version too.
      yield* store.wipeRealm(realm)
      expect((yield* store.read(v1))._tag).toBe("Absent")
      expect((yield* store.read(v3))._tag).toBe("Absent")
      expect(yield* store.versions(realm)).toEqual([])
    }))

  it.effect("a recorded failure is served to readers of its generation only", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const key = moduleKey(realm, "broken.gts")
      const error = new TranspileError({ path: "broken.gts", message: "Unexpected token", line: 3, column: 7 })
      expect(yield* write(store, key, { generation: 0, realmEpoch: 0 }, { _tag: "Failure", error })).toBe(true)
      const row = yield* store.read(key)
      assert(row._tag === "Failure", `expected a Failure, got ${row._tag}`)
      expect(row.captured).toEqual({ generation: 0, realmEpoch: 0 })
      expect(row.fingerprint).toBe(fingerprint)
      expect(row.sourceHash).toBe("hash-1")
      expect(row.error).toBeInstanceOf(TranspileError)
      expect(row.error).toEqual(error)
      expect(isUsable(row, fingerprint, "hash-1")).toBe(true)

      const big = moduleKey(realm, "big.gts")
      const tooLarge = new SourceTooLargeError({ path: "big.gts", size: 3_000_000, limit: 1_000_000 })
      yield* write(store, big, { generation: 0, realmEpoch: 0 }, { _tag: "Failure", error: tooLarge })
      const bigRow = yield* store.read(big)
      assert(bigRow._tag === "Failure")
      expect(bigRow.error).toBeInstanceOf(SourceTooLargeError)
      expect(bigRow.error.message).toBe(tooLarge.message)

      // The next invalidation clears it.
      expect((yield* store.tombstone(key)).generation).toBe(1)
      expect(yield* store.read(key)).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } })
      // A failure's capture is as good as any: a stale one is rejected, a current one replaces it.
      expect(yield* write(store, big, bigRow.captured, moduleContent("now small"))).toBe(true)
      expectModule(yield* store.read(big), "now small")
    }))

  it.effect("readMany reads the rows read would, one per key in order: hits, misses, tombstones, failures, other fingerprints and realms", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const wiped = realmOf()
      const key = (name: string) => moduleKey(realm, name)
      const zero = { generation: 0, realmEpoch: 0 }
      yield* write(store, key("hit.ts"), zero, moduleContent("hit"))
      yield* write(store, key("other-fp.ts"), zero, moduleContent("other"), { fingerprint: "fp-2" })
      yield* write(store, key("tombstoned.ts"), zero, moduleContent("gone"))
      yield* store.tombstone(key("tombstoned.ts"))
      yield* write(store, key("failed.ts"), zero, {
        _tag: "Failure",
        error: new TranspileError({ path: "failed.ts", message: "boom", line: 1, column: 2 })
      })
      yield* write(store, moduleKey(wiped, "live.ts"), zero, moduleContent("wiped"))
      yield* store.wipeRealm(wiped)
      const keys = [
        key("hit.ts"),
        key("missing.ts"),
        key("other-fp.ts"),
        key("tombstoned.ts"),
        key("failed.ts"),
        moduleKey(wiped, "live.ts"),
        moduleKey(wiped, "never.ts"),
        key("hit.ts")
      ]
      const many = yield* store.readMany(keys)
      expect(many).toEqual(yield* Effect.forEach(keys, (k) => store.read(k)))
      // Another version's row is not ours: a miss for this fingerprint.
      expect(many.map((row) => row._tag)).toEqual(["Module", "Absent", "Absent", "Absent", "Failure", "Absent", "Absent", "Module"])
      expectModule(many[0]!, "hit")
      expect(isUsable(many[0]!, fingerprint, "hash-1")).toBe(true)
      expect(many[2]).toEqual({ _tag: "Absent", captured: zero })
      expect(isUsable((yield* store.readMany([ofVersion(key("other-fp.ts"), "fp-2")]))[0]!, "fp-2", "hash-1")).toBe(true)
      expect(many[1]).toEqual({ _tag: "Absent", captured: zero })
      expect(many[3]).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } })
      assert(many[4]!._tag === "Failure")
      expect(many[4]!.error).toBeInstanceOf(TranspileError)
      expect(many[5]).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 1 } })
      expect(many[6]).toEqual({ _tag: "Absent", captured: { generation: 0, realmEpoch: 1 } })
      // A capture from readMany conditions a write as one from read does.
      expect(yield* write(store, key("missing.ts"), many[1]!.captured, moduleContent("now"))).toBe(true)
      expect(yield* write(store, key("tombstoned.ts"), zero, moduleContent("stale"))).toBe(false)
      expect(yield* write(store, key("tombstoned.ts"), many[3]!.captured, moduleContent("fresh"))).toBe(true)
    }))

  it.effect("readMany of no keys is empty; of many keys, reads each", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      expect(yield* store.readMany([])).toEqual([])
      const realm = realmOf()
      const keys = Array.from({ length: 150 }, (_, i) => moduleKey(realm, `many/${i}.ts`))
      yield* Effect.forEach(keys.filter((_, i) => i % 3 === 0), (k) =>
        write(store, k, { generation: 0, realmEpoch: 0 }, moduleContent(`body ${k.path}`)), { concurrency: 8 })
      const many = yield* store.readMany(keys)
      expect(many).toHaveLength(150)
      many.forEach((row, i) => {
        if (i % 3 === 0) expectModule(row, `body ${keys[i]!.path}`)
        else expect(row).toEqual({ _tag: "Absent", captured: { generation: 0, realmEpoch: 0 } })
      })
    }))

  it.effect("prune removes old tombstones and failures, and rows not read for a while", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const key = (name: string) => moduleKey(realm, name)
      const zero = { generation: 0, realmEpoch: 0 }
      yield* write(store, key("unread.ts"), zero, moduleContent("unread"))
      yield* store.tombstone(key("old-tombstone.ts"))
      yield* write(store, key("old-failure.ts"), zero, {
        _tag: "Failure",
        error: new TranspileError({ path: "old-failure.ts", message: "boom" })
      })
      yield* write(store, key("read.ts"), zero, moduleContent("read"))

      yield* backend.age(realm, 2 * hour)

      expectModule(yield* store.read(key("read.ts")), "read")
      yield* store.tombstone(key("new-tombstone.ts"))
      yield* write(store, key("new.ts"), zero, moduleContent("new"))

      expect(yield* store.prune({ tombstonesOlderThanMillis: hour, unreadForMillis: 24 * hour })).toBe(2)
      expect(yield* store.prune({ tombstonesOlderThanMillis: 24 * hour, unreadForMillis: hour })).toBe(1)
      expect(yield* store.prune({ tombstonesOlderThanMillis: hour, unreadForMillis: hour })).toBe(0)

      const absent0 = { _tag: "Absent", captured: zero }
      expect(yield* store.read(key("unread.ts"))).toEqual(absent0)
      expect(yield* store.read(key("old-tombstone.ts"))).toEqual(absent0)
      expect(yield* store.read(key("old-failure.ts"))).toEqual(absent0)
      expect(yield* store.read(key("new-tombstone.ts"))).toEqual({ _tag: "Absent", captured: { ...zero, generation: 1 } })
      expectModule(yield* store.read(key("read.ts")), "read")
      expectModule(yield* store.read(key("new.ts")), "new")
    }))

  it.effect("preload streams a realm's live rows of one fingerprint, most recently read first, up to the byte bound", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const key = (name: string) => moduleKey(realm, `${name}.ts`)
      const empty = { generation: 0, realmEpoch: 0 }
      // Bodies of 10 bytes each.
      for (const name of ["a", "b", "c", "d"]) {
        yield* write(store, key(name), empty, moduleContent(name.repeat(10), `hash-${name}`))
      }
      yield* write(store, key("e"), empty, moduleContent("e".repeat(10)), { fingerprint: "fp-other" })
      yield* write(store, key("f"), empty, {
        _tag: "Failure",
        error: new TranspileError({ path: "f.ts", message: "boom", line: 1, column: 0 })
      })
      yield* write(store, moduleKey(realmOf(), "a.ts"), empty, moduleContent("other realm"))
      yield* store.tombstone(key("d"))
      yield* backend.age(realm, hour)
      yield* store.read(key("c"))
      yield* backend.age(realm, hour)
      yield* store.read(key("b"))
      const preload = (maxBytes: number) =>
        Stream.runCollect(store.preload({ realmUrls: [realm], fingerprint, maxBytes, pageSize: 2 }))
      const all = yield* preload(1000)
      expect(all.map((row) => row.key.path)).toEqual(["b.ts", "c.ts", "a.ts"])
      expect(all[0]).toEqual({ key: plainKey(realm, "b.ts"), module: moduleOf("b".repeat(10), "hash-b") })
      expect((yield* preload(29)).map((row) => row.key.path)).toEqual(["b.ts", "c.ts"])
      expect(yield* preload(9)).toEqual([])
      expect(yield* preload(0)).toEqual([])
      // Preloading is not reading: it leaves the recency order as it was.
      expect((yield* preload(1000)).map((row) => row.key.path)).toEqual(["b.ts", "c.ts", "a.ts"])
    }))

  it.effect("preload over many realms takes one byte bound, most recently read first across them", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const [x, y, z] = [realmOf(), realmOf(), realmOf()]
      const empty = { generation: 0, realmEpoch: 0 }
      const rows = [[x, "a"], [x, "b"], [y, "a"], [y, "b"], [z, "a"]] as const
      // Bodies of 10 bytes each.
      for (const [realm, name] of rows) {
        yield* write(store, moduleKey(realm, `${name}.ts`), empty, moduleContent(name.repeat(10), `${realm}${name}`))
      }
      yield* write(store, moduleKey(y, "other.ts"), empty, moduleContent("o".repeat(10)), { fingerprint: "fp-other" })
      // Read one at a time, an hour apart: Y/a longest ago, then X/b, Y/b, X/a (and Z/a, not asked for, last).
      for (const [realm, name] of [[y, "a"], [x, "b"], [y, "b"], [x, "a"], [z, "a"]] as const) {
        for (const aged of [x, y, z]) yield* backend.age(aged, hour)
        yield* store.read(moduleKey(realm, `${name}.ts`))
      }
      const preload = (realmUrls: ReadonlyArray<string>, maxBytes: number) =>
        Stream.runCollect(store.preload({ realmUrls, fingerprint, maxBytes, pageSize: 3 })).pipe(
          Effect.map((taken) => taken.map((row) => `${row.key.realmUrl === x ? "x" : row.key.realmUrl === y ? "y" : "z"}/${row.key.path}`))
        )
      expect(yield* preload([x, y], 1000)).toEqual(["x/a.ts", "y/b.ts", "x/b.ts", "y/a.ts"])
      expect(yield* preload([y, x], 1000)).toEqual(["x/a.ts", "y/b.ts", "x/b.ts", "y/a.ts"])
      // One bound over both realms, not one per realm.
      expect(yield* preload([x, y], 25)).toEqual(["x/a.ts", "y/b.ts"])
      expect(yield* preload([x, y], 30)).toEqual(["x/a.ts", "y/b.ts", "x/b.ts"])
      expect(yield* preload([y], 1000)).toEqual(["y/b.ts", "y/a.ts"])
      expect(yield* preload([x, y, z], 1000)).toEqual(["z/a.ts", "x/a.ts", "y/b.ts", "x/b.ts", "y/a.ts"])
      expect(yield* preload([], 1000)).toEqual([])
      const [first] = yield* Stream.runCollect(store.preload({ realmUrls: [x, y], fingerprint, maxBytes: 10 }))
      expect(first).toEqual({ key: plainKey(x, "a.ts"), module: moduleOf("a".repeat(10), `${x}a`) })
    }))

  it.effect("a row rewritten while preload reads it comes whole: its body always goes with its source hash", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const keys = Array.from({ length: 40 }, (_, i) => moduleKey(realm, `r${i}.ts`))
      const version = (key: ModuleKey, v: number) => moduleContent(`${key.path} body v${v} `.repeat(20), `${key.path}#${v}`)
      yield* Effect.forEach(keys, (key) => write(store, key, { generation: 0, realmEpoch: 0 }, version(key, 0)), {
        concurrency: 8
      })
      // Writers rewrite every row again and again (equal generations overwrite) while preloads run.
      const writers = Effect.forEach(Array.from({ length: 6 }, (_, v) => v + 1), (v) =>
        Effect.forEach(keys, (key) => write(store, key, { generation: 0, realmEpoch: 0 }, version(key, v)), {
          concurrency: 4,
          discard: true
        }), { discard: true })
      const preloads = Effect.forEach(Array.from({ length: 6 }), () =>
        Stream.runCollect(store.preload({ realmUrls: [realm], fingerprint, maxBytes: 10_000_000, pageSize: 7 })))
      const [, seen] = yield* Effect.all([writers, preloads], { concurrency: "unbounded" })
      for (const rows of seen) {
        expect(rows).toHaveLength(keys.length)
        for (const row of rows) {
          const v = Number(row.module.sourceHash.split("#")[1])
          expect(row.module.body).toBe(`${row.key.path} body v${v} `.repeat(20))
        }
      }
    }))

  it.effect("prune racing a writer: a young tombstone survives and rejects the stale write; a pruned one lets a fresh capture write", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const key = moduleKey(realm, "raced.gts")
      const zero = { generation: 0, realmEpoch: 0 }
      const prune = () => store.prune({ tombstonesOlderThanMillis: hour, unreadForMillis: 24 * hour })
      // Prune is store-wide: first clear what earlier tests of this store left to prune, so the
      // counts below are this test's rows alone.
      yield* prune()
      yield* write(store, key, zero, moduleContent("v1"))
      // A writer captures, then an invalidation and a prune land while it transpiles.
      const staleCapture = (yield* store.read(key)).captured
      expect((yield* store.tombstone(key)).generation).toBe(1)
      expect(yield* prune()).toBe(0)
      expect(yield* write(store, key, staleCapture, moduleContent("stale v1"))).toBe(false)
      expect(yield* store.read(key)).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } })
      // A writer that captured the tombstone, whose tombstone is then pruned, still writes its (fresh) bytes.
      const freshCapture = (yield* store.read(key)).captured
      yield* backend.age(realm, 2 * hour)
      expect(yield* prune()).toBe(1)
      expect(yield* write(store, key, freshCapture, moduleContent("fresh v2"))).toBe(true)
      expect(expectModule(yield* store.read(key), "fresh v2").captured).toEqual({ generation: 1, realmEpoch: 0 })
    }))

  it.effect("the byte cap counts every version, and evicts the version nobody reads first", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const zero = { generation: 0, realmEpoch: 0 }
      const cap = { tombstonesOlderThanMillis: 24 * hour, unreadForMillis: 48 * hour, maxBytesPerRealm: 1500 }
      // Prune is store-wide: first bring the realms of earlier tests of this store under the cap.
      yield* store.prune(cap)
      for (const name of ["a.ts", "b.ts"]) {
        yield* write(store, ofVersion(moduleKey(realm, name), "fp-old"), zero, moduleContent("o".repeat(600)), {
          fingerprint: "fp-old"
        })
      }
      // The old version is gone: nobody has read its rows for an hour. The new one writes its own.
      yield* backend.age(realm, hour)
      for (const name of ["a.ts", "b.ts"]) yield* write(store, moduleKey(realm, name), zero, moduleContent("n".repeat(600)))
      expect((yield* store.versions(realm)).map((version) => [version.fingerprint, version.bytes])).toEqual([
        [fingerprint, 1200],
        ["fp-old", 1200]
      ])
      expect(yield* store.prune(cap)).toBeGreaterThanOrEqual(2)
      expect((yield* store.versions(realm)).map((version) => [version.fingerprint, version.rows])).toEqual([[fingerprint, 2]])
      expectModule(yield* store.read(moduleKey(realm, "a.ts")), "n".repeat(600))
      expect((yield* store.read(ofVersion(moduleKey(realm, "a.ts"), "fp-old")))._tag).toBe("Absent")
    }))

  it.effect("the byte cap tombstones a realm's least recently read rows beyond it, and rejects their stale writers", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const realm = realmOf()
      const other = realmOf()
      const key = (name: string) => moduleKey(realm, name)
      const zero = { generation: 0, realmEpoch: 0 }
      const kilo = (c: string) => c.repeat(1000)
      // Prune is store-wide: first bring the realms of earlier tests of this store under the cap.
      yield* store.prune({ tombstonesOlderThanMillis: 24 * hour, unreadForMillis: 48 * hour, maxBytesPerRealm: 1500 })
      for (const name of ["a.ts", "b.ts", "c.ts"]) yield* write(store, key(name), zero, moduleContent(kilo(name[0]!)))
      yield* write(store, moduleKey(other, "big.ts"), zero, moduleContent(kilo("o")))
      const staleCapture = (yield* store.read(key("a.ts"))).captured
      yield* backend.age(realm, 2 * hour)
      // b is read after the others: it is the most recently read, and stays.
      expectModule(yield* store.read(key("b.ts")), kilo("b"))
      expect(
        yield* store.prune({ tombstonesOlderThanMillis: 24 * hour, unreadForMillis: 48 * hour, maxBytesPerRealm: 1500 })
      ).toBe(2)
      expectModule(yield* store.read(key("b.ts")), kilo("b"))
      expect(yield* store.read(key("a.ts"))).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } })
      expect(yield* store.read(key("c.ts"))).toEqual({ _tag: "Absent", captured: { generation: 1, realmEpoch: 0 } })
      // Another realm has a cap of its own.
      expectModule(yield* store.read(moduleKey(other, "big.ts")), kilo("o"))
      // A writer that captured an evicted row is rejected; one that captured the eviction writes.
      expect(yield* write(store, key("a.ts"), staleCapture, moduleContent("stale"))).toBe(false)
      expect(yield* write(store, key("a.ts"), { generation: 1, realmEpoch: 0 }, moduleContent("again"))).toBe(true)
      expectModule(yield* store.read(key("a.ts")), "again")
      // Under the cap nothing more is evicted.
      expect(
        yield* store.prune({ tombstonesOlderThanMillis: 24 * hour, unreadForMillis: 48 * hour, maxBytesPerRealm: 1500 })
      ).toBe(0)
    }))

  it.effect("a realm wipe racing writers of fresh keys leaves no module written under the old epoch", () =>
    Effect.gen(function*() {
      const store = yield* backend.makeStore
      const peer = backend.makePeerStore === undefined ? store : yield* backend.makePeerStore
      const writers = backend.racingWriters ?? 48
      let applied = 0
      let rejected = 0
      for (let round = 0; round < 4; round++) {
        const realm = realmOf()
        const keys = Array.from({ length: writers }, (_, i) => moduleKey(realm, `fresh/${i}.gts`))
        const captures = yield* Effect.forEach(keys, (key) => store.read(key), { concurrency: 8 })
        // The wipe starts once a quarter of the writes are done, so it lands among writes in flight.
        const quarterDone = yield* Deferred.make<void>()
        let done = 0
        const writes = keys.map((key, i) =>
          Effect.andThen(
            Effect.yieldNow,
            write(store, key, captures[i]!.captured, moduleContent(`old epoch ${i}`))
          ).pipe(
            Effect.ensuring(Effect.suspend(() =>
              ++done === Math.floor(writers / 4) ? Deferred.succeed(quarterDone, undefined) : Effect.void
            ))
          )
        )
        const wipe = Deferred.await(quarterDone).pipe(Effect.andThen(peer.wipeRealm(realm)), Effect.as("wipe" as const))
        const outcomes = yield* Effect.all([wipe, ...writes], { concurrency: "unbounded" })
        const results = outcomes.filter((outcome): outcome is boolean => outcome !== "wipe")
        applied += results.filter((r) => r).length
        rejected += results.filter((r) => !r).length
        const rows = yield* Effect.forEach(keys, (key) => store.read(key), { concurrency: 8 })
        rows.forEach((row, i) => {
          // A write that applied came before the wipe, which tombstoned it; one after was rejected.
          expect(row).toEqual({
            _tag: "Absent",
            captured: { generation: results[i] ? 1 : 0, realmEpoch: 1 }
          })
        })
      }
      // The wipe really landed among the writes: some came before it, some after.
      expect(applied).toBeGreaterThan(0)
      expect(rejected).toBeGreaterThan(0)
    }))
}
