/**
 * The invalidation notice peers send each other over Postgres: on the
 * {@link channel}, with the payload `<kind>:<hash>:<origin>[:<source>[:<realm>:<path>]]`, where
 * `kind` is `k` (one module, `hash` its key hash) or `r` (a realm, `hash` its realm hash),
 * `origin` the sender, so that a process ignores its own notices, `source` the source hash an
 * edit's notice names (64 hex digits, or `gone`; `-` for none): a peer keeps a module that holds
 * it, and `realm` (the realm hash) and `path` (the canonical path, last, so that it may hold
 * `:`) name the module for the peer's live event streams (see `ChangeFeed`).
 *
 * The path is carried, rather than mapped from the key hash by each peer, because a peer may
 * never have read the module (its streams' pages load modules through other processes), and a
 * hash cannot be reversed. A notice whose path would take it past {@link maxPayloadBytes}
 * (NOTIFY's limit is 8000) goes without realm and path: a peer then drops the module but sends
 * no event for it. An earlier release reads the first four fields only (`-` is no source to it:
 * it drops the module whatever it holds, as the notice means). The polled log stores the same
 * fields, with the path in a column of its own.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import { realmHash } from "../domain/Domain.ts"
import type { InvalidationEvent, ModulePlace } from "../domain/Invalidations.ts"

/** The channel of invalidations. */
export const channel = "module_transpile_cache_invalidated"

/** What a notice invalidates: `k` one module, `r` a whole realm. */
export type Kind = "k" | "r"

/** A fresh origin: the sender's id in its notices. */
export const makeOrigin = (): string => randomBytes(6).toString("hex")

/** The longest payload sent, in UTF-8 bytes: below NOTIFY's 8000, with room to spare. */
export const maxPayloadBytes = 7900

/** The payload of a notice; without the place when it would not fit in {@link maxPayloadBytes}. */
export const encode = (kind: Kind, hash: bigint, origin: string, sourceHash?: string, place?: ModulePlace): string => {
  const head = `${kind}:${hash}:${origin}`
  if (place !== undefined) {
    const full = `${head}:${sourceHash ?? "-"}:${place.realmHash}:${place.path}`
    if (Buffer.byteLength(full) <= maxPayloadBytes) return full
  }
  return sourceHash === undefined ? head : `${head}:${sourceHash}`
}

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
  sourceHash?: string | null | undefined,
  place?: ModulePlace | undefined
): InvalidationEvent | undefined => {
  if (kind === "r") return { _tag: "Realm", hash }
  if (kind !== "k") return undefined
  const known = sourceHash !== undefined && sourceHash !== null && isSourceHash(sourceHash) ? sourceHash : undefined
  return { _tag: "Key", hash, ...(known === undefined ? {} : { sourceHash: known }), ...(place === undefined ? {} : { place }) }
}

/** The event of a payload; undefined when it is malformed or was sent by `origin` (this process). */
export const decode = (payload: string, origin: string): InvalidationEvent | undefined => {
  const [kind, hashText, from, sourceHash, realmText, ...path] = payload.split(":")
  const hash = hashText === undefined ? undefined : parseHash(hashText)
  if (hash === undefined || from === origin) return undefined
  const realm = realmText === undefined ? undefined : parseHash(realmText)
  const place = realm === undefined || path.length === 0 ? undefined : { realmHash: realm, path: path.join(":") }
  return eventOf(kind, hash, sourceHash, place)
}

/** The place of a module key (see {@link encode}). */
export const placeOf = (realmUrl: string, path: string): ModulePlace => ({ realmHash: realmHash(realmUrl), path })
