/**
 * module-transpile-cache: a fleet-wide transpile cache for realm modules, on Effect 4.
 *
 * Provide `ModuleCacheLive.layer(store)` (with a `Transpiler` and your `ModuleSources`) to
 * your server. The test doubles (memory layers, `TestTranspiler`) are in
 * `module-transpile-cache/testing` (`./testing.ts`). See the README and docs/library.md.
 *
 * @since 0.1.0
 */
import "./internal/requireNode.ts"

export * as AdminToken from "./http/AdminToken.ts"
export * as BabelTranspiler from "./transpiler/BabelTranspiler.ts"
export * as ChangeFeed from "./cache/ChangeFeed.ts"
export * as Coordinator from "./domain/Coordinator.ts"
export * as DatabaseConnections from "./domain/DatabaseConnections.ts"
export * as Domain from "./domain/Domain.ts"
export * as Errors from "./domain/Errors.ts"
export * as FastPath from "./http/FastPath.ts"
export * as FileSystemSources from "./realm/FileSystemSources.ts"
export * as ImmutableUrls from "./http/ImmutableUrls.ts"
export * as ImportMap from "./http/ImportMap.ts"
export * as Invalidations from "./domain/Invalidations.ts"
export * as LiveEvents from "./http/LiveEvents.ts"
export * as ModuleCache from "./cache/ModuleCache.ts"
export * as ModuleCacheLive from "./live/ModuleCacheLive.ts"
export * as ModuleSources from "./domain/ModuleSources.ts"
export * as PgFleet from "./fleet/PgFleet.ts"
export * as PgliteClient from "./store/PgliteClient.ts"
export * as PgSession from "./fleet/PgSession.ts"
export * as PgTls from "./store/PgTls.ts"
export * as Preload from "./cache/Preload.ts"
export * as Pruner from "./store/Pruner.ts"
export * as RawFileCache from "./realm/RawFileCache.ts"
export * as ReadAccess from "./http/ReadAccess.ts"
export * as Realms from "./realm/Realms.ts"
export * as RealmServer from "./http/RealmServer.ts"
export * as SqlTranspileStore from "./store/SqlTranspileStore.ts"
export * as Tracing from "./live/Tracing.ts"
export * as Transpiler from "./domain/Transpiler.ts"
export * as TranspilerPool from "./transpiler/TranspilerPool.ts"
export * as TranspileStore from "./domain/TranspileStore.ts"
