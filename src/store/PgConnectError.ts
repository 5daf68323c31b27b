/**
 * Names the cause of a failed Postgres connection, so that an operator reads "connection
 * refused" or "authentication failed" rather than a bare "failed to connect". A pure
 * function over the error and its chain of causes (`reason`, `cause`, `error`, `errors`).
 * TLS failures are named too: the server without TLS, or demanding it; a certificate not
 * trusted, for another host, or expired; a client certificate required.
 *
 * @since 0.1.0
 */

/** Why a connection to Postgres failed. */
export type ConnectFailure =
  | "refused"
  | "unknown database"
  | "authentication"
  | "timeout"
  | "unknown host"
  | TlsFailure

/** Why a TLS connection to Postgres failed (see {@link PgTls}). */
export type TlsFailure =
  | "server without tls"
  | "tls required"
  | "certificate untrusted"
  | "host name mismatch"
  | "certificate expired"
  | "client certificate"

/** Whether a failure is one of the TLS ones. */
export const isTlsFailure = (failure: ConnectFailure | undefined): failure is TlsFailure =>
  failure !== undefined && tlsFailures.has(failure)

const tlsFailures: ReadonlySet<ConnectFailure> = new Set<TlsFailure>([
  "server without tls",
  "tls required",
  "certificate untrusted",
  "host name mismatch",
  "certificate expired",
  "client certificate"
])

/** The SQLSTATE codes and system error codes of each cause. */
const byCode: Readonly<Record<string, ConnectFailure>> = {
  ECONNREFUSED: "refused",
  ECONNRESET: "refused",
  "3D000": "unknown database",
  "28P01": "authentication",
  "28000": "authentication",
  ETIMEDOUT: "timeout",
  ENOTFOUND: "unknown host",
  EAI_AGAIN: "unknown host",
  // Node's verification of the server's certificate (OpenSSL's X509_V_ERR_* names).
  SELF_SIGNED_CERT_IN_CHAIN: "certificate untrusted",
  DEPTH_ZERO_SELF_SIGNED_CERT: "certificate untrusted",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "certificate untrusted",
  UNABLE_TO_GET_ISSUER_CERT: "certificate untrusted",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "certificate untrusted",
  CERT_UNTRUSTED: "certificate untrusted",
  CERT_SIGNATURE_FAILURE: "certificate untrusted",
  CERT_REJECTED: "certificate untrusted",
  INVALID_CA: "certificate untrusted",
  CERT_HAS_EXPIRED: "certificate expired",
  CERT_NOT_YET_VALID: "certificate expired",
  ERR_TLS_CERT_ALTNAME_INVALID: "host name mismatch",
  // The server's alerts when it wants a client certificate, or does not trust ours.
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: "client certificate",
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: "client certificate",
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: "client certificate",
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN: "client certificate"
}

/**
 * Messages that name a TLS cause more precisely than their SQLSTATE: the server answers
 * both "only TLS here" and "no valid client certificate" with 28000, which alone would read
 * as a credentials problem. Checked before the codes.
 */
const tlsByMessage: ReadonlyArray<readonly [RegExp, TlsFailure]> = [
  [/does not support TLS|Server refused TLS/i, "server without tls"],
  [/no pg_hba\.conf entry .*no encryption/i, "tls required"],
  [/requires a valid client certificate|certificate authentication failed/i, "client certificate"]
]

const byMessage: ReadonlyArray<readonly [RegExp, ConnectFailure]> = [
  [/ECONNREFUSED|connection refused/i, "refused"],
  [/database "[^"]*" does not exist/i, "unknown database"],
  [/password authentication failed|authentication failed|no pg_hba\.conf entry|role "[^"]*" does not exist/i, "authentication"],
  [/timeout|timed out/i, "timeout"],
  [/ENOTFOUND|getaddrinfo/i, "unknown host"]
]

/** The errors of a chain: the error itself, then its causes, breadth first (bounded). */
const chainOf = (error: unknown): ReadonlyArray<object> => {
  const seen = new Set<unknown>()
  const queue: Array<unknown> = [error]
  const found: Array<object> = []
  while (queue.length > 0 && found.length < 32) {
    const next = queue.shift()
    if (typeof next !== "object" || next === null || seen.has(next)) continue
    seen.add(next)
    found.push(next)
    if ("reason" in next) queue.push(next.reason)
    if ("cause" in next) queue.push(next.cause)
    if ("error" in next) queue.push(next.error)
    if ("errors" in next && Array.isArray(next.errors)) queue.push(...next.errors)
  }
  return found
}

/** The cause of a failed connection, when it is one of the known ones. */
export const classify = (error: unknown): ConnectFailure | undefined => {
  const chain = chainOf(error)
  for (const link of chain) {
    if ("message" in link && typeof link.message === "string") {
      for (const [pattern, failure] of tlsByMessage) if (pattern.test(link.message)) return failure
    }
  }
  for (const link of chain) {
    if ("_tag" in link && link._tag === "AuthenticationError") return "authentication"
    if ("code" in link && typeof link.code === "string") {
      const known = byCode[link.code]
      if (known !== undefined) return known
    }
  }
  for (const link of chain) {
    if ("message" in link && typeof link.message === "string") {
      for (const [pattern, failure] of byMessage) if (pattern.test(link.message)) return failure
    }
  }
  return undefined
}

/** A sentence for an operator: what failed, and what to check. */
export const describe = (failure: ConnectFailure): string => {
  switch (failure) {
    case "refused":
      return "Postgres refused the connection (is it running, and on that host and port?)"
    case "unknown database":
      return "Postgres has no such database (check the database name in DATABASE_URL)"
    case "authentication":
      return "Postgres rejected the credentials (check the user and password in DATABASE_URL)"
    case "timeout":
      return "connecting to Postgres timed out (is the host reachable? see MTC_PG_CONNECT_TIMEOUT)"
    case "unknown host":
      return "the Postgres host name does not resolve (check the host in DATABASE_URL)"
    case "server without tls":
      return "the Postgres server does not support TLS (the sslmode asks for it)"
    case "tls required":
      return "Postgres accepts no unencrypted connection (pg_hba.conf has no entry without TLS: use sslmode=require or stronger)"
    case "certificate untrusted":
      return "the Postgres server's certificate is not trusted (give its CA as sslrootcert)"
    case "host name mismatch":
      return "the Postgres server's certificate does not name the host connected to (sslmode=verify-full checks it)"
    case "certificate expired":
      return "the Postgres server's certificate has expired or is not yet valid"
    case "client certificate":
      return "the Postgres server requires a client certificate it trusts (sslcert and sslkey)"
  }
}

/**
 * An error's message, followed by the named cause of a failed connection when it is one
 * (the message of a `StoreError` keeps only this text, so the cause must be named here).
 */
export const messageWithCause = (error: { readonly message: string }): string => {
  const failure = classify(error)
  return failure === undefined ? error.message : `${error.message}: ${describe(failure)}`
}
