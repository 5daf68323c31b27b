/**
 * The file-system implementation of {@link ModuleSources}: the modules of a realm are the
 * files under one directory.
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
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"
import { constants as fsConstants, existsSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { defaultMaxSourceBytes, hashSource, type ModuleKey, type ModuleSource } from "../domain/Domain.ts"
import { InvalidPathError, ModuleNotFoundError, SourceReadError, SourceTooLargeError } from "../domain/Errors.ts"
import { ModuleSources } from "../domain/ModuleSources.ts"
import { errorCode } from "../internal/errors.ts"

// -----------------------------------------------------------------------------
// Constants
// -----------------------------------------------------------------------------

/**
 * The extensions of executable modules, in the order an extensionless request tries them.
 * The order is part of the contract: `foo` is `foo.gts` when both `foo.gts` and `foo.ts`
 * exist.
 */
export const executableExtensions: ReadonlyArray<string> = [".gts", ".gjs", ".ts", ".mts", ".js", ".mjs"]

/** The name of the default data directory inside a realm (the embedded store lives there). */
export const dataDirName = ".transpile-cache"

/** The longest request path accepted, in characters, before decoding. */
export const maxPathLength = 1024

/** The default source size limit (8 MiB), the same as the Babel transpiler's. */
export { defaultMaxSourceBytes }

/** Whether a path names an executable module (by its extension), which is served transpiled. */
export const isExecutable = (modulePath: string): boolean =>
  executableExtensions.includes(path.posix.extname(modulePath).toLowerCase())

// -----------------------------------------------------------------------------
// Path checks
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

const messageOf = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : "unknown error"

/** A system error by its code and call, without the absolute path Node puts in its message. */
const describeError = (cause: unknown): string => {
  const code = errorCode(cause)
  if (code === undefined) return messageOf(cause).replace(/'\/[^']*'/g, "'<path>'")
  const syscall = typeof cause === "object" && cause !== null && "syscall" in cause && typeof cause.syscall === "string"
    ? ` (${cause.syscall})`
    : ""
  return `${code}${syscall}`
}

/** How realm files are opened: never through a final symlink, never blocking (FIFOs, devices). */
const openFlags = fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0)

const procFd = existsSync("/proc/self/fd")

/**
 * The real path of what a descriptor has open: the kernel's `/proc/self/fd/N` on Linux;
 * elsewhere the path's real path, which must read the same before and after a check of its
 * device and inode by the caller (undefined when it changed in between).
 */
const openedPath = async (handle: fs.FileHandle, file: string): Promise<string | undefined> => {
  if (procFd) return fs.readlink(`/proc/self/fd/${handle.fd}`)
  const first = await fs.realpath(file)
  const second = await fs.realpath(file)
  return first === second ? first : undefined
}

/** What {@link make}'s open-then-verify read found. */
type OpenResult =
  | { readonly _tag: "Read"; readonly buffer: Buffer }
  | { readonly _tag: "TooLarge"; readonly size: number }
  | { readonly _tag: "NotRegular" }
  | { readonly _tag: "Moved" }

const invalid = (requested: string, reason: string) => new InvalidPathError({ path: requested, reason })

/** Why a segment is rejected, or undefined when it is fine. */
const segmentProblem = (segment: string): string | undefined => {
  if (segment === "." || segment === "..") return "path traversal"
  if (segment.startsWith(".")) return "dotfiles and dot directories are not served"
  return undefined
}

/**
 * The lexical checks of a request path (no I/O): decodes it and returns its relative
 * path, `/`-separated without a leading slash. A path ending in `/` (or empty) names
 * `index.html` in that directory.
 */
export const validatePath = (urlPath: string): Effect.Effect<string, InvalidPathError> =>
  Effect.suspend(() => {
    const shown = urlPath.length > 200 ? `${urlPath.slice(0, 200)}...` : urlPath
    if (urlPath.length > maxPathLength) {
      return Effect.fail(invalid(shown, `path longer than ${maxPathLength} characters`))
    }
    let decoded: string
    try {
      decoded = decodeURIComponent(urlPath)
    } catch {
      return Effect.fail(invalid(shown, "malformed percent-encoding"))
    }
    if (decoded.includes("\0")) return Effect.fail(invalid(shown, "NUL byte"))
    if (decoded.includes("\\")) return Effect.fail(invalid(shown, "backslash"))
    const segments = decoded.split("/").filter((segment) => segment !== "")
    for (const segment of segments) {
      const problem = segmentProblem(segment)
      if (problem !== undefined) return Effect.fail(invalid(shown, problem))
    }
    if (decoded === "" || decoded.endsWith("/")) segments.push("index.html")
    return Effect.succeed(segments.join("/"))
  })

const isInside = (child: string, parent: string): boolean =>
  child === parent || child.startsWith(parent.endsWith(path.sep) ? parent : parent + path.sep)

const toPosix = (relative: string): string => relative.split(path.sep).join("/")

/** Options of {@link resolve} beyond the realm and the path. */
export interface ResolveOptions {
  /** Directories (absolute, or relative to the realm) whose files are never served. */
  readonly excluded?: ReadonlyArray<string> | undefined
}

const realmRealPath = (realmDir: string): Effect.Effect<string, SourceReadError> =>
  Effect.tryPromise({
    try: async () => {
      const real = await fs.realpath(realmDir)
      const stat = await fs.stat(real)
      if (!stat.isDirectory()) throw new Error("not a directory")
      return real
    },
    catch: (cause) =>
      new SourceReadError({
        path: realmDir,
        message: errorCode(cause) === "ENOENT"
          ? `realm directory ${realmDir} is not available`
          : `realm directory ${realmDir}: ${messageOf(cause)}`
      })
  })

/** Absolute real paths of the excluded directories (those that exist; others by their plain path). */
const excludedRealPaths = (realmDir: string, excluded: ReadonlyArray<string>): Promise<ReadonlyArray<string>> =>
  Promise.all(excluded.map(async (dir) => {
    const absolute = path.resolve(realmDir, dir)
    try {
      return await fs.realpath(absolute)
    } catch {
      return absolute
    }
  }))

type Probe =
  | { readonly _tag: "File"; readonly real: string }
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Failed"; readonly cause: unknown }

const probe = async (file: string): Promise<Probe> => {
  try {
    const stat = await fs.stat(file)
    if (!stat.isFile()) return { _tag: "Missing" }
    return { _tag: "File", real: await fs.realpath(file) }
  } catch (cause) {
    const code = errorCode(cause)
    if (code === "ENOENT" || code === "ENOTDIR") return { _tag: "Missing" }
    return { _tag: "Failed", cause }
  }
}

/** Checks a file's real path against the realm; returns its canonical path or a reason. */
const canonicalOf = (
  realm: string,
  excluded: ReadonlyArray<string>,
  real: string
): { readonly path: string } | { readonly reason: string } => {
  if (!isInside(real, realm) || real === realm) return { reason: "resolves outside the realm" }
  for (const dir of excluded) if (isInside(real, dir)) return { reason: "the data directory is not served" }
  const relative = toPosix(path.relative(realm, real))
  for (const segment of relative.split("/")) {
    const problem = segmentProblem(segment)
    if (problem !== undefined) return { reason: `resolves to a hidden path (${problem})` }
  }
  return { path: relative }
}

const resolveIn = (
  realmDir: string,
  urlPath: string,
  options: ResolveOptions
): Effect.Effect<ResolvedPath, ResolveError> =>
  Effect.gen(function*() {
    const relative = yield* validatePath(urlPath)
    const realm = yield* realmRealPath(realmDir)
    const excluded = yield* Effect.promise(() => excludedRealPaths(realm, options.excluded ?? []))
    const lexical = path.join(realm, ...relative.split("/"))
    if (!isInside(lexical, realm) || lexical === realm) return yield* invalid(urlPath, "path traversal")
    for (const dir of excluded) {
      if (isInside(lexical, dir)) return yield* invalid(urlPath, "the data directory is not served")
    }
    const candidates = isExecutable(relative) ? [relative] : [relative, ...executableExtensions.map((e) => relative + e)]
    for (const candidate of candidates) {
      const found = yield* Effect.promise(() => probe(path.join(realm, ...candidate.split("/"))))
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
    yield* realmRealPath(realmDir)
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
): Effect.Effect<ResolvedPath, ResolveError> => resolveIn(realmDir, urlPath, options)

// -----------------------------------------------------------------------------
// Service
// -----------------------------------------------------------------------------

/** The options of {@link make}. */
export interface FileSystemSourcesOptions {
  /** The realm directory. */
  readonly realmDir: string
  /** The realm URL; defaults to the `file://` URL of the realm's real path, with a trailing slash. */
  readonly realmUrl?: string | undefined
  /** The largest source or raw file served, in bytes (default {@link defaultMaxSourceBytes}). */
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
  /** The bytes of a file by its canonical path (see {@link resolve}), under the same size limit. */
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
  /** Forgets a path of {@link knownPaths} (its file is gone and its key invalidated). */
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
  const realmDir = path.resolve(options.realmDir)
  const realm = yield* realmRealPath(realmDir)
  const realmUrl = options.realmUrl ?? `${pathToFileURL(realm).href}/`
  const maxSourceBytes = options.maxSourceBytes ?? defaultMaxSourceBytes
  const excludedInput = options.excluded ?? []
  const excluded = yield* Effect.promise(() => excludedRealPaths(realm, excludedInput))
  const known = new Map<string, string>()
  const resolutions = new Map<string, { readonly resolved: ResolvedPath; readonly at: number }>()
  let watching = false
  let epoch = 0

  const isIgnored = (relativePath: string): boolean => {
    const posix = toPosix(relativePath)
    if (posix.split("/").some((segment) => segment.startsWith("."))) return true
    const absolute = path.join(realm, ...posix.split("/"))
    return excluded.some((dir) => isInside(absolute, dir))
  }

  /**
   * Open, then verify: one descriptor, opened with `O_NOFOLLOW | O_NONBLOCK` (a symlink in the
   * last component fails, a FIFO or device never blocks the open), then `fstat`ed (a regular
   * file only), then checked by the descriptor's own real path (on Linux the kernel's
   * `/proc/self/fd/N`, which no later swap can change; elsewhere the path's real path, read
   * twice around a `stat` that must match the descriptor's device and inode): it must be the
   * canonical path inside the realm. Only then read, from that descriptor. A directory of
   * the path swapped for a symlink to the outside between the checks and the open is caught,
   * whichever way the swaps go.
   */
  const openVerified = async (
    realmReal: string,
    file: string,
    relative: string,
    limit: number
  ): Promise<OpenResult> => {
    const handle = await fs.open(file, openFlags)
    try {
      const opened = await handle.stat()
      if (!opened.isFile()) return { _tag: "NotRegular" }
      const real = await openedPath(handle, file)
      if (real === undefined) return { _tag: "Moved" }
      const now = await fs.stat(real)
      if (now.dev !== opened.dev || now.ino !== opened.ino) return { _tag: "Moved" }
      const canonical = canonicalOf(realmReal, excluded, real)
      if ("reason" in canonical || canonical.path !== relative) return { _tag: "Moved" }
      if (opened.size > limit) return { _tag: "TooLarge", size: opened.size }
      const buffer = await handle.readFile()
      if (buffer.byteLength > limit) return { _tag: "TooLarge", size: buffer.byteLength }
      return { _tag: "Read", buffer }
    } finally {
      await handle.close()
    }
  }

  /** Reads a file by its canonical path, under the size limit. */
  const readChecked = (modulePath: string): Effect.Effect<RawFile & { readonly file: string }, ReadError> =>
    Effect.gen(function*() {
      const relative = yield* validatePath(modulePath.split("/").map(encodeURIComponent).join("/"))
      const current = yield* realmRealPath(realmDir)
      const file = path.join(current, ...relative.split("/"))
      const found = yield* Effect.promise(() => probe(file))
      if (found._tag === "Missing") {
        return yield* new ModuleNotFoundError({ path: relative })
      }
      if (found._tag === "Failed") return yield* new SourceReadError({ path: relative, message: describeError(found.cause) })
      const canonical = canonicalOf(current, excluded, found.real)
      if ("reason" in canonical) return yield* invalid(relative, canonical.reason)
      // Keys are canonical: a symlink's key would never be invalidated by edits of its target.
      if (canonical.path !== relative) {
        return yield* invalid(relative, `not a canonical path (the file is ${canonical.path})`)
      }
      const bytes = yield* Effect.tryPromise({
        try: () => openVerified(current, file, relative, maxSourceBytes),
        catch: (cause) => {
          const code = errorCode(cause)
          if (code === "ENOENT" || code === "ENOTDIR") return new ModuleNotFoundError({ path: relative })
          if (code === "ELOOP") return invalid(relative, "a symlink in the last component")
          return new SourceReadError({ path: relative, message: describeError(cause) })
        }
      })
      switch (bytes._tag) {
        case "TooLarge":
          return yield* new SourceTooLargeError({ path: relative, size: bytes.size, limit: maxSourceBytes })
        case "NotRegular":
          return yield* invalid(relative, "not a regular file")
        case "Moved":
          return yield* invalid(relative, "the file changed while it was opened (it resolves outside the realm)")
        case "Read":
          return { path: relative, bytes: bytes.buffer, file: found.real }
      }
    })

  const read = (key: ModuleKey): Effect.Effect<ModuleSource, ReadError> =>
    Effect.gen(function*() {
      if (key.realmUrl !== realmUrl) return yield* new ModuleNotFoundError({ path: key.path })
      const started = epoch
      const file = yield* readChecked(key.path)
      // The read checked what resolving its canonical request path checks (a regular file of
      // the realm, at its real path, not excluded): remember that resolution, unless a change
      // overtook the read. A module preloaded at start then costs no file-system call at all.
      if (epoch === started && isExecutable(file.path)) {
        remember(`/${file.path.split("/").map(encodeURIComponent).join("/")}`, {
          path: file.path,
          file: file.file,
          executable: true
        })
      }
      const content = Buffer.from(file.bytes.buffer, file.bytes.byteOffset, file.bytes.byteLength).toString("utf8")
      const hash = hashSource(content)
      known.set(file.path, hash)
      return { key, content, hash }
    })

  const walk: Effect.Effect<ReadonlyArray<string>, SourceReadError> = Effect.gen(function*() {
    const current = yield* realmRealPath(realmDir)
    return yield* Effect.tryPromise({
      try: async () => {
        const found: Array<string> = []
        const visit = async (dir: string): Promise<void> => {
          const entries = await fs.readdir(dir, { withFileTypes: true })
          for (const entry of entries) {
            if (entry.name.startsWith(".")) continue
            const absolute = path.join(dir, entry.name)
            if (excluded.some((ex) => isInside(absolute, ex))) continue
            if (entry.isDirectory()) await visit(absolute)
            else if (entry.isFile() && isExecutable(entry.name)) found.push(toPosix(path.relative(current, absolute)))
          }
        }
        await visit(current)
        return found.sort()
      },
      catch: (cause) => new SourceReadError({ path: realmDir, message: messageOf(cause) })
    })
  })

  const remember = (urlPath: string, resolved: ResolvedPath) => {
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
        return Effect.tap(resolveIn(realmDir, urlPath, { excluded: excludedInput }), (resolved) =>
          Effect.sync(() => {
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
    readRaw: (modulePath) => Effect.map(readChecked(modulePath), ({ bytes, path }): RawFile => ({ path, bytes })),
    walk,
    isIgnored,
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
