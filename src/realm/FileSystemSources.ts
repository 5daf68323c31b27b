/**
 * The file-system implementation of {@link ModuleSources}: the modules of a realm are the
 * files under one directory. The rules themselves (pure) are in {@link PathRules}; this
 * module applies them to the file system.
 *
 * Request paths become module keys through {@link resolve}:
 *
 * - the path is percent-decoded once; malformed encoding, a NUL byte, a backslash and paths
 *   longer than {@link maxPathLength} characters are rejected;
 * - `.` and `..` segments (also percent-encoded), dotfiles and dot directories (which
 *   include the data directory `.transpile-cache`), and any configured excluded directory
 *   are rejected;
 * - a path ending in `/` names that directory's `index.html`;
 * - a file that exists is taken as it is; otherwise, when its extension is not an
 *   executable one, the {@link executableExtensions} are appended in their fixed order
 *   (`.gts`, `.gjs`, `.ts`, `.mts`, `.js`, `.mjs`) and the first file that exists wins;
 * - the file's real path (symlinks resolved) must lie inside the realm's real path and
 *   pass the same segment checks; the **canonical path** is that real path relative to the
 *   realm, with `/` separators and no leading slash. Two processes serving the same
 *   directory therefore agree on every key.
 *
 * Every rejection is an {@link InvalidPathError}; a missing file is a
 * {@link ModuleNotFoundError}; a realm directory that is gone, or any other I/O failure, is
 * a {@link SourceReadError}.
 *
 * The realm directory's real path and the walk go through Effect's `FileSystem` (the one in
 * the context, else Node's). The per-file steps (the candidates' `stat` and `realpath`, the
 * open-then-verify read of a file's bytes, see `openVerified`) are synchronous `node:fs`
 * calls, each of which cannot block: none of them opens anything but the final `open`, which
 * is `O_NONBLOCK` and refuses to read what is not a regular file. A threadpool round trip and
 * a promise per step cost the event loop more than the step itself; files over 1 MiB are
 * still read on the threadpool. The realm is taken to be on a local file system.
 *
 * @since 0.1.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import {
  closeSync,
  constants as fsConstants,
  existsSync,
  fstatSync,
  openSync,
  readFile,
  readlinkSync,
  readSync,
  realpathSync,
  statSync
} from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { defaultMaxSourceBytes, hashSource, type ModuleKey, type ModuleSource } from "../domain/Domain.ts"
import { type InvalidPathError, ModuleNotFoundError, SourceReadError, SourceTooLargeError } from "../domain/Errors.ts"
import { ModuleSources } from "../domain/ModuleSources.ts"
import { errorCode, messageOf } from "../internal/errors.ts"
import {
  candidatesOf,
  canonicalOf,
  encodePath,
  invalid,
  isExecutable,
  isIgnoredIn,
  isInside,
  toPosix,
  validatePath
} from "./PathRules.ts"

export { dataDirName, executableExtensions, isExecutable, maxPathLength, validatePath } from "./PathRules.ts"

// -----------------------------------------------------------------------------
// File system
// -----------------------------------------------------------------------------

/** The `FileSystem` the realm's files are read through: the one in the context, or Node's when none is provided. */
export const fileSystem: Effect.Effect<FileSystem.FileSystem> = Effect.flatMap(
  Effect.serviceOption(FileSystem.FileSystem),
  Option.match({
    onSome: Effect.succeed,
    onNone: () => Effect.provide(Effect.service(FileSystem.FileSystem), NodeFileSystem.layer)
  })
)

/** Runs a `FileSystem` call, failing with Node's own error (its `code` and `syscall`), as the checks below read it. */
const nodeCall = <A>(call: Effect.Effect<A, unknown>): Effect.Effect<A, unknown> =>
  Effect.mapError(call, (error) =>
    typeof error === "object" && error !== null && "cause" in error && error.cause !== undefined ? error.cause : error
  )

/** A system error by its code and call, without the absolute path Node puts in its message. */
const describeError = (cause: unknown): string => {
  const code = errorCode(cause)
  if (code === undefined) return messageOf(cause).replace(/'\/[^']*'/g, "'<path>'")
  const syscall = typeof cause === "object" && cause !== null && "syscall" in cause && typeof cause.syscall === "string"
    ? ` (${cause.syscall})`
    : ""
  return `${code}${syscall}`
}

// -----------------------------------------------------------------------------
// Resolution
// -----------------------------------------------------------------------------

/** Every error resolving a request path can end in. */
export type ResolveError = InvalidPathError | ModuleNotFoundError | SourceReadError

/** A request path resolved to a file of the realm. */
export interface ResolvedPath {
  /** The canonical module path: real path relative to the realm, `/`-separated, no leading slash. */
  readonly path: string
  /** The absolute real path of the file. */
  readonly file: string
  /** Whether the file is an executable module (served transpiled) or a raw file. */
  readonly executable: boolean
}

/** Options of {@link resolve} beyond the realm and the path. */
export interface ResolveOptions {
  /** Directories (absolute, or relative to the realm) whose files are never served. */
  readonly excluded?: ReadonlyArray<string> | undefined
}

/**
 * The realm's real path, read again on every resolution and read (the realm directory may be
 * a symlink that is repointed, or be removed): through the context's `FileSystem`, then a
 * synchronous `stat` that it is a directory (a `stat` opens nothing, so it cannot block).
 */
const realmRealPath = (fsys: FileSystem.FileSystem, realmDir: string): Effect.Effect<string, SourceReadError> =>
  fsys.realPath(realmDir).pipe(
    nodeCall,
    Effect.flatMap((real) =>
      Effect.try({
        try: () => {
          if (!statSync(real).isDirectory()) throw new Error("not a directory")
          return real
        },
        catch: (cause) => cause
      })
    ),
    Effect.mapError((cause) =>
      new SourceReadError({
        path: realmDir,
        message: errorCode(cause) === "ENOENT"
          ? `realm directory ${realmDir} is not available`
          : `realm directory ${realmDir}: ${messageOf(cause)}`
      })
    )
  )

/**
 * Absolute real paths of the excluded directories (those that exist; others by their plain
 * path). `realpath` only looks names up (it opens nothing), so the synchronous call cannot
 * block on what a name refers to.
 */
const excludedRealPaths = (realmDir: string, excluded: ReadonlyArray<string>): ReadonlyArray<string> =>
  excluded.map((dir) => {
    const absolute = path.resolve(realmDir, dir)
    try {
      return realpathSync.native(absolute)
    } catch {
      return absolute
    }
  })

type Probe =
  | { readonly _tag: "File"; readonly real: string }
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Failed"; readonly cause: unknown }

/**
 * Whether a regular file is at a path, and its real path. Synchronous: `stat` and `realpath`
 * only look names up and read inodes, they open nothing, so a FIFO or device under the name
 * cannot block them (the realm is taken to be on a local file system). A missing name costs
 * no exception (`throwIfNoEntry: false`), the common case of the extension candidates.
 */
const probe = (file: string): Probe => {
  try {
    const info = statSync(file, { throwIfNoEntry: false })
    if (info === undefined || !info.isFile()) return { _tag: "Missing" }
    return { _tag: "File", real: realpathSync.native(file) }
  } catch (cause) {
    const code = errorCode(cause)
    return code === "ENOENT" || code === "ENOTDIR" ? { _tag: "Missing" } : { _tag: "Failed", cause }
  }
}

const resolveIn = (
  fsys: FileSystem.FileSystem,
  realmDir: string,
  urlPath: string,
  options: ResolveOptions
): Effect.Effect<ResolvedPath, ResolveError> =>
  Effect.gen(function*() {
    const relative = yield* validatePath(urlPath)
    const realm = yield* realmRealPath(fsys, realmDir)
    const excluded = excludedRealPaths(realm, options.excluded ?? [])
    const lexical = path.join(realm, ...relative.split("/"))
    if (!isInside(lexical, realm) || lexical === realm) return yield* invalid(urlPath, "path traversal")
    for (const dir of excluded) {
      if (isInside(lexical, dir)) return yield* invalid(urlPath, "the data directory is not served")
    }
    for (const candidate of candidatesOf(relative)) {
      const found = probe(path.join(realm, ...candidate.split("/")))
      if (found._tag === "Missing") continue
      if (found._tag === "Failed") {
        if (errorCode(found.cause) === "ENAMETOOLONG") return yield* invalid(urlPath, "name too long")
        if (errorCode(found.cause) === "ELOOP") return yield* invalid(urlPath, "a symlink loop")
        return yield* new SourceReadError({ path: candidate, message: describeError(found.cause) })
      }
      const canonical = canonicalOf(realm, excluded, found.real)
      if ("reason" in canonical) return yield* invalid(urlPath, canonical.reason)
      return { path: canonical.path, file: found.real, executable: isExecutable(canonical.path) }
    }
    // The realm itself may have vanished between the checks: say so rather than "not found".
    yield* realmRealPath(fsys, realmDir)
    return yield* new ModuleNotFoundError({ path: relative })
  })

/**
 * Resolves a request path (the URL path below the realm URL, percent-encoded as sent) to a
 * file of the realm and its canonical module path. See the module documentation for the
 * rules. The data directory `.transpile-cache` is excluded as a dot directory; pass other
 * excluded directories in `options`.
 */
export const resolve = (
  realmDir: string,
  urlPath: string,
  options: ResolveOptions = {}
): Effect.Effect<ResolvedPath, ResolveError> =>
  Effect.flatMap(fileSystem, (fsys) => resolveIn(fsys, realmDir, urlPath, options))

/**
 * The resolution of the request being answered, if any. A server that resolved a request
 * path provides it around `ModuleCache.get`, so that a miss's {@link ModuleSources} read of
 * the same canonical path opens the file it found instead of resolving the path again.
 * Only a resolution of the same {@link RealmFiles} is reused; the read still verifies what
 * it opened, and falls back to a full read on any failure.
 */
export const CurrentResolution = Context.Reference<ResolvedPath | undefined>(
  "module-transpile-cache/CurrentResolution",
  { defaultValue: () => undefined }
)

// -----------------------------------------------------------------------------
// Reads
// -----------------------------------------------------------------------------

/** How realm files are opened: never through a final symlink, never blocking (FIFOs, devices). */
const openFlags = fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0)

const procFd = existsSync("/proc/self/fd")

/**
 * Files up to this size are read synchronously on the event loop; larger ones (up to the size
 * limit) on libuv's threadpool, so that no read holds the event loop for long.
 */
const syncReadBytes = 1024 * 1024

/**
 * The real path of what a descriptor has open: the kernel's `/proc/self/fd/N` on Linux;
 * elsewhere the path's real path, which must read the same before and after a check of its
 * device and inode by the caller (undefined when it changed in between). Synchronous: the
 * `readlink` asks the kernel for the descriptor's path, and `realpath` only looks names up;
 * neither opens anything.
 */
const openedPath = (fd: number, file: string): string | undefined => {
  if (procFd) return readlinkSync(`/proc/self/fd/${fd}`)
  const first = realpathSync.native(file)
  const second = realpathSync.native(file)
  return first === second ? first : undefined
}

/** What the open-then-verify read found; `Large` is a verified file whose descriptor is still open. */
type OpenResult =
  | { readonly _tag: "Read"; readonly buffer: Buffer }
  | { readonly _tag: "Large"; readonly fd: number }
  | { readonly _tag: "TooLarge"; readonly size: number }
  | { readonly _tag: "NotRegular" }
  | { readonly _tag: "Moved" }

/**
 * Reads a verified regular file of `size` bytes (by `fstat`, at most the limit) with one
 * `read` into a buffer of `size + 1` bytes: a read that fills it means the file grew since,
 * and reading goes on into a larger buffer, up to one byte past the limit (too large). A short
 * read reads on until end of file. Synchronous: a regular file on a local disk does not block
 * (at most a disk read of {@link syncReadBytes}).
 */
const readSmall = (fd: number, size: number, limit: number): OpenResult => {
  let buffer = Buffer.allocUnsafeSlow(size + 1)
  let total = 0
  for (;;) {
    if (total === buffer.length) {
      if (total > limit) return { _tag: "TooLarge", size: Math.max(total, fstatSync(fd).size) }
      const grown = Buffer.allocUnsafeSlow(Math.min(limit + 1, Math.max(2 * total, fstatSync(fd).size + 1)))
      buffer.copy(grown, 0, 0, total)
      buffer = grown
    }
    const read = readSync(fd, buffer, total, buffer.length - total, total)
    total += read
    if (read === 0 || total === size) return { _tag: "Read", buffer: buffer.subarray(0, total) }
  }
}

/** Reads a verified file larger than {@link syncReadBytes} on the threadpool, then closes its descriptor. */
const readLarge = (fd: number, limit: number): Effect.Effect<OpenResult, unknown> =>
  Effect.callback<OpenResult, unknown>((resume) => {
    readFile(fd, (error, buffer) => {
      try {
        closeSync(fd)
      } catch (closeError) {
        error ??= closeError as NodeJS.ErrnoException
      }
      if (error !== null) return resume(Effect.fail(error))
      resume(Effect.succeed(
        buffer.byteLength > limit ? { _tag: "TooLarge", size: buffer.byteLength } : { _tag: "Read", buffer }
      ))
    })
  })

/**
 * Open, then verify: one descriptor, opened with `O_NOFOLLOW | O_NONBLOCK` (a symlink in the
 * last component fails, a FIFO or device never blocks the open), then `fstat`ed (a regular
 * file only), then checked by the descriptor's own real path (on Linux the kernel's
 * `/proc/self/fd/N`, which no later swap can change; elsewhere the path's real path, read
 * twice around a `stat` that must match the descriptor's device and inode): it must be the
 * canonical path `relative` inside the realm `realmReal`. Only then read, from that
 * descriptor. A directory of the path swapped for a symlink to the outside between the
 * checks and the open is caught, whichever way the swaps go.
 *
 * Synchronous up to the read of a file over {@link syncReadBytes} (the realm is taken to be
 * on a local file system): the open cannot block (`O_NONBLOCK`: a FIFO or device opens at
 * once, and nothing is read before `fstat` says it is a regular file); `fstat`, the
 * `readlink` of `/proc/self/fd/N` and `stat` read inodes and names, they open nothing; the
 * read is of a regular file (see {@link readSmall}); `close` of a descriptor only read from
 * flushes nothing. This stays on `node:fs`: Effect's `FileSystem.open` has no `O_NONBLOCK`
 * (a FIFO would block the open) and its `File` exposes no descriptor path to verify.
 */
const openVerified = (
  realmReal: string,
  excluded: ReadonlyArray<string>,
  file: string,
  relative: string,
  limit: number
): OpenResult => {
  const fd = openSync(file, openFlags)
  let large = false
  try {
    const opened = fstatSync(fd)
    if (!opened.isFile()) return { _tag: "NotRegular" }
    const real = openedPath(fd, file)
    if (real === undefined) return { _tag: "Moved" }
    const now = statSync(real)
    if (now.dev !== opened.dev || now.ino !== opened.ino) return { _tag: "Moved" }
    const canonical = canonicalOf(realmReal, excluded, real)
    if ("reason" in canonical || canonical.path !== relative) return { _tag: "Moved" }
    if (opened.size > limit) return { _tag: "TooLarge", size: opened.size }
    large = opened.size > syncReadBytes
    return large ? { _tag: "Large", fd } : readSmall(fd, opened.size, limit)
  } finally {
    if (!large) closeSync(fd)
  }
}

// -----------------------------------------------------------------------------
// Service
// -----------------------------------------------------------------------------

/** The options of {@link make}. */
export interface FileSystemSourcesOptions {
  /** The realm directory. */
  readonly realmDir: string
  /** The realm URL; defaults to the `file://` URL of the realm's real path, with a trailing slash. */
  readonly realmUrl?: string | undefined
  /** The largest source or raw file served, in bytes (default `Domain.defaultMaxSourceBytes`). */
  readonly maxSourceBytes?: number | undefined
  /** Directories never served (the data directory when it is not `.transpile-cache`). */
  readonly excluded?: ReadonlyArray<string> | undefined
}

/** A file of the realm as read, before decoding. */
export interface RawFile {
  readonly path: string
  readonly bytes: Uint8Array
}

/** The errors of reading a file of the realm. */
export type ReadError = ModuleNotFoundError | InvalidPathError | SourceReadError | SourceTooLargeError

/**
 * The realm's files, for the server, the watcher and `warm`: path resolution, raw reads,
 * a walk of the executable modules, and the module sources themselves.
 */
export class RealmFiles extends Context.Service<RealmFiles, {
  /** The realm directory as given. */
  readonly realmDir: string
  /** The realm URL: the `realmUrl` of every key this realm serves. */
  readonly realmUrl: string
  readonly maxSourceBytes: number
  /** {@link resolve} in this realm. */
  readonly resolve: (urlPath: string) => Effect.Effect<ResolvedPath, ResolveError>
  /**
   * The module source of a key (the {@link ModuleSources} implementation). The key's path
   * must be canonical (as {@link resolve} returns it): a symlink's path is an InvalidPathError.
   */
  readonly read: (key: ModuleKey) => Effect.Effect<ModuleSource, ReadError>
  /**
   * The bytes of a file by its canonical path (see {@link resolve}), under the same size limit.
   * Like `read`, it opens the file of the request's {@link CurrentResolution} when there is one.
   */
  readonly readRaw: (canonicalPath: string) => Effect.Effect<RawFile, ReadError>
  /** The canonical paths of every executable module, sorted (dot entries, excluded dirs and symlinks skipped). */
  readonly walk: Effect.Effect<ReadonlyArray<string>, SourceReadError>
  /**
   * Whether a path relative to the realm (as a file watcher reports it) is outside what
   * is served: a dot segment or an excluded directory.
   */
  readonly isIgnored: (relativePath: string) => boolean
  /** The canonical paths read so far: the keys that may sit in a cache. */
  readonly knownPaths: () => ReadonlyArray<string>
  /** The content hash of a known path as last read. */
  readonly knownHash: (canonicalPath: string) => string | undefined
  /** Forgets a path of `knownPaths` (its file is gone and its key invalidated). */
  readonly forget: (canonicalPath: string) => void
  /**
   * Successful resolutions are remembered, so that a warm request does no file-system I/O:
   * until `changed` is called while a watcher reports changes (`watched(true)`), and for
   * {@link unwatchedResolutionMillis} otherwise.
   */
  readonly changed: () => void
  /** Tells whether a file watcher is reporting changes (see `changed`). */
  readonly watched: (watching: boolean) => void
}>()("module-transpile-cache/RealmFiles") {}

/** How long a resolution is reused when no watcher reports changes. */
export const unwatchedResolutionMillis = 1000
const maxRememberedResolutions = 10_000

/** Makes the {@link RealmFiles} of a realm directory; fails when the directory does not exist. */
export const make = Effect.fnUntraced(function*(options: FileSystemSourcesOptions) {
  const fsys = yield* fileSystem
  const realmDir = path.resolve(options.realmDir)
  const realm = yield* realmRealPath(fsys, realmDir)
  const realmUrl = options.realmUrl ?? `${pathToFileURL(realm).href}/`
  const maxSourceBytes = options.maxSourceBytes ?? defaultMaxSourceBytes
  const excludedInput = options.excluded ?? []
  const excluded = excludedRealPaths(realm, excludedInput)
  const known = new Map<string, string>()
  const resolutions = new Map<string, { readonly resolved: ResolvedPath; readonly at: number }>()
  /** The resolutions this realm made: only those are reused by a read (another realm's never). */
  const own = new WeakSet<ResolvedPath>()
  let watching = false
  let epoch = 0

  /** The typed error of an open-then-verify read that threw (a system error). */
  const failureOf = (relative: string, cause: unknown): ReadError => {
    const code = errorCode(cause)
    if (code === "ENOENT" || code === "ENOTDIR") return new ModuleNotFoundError({ path: relative })
    if (code === "ELOOP") return invalid(relative, "a symlink in the last component")
    return new SourceReadError({ path: relative, message: describeError(cause) })
  }

  /** The bytes of an open-then-verify read, or its typed error. */
  const outcomeOf = (relative: string, opened: OpenResult): Effect.Effect<Uint8Array, ReadError> => {
    switch (opened._tag) {
      case "TooLarge":
        return Effect.fail(new SourceTooLargeError({ path: relative, size: opened.size, limit: maxSourceBytes }))
      case "NotRegular":
        return Effect.fail(invalid(relative, "not a regular file"))
      case "Moved":
        return Effect.fail(invalid(relative, "the file changed while it was opened (it resolves outside the realm)"))
      case "Large":
        return Effect.flatMap(
          Effect.mapError(readLarge(opened.fd, maxSourceBytes), (cause) => failureOf(relative, cause)),
          (read) => outcomeOf(relative, read)
        )
      case "Read":
        return Effect.succeed(opened.buffer)
    }
  }

  /** Reads the file at `file` (real path of `relative` in the realm `current`) through {@link openVerified}. */
  const readVerified = (current: string, file: string, relative: string): Effect.Effect<Uint8Array, ReadError> =>
    Effect.suspend(() => {
      let opened: OpenResult
      try {
        opened = openVerified(current, excluded, file, relative, maxSourceBytes)
      } catch (cause) {
        return Effect.fail(failureOf(relative, cause))
      }
      return outcomeOf(relative, opened)
    })

  /**
   * The bytes of `relative` when a read by a known real path failed: the file is probed (as
   * resolving its path would) to say why, then read. A too-large file is final: that error
   * comes only after the file was verified.
   */
  const orProbed = (current: string, file: string, relative: string) =>
    Effect.catch((error: ReadError): Effect.Effect<Uint8Array, ReadError> => {
      if (error._tag === "SourceTooLargeError") return Effect.fail(error)
      const found = probe(file)
      if (found._tag === "Missing") return Effect.fail(new ModuleNotFoundError({ path: relative }))
      if (found._tag === "Failed") {
        return Effect.fail(new SourceReadError({ path: relative, message: describeError(found.cause) }))
      }
      const canonical = canonicalOf(current, excluded, found.real)
      if ("reason" in canonical) return Effect.fail(invalid(relative, canonical.reason))
      // Keys are canonical: a symlink's key would never be invalidated by edits of its target.
      if (canonical.path !== relative) {
        return Effect.fail(invalid(relative, `not a canonical path (the file is ${canonical.path})`))
      }
      return readVerified(current, file, relative)
    })

  /**
   * Reads a file by its canonical path, under the size limit. The open-then-verify read
   * checks all that resolving the path would (a regular file, at its canonical path in the
   * realm, not excluded), so it comes first; only when it fails is the path probed, which
   * says why as a resolution would.
   */
  const readChecked = (modulePath: string): Effect.Effect<RawFile & { readonly file: string }, ReadError> =>
    Effect.gen(function*() {
      const relative = yield* validatePath(encodePath(modulePath))
      const current = yield* realmRealPath(fsys, realmDir)
      const file = path.join(current, ...relative.split("/"))
      const bytes = yield* readVerified(current, file, relative).pipe(orProbed(current, file, relative))
      return { path: relative, bytes, file }
    })

  /**
   * Reads a file the current request already resolved (see {@link CurrentResolution}),
   * without resolving it again: the realm's real path is the resolved file's own prefix.
   * Any failure but a too-large file falls back to {@link readChecked}, which then says what is wrong.
   */
  const readResolved = (resolved: ResolvedPath): Effect.Effect<RawFile & { readonly file: string }, ReadError> => {
    const current = resolved.file.slice(0, resolved.file.length - resolved.path.length - 1)
    if (path.join(current, ...resolved.path.split("/")) !== resolved.file) return readChecked(resolved.path)
    return readVerified(current, resolved.file, resolved.path).pipe(
      Effect.map((bytes) => ({ path: resolved.path, bytes, file: resolved.file })),
      Effect.catch((error) => error._tag === "SourceTooLargeError" ? Effect.fail(error) : readChecked(resolved.path))
    )
  }

  /** Reads a file by its canonical path: the current request's resolution when it names that path, else a full read. */
  const readFile = (modulePath: string): Effect.Effect<RawFile & { readonly file: string }, ReadError> =>
    Effect.flatMap(Effect.service(CurrentResolution), (resolved) =>
      resolved !== undefined && resolved.path === modulePath && own.has(resolved)
        ? readResolved(resolved)
        : readChecked(modulePath))

  const read = (key: ModuleKey): Effect.Effect<ModuleSource, ReadError> =>
    Effect.gen(function*() {
      if (key.realmUrl !== realmUrl) return yield* new ModuleNotFoundError({ path: key.path })
      const started = epoch
      const file = yield* readFile(key.path)
      // The read checked what resolving its canonical request path checks (a regular file of
      // the realm, at its real path, not excluded): remember that resolution, unless a change
      // overtook the read. A module preloaded at start then costs no file-system call at all.
      if (epoch === started && isExecutable(file.path)) {
        remember(`/${encodePath(file.path)}`, { path: file.path, file: file.file, executable: true })
      }
      const content = Buffer.from(file.bytes.buffer, file.bytes.byteOffset, file.bytes.byteLength).toString("utf8")
      const hash = hashSource(content)
      known.set(file.path, hash)
      return { key, content, hash }
    })

  const walk: Effect.Effect<ReadonlyArray<string>, SourceReadError> = Effect.gen(function*() {
    const current = yield* realmRealPath(fsys, realmDir)
    const found: Array<string> = []
    const visit = (dir: string): Effect.Effect<void, unknown> =>
      Effect.flatMap(nodeCall(fsys.readDirectoryEntries(dir)), (entries) =>
        Effect.forEach(entries, (entry) => {
          if (entry.name.startsWith(".")) return Effect.void
          const absolute = path.join(dir, entry.name)
          if (excluded.some((ex) => isInside(absolute, ex))) return Effect.void
          if (entry.type === "Directory") return visit(absolute)
          if (entry.type === "File" && isExecutable(entry.name)) found.push(toPosix(path.relative(current, absolute)))
          return Effect.void
        }, { discard: true }))
    yield* visit(current).pipe(
      Effect.mapError((cause) => new SourceReadError({ path: realmDir, message: messageOf(cause) }))
    )
    return found.sort()
  })

  const remember = (urlPath: string, resolved: ResolvedPath) => {
    own.add(resolved)
    if (resolutions.size >= maxRememberedResolutions) resolutions.clear()
    resolutions.set(urlPath, { resolved, at: Date.now() })
  }

  return RealmFiles.of({
    realmDir,
    realmUrl,
    maxSourceBytes,
    resolve: (urlPath) =>
      Effect.suspend(() => {
        const remembered = resolutions.get(urlPath)
        if (remembered !== undefined && (watching || Date.now() - remembered.at < unwatchedResolutionMillis)) {
          return Effect.succeed(remembered.resolved)
        }
        // A resolution that a change overtook is not remembered.
        const started = epoch
        return Effect.tap(resolveIn(fsys, realmDir, urlPath, { excluded: excludedInput }), (resolved) =>
          Effect.sync(() => {
            own.add(resolved)
            if (epoch === started) remember(urlPath, resolved)
          }))
      }),
    changed: () => {
      epoch++
      resolutions.clear()
    },
    watched: (value) => {
      watching = value
      epoch++
      resolutions.clear()
    },
    read,
    readRaw: (modulePath) => Effect.map(readFile(modulePath), ({ bytes, path }): RawFile => ({ path, bytes })),
    walk,
    isIgnored: (relativePath) => isIgnoredIn(realm, excluded, relativePath),
    knownPaths: () => Array.from(known.keys()),
    knownHash: (canonicalPath) => known.get(canonicalPath),
    forget: (canonicalPath) => {
      known.delete(canonicalPath)
    }
  })
})

/** {@link RealmFiles} and the {@link ModuleSources} it implements, for one realm directory. */
export const layer = (
  options: FileSystemSourcesOptions
): Layer.Layer<RealmFiles | ModuleSources, SourceReadError> =>
  Layer.effectContext(Effect.gen(function*() {
    const files = yield* make(options)
    return Context.make(RealmFiles, files).pipe(Context.add(ModuleSources, ModuleSources.of({ read: files.read })))
  }))
