/** The `code` of a Node.js system error (`ENOENT`, `EEXIST`, ...), if it has one. */
export const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined
