/**
 * The Node versions the package supports, checked before anything else loads. Effect's
 * platform package needs 22.19; Babel 8 needs 22.18 on the 22 line and 24.11 after it.
 * Keep {@link supportedRange} equal to `engines.node` in package.json.
 *
 * This module imports nothing, so that it loads on any Node and can say what is wrong.
 */

/** The supported range, as in package.json's `engines.node`. */
export const supportedRange = "^22.19.0 || >=24.11.0"

/** Whether `version` (`22.19.0`, with or without a leading `v`) is in {@link supportedRange}. */
export const isSupported = (version: string): boolean => {
  const [major = 0, minor = 0] = version.replace(/^v/, "").split(".").map((part) => Number.parseInt(part, 10))
  if (major === 22) return minor >= 19
  if (major === 24) return minor >= 11
  return major > 24
}

/** The message for an unsupported Node, or `undefined` when this one is supported. */
export const unsupportedMessage = (what: string, version: string = process.versions.node): string | undefined =>
  isSupported(version)
    ? undefined
    : `${what} needs Node ${supportedRange}; this is Node ${version}. Install a supported Node (or run through npx with the "node" package pinned).`
