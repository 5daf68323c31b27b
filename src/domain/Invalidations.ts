/**
 * The Invalidations service: tells peers to drop L1 entries, and hears theirs.
 *
 * A peer matches a notice's hashes against its own L1. An edit's notice also names the source
 * hash that now stands, so that a peer keeps what already holds it, and the module's realm
 * hash and path, so that the peer's live event streams can name what changed.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { ModuleKey } from "./Domain.ts"

/** The realm (by its hash, see `Domain.realmHash`) and the canonical path of a module a notice names. */
export interface ModulePlace {
  readonly realmHash: bigint
  readonly path: string
}

/** An invalidation heard from a peer. */
export type InvalidationEvent =
  /**
   * Drop the module whose key hash is `hash`, unless it holds the source `sourceHash` (an
   * edit's, see `ModuleCache.invalidate`); with no `sourceHash`, drop it whatever it holds.
   */
  | {
    readonly _tag: "Key"
    readonly hash: bigint
    readonly sourceHash?: string | undefined
    /** Where the module is, when the notice named it (for the live event streams, see `ChangeFeed`). */
    readonly place?: ModulePlace | undefined
  }
  /** Drop every module of the realm whose realm hash is `hash`. */
  | { readonly _tag: "Realm"; readonly hash: bigint }
  /** Invalidations may have been missed (a reconnect): drop all of L1. */
  | { readonly _tag: "Flush" }

/**
 * A subscriber's handler. It is called synchronously, where the event arrives (before the
 * notice that carried it is acted on further, and, in a memory fleet, before the peer's
 * `publish` returns), so it must be quick and must not throw: drop L1 entries, no I/O.
 */
export type InvalidationHandler = (event: InvalidationEvent) => void

/** Peer invalidation. */
export class Invalidations extends Context.Service<Invalidations, {
  readonly kind: "postgres" | "memory" | "none"
  /** Tells peers to drop a module, unless it holds `sourceHash` (when named). */
  readonly publishKey: (key: ModuleKey, sourceHash?: string) => Effect.Effect<void>
  readonly publishRealm: (realmUrl: string) => Effect.Effect<void>
  /**
   * Calls `handler` with every event from peers (never this instance's own) for the life of
   * the scope. The handler is registered before this effect returns.
   */
  readonly subscribe: (handler: InvalidationHandler) => Effect.Effect<void, never, Scope.Scope>
}>()("module-transpile-cache/Invalidations") {}

/** No peers. */
export const none: Invalidations["Service"] = Invalidations.of({
  kind: "none",
  publishKey: () => Effect.void,
  publishRealm: () => Effect.void,
  subscribe: () => Effect.void
})

/** The layer of {@link none}. */
export const layerNone: Layer.Layer<Invalidations> = Layer.succeed(Invalidations, none)
