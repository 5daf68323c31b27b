/**
 * Raw (non-module) files of a realm, kept in memory like modules: bytes, ETag and the
 * response header blocks computed once per file, bounded by bytes with the same CLOCK
 * (second-chance) eviction as L1, and dropped by the realm's watcher.
 *
 * Entries are kept only while a watcher reports changes to the realm (`watched(true)`):
 * without one nothing would tell this cache that a file changed, so every request reads
 * the file again (through the open-then-verify path). A fill that raced an invalidation is
 * dropped: {@link RawFileCache.capture} before the read, {@link RawFileCache.fill} after.
 *
 * @since 0.1.0
 */
import { Context, Layer } from "effect"
import { defaultMaxBytes } from "../cache/L1Cache.ts"
import { ClockMap } from "../internal/ClockMap.ts"

/** A cached answer: the body, its ETag, and the header blocks of a 200 and a 304 (flat `[name, value, ...]`). */
export interface CachedAnswer {
  readonly bytes: Uint8Array
  readonly etag: string
  /** Headers of a `200` (and of a `HEAD`), content type and length included. */
  readonly ok: ReadonlyArray<string>
  /** Headers of a `304`. */
  readonly notModified: ReadonlyArray<string>
}

/** The raw-file store of one realm. Synchronous: every method is a few map operations. */
export class RawFiles {
  private readonly entries: ClockMap<CachedAnswer>
  private generation = 0
  private watching = false

  constructor(maxBytes: number = defaultMaxBytes) {
    this.entries = new ClockMap<CachedAnswer>(maxBytes)
  }

  /** The cached answer of a canonical path, marked as used. */
  get(canonicalPath: string): CachedAnswer | undefined {
    return this.entries.get(canonicalPath)
  }

  /** The generation before a read; a later {@link fill} with it counts only if nothing was invalidated meanwhile. */
  capture(): number {
    return this.generation
  }

  /**
   * Stores an answer read after `captured`, if nothing was invalidated since and a watcher is on.
   * `group` (a realm, say) is what eviction is fair between: over the bound, the group holding
   * the most bytes gives some up (see {@link ClockMap}).
   */
  fill(canonicalPath: string, answer: CachedAnswer, captured: number, group: string = ""): boolean {
    if (!this.watching || captured !== this.generation) return false
    return this.entries.set(canonicalPath, answer, answer.bytes.byteLength, group)
  }

  /** Drops a realm-relative path and every path below it (a changed file or directory). */
  invalidate(relativePath: string): void {
    this.generation++
    this.entries.delete(relativePath)
    const prefix = `${relativePath}/`
    for (const [id] of this.entries) if (relativePath === "" || id.startsWith(prefix)) this.entries.delete(id)
  }

  /** Drops everything. */
  clear(): void {
    this.generation++
    this.entries.clear()
  }

  /** Whether a watcher reports changes; entries are kept only while it does. */
  watched(watching: boolean): void {
    this.watching = watching
    this.clear()
  }

  get bytes(): number {
    return this.entries.bytes
  }

  /** The bytes of one group's answers (see {@link fill}). */
  bytesOf(group: string): number {
    return this.entries.bytesOf(group)
  }

  get size(): number {
    return this.entries.size
  }

  get maxBytes(): number {
    return this.entries.maxBytes
  }
}

/** The realm's {@link RawFiles}, shared by the routes, the watcher and the fast path. */
export class RawFileCache extends Context.Service<RawFileCache, RawFiles>()("module-transpile-cache/RawFileCache") {}

/** A {@link RawFileCache} bounded by `maxBytes` (default: L1's default bound, 64 MiB). */
export const layer = (maxBytes?: number): Layer.Layer<RawFileCache> =>
  Layer.sync(RawFileCache, () => new RawFiles(maxBytes))
