/**
 * Vite's dev server over a directory of pages, as a front-end developer runs it (`appType:
 * "mpa"`, HMR on, source maps as Vite makes them), for the reload benchmark. No dependency
 * pre-bundling is needed: the graph imports no package. Prints `listening on http://127.0.0.1:PORT/`.
 * Run: node scratchpad/vite-page-server.ts ROOT
 */
import { createServer } from "vite"

const server = await createServer({
  root: process.argv[2] ?? ".",
  configFile: false,
  logLevel: "error",
  clearScreen: false,
  appType: "mpa",
  optimizeDeps: { noDiscovery: true, include: [] },
  server: { host: "127.0.0.1", port: 0, strictPort: false }
})
await server.listen()
const address = server.httpServer?.address()
console.log(`listening on http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/`)
process.on("SIGTERM", () => void server.close().then(() => process.exit(0)))
