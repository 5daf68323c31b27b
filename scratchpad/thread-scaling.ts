/**
 * How far this machine scales work from 1 to 2 threads, for a pure compute loop and for an
 * allocation-heavy one (small objects built and dropped, like a compiler's), in bare
 * `worker_threads`: the ceiling of `warm`'s 2-workers / 1-worker ratio with Babel.
 *
 * Run: `npx node scratchpad/thread-scaling.ts`, and again with `npx node --single-threaded-gc
 * scratchpad/thread-scaling.ts` to see the garbage collector's share.
 */
import { Worker } from "node:worker_threads"

const compute = `
const { parentPort } = require("node:worker_threads")
let x = 0
for (let i = 0; i < 4e8; i++) x = (x * 31 + i) | 0
parentPort.postMessage(x)
`

const allocating = `
const { parentPort } = require("node:worker_threads")
let kept = 0
for (let r = 0; r < 300; r++) {
  const nodes = []
  for (let i = 0; i < 20000; i++) {
    nodes.push({ type: "Node" + (i % 7), start: i, end: i + 1, children: [{ v: i }, { v: r }], name: "n" + i })
  }
  kept += nodes.filter((n) => n.start % 3 === 0).map((n) => ({ ...n, name: n.name + "!" })).length
}
parentPort.postMessage(kept)
`

/** Milliseconds for `threads` workers running `code` at once. */
const run = (code: string, threads: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    let done = 0
    for (let i = 0; i < threads; i++) {
      new Worker(code, { eval: true }).on("error", reject).on("message", () => {
        if (++done === threads) resolve(performance.now() - started)
      })
    }
  })

for (const [name, code] of [["compute", compute], ["allocation-heavy", allocating]] as const) {
  for (let round = 0; round < 3; round++) {
    const one = await run(code, 1)
    const two = await run(code, 2)
    console.log(
      `${name}: 1 thread ${one.toFixed(0)} ms, 2 threads (twice the work) ${two.toFixed(0)} ms: ` +
        `${((2 * one) / two).toFixed(2)}x`
    )
  }
}
