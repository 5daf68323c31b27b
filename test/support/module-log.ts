/**
 * A preload (`NODE_OPTIONS=--import <this file>`, with `MTC_MODULE_LOG=<file>`) that appends
 * `<threadId> <url>` to that file for every module a thread of the process loads, through
 * `import` or `require`: the main thread and each worker (preloads run in workers too). It
 * changes nothing else. test/ThreadModules.test.ts reads it.
 */
import { appendFileSync } from "node:fs"
import { registerHooks } from "node:module"
import { threadId } from "node:worker_threads"

const file = process.env["MTC_MODULE_LOG"]
if (file !== undefined && file !== "") {
  const seen = new Set<string>()
  registerHooks({
    resolve: (specifier, context, nextResolve) => {
      const resolved = nextResolve(specifier, context)
      if (!seen.has(resolved.url)) {
        seen.add(resolved.url)
        appendFileSync(file, `${threadId} ${resolved.url}\n`)
      }
      return resolved
    }
  })
}
