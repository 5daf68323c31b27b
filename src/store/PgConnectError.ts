/**
 * Names the cause of a failed Postgres connection, so that an operator reads "connection
 * refused" or "authentication failed" rather than a bare "failed to connect". A pure
 * function over the error and its chain of causes (`reason`, `cause`, `error`, `errors`).
 *
 * @since 0.1.0
 */

/** Why a connection to Postgres failed. */
type ConnectFailure = "refused" | "unknown database" | "authentication" | "timeout" | "unknown host"

/** The SQLSTATE codes and system error codes of each cause. */
const byCode: Readonly<Record<string, ConnectFailure>> = {
  ECONNREFUSED: "refused",
  ECONNRESET: "refused",
  "3D000": "unknown database",
  "28P01": "authentication",
  "28000": "authentication",
  ETIMEDOUT: "timeout",
  ENOTFOUND: "unknown host",
  EAI_AGAIN: "unknown host"
}

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
