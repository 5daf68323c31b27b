/**
 * A transpile worker entry for fault tests: the real worker (`TranspileWorker.serve`), with
 * markers in the source that make it misbehave. Every job announces its path on the
 * `mtc-fault-worker` BroadcastChannel as it starts, and a `__HOLD__` job waits until a
 * `release` is broadcast on that channel, so that tests order events without timing.
 *
 * - `__CRASH__`: an uncaught exception in the worker
 * - `__EXIT__`: the worker thread exits with code 3
 * - `__HANG__`: a busy loop that never ends
 * - `__HOG__`: allocates until the worker's heap limit is exceeded
 * - `__HOLD__`: waits for `release`, then transpiles normally
 */
import { BroadcastChannel } from "node:worker_threads"
import { serve } from "../../src/transpiler/TranspileWorker.ts"

const channel = new BroadcastChannel("mtc-fault-worker")
channel.unref()
let releases: Array<() => void> = []
channel.onmessage = (event: { readonly data: unknown }) => {
  if (event.data === "release") {
    for (const release of releases) release()
    releases = []
  }
}

void serve((handler) => async (input) => {
  channel.postMessage(`started:${input.path}`)
  const source = input.source
  if (source.includes("__CRASH__")) {
    setImmediate(() => {
      throw new Error("injected crash")
    })
    return new Promise(() => {})
  }
  if (source.includes("__EXIT__")) process.exit(3)
  if (source.includes("__HANG__")) {
    for (;;) {
      // never yields: only terminating the thread ends it
    }
  }
  if (source.includes("__HOG__")) {
    const hoard: Array<Array<number>> = []
    for (;;) hoard.push(Array.from({ length: 100_000 }, (_, i) => i * 1.5))
  }
  if (source.includes("__HOLD__")) await new Promise<void>((resolve) => releases.push(resolve))
  return handler(input)
})
