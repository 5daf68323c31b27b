/**
 * The invalidation notice peers send each other over Postgres: on the
 * {@link channel}, with the payload `<kind>:<hash>:<origin>`, where `kind` is `k` (one
 * module, `hash` its lock key) or `r` (a realm, `hash` its realm hash) and `origin` the
 * sender, so that a process ignores its own notices. The polled log stores the same three
 * fields.
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
export const encode = (kind: Kind, hash: bigint, origin: string): string => `${kind}:${hash}:${origin}`

/** A hash (a lock key or realm hash) from its decimal text; undefined when malformed. */
export const parseHash = (text: string): bigint | undefined => {
  try {
    return BigInt(text)
  } catch {
    return undefined
  }
}

/** The event of a notice's kind and hash; undefined for an unknown kind. */
export const eventOf = (kind: string | undefined, hash: bigint): InvalidationEvent | undefined =>
  kind === "k" ? { _tag: "Key", hash } : kind === "r" ? { _tag: "Realm", hash } : undefined

/** The event of a payload; undefined when it is malformed or was sent by `origin` (this process). */
export const decode = (payload: string, origin: string): InvalidationEvent | undefined => {
  const [kind, hashText, from] = payload.split(":")
  const hash = hashText === undefined ? undefined : parseHash(hashText)
  if (hash === undefined || from === origin) return undefined
  return eventOf(kind, hash)
}
