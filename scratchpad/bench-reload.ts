/**
 * A warm reload over a slow network: the same 300-module TypeScript graph
 * (test/support/graph-realm.ts) behind one page, reloaded in headless Chromium with 50 ms
 * of latency added to every request (CDP `Network.emulateNetworkConditions`), three ways:
 *
 * - **immutable**: `serve`, the page opting into the realm's import map: a reload revalidates
 *   the page and takes every module from the browser's cache;
 * - **304s**: `serve`, the same graph behind a page that does not opt in: every module is
 *   revalidated (`no-cache`, ETag) and answered 304 (the fast path);
 * - **vite**: Vite 7's dev server (scratchpad/vite-page-server.ts) on the same directory.
 *
 * Each way gets a fresh browser context, loads the page until warm, then times 9 reloads
 * (from `page.reload()` until the page has rendered); requests that reached the network are
 * counted with CDP (`requestWillBeSent` minus `requestServedFromCache`). Then the size of the
 * import map (JSON and gzip) and the time to answer the page with it, for 300 and 3000 modules,
 * and for a page that loads 300 modules of a realm of 3000.
 *
 * Run: npx node scratchpad/bench-reload.ts
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { gzipSync } from "node:zlib"
import { type Browser, chromium, type Page } from "playwright-core"
import { graphPage, writeGraphRealm } from "../test/support/graph-realm.ts"
import { which } from "../test/support/prerequisites.ts"
import { request, startServer, stopAll } from "../test/support/server.ts"
import { spawnListening, stop } from "./bench-hot-path.ts"

const latencyMs = 50
const reloads = 9

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

interface Timing {
  readonly way: string
  readonly medianMs: number
  readonly minMs: number
  readonly maxMs: number
  readonly networkRequests: number
}

/** Loads `url` until warm, then times reloads under the added latency. */
const timeReloads = async (browser: Browser, way: string, url: string, warmLoads: number): Promise<Timing> => {
  const context = await browser.newContext()
  const page: Page = await context.newPage()
  const cdp = await context.newCDPSession(page)
  await cdp.send("Network.enable")
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: latencyMs,
    downloadThroughput: -1,
    uploadThroughput: -1
  })
  let sent = 0
  let fromCache = 0
  cdp.on("Network.requestWillBeSent", () => sent++)
  cdp.on("Network.requestServedFromCache", () => fromCache++)
  const ready = () => page.locator("#out[data-ready=\"true\"]").waitFor({ timeout: 120_000 })
  // No request for 500 ms (Vite's HMR socket stays open, so Playwright's "networkidle" may never come).
  const settle = async () => {
    for (let seen = -1; seen !== sent;) {
      seen = sent
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
  }
  await page.goto(url)
  await ready()
  for (let i = 0; i < warmLoads; i++) {
    await page.reload()
    await ready()
  }
  await settle()
  const times: Array<number> = []
  const network: Array<number> = []
  for (let i = 0; i < reloads; i++) {
    sent = 0
    fromCache = 0
    const started = performance.now()
    await page.reload({ waitUntil: "commit" })
    await ready()
    times.push(performance.now() - started)
    await settle()
    network.push(sent - fromCache)
  }
  await context.close()
  return {
    way,
    medianMs: Math.round(median(times)),
    minMs: Math.round(Math.min(...times)),
    maxMs: Math.round(Math.max(...times)),
    networkRequests: median(network)
  }
}

/**
 * The map's size and the page's answer time for a realm of `count` modules, every module
 * requested once, behind a page that loads `reached` of them.
 */
const mapSize = async (count: number, reached: number = count) => {
  const dir = mkdtempSync(path.join(tmpdir(), `mtc-map-${count}-`))
  const graph = writeGraphRealm(dir, count, { reached })
  const server = await startServer({ realmDir: dir, store: "memory" })
  try {
    for (let i = 0; i < graph.modules.length; i += 32) {
      await Promise.all(graph.modules.slice(i, i + 32).map((module) => request(server.url, `/${module}`)))
    }
    const map = await request(server.url, "/_cache/importmap.json")
    const bytes = Buffer.byteLength(map.body)
    const pageTimes: Array<number> = []
    let page = ""
    // 100 to warm the JIT up, then 101 timed
    for (let i = 0; i < 201; i++) {
      const started = performance.now()
      page = (await request(server.url, "/index.html")).body
      if (i >= 100) pageTimes.push(performance.now() - started)
    }
    const pageMap = page.slice(page.indexOf("data-realm>") + "data-realm>".length, page.indexOf("</script>"))
    const entries = Object.keys((JSON.parse(map.body) as { imports: Record<string, string> }).imports).length
    return {
      modules: count,
      pageLoads: reached,
      entries,
      jsonBytes: bytes,
      gzipBytes: gzipSync(map.body).byteLength,
      bytesPerEntry: Math.round(bytes / entries),
      pageEntries: Object.keys((JSON.parse(pageMap) as { imports: Record<string, string> }).imports).length,
      pageMapBytes: Buffer.byteLength(pageMap),
      pageMs: Number(median(pageTimes).toFixed(2))
    }
  } finally {
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Only the map sizes: `npx node scratchpad/run-one.ts bench-reload benchMapSizes`. */
export const benchMapSizes = async () => {
  try {
    return [await mapSize(300), await mapSize(3000), await mapSize(3000, 300)]
  } finally {
    await stopAll()
  }
}

export const benchReload = async () => {
  const executablePath = process.env.CHROMIUM_PATH ?? which("chromium") ?? "/usr/bin/chromium"
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-reload-"))
  writeGraphRealm(dir, 300)
  // The same graph behind a page that does not opt in: our 304 path, and Vite's page.
  writeFileSync(path.join(dir, "plain.html"), graphPage(false))
  const browser = await chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
  })
  const server = await startServer({ realmDir: dir, store: "memory" })
  const vite = await spawnListening("./vite-page-server.ts", [dir])
  const timings: Array<Timing> = []
  try {
    // Interleaved rounds, so that machine noise hits every way alike.
    const rounds: Array<Array<Timing>> = []
    for (let round = 0; round < 2; round++) {
      rounds.push([
        await timeReloads(browser, "serve: immutable URLs via the import map", `${server.url}/index.html`, 2),
        await timeReloads(browser, "serve: plain URLs, 304s", `${server.url}/plain.html`, 1),
        await timeReloads(browser, "Vite 7 dev server", `${vite.url}/plain.html`, 1)
      ])
    }
    for (let way = 0; way < 3; way++) {
      const best = rounds.map((round) => round[way]!).sort((a, b) => a.medianMs - b.medianMs)[0]!
      timings.push(best)
    }
  } finally {
    await browser.close()
    await stop(vite.child)
    await stopAll()
    rmSync(dir, { recursive: true, force: true })
  }
  const [ours, plain, viteTiming] = timings as [Timing, Timing, Timing]
  const sizes = [await mapSize(300), await mapSize(3000), await mapSize(3000, 300)]
  return [
    ...timings.map((t) => ({ section: `reload, 300 modules, +${latencyMs} ms/request`, ...t })),
    { section: "ratio", way: "Vite / immutable", value: `${(viteTiming.medianMs / ours.medianMs).toFixed(1)}x` },
    { section: "ratio", way: "304s / immutable", value: `${(plain.medianMs / ours.medianMs).toFixed(1)}x` },
    ...sizes.map((s) => ({ section: "import map size", ...s }))
  ]
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.table(await benchReload())
}
