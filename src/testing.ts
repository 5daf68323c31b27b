/**
 * module-transpile-cache/testing: the test doubles, for a consumer's own tests.
 *
 * - `MemoryTranspileStore.layer`: L2 in memory.
 * - `MemoryFleet.layer(fleet)`: several caches on one fleet behave like processes sharing a
 *   database (coordinator and peer invalidations in memory).
 * - `TestTranspiler`: counts calls and can be held at a gate.
 * - `ModuleSources.layerMemory` (in the main barrel's `ModuleSources`) serves sources from memory.
 *
 * @since 0.1.0
 */
import "./internal/requireNode.ts"

export * as MemoryFleet from "./fleet/MemoryFleet.ts"
export * as MemoryTranspileStore from "./store/MemoryTranspileStore.ts"
export * as TestTranspiler from "./transpiler/TestTranspiler.ts"
