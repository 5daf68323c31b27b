/**
 * An exclusive, cross-process lock on a PGlite data directory. Two processes that open one
 * PGlite directory corrupt it, so the embedded store takes this lock before opening it.
 *
 * The lock is the file `<dataDir>.lock` next to the directory (PGlite owns the directory's
 * contents). It is created atomically with its whole content (a temporary file hard-linked
 * into place), holding the owner's pid, its start time (field 22 of `/proc/<pid>/stat`, on
 * Linux), host and a random token. A pid that is alive but started at another time (the pid
 * was reused), or a zombie, counts as dead:
 * - free: taken;
 * - held by a live process, or already by this one (one process must not open a directory
 *   twice either): fails with {@link DataDirLockedError};
 * - held by a dead process on this host (a crash), or by an earlier process that had this
 *   process's pid: taken over, under a short-lived `<dataDir>.lock.takeover` guard, so that
 *   two processes taking over one stale lock do not both win;
 * - held by a process of another host (a shared filesystem): refused, since its owner cannot
 *   be checked. The error says which file to delete if that process is gone.
 *
 * The lock is released (its file removed) when the scope closes.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { hostname } from "node:os"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { errorCode } from "../internal/errors.ts"

/** Another live process (or this one) holds the data directory. */
export class DataDirLockedError extends Schema.TaggedError<DataDirLockedError>()("DataDirLockedError", {
  dataDir: Schema.String,
  lockFile: Schema.String,
  pid: Schema.Number,
  host: Schema.String
}) {
  override get message() {
    return `the data directory ${this.dataDir} is in use by process ${this.pid} on ${this.host}: ` +
      `only one process may open it at a time. Stop that process, or use another data directory. ` +
      `If no such process is running, delete ${this.lockFile}.`
  }
}

/** The lock could not be read or written (permissions, a full disk...). */
export class DataDirLockError extends Schema.TaggedError<DataDirLockError>()("DataDirLockError", {
  dataDir: Schema.String,
  message: Schema.String,
  /** The file-system error underneath. */
  cause: Schema.optional(Schema.Defect())
}) {}

/** What a lock file holds. */
interface LockInfo {
  readonly pid: number
  readonly host: string
  readonly token: string
  /** The owner's start time in clock ticks since boot (Linux); absent where unknown. */
  readonly startTime?: string | undefined
}

/** A held lock. */
export interface DataDirLock {
  readonly dataDir: string
  readonly lockFile: string
  readonly token: string
}

/** The real path of a directory (symlinks resolved, so two names of one directory share a lock). */
const realDir = (dataDir: string): string => {
  const resolved = path.resolve(dataDir)
  try {
    return fs.realpathSync(resolved)
  } catch {
    return resolved
  }
}

/** The lock file of a data directory: `<dataDir>.lock`, next to it. */
export const lockFileOf = (dataDir: string): string => `${realDir(dataDir)}.lock`

const parseInfo = (text: string): LockInfo | undefined => {
  try {
    const value: unknown = JSON.parse(text)
    if (
      typeof value === "object" && value !== null &&
      "pid" in value && typeof value.pid === "number" &&
      "host" in value && typeof value.host === "string" &&
      "token" in value && typeof value.token === "string"
    ) {
      const startTime = "startTime" in value && typeof value.startTime === "string" ? value.startTime : undefined
      return { pid: value.pid, host: value.host, token: value.token, startTime }
    }
  } catch {
    // unreadable: treated as stale below
  }
  return undefined
}

const readInfo = (file: string): LockInfo | undefined | "missing" => {
  try {
    return parseInfo(fs.readFileSync(file, "utf8"))
  } catch (error) {
    if (errorCode(error) === "ENOENT") return "missing"
    throw error
  }
}

/** A process's state and start time from `/proc/<pid>/stat` (Linux), if readable. */
export const procStat = (pid: number): { readonly state: string; readonly startTime: string } | undefined => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // The command name (field 2) is in parentheses and may hold spaces: split after its last ")".
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ")
    const state = fields[0]
    const startTime = fields[19]
    return state === undefined || startTime === undefined ? undefined : { state, startTime }
  } catch {
    return undefined
  }
}

/**
 * Whether a lock's owner is a live process: the pid exists (EPERM: alive, owned by someone
 * else), is no zombie, and (when both are known) started when the lock says.
 */
const isAlive = (pid: number, startTime: string | undefined): boolean => {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch (error) {
    if (errorCode(error) !== "EPERM") return false
  }
  const stat = procStat(pid)
  if (stat === undefined) return true
  if (stat.state === "Z" || stat.state === "X") return false
  return startTime === undefined || stat.startTime === startTime
}

const thisHost = hostname()

/** The tokens of the locks this process holds. */
const heldTokens = new Set<string>()

/**
 * Whether a lock's owner is known to be gone. A lock of another host is never stale (its
 * owner cannot be checked). A lock with this process's pid that this process does not hold
 * was left by an earlier process that had the same pid (common in containers).
 */
const isStale = (info: LockInfo | undefined): boolean =>
  info === undefined ||
  (info.host === thisHost && (info.pid === process.pid ? !heldTokens.has(info.token) : !isAlive(info.pid, info.startTime)))

/** A takeover guard older than this belongs to a process that died while taking over. */
const takeoverGuardMaxAgeMillis = 10_000

/** Retried: the lock changed hands while we looked at it. */
class Contended {
  readonly _tag = "Contended"
}

/** Links a file holding `info` into place at `file`; false if `file` exists. */
const createExclusive = (file: string, info: LockInfo): boolean => {
  const temp = `${file}.${info.token}.tmp`
  fs.writeFileSync(temp, JSON.stringify(info))
  try {
    fs.linkSync(temp, file)
    return true
  } catch (error) {
    if (errorCode(error) === "EEXIST") return false
    throw error
  } finally {
    fs.rmSync(temp, { force: true })
  }
}

type Attempt = { readonly _tag: "Acquired" } | { readonly _tag: "Locked"; readonly info: LockInfo } | Contended

const attempt = (lockFile: string, info: LockInfo): Attempt => {
  if (createExclusive(lockFile, info)) return { _tag: "Acquired" }
  const current = readInfo(lockFile)
  if (current === "missing") return new Contended()
  if (!isStale(current)) {
    return { _tag: "Locked", info: current ?? { pid: -1, host: "unknown", token: "" } }
  }
  // Stale: only the holder of the takeover guard may remove it.
  const guard = `${lockFile}.takeover`
  if (!createExclusive(guard, info)) {
    clearStaleGuard(guard)
    return new Contended()
  }
  try {
    // Still the same stale lock? Another process may have taken over before we got the guard.
    const again = readInfo(lockFile)
    if (again !== "missing") {
      if (!sameLock(again, current)) return new Contended()
      fs.rmSync(lockFile, { force: true })
    }
    return createExclusive(lockFile, info) ? { _tag: "Acquired" } : new Contended()
  } finally {
    fs.rmSync(guard, { force: true })
  }
}

const sameLock = (a: LockInfo | undefined, b: LockInfo | undefined): boolean =>
  a === undefined || b === undefined ? a === b : a.token === b.token

/** Removes a takeover guard left by a process that died while taking over. */
const clearStaleGuard = (guard: string): void => {
  try {
    const owner = readInfo(guard)
    if (owner === "missing") return
    const age = Date.now() - fs.statSync(guard).mtimeMs
    if (age > takeoverGuardMaxAgeMillis || (owner !== undefined && isStale(owner))) {
      fs.rmSync(guard, { force: true })
    }
  } catch (error) {
    if (errorCode(error) !== "ENOENT") throw error
  }
}

/**
 * Makes a directory and its missing parents, one level at a time from the nearest one that
 * exists, failing at the first level that cannot be made. (Node's recursive `mkdir` loops
 * for ever on some paths, e.g. below `/proc`.)
 */
const makeDirectory = (dir: string): void => {
  const missing: Array<string> = []
  let current = path.resolve(dir)
  for (;;) {
    try {
      const info = fs.statSync(current)
      if (!info.isDirectory()) throw new Error(`${current} is not a directory`)
      break
    } catch (error) {
      if (errorCode(error) !== "ENOENT") throw error
      missing.push(current)
      const parent = path.dirname(current)
      if (parent === current) break
      current = parent
    }
  }
  for (const level of missing.reverse()) {
    try {
      fs.mkdirSync(level)
    } catch (error) {
      if (errorCode(error) !== "EEXIST") throw error
    }
  }
}

/**
 * Takes the lock of `dataDir` (creating the directory if needed) for the life of the scope.
 */
export const acquire = (
  dataDir: string
): Effect.Effect<DataDirLock, DataDirLockedError | DataDirLockError, Scope.Scope> => {
  const requested = path.resolve(dataDir)
  const info: LockInfo = {
    pid: process.pid,
    host: thisHost,
    token: randomBytes(12).toString("hex"),
    startTime: procStat(process.pid)?.startTime
  }
  const lockError = (error: unknown) =>
    new DataDirLockError({
      dataDir: requested,
      message: `cannot lock ${requested}: ${error instanceof Error ? error.message : String(error)}`,
      cause: error
    })
  const once = Effect.suspend((): Effect.Effect<DataDirLock, DataDirLockedError | DataDirLockError | Contended> => {
    let result: Attempt
    let resolved: string
    let lockFile: string
    try {
      makeDirectory(requested)
      resolved = realDir(requested)
      lockFile = `${resolved}.lock`
      result = attempt(lockFile, info)
    } catch (error) {
      return Effect.fail(lockError(error))
    }
    switch (result._tag) {
      case "Acquired":
        heldTokens.add(info.token)
        return Effect.succeed<DataDirLock>({ dataDir: resolved, lockFile, token: info.token })
      case "Locked":
        return Effect.fail(
          new DataDirLockedError({ dataDir: resolved, lockFile, pid: result.info.pid, host: result.info.host })
        )
      case "Contended":
        return Effect.fail(result)
    }
  })
  const release = (lock: DataDirLock) =>
    Effect.sync(() => {
      heldTokens.delete(lock.token)
      try {
        const current = readInfo(lock.lockFile)
        if (current !== "missing" && current !== undefined && current.token === lock.token) {
          fs.rmSync(lock.lockFile, { force: true })
        }
      } catch {
        // Best effort: a lock left behind is stale once this process exits.
      }
    })
  return Effect.acquireRelease(
    once.pipe(
      Effect.retry({
        while: (error) => error instanceof Contended,
        schedule: Schedule.spaced("20 millis"),
        times: 100
      }),
      Effect.catchIf(
        (error): error is Contended => error instanceof Contended,
        () => Effect.fail(lockError(new Error("the lock kept changing hands")))
      )
    ),
    release
  )
}
