/**
 * Babel transpile cost per KiB of source, for `.ts` and `.gts`, through the
 * BabelTranspiler service (content-tag, TypeScript strip, decorators, dependency scan).
 *
 * Standalone: `npx node scratchpad/bench-babel.ts`. A combined bench imports `benchBabel`.
 */
import { Effect } from "effect"
import { resolve } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"

/** One line of bench output. */
export interface BenchRow {
  readonly name: string
  readonly value: string
}

const tsBlock = (i: number): string => decoratedTsBlock(i).replace(/^.*@tracked.*\n|^import \{ tracked.*\n/gm, "")

/** TypeScript with one field decorator per class, as card modules have: each decorated module also gets Babel's inlined `applyDecs` helper. */
const decoratedTsBlock = (i: number): string => `
import type { Shape${i} } from "./shapes/${i}.ts"
import { tracked as tracked${i} } from "@glimmer/tracking"

export interface Item${i}<T> {
  readonly id: number
  readonly value: T
  readonly tags: ReadonlyArray<string>
}

export type Pair${i}<A, B> = readonly [A, B]

export class Store${i}<T extends { id: number }> {
  declare readonly shape: Shape${i}
  @tracked${i} count: number = 0
  #items: Map<number, T> = new Map()

  add(item: T): this {
    this.#items.set(item.id, item)
    this.count = this.#items.size
    return this
  }

  find(id: number): T | undefined {
    return this.#items.get(id)
  }

  pairs<B>(f: (t: T) => B): Array<Pair${i}<T, B>> {
    return [...this.#items.values()].map((t) => [t, f(t)] as const)
  }
}

export function sum${i}(xs: ReadonlyArray<number>): number {
  return xs.reduce((a: number, b: number) => a + b, 0)
}
`

const gtsBlock = (i: number): string => `
import Component${i} from "@glimmer/component"

interface Signature${i} {
  Args: { title: string; items: ReadonlyArray<{ id: number; label: string }> }
}

export class List${i} extends Component${i}<Signature${i}> {
  get total(): number {
    return this.args.items.length
  }

  <template>
    <section class="list-${i}">
      <h2>{{@title}} ({{this.total}})</h2>
      <ul>
        {{#each @items as |item|}}
          <li data-id={{item.id}}>{{item.label}}</li>
        {{/each}}
      </ul>
    </section>
  </template>
}
`

/** Repeats numbered blocks until the source reaches `bytes`. */
const generate = (block: (i: number) => string, bytes: number): string => {
  let source = ""
  for (let i = 0; Buffer.byteLength(source) < bytes; i++) source += block(i)
  return source
}

const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const sizesKiB = [1, 16, 64] as const

const runsFor = (kib: number): number => (kib <= 1 ? 61 : kib <= 16 ? 21 : 11)

/** Measures the transpile cost of generated `.ts` and `.gts` sources of about 1, 16 and 64 KiB. */
export const benchBabel = async (): Promise<Array<BenchRow>> => {
  const rows: Array<BenchRow> = []
  const transpiler = await Effect.runPromise(BabelTranspiler.make())
  const transpile = (path: string, source: string): number => {
    const start = performance.now()
    Effect.runSync(transpiler.transpile({ path, source }))
    return performance.now() - start
  }

  const kinds = [
    { label: ".ts", ext: ".ts", block: tsBlock },
    { label: ".ts+decorators", ext: ".ts", block: decoratedTsBlock },
    { label: ".gts", ext: ".gts", block: gtsBlock }
  ] as const

  // first call of each kind: plugin loading, and for .gts the content-tag WASM start-up
  for (const { label, ext, block } of kinds) {
    rows.push({ name: `babel ${label} cold first call (1 KiB)`, value: `${transpile(`cold${ext}`, generate(block, 1024)).toFixed(2)} ms` })
  }

  for (const { label, ext, block } of kinds) {
    const perKiB: Array<number> = []
    const points: Array<{ readonly kib: number; readonly ms: number }> = []
    for (const kib of sizesKiB) {
      const source = generate(block, kib * 1024)
      const actualKiB = Buffer.byteLength(source) / 1024
      // warm up until the JIT settles: at least 10 runs and 500 ms
      const warmUntil = performance.now() + 500
      for (let i = 0; i < 10 || performance.now() < warmUntil; i++) transpile(`warm${ext}`, source)
      const times: Array<number> = []
      for (let i = 0; i < runsFor(kib); i++) times.push(transpile(`bench${ext}`, source))
      const ms = median(times)
      perKiB.push(ms / actualKiB)
      points.push({ kib: actualKiB, ms })
      rows.push({
        name: `babel ${label} ${kib} KiB (median of ${times.length})`,
        value: `${ms.toFixed(2)} ms, ${(ms / actualKiB).toFixed(3)} ms/KiB`
      })
    }
    rows.push({ name: `babel ${label} cost per KiB (at 64 KiB)`, value: `${perKiB[perKiB.length - 1]!.toFixed(3)} ms/KiB` })
    // the slope between 1 and 64 KiB: the per-KiB cost without the fixed cost of a call
    const first = points[0]!
    const last = points[points.length - 1]!
    rows.push({
      name: `babel ${label} marginal cost per KiB (1 to 64 KiB)`,
      value: `${((last.ms - first.ms) / (last.kib - first.kib)).toFixed(3)} ms/KiB`
    })
  }
  return rows
}

const isMain = import.meta.main ?? (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url))

if (isMain) {
  const rows = await benchBabel()
  const width = Math.max(...rows.map((r) => r.name.length))
  for (const row of rows) console.log(`${row.name.padEnd(width)}  ${row.value}`)
}
