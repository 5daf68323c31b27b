/**
 * The admin token: what a caller of the state-changing admin routes (and of
 * `/_cache/stats`) must send as `Authorization: Bearer <token>`.
 *
 * - The token is `MTC_ADMIN_TOKEN` when that is set (at least 16 characters).
 * - Otherwise `serve` makes a random one at start and writes it to a token file that only
 *   this user can read (mode 0600, in a 0700 directory), named after the port:
 *   `<stateDir>/admin-token-<port>`, where the state directory is `MTC_STATE_DIR`, else
 *   `$XDG_RUNTIME_DIR/module-transpile-cache`, else `~/.cache/module-transpile-cache`.
 *   The CLI's `stats` and `invalidate` read the file of the port they call. `serve`
 *   removes the file when it stops.
 * - Tokens are compared in constant time ({@link matches}) and never logged.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { createHash, randomBytes, timingSafeEqual } from "node:crypto"
import * as fs from "node:fs"
import { homedir } from "node:os"
import * as path from "node:path"

/** The token could not be set up (an unusable state directory, a token too short). */
export class AdminTokenError extends Schema.TaggedError<AdminTokenError>()("AdminTokenError", {
  message: Schema.String
}) {}

/** The admin token of a server. Without this service, the admin routes refuse every call. */
export class AdminToken extends Context.Service<AdminToken, {
  readonly token: Redacted.Redacted<string>
}>()("module-transpile-cache/AdminToken") {}

/** The shortest token accepted from the environment. */
export const minLength = 16

/** The environment variable holding a fixed token. */
export const envVar = "MTC_ADMIN_TOKEN"

/** Whether `presented` is the token, compared in constant time (over SHA-256 digests, so lengths do not leak). */
export const matches = (token: Redacted.Redacted<string>, presented: string): boolean => {
  const digest = (value: string) => createHash("sha256").update(value, "utf8").digest()
  return timingSafeEqual(digest(Redacted.value(token)), digest(presented))
}

/** The token of an `Authorization` header: the part after `Bearer `, if the header has that form. */
export const bearerOf = (header: string | undefined): string | undefined => {
  if (header === undefined) return undefined
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return match?.[1]
}

/** The directory of generated token files. */
export const stateDir = (env: NodeJS.ProcessEnv = process.env): string => {
  const explicit = env.MTC_STATE_DIR
  if (explicit !== undefined && explicit !== "") return path.resolve(explicit)
  const runtime = env.XDG_RUNTIME_DIR
  if (runtime !== undefined && runtime !== "") return path.join(runtime, "module-transpile-cache")
  return path.join(homedir(), ".cache", "module-transpile-cache")
}

/** The token file of a server listening on `port`. */
export const tokenFileOf = (port: number, env: NodeJS.ProcessEnv = process.env): string =>
  path.join(stateDir(env), `admin-token-${port}`)

/** The token from `MTC_ADMIN_TOKEN`, if set. */
export const fromEnv: Config.Config<Option.Option<Redacted.Redacted<string>>> = Config.Redacted(envVar).pipe(
  Config.option
)

const checkLength = (token: Redacted.Redacted<string>) =>
  Redacted.value(token).length >= minLength
    ? Effect.succeed(token)
    : Effect.fail(new AdminTokenError({ message: `${envVar} must be at least ${minLength} characters` }))

/** A new random token (32 bytes, hex). */
export const generate = (): Redacted.Redacted<string> => Redacted.make(randomBytes(32).toString("hex"))

/** Makes the state directory (0700) and checks that it is this user's and private. */
const ensurePrivateDir = (dir: string): void => {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const info = fs.lstatSync(dir)
  if (!info.isDirectory()) throw new Error(`${dir} is not a directory`)
  if (typeof process.getuid === "function" && info.uid !== process.getuid()) {
    throw new Error(`${dir} belongs to another user`)
  }
  if ((info.mode & 0o077) !== 0) fs.chmodSync(dir, 0o700)
}

/**
 * Writes a token file (0600, replaced atomically) for the life of the scope; the file is
 * removed when the scope closes.
 */
export const writeTokenFile = (
  file: string,
  token: Redacted.Redacted<string>
): Effect.Effect<void, AdminTokenError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        ensurePrivateDir(path.dirname(file))
        const temp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`
        fs.writeFileSync(temp, Redacted.value(token), { mode: 0o600, flag: "wx" })
        fs.renameSync(temp, file)
      },
      catch: (cause) =>
        new AdminTokenError({
          message: `cannot write the admin token file ${file}: ${cause instanceof Error ? cause.message : String(cause)}`
        })
    }),
    () =>
      Effect.sync(() => {
        try {
          // Only our own token: another server may have taken the port since.
          if (fs.readFileSync(file, "utf8") === Redacted.value(token)) fs.rmSync(file, { force: true })
        } catch {
          // already gone
        }
      })
  )

/** Reads a token file, if it exists and is readable. */
export const readTokenFile = (file: string): Option.Option<Redacted.Redacted<string>> => {
  try {
    const text = fs.readFileSync(file, "utf8").trim()
    return text === "" ? Option.none() : Option.some(Redacted.make(text))
  } catch {
    return Option.none()
  }
}

/** The token a client uses to call the server at `port`: `MTC_ADMIN_TOKEN`, else that port's token file. */
export const forClient = (port: number): Effect.Effect<Option.Option<Redacted.Redacted<string>>> =>
  Effect.gen(function*() {
    const fromEnvironment = yield* Effect.orElseSucceed(
      Effect.gen(function*() {
        return yield* fromEnv
      }),
      () => Option.none<Redacted.Redacted<string>>()
    )
    return Option.isSome(fromEnvironment) && Redacted.value(fromEnvironment.value) !== ""
      ? fromEnvironment
      : readTokenFile(tokenFileOf(port))
  })

/** The token of a server: `MTC_ADMIN_TOKEN` when set, else a fresh random one. */
export const serverToken: Effect.Effect<
  { readonly token: Redacted.Redacted<string>; readonly generated: boolean },
  AdminTokenError
> = Effect.gen(function*() {
  const configured = yield* Effect.mapError(
    Effect.gen(function*() {
      return yield* fromEnv
    }),
    (error) => new AdminTokenError({ message: `${envVar}: ${error.message}` })
  )
  if (Option.isNone(configured) || Redacted.value(configured.value) === "") return { token: generate(), generated: true }
  return { token: yield* checkLength(configured.value), generated: false }
})

/** A layer with a fixed token (for an embedding server, or tests). */
export const layer = (token: Redacted.Redacted<string>): Layer.Layer<AdminToken> =>
  Layer.succeed(AdminToken, AdminToken.of({ token }))
