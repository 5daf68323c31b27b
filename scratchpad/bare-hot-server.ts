/**
 * The baseline of the hot-path benchmark: a bare node:http server answering every request
 * with the given bytes and exactly the given headers (a JSON object of name to value, as
 * `serve` sent them), and `304` with the same headers minus content type and length when
 * `If-None-Match` equals the ETag. Prints `listening on http://127.0.0.1:PORT/`.
 * Run: node scratchpad/bare-hot-server.ts BODY_FILE HEADERS_JSON_FILE
 */
import { readFileSync } from "node:fs"
import { createServer } from "node:http"

const body = readFileSync(process.argv[2] ?? "/dev/null")
const headers = JSON.parse(readFileSync(process.argv[3] ?? "/dev/null", "utf8")) as Record<string, string>
const etag = headers["etag"] ?? ""
const ok = Object.entries(headers).flat()
const notModified = Object.entries(headers).filter(([name]) => name !== "content-type" && name !== "content-length").flat()
const server = createServer((request, response) => {
  if (request.headers["if-none-match"] === etag) {
    response.writeHead(304, notModified)
    response.end()
  } else {
    response.writeHead(200, ok)
    response.end(body)
  }
})
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  console.log(`listening on http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/`)
})
process.on("SIGTERM", () => server.close(() => process.exit(0)))
