/**
 * A preload for `scratchpad/memory-breakdown.ts` (`NODE_OPTIONS=--import <this file>`, with
 * `MTC_MEMORY_BREAKDOWN_DIR` set): in every thread of the process, the main thread and each
 * worker, it writes that thread's heap figures to `<dir>/<pid>-<threadId>.json` every 250 ms.
 * It changes nothing else.
 */
import { renameSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { getHeapSpaceStatistics, getHeapStatistics } from "node:v8"
import { isMainThread, threadId } from "node:worker_threads"

const dir = process.env.MTC_MEMORY_BREAKDOWN_DIR
if (dir !== undefined && dir !== "") {
  const file = path.join(dir, `${process.pid}-${threadId}.json`)
  const write = () => {
    const usage = process.memoryUsage()
    const heap = getHeapStatistics()
    const temporary = `${file}.tmp`
    writeFileSync(temporary, JSON.stringify({
      threadId,
      main: isMainThread,
      heapUsed: usage.heapUsed,
      heapTotal: usage.heapTotal,
      external: usage.external,
      arrayBuffers: usage.arrayBuffers,
      physical: heap.total_physical_size,
      mallocedMemory: heap.malloced_memory,
      rss: usage.rss,
      spaces: Object.fromEntries(getHeapSpaceStatistics().map((space) => [space.space_name, space.physical_space_size])),
      at: Date.now()
    }))
    renameSync(temporary, file)
  }
  write()
  setInterval(write, 250).unref()
}
