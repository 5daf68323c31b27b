/**
 * Vite's dev server over a directory, for the hot-path benchmark: its per-request source
 * maps off (`esbuild.sourcemap: false`, so that its bodies are the transpiled module alone), no HMR, no dependency
 * pre-bundling. With `--stock`, Vite as it comes: each JavaScript answer with its source map
 * inline (a base64 `data:` URL). Prints `listening on http://127.0.0.1:PORT/`.
 * Run: node scratchpad/vite-dev-server.ts ROOT [--stock]
 */
import { createServer } from "vite"

const stock = process.argv.includes("--stock")
const server = await createServer({
  root: process.argv[2] ?? ".",
  configFile: false,
  logLevel: "error",
  clearScreen: false,
  appType: "custom",
  optimizeDeps: { noDiscovery: true, include: [] },
  server: { host: "127.0.0.1", port: 0, strictPort: false, hmr: false },
  // Vite 7's `esbuild: { sourcemap: false }`. Vite 8 transforms TypeScript with oxc and
  // ignores that option, so a last plugin also declares "no source map" (an empty mapping,
  // which Vite neither combines nor appends).
  ...(stock ? {} : {
    esbuild: { sourcemap: false },
    plugins: [{
      name: "no-source-maps",
      enforce: "post",
      transform: (code: string) => ({ code, map: { mappings: "" } })
    }]
  })
})
await server.listen()
const address = server.httpServer?.address()
console.log(`listening on http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/`)
process.on("SIGTERM", () => void server.close().then(() => process.exit(0)))
