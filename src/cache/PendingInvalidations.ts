/**
 * Keys and realms whose L2 tombstone or wipe is not committed yet. L2 may still hold their
 * old rows, so reads of them bypass L2 (and a preload leaves them out) until it commits.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { keyString, type ModuleKey } from "../domain/Domain.ts"

const bump = (map: Map<string, number>, id: string, by: number) => {
  const next = (map.get(id) ?? 0) + by
  if (next === 0) map.delete(id)
  else map.set(id, next)
}

const whilePending = <A, E, R>(map: Map<string, number>, id: string, effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => bump(map, id, 1)),
    () => effect,
    () => Effect.sync(() => bump(map, id, -1))
  )

/** The pending tombstones and wipes of one ModuleCache. */
export class PendingInvalidations {
  /** Counts by key id (`keyString`) and by realm URL: invalidations of one may overlap. */
  private readonly keys = new Map<string, number>()
  private readonly realms = new Map<string, number>()

  /** Runs `tombstone` with the key pending. */
  tombstoning<A, E, R>(key: ModuleKey, tombstone: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return whilePending(this.keys, keyString(key), tombstone)
  }

  /** Runs `wipe` with the realm pending. */
  wiping<A, E, R>(realmUrl: string, wipe: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return whilePending(this.realms, realmUrl, wipe)
  }

  /** Whether the key's tombstone, or its realm's wipe, is pending. */
  covers(key: ModuleKey): boolean {
    return this.keys.has(keyString(key)) || this.realms.has(key.realmUrl)
  }

  /** {@link covers} as of now, frozen (later invalidations are not seen). */
  snapshot(): (key: ModuleKey) => boolean {
    const keys = new Set(this.keys.keys())
    const realms = new Set(this.realms.keys())
    return (key) => keys.has(keyString(key)) || realms.has(key.realmUrl)
  }
}
