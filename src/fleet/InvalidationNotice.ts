/**
 * The invalidation notice peers send each other over Postgres: on the
 * {@link channel}, with the payload `<kind>:<hash>:<origin>[:<source>]`, where `kind` is `k`
 * (one module, `hash` its key hash) or `r` (a realm, `hash` its realm hash), `origin` the
 * sender, so that a process ignores its own notices, and `source` the source hash an edit's
 * notice names (64 hex digits, or `gone`): a peer keeps a module that holds it. At most about
 * 100 bytes, far below NOTIFY's 8000. The polled log stores the same fields.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import type { InvalidationEvent } from "../domain/Invalidations.ts"

/** The channel of invalidations. */
export const channel = "module_transpile_cache_invalidated"

/** What a notice invalidates: `k` one module, `r` a whole realm. */
export type Kind = "k" | "r"

/** A fresh origin: the sender's id in its notices. */
export const makeOrigin = (): string => randomBytes(6).toString("hex")

/** The payload of a notice. */
export const encode = (kind: Kind, hash: bigint, origin: string, sourceHash?: string): string =>
  sourceHash === undefined ? `${kind}:${hash}:${origin}` : `${kind}:${hash}:${origin}:${sourceHash}`

/** Whether a notice's source field is one this version sends (anything else is ignored: the notice then drops all). */
const isSourceHash = (text: string): boolean => /^(?:[0-9a-f]{64}|gone)$/.test(text)

/** A hash (a lock key or realm hash) from its decimal text; undefined when malformed. */
export const parseHash = (text: string): bigint | undefined => {
  try {
    return BigInt(text)
  } catch {
    return undefined
  }
}

/**
 * The event of a notice's kind, hash and source; undefined for an unknown kind. A source that
 * is not a source hash is left out: the event then drops the module whatever it holds.
 */
export const eventOf = (
  kind: string | undefined,
  hash: bigint,
  sourceHash?: string | null | undefined
): InvalidationEvent | undefined => {
  if (kind === "r") return { _tag: "Realm", hash }
  if (kind !== "k") return undefined
  return sourceHash !== undefined && sourceHash !== null && isSourceHash(sourceHash)
    ? { _tag: "Key", hash, sourceHash }
    : { _tag: "Key", hash }
}

/** The event of a payload; undefined when it is malformed or was sent by `origin` (this process). */
export const decode = (payload: string, origin: string): InvalidationEvent | undefined => {
  const [kind, hashText, from, sourceHash] = payload.split(":")
  const hash = hashText === undefined ? undefined : parseHash(hashText)
  if (hash === undefined || from === origin) return undefined
  return eventOf(kind, hash, sourceHash)
}
