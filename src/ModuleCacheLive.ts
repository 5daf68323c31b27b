/**
 * The ModuleCache of a deployment, by store: Postgres brings its coordinator and peer
 * invalidations with it; PGlite and memory run with none.
 *
 * @since 0.1.0
 */
import { Layer, type Redacted } from "effect"
import * as Coordinator from "./Coordinator.ts"
import * as Invalidations from "./Invalidations.ts"
import * as MemoryTranspileStore from "./MemoryTranspileStore.ts"
import * as ModuleCache from "./ModuleCache.ts"
import type { ModuleSources } from "./ModuleSources.ts"
import type { Transpiler } from "./Transpiler.ts"

/** Which L2 a deployment uses. */
export type StoreChoice =
  | { readonly _tag: "postgres"; readonly url: Redacted.Redacted<string>; readonly poolSize?: number }
  | { readonly _tag: "pglite"; readonly dataDir: string | undefined }
  | { readonly _tag: "memory" }

/** A ModuleCache over the chosen store, with the coordinator and invalidations that fit it. */
export const layer = (
  store: StoreChoice,
  options: ModuleCache.ModuleCacheOptions = {}
): Layer.Layer<ModuleCache.ModuleCache, unknown, Transpiler | ModuleSources> => {
  switch (store._tag) {
    case "memory":
      return ModuleCache.layer(options).pipe(
        Layer.provide(Layer.mergeAll(MemoryTranspileStore.layer, Coordinator.layerNone, Invalidations.layerNone))
      )
    default:
      throw new Error(`store ${store._tag} is not wired yet`)
  }
}
