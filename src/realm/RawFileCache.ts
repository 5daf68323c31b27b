/**
 * Raw (non-module) files of a realm, kept in memory like modules: bytes, ETag and the
 * response header blocks computed once per file, and a text file's br and gzip forms made
 * once (see `ContentCoding`), every form counted against the bound, with the same CLOCK
 * (second-chance) eviction as L1, and dropped by the realm's watcher.
 *
 * Entries are kept only while a watcher reports changes to the realm (`watched(true)`):
 * without one nothing would tell this cache that a file changed, so every request reads
 * the file again (through the open-then-verify path). A fill that raced an invalidation is
 * dropped: {@link RawFileCache.capture} before the read, {@link RawFileCache.fill} after.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Layer from "effect/Layer"
import type { Coding } from "../internal/ContentCoding.ts"
import { defaultMaxBytes } from "../cache/L1Cache.ts"
import { ClockMap } from "../internal/ClockMap.ts"

/** One form of an answer's body: its bytes, its ETag, and the header blocks of a 200 and a 304 (flat `[name, value, ...]`). */
export interface Representation {
  readonly bytes: Uint8Array
  readonly etag: string
  /** Headers of a `200` (and of a `HEAD`), content type, encoding and length included. */
  readonly ok: ReadonlyArray<string>
  /** Headers of a `304`. */
  readonly notModified: ReadonlyArray<string>
}

/** A cached answer: its identity form, and its compressed forms when the body is compressible. */
export interface CachedAnswer extends Representation {
  /** The compressed forms, by coding; absent for a body sent as it is (which then varies by nothing). */
  readonly encoded?: Readonly<Partial<Record<Coding, Representation>>> | undefined
}

/** The bytes an answer holds, every form counted. */
export const bytesOf = (answer: CachedAnswer): number => {
  let bytes = answer.bytes.byteLength
  for (const form of Object.values(answer.encoded ?? {})) bytes += form.bytes.byteLength
  return bytes
}

/** The raw files of every realm of a server, under one byte bound; {@link of} gives one realm's. */
export class SharedRawFiles {
  readonly entries: ClockMap<CachedAnswer>

  constructor(maxBytes: number = defaultMaxBytes) {
    this.entries = new ClockMap<CachedAnswer>(maxBytes)
  }

  /** The raw files of the realm with this URL. */
  of(realmUrl: string): RawFiles {
    return new RawFiles(this, realmUrl)
  }

  get bytes(): number {
    return this.entries.bytes
  }

  get size(): number {
    return this.entries.size
  }

  get maxBytes(): number {
    return this.entries.maxBytes
  }
}

/** The raw-file store of one realm. Synchronous: every method is a few map operations. */
export class RawFiles {
  private readonly shared: SharedRawFiles
  /** The prefix of this realm's ids in the shared map. */
  private readonly prefix: string
  /** This realm's group in the shared map: eviction is fair between realms (see {@link ClockMap}). */
  private readonly group: string
  private generation = 0
  private watching = false

  /** One realm's raw files: in a map of its own bounded by `maxBytes`, or in a {@link SharedRawFiles} under its realm URL. */
  constructor(shared: SharedRawFiles | number = defaultMaxBytes, realmUrl: string = "") {
    this.shared = typeof shared === "number" ? new SharedRawFiles(shared) : shared
    this.prefix = `${realmUrl}\n`
    this.group = realmUrl
  }

  /** The cached answer of a canonical path, marked as used. */
  get(canonicalPath: string): CachedAnswer | undefined {
    return this.shared.entries.get(this.prefix + canonicalPath)
  }

  /** The generation before a read; a later {@link fill} with it counts only if nothing was invalidated meanwhile. */
  capture(): number {
    return this.generation
  }

  /** Stores an answer read after `captured`, if nothing was invalidated since and a watcher is on. */
  fill(canonicalPath: string, answer: CachedAnswer, captured: number): boolean {
    if (!this.watching || captured !== this.generation) return false
    return this.shared.entries.set(this.prefix + canonicalPath, answer, bytesOf(answer), this.group)
  }

  /** Drops a realm-relative path and every path below it (a changed file or directory). */
  invalidate(relativePath: string): void {
    this.generation++
    const entries = this.shared.entries
    entries.delete(this.prefix + relativePath)
    const prefix = relativePath === "" ? this.prefix : `${this.prefix}${relativePath}/`
    for (const [id] of entries.ofGroup(this.group)) if (id.startsWith(prefix)) entries.delete(id)
  }

  /** Drops every file of the realm. */
  clear(): void {
    this.invalidate("")
  }

  /** Whether a watcher reports changes; entries are kept only while it does. */
  watched(watching: boolean): void {
    this.watching = watching
    this.clear()
  }

  /** The bytes of this realm's files. */
  get bytes(): number {
    return this.shared.entries.bytesOf(this.group)
  }

  /** The number of this realm's files. */
  get size(): number {
    return this.shared.entries.sizeOf(this.group)
  }

  /** The bound this realm shares with the others. */
  get maxBytes(): number {
    return this.shared.maxBytes
  }
}

/** The realm's {@link RawFiles}, shared by the routes, the watcher and the fast path. */
export class RawFileCache extends Context.Service<RawFileCache, RawFiles>()("module-transpile-cache/RawFileCache") {}

/** A {@link RawFileCache} bounded by `maxBytes` (default: L1's default bound, 64 MiB). */
export const layer = (maxBytes?: number): Layer.Layer<RawFileCache> =>
  Layer.sync(RawFileCache, () => new RawFiles(maxBytes))
