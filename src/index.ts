/**
 * module-transpile-cache: a fleet-wide transpile cache for realm modules, on Effect 4.
 *
 * Provide `ModuleCacheLive.layer(store)` (with a `Transpiler` and your `ModuleSources`) to
 * your server. The test doubles (memory layers, `TestTranspiler`) are in
 * `module-transpile-cache/testing` (`./testing.ts`). See the README.
 *
 * @since 0.1.0
 */
import "./internal/requireNode.ts"

export * as AdminToken from "./AdminToken.ts"
export * as BabelTranspiler from "./BabelTranspiler.ts"
export * as Coordinator from "./Coordinator.ts"
export * as DatabaseConnections from "./DatabaseConnections.ts"
export * as Domain from "./Domain.ts"
export * as Errors from "./Errors.ts"
export * as FastPath from "./FastPath.ts"
export * as FileSystemSources from "./FileSystemSources.ts"
export * as Invalidations from "./Invalidations.ts"
export * as ModuleCache from "./ModuleCache.ts"
export * as ModuleCacheLive from "./ModuleCacheLive.ts"
export * as ModuleSources from "./ModuleSources.ts"
export * as PgFleet from "./PgFleet.ts"
export * as PgliteClient from "./PgliteClient.ts"
export * as PgSession from "./PgSession.ts"
export * as Preload from "./Preload.ts"
export * as Pruner from "./Pruner.ts"
export * as RawFileCache from "./RawFileCache.ts"
export * as RealmServer from "./RealmServer.ts"
export * as SqlTranspileStore from "./SqlTranspileStore.ts"
export * as Tracing from "./Tracing.ts"
export * as Transpiler from "./Transpiler.ts"
export * as TranspilerPool from "./TranspilerPool.ts"
export * as TranspileStore from "./TranspileStore.ts"
