/**
 * An L1 hit through ModuleCache.get against a bare Map.get, in the same run.
 * Run: npx node scratchpad/bench-l1.ts
 */
import { Effect, Layer } from "effect"
import * as Coordinator from "../src/domain/Coordinator.ts"
import { keyString, moduleKey } from "../src/domain/Domain.ts"
import * as Invalidations from "../src/domain/Invalidations.ts"
import * as MemoryTranspileStore from "../src/store/MemoryTranspileStore.ts"
import { ModuleCache } from "../src/cache/ModuleCache.ts"
import * as ModuleCacheModule from "../src/cache/ModuleCache.ts"
import * as ModuleSources from "../src/domain/ModuleSources.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"

export interface BenchRow {
  readonly name: string
  readonly value: string
}

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? 0
}

/** ns per operation of `run(n)`, median over rounds. */
export const nsPerOp = (n: number, rounds: number, run: (n: number) => void): number => {
  run(n) // warm up
  const samples: Array<number> = []
  for (let r = 0; r < rounds; r++) {
    const started = process.hrtime.bigint()
    run(n)
    samples.push(Number(process.hrtime.bigint() - started) / n)
  }
  return median(samples)
}

export const benchL1 = async (): Promise<Array<BenchRow>> => {
  const key = moduleKey("https://bench.test/", "a.ts")
  const sources = ModuleSources.makeMemory([[key, "export const a: number = 1\n".repeat(50)]])
  const layer = ModuleCacheModule.layer().pipe(
    Layer.provide(Layer.mergeAll(
      MemoryTranspileStore.layer,
      Coordinator.layerNone,
      Invalidations.layerNone,
      ModuleSources.layerMemory(sources),
      TestTranspiler.layer(TestTranspiler.make())
    ))
  )
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(layer)
    const cache = context.mapUnsafe.get(ModuleCache.key) as ModuleCache["Service"]
    const warm = yield* cache.get(key)
    const map = new Map([[keyString(key), warm.module]])
    let sink = 0
    const n = 200_000
    const mapNs = nsPerOp(n, 7, (n) => {
      for (let i = 0; i < n; i++) sink += map.get(keyString(key)) === undefined ? 0 : 1
    })
    const loop = (n: number) =>
      Effect.gen(function*() {
        for (let i = 0; i < n; i++) sink += (yield* cache.get(key)).outcome === "l1" ? 1 : 0
      })
    const cacheNs = nsPerOp(n, 7, (n) => Effect.runSync(loop(n)))
    if (sink === 0) throw new Error("unreachable")
    return [
      { name: "L1 hit via ModuleCache.get (ns/op, median of 7)", value: cacheNs.toFixed(0) },
      { name: "bare Map.get (ns/op, median of 7)", value: mapNs.toFixed(0) },
      { name: "L1 hit / Map.get ratio", value: (cacheNs / mapNs).toFixed(1) + "x" }
    ]
  })))
}

if (import.meta.main) {
  console.table(await benchL1())
}
