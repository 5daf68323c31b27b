/**
 * TLS to Postgres with libpq's meaning: `sslmode`, `sslrootcert`, `sslcert` and `sslkey`,
 * from the connection URL or else from `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and
 * `PGSSLKEY`, become the `ssl` option of `@effect/sql-pg` (Node's TLS does the work):
 *
 * | sslmode | TLS | the server's certificate |
 * |---|---|---|
 * | `disable` | never | - |
 * | `allow`, `prefer` | when the server offers it (asked once, when the settings are resolved) | as `require` |
 * | `require` | always | checked against `sslrootcert` when one is given (as libpq does: the chain, not the host name); not checked otherwise |
 * | `no-verify` | always | never checked (a spelling some hosts document) |
 * | `verify-ca` | always | its chain, against `sslrootcert` or else the system's CAs |
 * | `verify-full` | always | its chain, and that it names the host connected to |
 *
 * `sslcert` and `sslkey` give a client certificate. With none of these set anywhere, the
 * client's own default holds (no TLS), as before; a file set without a mode means `prefer`,
 * libpq's default. The TLS parameters are taken out of the URL handed to the client (it
 * refuses `no-verify`). A file that cannot be read, and a failed handshake, fail with a
 * {@link PgTlsError} naming the cause, with no secret in it.
 *
 * @since 0.1.0
 */
import { X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import * as Net from "node:net"
import * as Tls from "node:tls"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { errorCode, messageOf } from "../internal/errors.ts"
import * as PgConnectError from "./PgConnectError.ts"

/** The `sslmode` values understood: libpq's, plus `no-verify`. */
export const sslModes = ["disable", "allow", "prefer", "require", "no-verify", "verify-ca", "verify-full"] as const

/** An `sslmode`. */
export type SslMode = (typeof sslModes)[number]

/** The TLS parameters of a connection, named as libpq names them. */
export interface SslParams {
  readonly sslmode?: string | undefined
  readonly sslrootcert?: string | undefined
  readonly sslcert?: string | undefined
  readonly sslkey?: string | undefined
}

/** The URL parameters this module reads (and takes out of the URL it hands on). */
export const paramNames = ["sslmode", "sslrootcert", "sslcert", "sslkey"] as const

/** `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`: the defaults under a URL's own parameters. */
export const envConfig: Config.Config<SslParams> = Config.all({
  sslmode: Config.option(Config.String("PGSSLMODE")),
  sslrootcert: Config.option(Config.String("PGSSLROOTCERT")),
  sslcert: Config.option(Config.String("PGSSLCERT")),
  sslkey: Config.option(Config.String("PGSSLKEY"))
}).pipe(Config.map((params): SslParams => {
  const set: { -readonly [K in keyof SslParams]: string } = {}
  for (const name of paramNames) {
    const value = Option.getOrUndefined(params[name])
    if (value !== undefined && value !== "") set[name] = value
  }
  return set
}))

/** Why a TLS connection to Postgres cannot be made. */
export const reasons = [
  "InvalidSetting",
  "FileUnreadable",
  "ServerWithoutTls",
  "TlsRequired",
  "CertificateUntrusted",
  "HostnameMismatch",
  "CertificateExpired",
  "ClientCertificateRequired"
] as const

/**
 * A TLS connection to Postgres cannot be made, and why (`reason`): an invalid setting, a
 * file that cannot be read, the server without TLS or demanding it, its certificate not
 * trusted (with its `subject` and `issuer`), for another host, or expired, or a client
 * certificate required. The message is one line, with no password in it.
 */
export class PgTlsError extends Schema.TaggedError<PgTlsError>()("PgTlsError", {
  reason: Schema.Literals(reasons),
  message: Schema.String,
  /** `host:port` of the server. */
  server: Schema.optional(Schema.String),
  /** The server certificate's subject and issuer, when known. */
  subject: Schema.optional(Schema.String),
  issuer: Schema.optional(Schema.String),
  /** The file that could not be read. */
  file: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect())
}) {}

/** Where a connection goes, for the probes and the messages. */
export interface Target {
  readonly host: string
  readonly port: number
}

/** What to hand `@effect/sql-pg`: the URL without the TLS parameters, and its `ssl` option. */
export interface ClientTls {
  readonly url: Redacted.Redacted<string>
  /** The client's `ssl` option; absent, the client's own default (no TLS). */
  readonly ssl?: boolean | Tls.ConnectionOptions
  /** The mode in force (`undefined`: none was set). */
  readonly mode: SslMode | undefined
  readonly params: SslParams
  /** The server's host and port; absent for a Unix socket or a URL the client will reject. */
  readonly target?: Target
}

/** The connection's options: `{ url }`, plus `ssl` when a mode is in force. */
export const clientOptions = (tls: ClientTls): { readonly url: Redacted.Redacted<string>; readonly ssl?: boolean | Tls.ConnectionOptions } =>
  tls.ssl === undefined ? { url: tls.url } : { url: tls.url, ssl: tls.ssl }

/** Options of {@link resolve}. */
export interface ResolveOptions {
  /** How long the `prefer`/`allow` question to the server may take (default 5 s). */
  readonly timeout?: Duration.Input
}

const defaultTimeout = Duration.seconds(5)

const isMode = (value: string): value is SslMode => (sslModes as ReadonlyArray<string>).includes(value)

const invalid = (message: string) => new PgTlsError({ reason: "InvalidSetting", message })

/** Reads one file named by a parameter. */
const readParam = (name: string, file: string) =>
  Effect.tryPromise({
    try: () => fs.promises.readFile(file),
    catch: (cause) =>
      new PgTlsError({
        reason: "FileUnreadable",
        file,
        message: `cannot read ${name} ${file}: ${errorCode(cause) ?? messageOf(cause)}`,
        cause
      })
  })

/**
 * Checks that Node's TLS accepts the files, so that a bad one fails here, not inside a
 * handshake: a root certificate must parse as one (TLS alone skips what is not).
 */
const checkContext = (names: string, files: string, options: Tls.SecureContextOptions) =>
  Effect.try({
    try: () => {
      if (options.ca !== undefined) new X509Certificate(options.ca as Buffer)
      Tls.createSecureContext(options)
    },
    catch: (cause) =>
      new PgTlsError({
        reason: "FileUnreadable",
        file: files,
        message: `${names} ${files} is not usable by TLS (expected PEM): ${messageOf(cause)}`,
        cause
      })
  })

/** A percent-decoded URL part; as it is when malformed (the client reports that). */
const decoded = (part: string): string => {
  try {
    return decodeURIComponent(part)
  } catch {
    return part
  }
}

/** Where the URL points (host and port as `@effect/sql-pg` reads them); `undefined` for a Unix socket. */
const targetOf = (url: URL): Target | undefined => {
  const hostParam = url.searchParams.get("host")
  const bare = url.hostname.startsWith("[") && url.hostname.endsWith("]") ? url.hostname.slice(1, -1) : url.hostname
  let host = hostParam ?? (bare === "" ? "localhost" : decoded(bare))
  if (host.startsWith("/")) return undefined
  if (host === "") host = "localhost"
  const port = Number(url.searchParams.get("port") ?? (url.port === "" ? "5432" : url.port))
  return { host, port: Number.isInteger(port) ? port : 5432 }
}

const noHostCheck = (): undefined => undefined

/**
 * Resolves the TLS settings of one connection URL: its own TLS parameters win over
 * `defaults` (the environment's, {@link envConfig}). Reads and checks the files; for
 * `prefer`/`allow`, asks the server once whether it speaks TLS.
 */
export const resolve = (
  url: Redacted.Redacted<string>,
  defaults: SslParams = {},
  options: ResolveOptions = {}
): Effect.Effect<ClientTls, PgTlsError> =>
  Effect.gen(function*() {
    let parsed: URL
    try {
      parsed = new URL(Redacted.value(url))
    } catch {
      // The client reports a URL it cannot parse.
      return { url, mode: undefined, params: {} }
    }
    if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") return { url, mode: undefined, params: {} }
    const params: { -readonly [K in keyof SslParams]: string } = {}
    for (const name of paramNames) {
      const value = parsed.searchParams.get(name) ?? defaults[name]
      if (value !== undefined && value !== "") params[name] = value
    }
    const present = paramNames.some((name) => parsed.searchParams.has(name))
    if (present) for (const name of paramNames) parsed.searchParams.delete(name)
    const handed = present ? Redacted.make(parsed.toString()) : url
    const target = targetOf(parsed)
    const base = { url: handed, params, ...(target === undefined ? {} : { target }) }

    const requested = params.sslmode
    if (requested !== undefined && !isMode(requested)) {
      return yield* invalid(`unknown sslmode "${requested}" (expected one of ${sslModes.join(", ")})`)
    }
    const anyFile = params.sslrootcert !== undefined || params.sslcert !== undefined || params.sslkey !== undefined
    // No mode and no file anywhere: the client's own default, as before.
    if (requested === undefined && !anyFile) return { ...base, mode: undefined }
    const mode: SslMode = requested ?? "prefer"
    // Postgres speaks no TLS over a Unix socket, and libpq ignores sslmode there.
    if (mode === "disable" || target === undefined) return { ...base, mode, ssl: false }

    if ((params.sslcert === undefined) !== (params.sslkey === undefined)) {
      return yield* invalid("sslcert and sslkey go together: give both, or neither")
    }
    // `sslrootcert=system` (libpq 16): the system's CAs, which Node uses when no `ca` is given.
    const rootFile = params.sslrootcert === "system" ? undefined : params.sslrootcert
    const ca = rootFile === undefined ? undefined : yield* readParam("sslrootcert", rootFile)
    if (ca !== undefined && rootFile !== undefined) yield* checkContext("sslrootcert", rootFile, { ca })
    const client = params.sslcert !== undefined && params.sslkey !== undefined
      ? { cert: yield* readParam("sslcert", params.sslcert), key: yield* readParam("sslkey", params.sslkey) }
      : undefined
    if (client !== undefined) yield* checkContext("sslcert/sslkey", `${params.sslcert} / ${params.sslkey}`, client)
    const rootGiven = params.sslrootcert !== undefined

    const tlsOptions: Tls.ConnectionOptions = (() => {
      switch (mode) {
        case "no-verify":
          return { rejectUnauthorized: false }
        case "allow":
        case "prefer":
        case "require":
          // libpq: with a root certificate, `require` checks the chain as `verify-ca` does.
          return rootGiven ? { ...(ca === undefined ? {} : { ca }), checkServerIdentity: noHostCheck } : { rejectUnauthorized: false }
        case "verify-ca":
          return { ...(ca === undefined ? {} : { ca }), checkServerIdentity: noHostCheck }
        case "verify-full":
          return ca === undefined ? {} : { ca }
      }
    })()
    const ssl: Tls.ConnectionOptions = { ...tlsOptions, ...(client ?? {}) }
    if (mode === "prefer" || mode === "allow") {
      // The client's own `prefer` would verify the certificate; libpq's does not. So the
      // server is asked once here, and TLS is then either required or off. A server that
      // cannot be asked is given TLS (its connections will name the failure).
      const offers = yield* offersTls(target, options.timeout ?? defaultTimeout).pipe(
        Effect.orElseSucceed(() => true)
      )
      return { ...base, mode, ssl: offers ? ssl : false }
    }
    return { ...base, mode, ssl }
  })

// -----------------------------------------------------------------------------
// Asking the server
// -----------------------------------------------------------------------------

/** Postgres's SSLRequest: length 8, code 80877103. */
const sslRequest = Uint8Array.of(0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f)

/** Opens a socket and sends SSLRequest; calls back with the server's one-byte answer. */
const askTls = (
  target: Target,
  timeout: Duration.Input,
  then: (socket: Net.Socket, answer: "S" | "N", finish: (result: Effect.Effect<unknown, Error>) => void) => void
) =>
  Effect.callback<unknown, Error>((resume) => {
    let done = false
    const socket = Net.connect({ host: target.host, port: target.port })
    const finish = (result: Effect.Effect<unknown, Error>) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resume(result)
    }
    const timer = setTimeout(() => finish(Effect.fail(new Error("timed out"))), Duration.toMillis(Duration.fromInputUnsafe(timeout)))
    socket.on("error", (error) => finish(Effect.fail(error)))
    socket.on("close", () => finish(Effect.fail(new Error("closed"))))
    socket.once("connect", () => socket.write(sslRequest))
    socket.once("data", (chunk: Buffer) => {
      const answer = chunk[0] === 0x53 ? "S" : chunk[0] === 0x4e ? "N" : undefined
      if (answer === undefined) return finish(Effect.fail(new Error("unexpected answer to SSLRequest")))
      socket.removeAllListeners("close")
      socket.removeAllListeners("error")
      socket.on("error", (error) => finish(Effect.fail(error)))
      then(socket, answer, finish)
    })
    return Effect.sync(() => finish(Effect.void))
  })

/** Whether the server at `target` answers SSLRequest with yes. */
export const offersTls = (target: Target, timeout: Duration.Input = defaultTimeout): Effect.Effect<boolean, Error> =>
  Effect.map(askTls(target, timeout, (_socket, answer, finish) => finish(Effect.succeed(answer === "S"))), (offers) => offers === true)

/** What a server's certificate says about itself. */
export interface PeerCertificate {
  readonly subject: string
  readonly issuer: string
  readonly validFrom: string
  readonly validTo: string
  /** `DNS:...`, `IP Address:...` */
  readonly altNames: string | undefined
}

const distinguishedName = (name: Record<string, string | ReadonlyArray<string> | undefined> | undefined): string =>
  name === undefined
    ? "(none)"
    : Object.entries(name).flatMap(([key, value]) =>
      value === undefined ? [] : [`${key}=${typeof value === "string" ? value : value.join("+")}`]
    ).join(", ")

const describeCertificate = (cert: Tls.PeerCertificate): PeerCertificate => ({
  subject: distinguishedName(cert.subject),
  issuer: distinguishedName(cert.issuer),
  validFrom: cert.valid_from,
  validTo: cert.valid_to,
  altNames: cert.subjectaltname
})

/**
 * The certificate the server at `target` presents, read without checking it (only to name
 * it in an error); `undefined` when it cannot be had.
 */
export const peerCertificate = (target: Target, timeout: Duration.Input = defaultTimeout): Effect.Effect<PeerCertificate | undefined> =>
  askTls(target, timeout, (socket, answer, finish) => {
    if (answer === "N") return finish(Effect.succeed(undefined))
    const secure = Tls.connect({
      socket,
      rejectUnauthorized: false,
      ...(Net.isIP(target.host) === 0 ? { servername: target.host } : {})
    })
    secure.on("error", (error) => finish(Effect.fail(error)))
    secure.once("secureConnect", () => {
      const cert = secure.getPeerCertificate()
      secure.destroy()
      finish(Effect.succeed(cert.subject === undefined ? undefined : describeCertificate(cert)))
    })
  }).pipe(
    Effect.map((cert) => cert as PeerCertificate | undefined),
    Effect.orElseSucceed(() => undefined)
  )

// -----------------------------------------------------------------------------
// Naming a failure
// -----------------------------------------------------------------------------

const reasonOf: Record<PgConnectError.TlsFailure, PgTlsError["reason"]> = {
  "server without tls": "ServerWithoutTls",
  "tls required": "TlsRequired",
  "certificate untrusted": "CertificateUntrusted",
  "host name mismatch": "HostnameMismatch",
  "certificate expired": "CertificateExpired",
  "client certificate": "ClientCertificateRequired"
}

/** The first `code` and message of Node's TLS error in a chain of causes, and the certificate it carries. */
const tlsDetail = (error: unknown): { readonly code?: string; readonly message?: string; readonly cert?: Tls.PeerCertificate } => {
  const queue: Array<unknown> = [error]
  const seen = new Set<unknown>()
  while (queue.length > 0 && seen.size < 32) {
    const next = queue.shift()
    if (typeof next !== "object" || next === null || seen.has(next)) continue
    seen.add(next)
    const code = errorCode(next)
    if (code !== undefined && PgConnectError.isTlsFailure(PgConnectError.classify({ code }))) {
      const cert = "cert" in next && typeof next.cert === "object" && next.cert !== null ? next.cert as Tls.PeerCertificate : undefined
      return { code, message: messageOf(next), ...(cert === undefined ? {} : { cert }) }
    }
    for (const key of ["reason", "cause", "error"] as const) if (key in next) queue.push((next as Record<string, unknown>)[key])
  }
  return {}
}

/**
 * The {@link PgTlsError} of a failed connection made with `tls`, when its cause is a TLS
 * one; `undefined` otherwise. A certificate problem is named with the certificate's subject
 * and issuer (read from the server once more, unchecked, when the error does not carry it).
 */
export const explain = (error: unknown, tls: ClientTls): Effect.Effect<PgTlsError | undefined> =>
  Effect.gen(function*() {
    const failure = PgConnectError.classify(error)
    if (!PgConnectError.isTlsFailure(failure)) return undefined
    const reason = reasonOf[failure]
    const server = tls.target === undefined ? "Postgres" : `Postgres at ${tls.target.host}:${tls.target.port}`
    const mode = tls.mode ?? "(none)"
    const fields = { reason, cause: error, ...(tls.target === undefined ? {} : { server: `${tls.target.host}:${tls.target.port}` }) }
    const root = tls.params.sslrootcert
    switch (failure) {
      case "server without tls":
        return new PgTlsError({ ...fields, message: `${server} does not support TLS, and sslmode=${mode} requires it` })
      case "tls required":
        return new PgTlsError({
          ...fields,
          message: `${server} accepts no unencrypted connection (pg_hba.conf has no entry without TLS) and sslmode=${mode}: use sslmode=require or stronger`
        })
      case "client certificate": {
        const given = tls.params.sslcert === undefined ? "give one with sslcert and sslkey" : `the one given (sslcert ${tls.params.sslcert}) was not accepted`
        return new PgTlsError({ ...fields, message: `${server} requires a client certificate it trusts: ${given}` })
      }
      case "certificate untrusted":
      case "host name mismatch":
      case "certificate expired": {
        const detail = tlsDetail(error)
        const cert = detail.cert !== undefined
          ? describeCertificate(detail.cert)
          : tls.target === undefined
          ? undefined
          : yield* peerCertificate(tls.target)
        const named = cert === undefined ? {} : { subject: cert.subject, issuer: cert.issuer }
        const about = cert === undefined ? "" : ` (subject ${cert.subject}; issuer ${cert.issuer})`
        const why = detail.message === undefined ? "" : `: ${detail.message}`
        const message = failure === "certificate untrusted"
          ? `the certificate of ${server} is not trusted${about}${why}; ${
            root === undefined
              ? "give its CA as sslrootcert, or use sslmode=require to encrypt without checking it"
              : `it does not chain to sslrootcert ${root}`
          }`
          : failure === "host name mismatch"
          ? `the certificate of ${server} does not name ${tls.target?.host ?? "the host"}${about}${
            cert?.altNames === undefined ? "" : `, it names ${cert.altNames}`
          }; connect by a name it carries, or use sslmode=verify-ca to check only the chain`
          : `the certificate of ${server} has expired or is not yet valid${about}${
            cert === undefined ? "" : `, valid from ${cert.validFrom} to ${cert.validTo}`
          }${why}`
        return new PgTlsError({ ...fields, ...named, message })
      }
    }
  })
