/**
 * The realm's file watcher: a supervised watch of every directory of the realm
 * ({@link RealmWatcher}) as a Stream of events, batched, and a layer that invalidates what
 * each batch covers.
 *
 * - **Events** ({@link events}): the realm-relative path of every file that is created,
 *   changed, deleted or renamed, and `Unknown` when the watch is lost (the realm directory
 *   vanished or was replaced) or regained. A lost watch is re-opened by a check every
 *   500 ms. Dotfiles and the data directory are ignored.
 * - **Batches** ({@link batched}): the events once the realm is quiet for 25 ms, or every
 *   500 ms under constant churn, so that a burst (an atomic save, a save in place, which
 *   truncates the file first, a checkout) costs one invalidation per file, read once the
 *   writes are done: a file read half-written would be an edit of its own, transpiled in the
 *   fleet and reported by every process.
 * - **Invalidation** ({@link layer}): each batch invalidates the key of every changed module
 *   and every cached key below a changed directory ({@link PathRules.keysCovering}), and drops
 *   raw files cached in memory the same way. Each invalidation names the source the file
 *   holds now (read after the event; `goneSourceHash` when it is gone), so that every process
 *   watching the realm, and every peer, converge on one transpile of it (see
 *   `ModuleCache.invalidate`); a file that cannot be read is invalidated whatever it holds.
 *   After an `Unknown`, the modules read so far are read again: only those whose content hash
 *   changed (or that are gone) are invalidated.
 *
 * @since 0.3.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as path from "node:path"
import { goneSourceHash, moduleKey, type ModuleSource } from "../domain/Domain.ts"
import { InvalidationSource } from "../cache/CacheCounters.ts"
import type { ChangeFeed } from "../cache/ChangeFeed.ts"
import { ModuleCache } from "../cache/ModuleCache.ts"
import { fileSystem, RealmFiles } from "./FileSystemSources.ts"
import { isExecutable, keysCovering, toPosix } from "./PathRules.ts"
import * as RawFileCache from "./RawFileCache.ts"
import * as RealmWatcher from "./RealmWatcher.ts"

/** What the watch reports: a changed path, or that the watch was lost or regained (anything may have changed). */
export type WatchEvent =
  | { readonly _tag: "Changed"; readonly path: string }
  | { readonly _tag: "Unknown" }

/** How long the realm must be quiet before a trailing batch is emitted (atomic saves come as several events). */
const batchWindow = Duration.millis(25)

/** The longest a trailing batch gathers events under constant churn. */
const maxBatchWait = Duration.millis(500)

/** How often the watch is checked, and a lost one re-opened. */
const superviseInterval = Duration.millis(500)

/** What {@link events} watches, and whom it tells at once (before any batching). */
interface WatchOptions {
  readonly realmDir: string
  /** Paths (realm-relative) neither reported nor descended into. */
  readonly isIgnored: (relativePath: string) => boolean
  /** Called on every event, synchronously: e.g. to forget remembered resolutions. */
  readonly onChange: () => void
  /** Called when the watch starts (`true`) or stops (`false`) reporting changes. */
  readonly onWatching: (watching: boolean) => void
}

/**
 * Opens a supervised tree watch of the realm directory in the current scope, and returns
 * its events. The first attempt to open it is made before this effect returns (so that no
 * change after it is missed); a watch that cannot be opened yet, or that is lost, is
 * (re-)opened by a check every 500 ms, and each loss and recovery is an `Unknown` event.
 * The watch closes with the scope.
 */
export const events = (options: WatchOptions): Effect.Effect<Stream.Stream<WatchEvent>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = yield* Queue.unbounded<WatchEvent>()
    const fsys = yield* fileSystem
    const inode = (info: FileSystem.File.Info) => Option.getOrUndefined(info.ino)
    let current: { readonly watcher: RealmWatcher.TreeWatch; readonly ino: bigint | undefined } | undefined
    let lost = false

    const close = () => {
      if (current === undefined) return
      const { watcher } = current
      current = undefined
      options.onWatching(false)
      try {
        watcher.close()
      } catch {
        // already closed
      }
    }

    // The tree watch stays on node:fs (RealmWatcher): one non-recursive watch per directory,
    // which skips ignored directories and never follows symlinks.
    const open = Effect.gen(function*() {
      const info = yield* fsys.stat(options.realmDir)
      let handle: RealmWatcher.TreeWatch | undefined
      // An event about the realm directory itself (moved or deleted): the watch is re-opened.
      const giveUp = () => {
        if (handle === undefined || current?.watcher !== handle) return
        close()
        lost = true
        Queue.offerUnsafe(queue, { _tag: "Unknown" })
      }
      handle = yield* Effect.tryPromise(() =>
        RealmWatcher.watchTree({
          root: options.realmDir,
          // (The embedded store's own writes land in the ignored data directory.)
          isIgnored: options.isIgnored,
          onChange: (relative) => {
            options.onChange()
            Queue.offerUnsafe(queue, { _tag: "Changed", path: relative })
          },
          onLost: giveUp
        })
      )
      current = { watcher: handle, ino: inode(info) }
      options.onWatching(true)
    })

    /** Re-opens a lost watch; notices a realm directory that vanished or was replaced. */
    const supervise = Effect.gen(function*() {
      if (current !== undefined) {
        const info = yield* Effect.exit(fsys.stat(options.realmDir))
        if (info._tag === "Success" && inode(info.value) === current.ino) return
        yield* Effect.logWarning(`module-transpile-cache: lost the watch of ${options.realmDir}`)
        close()
        lost = true
        Queue.offerUnsafe(queue, { _tag: "Unknown" })
      }
      const opened = yield* Effect.exit(open)
      if (opened._tag === "Success" && lost) {
        lost = false
        yield* Effect.logInfo(`module-transpile-cache: watching ${options.realmDir} again`)
        Queue.offerUnsafe(queue, { _tag: "Unknown" })
      }
    })

    yield* Effect.addFinalizer(() => Effect.sync(close))
    const first = yield* Effect.exit(open)
    if (first._tag === "Failure") {
      lost = true
      yield* Effect.logWarning(`module-transpile-cache: cannot watch ${options.realmDir} yet; retrying`)
    }
    yield* supervise.pipe(Effect.repeat(Schedule.spaced(superviseInterval)), Effect.forkScoped)
    return Stream.fromQueue(queue)
    })

/** The timing of {@link batched}. */
interface BatchTiming {
  /** How long the events must be quiet before a trailing batch (default 25 ms). */
  readonly window?: Duration.Input | undefined
  /** The longest a trailing batch gathers under constant churn (default 500 ms). */
  readonly maxWait?: Duration.Input | undefined
}

/**
 * Batches events: from the first event after a quiet spell, events are gathered until they
 * are quiet for the window, or for at most `maxWait`, and form one batch, so that a
 * half-written state is neither the last one applied nor read at all when the writes come
 * closer together than the window. A batch holds each changed path once, and at most one
 * `Unknown`. The next batch is gathered only once the consumer has taken this one.
 */
export const batched = (timing: BatchTiming = {}) =>
(self: Stream.Stream<WatchEvent>): Stream.Stream<ReadonlyArray<WatchEvent>> =>
  Stream.unwrap(Effect.gen(function*() {
    const window = Duration.fromInputUnsafe(timing.window ?? batchWindow)
    const maxWait = Duration.toMillis(Duration.fromInputUnsafe(timing.maxWait ?? maxBatchWait))
    const queue = yield* Stream.toQueue(self, { capacity: "unbounded" })
    // Keeps only what a consumer needs: each changed path once, and one Unknown (under "").
    const batch = new Map<string, WatchEvent>()
    const add = (gathered: Iterable<WatchEvent>) => {
      for (const event of gathered) batch.set(event._tag === "Changed" ? event.path : "", event)
    }
    const take = () => {
      const taken = Array.from(batch.values())
      batch.clear()
      return [taken] as const
    }
    const pull = Effect.gen(function*() {
      // The first events after a quiet spell, then whatever follows them until a quiet window.
      add(yield* Queue.takeAll(queue))
      const started = yield* Clock.currentTimeMillis
      for (;;) {
        yield* Effect.sleep(window)
        const rest = yield* Queue.clear(queue)
        add(rest)
        if (rest.length === 0 || (yield* Clock.currentTimeMillis) - started >= maxWait) break
      }
      return take()
    })
    return Stream.fromPull(Effect.succeed(pull))
  }))

/** What a realm's watcher works on: its files, the cache it invalidates, and who else hears of changes. */
export interface WatchTarget {
  readonly cache: ModuleCache["Service"]
  readonly files: RealmFiles["Service"]
  /** The raw files cached in memory, dropped as their files change. */
  readonly raw?: RawFileCache.RawFiles | undefined
  /** The live event streams' feed, told of the files that are not modules (the cache announces modules). */
  readonly feed?: ChangeFeed["Service"] | undefined
  /** A file event came (before its batch is applied): what request paths resolve to may have changed. */
  readonly onChange?: (() => void) | undefined
  /** Whether the watch is reporting changes (false while a lost watch is re-opened). */
  readonly onWatching?: ((watching: boolean) => void) | undefined
}

/**
 * Watches the realm directory, in the current scope, and invalidates changed modules through
 * {@link ModuleCache.invalidate} (which also tells peers), and changed raw files in the
 * {@link RawFileCache}. A batch that fails is logged; the watcher goes on.
 */
export const watch = Effect.fnUntraced(function*(options: WatchTarget) {
  const { cache, files, raw } = options
  const fsys = yield* fileSystem

  /**
   * After a lost watch: re-reads every module this process has read, and invalidates only
   * those whose content hash changed (or that are gone). Never a realm-wide wipe.
   */
  const rescan = Effect.gen(function*() {
    let invalidated = 0
    yield* Effect.forEach(files.knownPaths(), (known) =>
      Effect.gen(function*() {
        const before = files.knownHash(known)
        const now = yield* Effect.exit(files.read(moduleKey(files.realmUrl, known)))
        if (now._tag === "Success" && now.value.hash === before) return
        invalidated++
        yield* invalidateChanged(known, now)
      }), { discard: true, concurrency: 8 })
    yield* Effect.logInfo(`module-transpile-cache: rescanned the realm; ${invalidated} module(s) changed`)
  })

  /**
   * Invalidates a changed module, naming the source it holds now (as `read` found it): its
   * hash, or `goneSourceHash` when the file is gone (then forgotten). A file that is there but
   * cannot be read (too large, say) is invalidated whatever it holds.
   */
  const invalidateChanged = (canonicalPath: string, read: Exit.Exit<ModuleSource, unknown>) =>
    Effect.gen(function*() {
      const key = moduleKey(files.realmUrl, canonicalPath)
      if (read._tag === "Success") return yield* cache.invalidate(key, read.value.hash)
      const gone = Exit.isFailure(yield* Effect.exit(fsys.stat(path.join(files.realmDir, ...canonicalPath.split("/")))))
      yield* cache.invalidate(key, gone ? goneSourceHash : undefined)
      if (gone) files.forget(canonicalPath)
    })

  const apply = (batch: ReadonlyArray<WatchEvent>) =>
    Effect.gen(function*() {
      if (batch.some((event) => event._tag === "Unknown")) {
        raw?.clear()
        yield* rescan
        // Pages and stylesheets are not rescanned: anything may have changed.
        options.feed?.everything(files.realmUrl, "missed")
        return
      }
      const keys = new Set<string>()
      const rawChanged = new Set<string>()
      for (const event of batch) {
        if (event._tag !== "Changed") continue
        const relative = toPosix(event.path)
        raw?.invalidate(relative)
        if (relative === "" || files.isIgnored(relative)) continue
        const executable = isExecutable(relative)
        if (!executable) rawChanged.add(relative)
        const named = executable ? [relative] : []
        for (const key of keysCovering(relative, named, files.knownPaths())) keys.add(key)
      }
      yield* Effect.forEach(
        keys,
        (key) => Effect.flatMap(Effect.exit(files.read(moduleKey(files.realmUrl, key))), (read) => invalidateChanged(key, read)),
        { discard: true, concurrency: 8 }
      )
      for (const relative of rawChanged) options.feed?.changed(files.realmUrl, relative, undefined)
    })

  const changes = yield* events({
    realmDir: files.realmDir,
    isIgnored: files.isIgnored,
    onChange: () => {
      files.changed()
      options.onChange?.()
    },
    onWatching: (watching) => {
      files.watched(watching)
      raw?.watched(watching)
      options.onWatching?.(watching)
    }
  })
  yield* changes.pipe(
    batched(),
    Stream.runForEach((batch) =>
      apply(batch).pipe(
        // Counted as the watcher's in the invalidations metric.
        Effect.provideService(InvalidationSource, "watcher"),
        Effect.catchCause((cause) => Effect.logWarning("module-transpile-cache: watcher batch failed", cause))
      )
    ),
    Effect.forkScoped
  )
})

