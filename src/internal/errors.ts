/** The `code` of a Node.js system error (`ENOENT`, `EEXIST`, ...), if it has one. */
export const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/**
 * A one-line message for any thrown value: an `Error`'s (or error-like object's) `message`,
 * a string as it is, anything else through `String`; never throws.
 */
export const messageOf = (cause: unknown): string => {
  try {
    if (typeof cause === "string") return cause
    if (typeof cause === "object" && cause !== null && "message" in cause && typeof cause.message === "string") {
      return cause.message
    }
    return String(cause)
  } catch {
    return "unknown error"
  }
}
