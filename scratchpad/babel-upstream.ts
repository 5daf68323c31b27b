/**
 * An uncached Babel upstream for the nginx comparison of bench-workers.ts: every GET of
 * `/<name>` reads `<realmDir>/<name>` and runs the in-process transpiler on it, on this one
 * event loop. `GET /_count` answers how many transpiles ran.
 * Run: npx node scratchpad/babel-upstream.ts <realmDir> <port>
 */
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import * as http from "node:http"
import { join } from "node:path"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"

const [realmDir, port] = process.argv.slice(2)
if (realmDir === undefined || port === undefined) throw new Error("usage: babel-upstream.ts <realmDir> <port>")
const transpiler = Effect.runSync(BabelTranspiler.make())
let count = 0

http.createServer((request, response) => {
  const name = (request.url ?? "/").slice(1)
  if (name === "_count") {
    response.end(String(count))
    return
  }
  count++
  const exit = Effect.runSyncExit(transpiler.transpile({ path: name, source: readFileSync(join(realmDir, name), "utf8") }))
  if (exit._tag === "Success") {
    response.writeHead(200, { "content-type": "text/javascript; charset=utf-8" })
    response.end(exit.value.body)
  } else {
    response.writeHead(500)
    response.end("transpile failed")
  }
}).listen(Number(port), "127.0.0.1")
