/**
 * A preload for `serve` children in memory tests (`NODE_OPTIONS=--import <this file>`, with
 * `MTC_MEMORY_PROBE_DIR` set): on SIGUSR2 it runs a full garbage collection and writes
 * `process.memoryUsage()` to `<dir>/<pid>.json`, so that a test can read the live heap, a
 * steadier leak signal than RSS. It changes nothing else in the process.
 */
import { renameSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

const dir = process.env.MTC_MEMORY_PROBE_DIR
if (dir !== undefined && dir !== "") {
  setFlagsFromString("--expose-gc")
  const gc = runInNewContext("gc") as () => void
  let count = 0
  process.on("SIGUSR2", () => {
    gc()
    const file = path.join(dir, `${process.pid}.json`)
    const temporary = `${file}.tmp`
    writeFileSync(temporary, JSON.stringify({ ...process.memoryUsage(), count: ++count, at: Date.now() }))
    renameSync(temporary, file)
  })
}
