/**
 * The ModuleCache service: the facade of the read path (L1, single-flight, L2, coalescing).
 *
 * @since 0.1.0
 */
import { Context, Effect } from "effect"
import type { GetResult, ModuleKey } from "./Domain.ts"
import type { GetError } from "./Errors.ts"

/** Counters of one ModuleCache instance. */
export interface CacheStats {
  /** Babel runs in this process. */
  readonly transpiles: number
  readonly l1Hits: number
  readonly l2Hits: number
  readonly coalesced: number
  readonly fallbacks: number
  readonly errors: number
  readonly persistFailures: number
  readonly l1Bytes: number
  readonly l1Entries: number
  readonly inFlight: number
  readonly store: string
  readonly coordinator: string
}

/** The transpile cache. */
export class ModuleCache extends Context.Service<ModuleCache, {
  /** The transpiled module, from the fastest layer that holds it. */
  readonly get: (key: ModuleKey) => Effect.Effect<GetResult, GetError>
  /** Drops a module here, tombstones its L2 row and tells peers. */
  readonly invalidate: (key: ModuleKey) => Effect.Effect<void>
  /** Drops a whole realm here, wipes it from L2 and tells peers. */
  readonly invalidateRealm: (realmUrl: string) => Effect.Effect<void>
  readonly stats: Effect.Effect<CacheStats>
}>()("module-transpile-cache/ModuleCache") {}
