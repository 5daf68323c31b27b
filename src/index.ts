/**
 * module-transpile-cache: a fleet-wide transpile cache for realm modules, on Effect 4.
 *
 * Provide `ModuleCacheLive.layer(store)` (with a `Transpiler` and your `ModuleSources`) to
 * your server, or swap in the memory layers in tests. See the README.
 *
 * @since 0.1.0
 */
export * as AdminToken from "./AdminToken.ts"
export * as BabelTranspiler from "./BabelTranspiler.ts"
export * as Coordinator from "./Coordinator.ts"
export * as Domain from "./Domain.ts"
export * as Errors from "./Errors.ts"
export * as FileSystemSources from "./FileSystemSources.ts"
export * as Invalidations from "./Invalidations.ts"
export * as MemoryFleet from "./MemoryFleet.ts"
export * as MemoryTranspileStore from "./MemoryTranspileStore.ts"
export * as ModuleCache from "./ModuleCache.ts"
export * as ModuleCacheLive from "./ModuleCacheLive.ts"
export * as ModuleSources from "./ModuleSources.ts"
export * as PgFleet from "./PgFleet.ts"
export * as PgliteClient from "./PgliteClient.ts"
export * as Pruner from "./Pruner.ts"
export * as RealmServer from "./RealmServer.ts"
export * as SqlTranspileStore from "./SqlTranspileStore.ts"
export * as TestTranspiler from "./TestTranspiler.ts"
export * as Tracing from "./Tracing.ts"
export * as Transpiler from "./Transpiler.ts"
export * as TranspileStore from "./TranspileStore.ts"
