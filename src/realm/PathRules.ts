/**
 * The pure path rules of a realm: which request paths are valid, which files are modules,
 * when a real path lies inside the realm, and which cached keys a path covers. No I/O:
 * {@link FileSystemSources} applies these rules to the file system.
 *
 * @since 0.3.0
 */
import * as Effect from "effect/Effect"
import * as path from "node:path"
import { InvalidPathError } from "../domain/Errors.ts"

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

/** Whether a path names an executable module (by its extension), which is served transpiled. */
export const isExecutable = (modulePath: string): boolean =>
  executableExtensions.includes(path.posix.extname(modulePath).toLowerCase())

/**
 * The files an extensionless request may name, in the order they are tried: the path
 * itself, then the path with each {@link executableExtensions} appended. An executable path
 * names only itself.
 */
export const candidatesOf = (relative: string): ReadonlyArray<string> =>
  isExecutable(relative) ? [relative] : [relative, ...executableExtensions.map((extension) => relative + extension)]

/** Why a path segment is rejected, or undefined when it is fine. */
export const segmentProblem = (segment: string): string | undefined => {
  if (segment === "." || segment === "..") return "path traversal"
  if (segment.startsWith(".")) return "dotfiles and dot directories are not served"
  return undefined
}

/** An {@link InvalidPathError} of a requested path. */
export const invalid = (requested: string, reason: string): InvalidPathError =>
  new InvalidPathError({ path: requested, reason })

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

/** Whether an absolute path is a directory or lies below it. */
export const isInside = (child: string, parent: string): boolean =>
  child === parent || child.startsWith(parent.endsWith(path.sep) ? parent : parent + path.sep)

/** A path of the platform's separators as a `/`-separated one. */
export const toPosix = (relative: string): string => relative.split(path.sep).join("/")

/** A plain `/`-separated path percent-encoded segment by segment, as a request path. */
export const encodePath = (plain: string): string => plain.split("/").map(encodeURIComponent).join("/")

/** The path part of a request URL, as sent (still percent-encoded), with a leading slash. */
export const pathOf = (url: string): string => {
  const end = url.search(/[?#]/)
  const pathname = end === -1 ? url : url.slice(0, end)
  return pathname.startsWith("/") ? pathname : `/${pathname}`
}

/**
 * Checks a file's absolute real path against the realm's real path and the excluded
 * directories: its canonical path (relative to the realm, `/`-separated), or why it is
 * not served.
 */
export const canonicalOf = (
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

/**
 * Whether a path relative to the realm (as a file watcher reports it) is outside what is
 * served: a dot segment, or a path inside one of the excluded directories (absolute).
 */
export const isIgnoredIn = (realm: string, excluded: ReadonlyArray<string>, relativePath: string): boolean => {
  const posix = toPosix(relativePath)
  if (posix.split("/").some((segment) => segment.startsWith("."))) return true
  const absolute = path.join(realm, ...posix.split("/"))
  return excluded.some((dir) => isInside(absolute, dir))
}

/**
 * The cached keys a change at a realm-relative path covers: the keys it names itself
 * (`named`), plus every `known` key at that path or below it (a changed directory covers
 * its whole subtree). The realm root (`""`) covers only its named keys. Sorted, each once.
 */
export const keysCovering = (
  relative: string,
  named: Iterable<string>,
  known: Iterable<string>
): Array<string> => {
  const keys = new Set(named)
  if (relative !== "") {
    for (const key of known) if (key === relative || key.startsWith(`${relative}/`)) keys.add(key)
  }
  return Array.from(keys).sort()
}
