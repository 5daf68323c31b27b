/**
 * The local subscribers of an Invalidations service: handlers registered for the life of a
 * scope, each called synchronously, in the order they subscribed, with every event
 * delivered.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { InvalidationEvent, InvalidationHandler } from "../domain/Invalidations.ts"

/** The subscribers of one Invalidations service. */
export interface Subscribers {
  /** Calls every handler with `event`, now. */
  readonly deliver: (event: InvalidationEvent) => void
  /** Registers `handler` for the life of the scope (the service's `subscribe`). */
  readonly subscribe: (handler: InvalidationHandler) => Effect.Effect<void, never, Scope.Scope>
}

/** Makes an empty set of subscribers. */
export const make = (): Subscribers => {
  // One entry per subscription, so that a handler subscribed twice hears every event twice.
  const entries = new Set<{ readonly handler: InvalidationHandler }>()
  return {
    deliver: (event) => {
      for (const entry of entries) entry.handler(event)
    },
    subscribe: (handler) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const entry = { handler }
          entries.add(entry)
          return entry
        }),
        (entry) => Effect.sync(() => entries.delete(entry))
      ).pipe(Effect.asVoid)
  }
}
