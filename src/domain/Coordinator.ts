/**
 * The Coordinator service: fleet-wide "only one of us transpiles this key", plus wake-ups.
 *
 * The read path registers a {@link Waiter} **before** it tries the lock, so that a winner
 * that finishes in between always wakes it.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { VersionedKey } from "./Domain.ts"

/** The coordinator could not take part (its lock session is down, say); the caller falls back. */
export class CoordinatorError extends Schema.TaggedError<CoordinatorError>()("CoordinatorError", {
  message: Schema.String,
  /** What failed underneath (a `SqlError`, a timeout). */
  cause: Schema.optional(Schema.Defect())
}) {}

/** A registered waiter of one key. */
export interface Waiter {
  /**
   * Completes at the next wake-up (a "populated" notice for the key, or a wake of every
   * waiter after a reconnect). A wake-up that arrived since the last call counts.
   */
  readonly wake: Effect.Effect<void>
}

/**
 * Fleet-wide coalescing, per {@link VersionedKey}: two versions of the server (two pipeline
 * fingerprints) on one database take different locks and wake different waiters, so neither
 * waits on the other.
 */
export class Coordinator extends Context.Service<Coordinator, {
  readonly kind: "postgres" | "memory" | "none"
  /** Registers a waiter for the key for the life of the scope. */
  readonly register: (key: VersionedKey) => Effect.Effect<Waiter, never, Scope.Scope>
  /** Tries to become the key's transpiler. `true` means the caller holds the lock until `unlock`. */
  readonly tryLock: (key: VersionedKey) => Effect.Effect<boolean, CoordinatorError>
  /** Releases a lock taken with `tryLock`. */
  readonly unlock: (key: VersionedKey) => Effect.Effect<void>
  /** Tells every waiter of the key that its row (or recorded failure) is committed. */
  readonly notifyPopulated: (key: VersionedKey) => Effect.Effect<void>
  /**
   * Whether no peer can be waiting for this process's rows right now: there is no fleet, or
   * this process is its only member (solo mode). While it is, L2 writes may wait for a quiet
   * moment (see `ModuleCacheOptions.l2WriteHold`). Absent means a peer may be waiting.
   */
  readonly solo?: (() => boolean) | undefined
}>()("module-transpile-cache/Coordinator") {}

/** A coordinator for a single process: every lock is granted, no one ever waits. */
export const none: Coordinator["Service"] = Coordinator.of({
  kind: "none",
  register: () => Effect.succeed({ wake: Effect.never }),
  tryLock: () => Effect.succeed(true),
  unlock: () => Effect.void,
  notifyPopulated: () => Effect.void,
  solo: () => true
})

/** The layer of {@link none}. */
export const layerNone: Layer.Layer<Coordinator> = Layer.succeed(Coordinator, none)
