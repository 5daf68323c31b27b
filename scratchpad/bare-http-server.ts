/**
 * The baseline of the HTTP benchmark: a bare node:http server answering every request with
 * the given bytes. Prints `listening on http://127.0.0.1:PORT/` like `serve` does.
 */
import { readFileSync } from "node:fs"
import { createServer } from "node:http"

const body = readFileSync(process.argv[2] ?? "/dev/null")
const server = createServer((_, response) => {
  response.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "content-length": body.length })
  response.end(body)
})
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  console.log(`listening on http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/`)
})
process.on("SIGTERM", () => server.close(() => process.exit(0)))
