/**
 * The demo in a real browser, served as `npm start` serves it: two realms, `demo-realm/` at `/`
 * and `demo-shared/` at `/shared/` (`--pipeline ember`). Headless Chromium loads the page from
 * a real server, Ember's own ESM runtime (served from the realm at `/`, through the cache)
 * renders the precompiled .gts components, among them a component of the other mount that
 * `app.gts` imports as `/shared/card.gts`, a click updates a `@tracked` counter, and a reload
 * is answered from the cache: the page opts into its realm's import map, which lists the modules
 * it reaches in both realms, so every module is fetched once, at its immutable URL, and a reload
 * asks for the page and its stylesheet alone (and the live-reload client the page includes).
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type Browser, chromium } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { which } from "./support/prerequisites.ts"
import { vendorEmber } from "./support/demo-vendor.ts"
import { type Exchange, pageErrors, startRecorder } from "./support/recorder.ts"
import { jsonOf, request, root, type ServerProcess, startServer, stopAll } from "./support/server.ts"

const executablePath = process.env.CHROMIUM_PATH ?? which("chromium") ?? "/usr/bin/chromium"

/**
 * Waits until the page's live-reload client opened its event stream (the page's last request:
 * the client is a module script at the end of the body), then until no request came for 500 ms.
 * (Playwright's `networkidle` never comes while the stream is open.)
 */
const settled = async (exchanges: ReadonlyArray<Exchange>) => {
  await expect.poll(() => exchanges.some((entry) => entry.path === "/_cache/events"), { timeout: 30_000 }).toBe(true)
  let count: number
  do {
    count = exchanges.length
    await new Promise((resolve) => setTimeout(resolve, 500))
  } while (exchanges.length !== count)
}

/** The mounts `npm start` serves (`--realm MOUNT=DIR` in package.json's start script). */
const startMounts = (): ReadonlyArray<{ readonly mount: string; readonly dir: string }> => {
  const manifest: { readonly scripts: { readonly start: string } } = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"))
  return Array.from(manifest.scripts.start.matchAll(/--realm (\S+)=(\S+)/g), (match) => ({ mount: match[1] ?? "", dir: match[2] ?? "" }))
}

describe("the demo (two mounts) in Chromium", () => {
  let work: string
  let server: ServerProcess
  let browser: Browser

  beforeAll(async () => {
    // `npm test` installs Debian's chromium first (test/support/prerequisites.ts); a machine
    // without it fails here, loudly.
    if (!existsSync(executablePath)) {
      throw new Error(`no Chromium at ${executablePath}: run npm test (it installs it as root), apt-get install chromium, or set CHROMIUM_PATH`)
    }
    const mounts = startMounts()
    expect(mounts).toEqual([{ mount: "/", dir: "demo-realm" }, { mount: "/shared/", dir: "demo-shared" }])
    // each realm copied (without a vendored runtime or an embedded store), the runtime vendored afresh
    work = mkdtempSync(path.join(tmpdir(), "mtc-demo-"))
    const realmArgs = mounts.flatMap(({ dir, mount }) => {
      const from = path.join(root, dir)
      const to = path.join(work, dir)
      cpSync(from, to, {
        recursive: true,
        filter: (source) =>
          !path.basename(source).startsWith(".transpile-cache") &&
          path.relative(from, source).split(path.sep)[0] !== "vendor"
      })
      if (mount === "/") vendorEmber(to)
      return ["--realm", `${mount}=${to}`]
    })
    server = await startServer({ store: "memory", args: [...realmArgs, "--pipeline", "ember"] })
    browser = await chromium.launch({
      executablePath,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync"
      ]
    })
  })

  afterAll(async () => {
    await browser?.close()
    await stopAll()
    rmSync(work, { recursive: true, force: true })
  })

  it("renders the components of both mounts with Ember's runtime, a click updates the @tracked count, and a reload is answered from the cache", async () => {
    const recorder = await startRecorder(server.url)
    const page = await browser.newPage()
    const errors = pageErrors(page)
    const text = (selector: string) => page.locator(selector).textContent()
    // Each answer's content-encoding, as the browser received it (CDP Network.responseReceived).
    const cdp = await page.context().newCDPSession(page)
    await cdp.send("Network.enable")
    const encodingsSeen = new Map<string, string>()
    cdp.on("Network.responseReceived", (event) => {
      const headers = Object.fromEntries(Object.entries(event.response.headers).map(([name, value]) => [name.toLowerCase(), value]))
      encodingsSeen.set(new URL(event.response.url).pathname, headers["content-encoding"] ?? "identity")
    })

    await page.goto(`${recorder.url}/index.html`)
    // the first load transpiles Ember's runtime too (about 120 modules), under the others' load
    await page.locator("#app[data-ready=\"true\"]").waitFor({ timeout: 60_000 })
    // the component of the other mount, around the demo realm's own (its block)
    expect(await text("#shared-heading")).toBe("[ from the shared realm ]")
    expect(await page.locator("#shared-card #greeting").count()).toBe(1)
    expect(await page.locator("#shared-card #counter").count()).toBe(1)
    expect(await text("#greeting")).toBe("Hello from REALM!")
    expect(await text(".badge")).toBe("count")
    expect(await text("#count")).toBe("2")
    expect(await text("#double")).toBe("(x2 = 4)")
    expect(errors).toEqual([])

    await page.locator("#increment").click()
    await expect.poll(() => text("#count")).toBe("3")
    expect(await text("#double")).toBe("(x2 = 6)")
    await page.locator("#increment").click()
    await expect.poll(() => text("#count")).toBe("4")
    expect(await text("#double")).toBe("(x2 = 8)")

    const modules = [
      "/app.gts",
      "/greeting",
      "/counter.gts",
      "/badge.gts",
      "/util.ts",
      "/vendor/ember-source/@ember/renderer/index.js",
      "/vendor/ember-source/@glimmer/tracking/index.js",
      "/vendor/glimmer-component/index.js",
      "/vendor/decorator-transforms/runtime.js"
    ]
    await settled(recorder.exchanges)
    const firstLoad = recorder.exchanges.splice(0)
    // The page carries its realm's import map: its request transpiled every module of that
    // realm it reaches (Ember's runtime too, through the bare specifiers of the page's own map),
    // so even the first load asks for each of them once, at its immutable URL, answered from L1.
    expect(firstLoad[0]).toMatchObject({ path: "/index.html", status: 200, cacheControl: "no-cache" })
    for (const module of modules) {
      const exchange = firstLoad.find((entry) => entry.path === (module === "/greeting" ? "/greeting.gts" : module))
      expect(exchange, module).toBeDefined()
      expect(exchange?.search, module).toMatch(/^\?_v=[0-9a-f]{16}$/)
      expect(exchange?.status, `${module}: ${JSON.stringify(exchange)}`).toBe(200)
      expect(exchange?.cacheControl, module).toBe("public, max-age=31536000, immutable")
      expect(exchange?.cache, module).toBe("l1")
    }
    // The other mount's modules (the card, and what it imports from its own realm) are in the
    // page's map too: fetched through the realm mounted at /shared/ (the realm at / has no
    // shared/ directory) when the page was rendered, and asked for at their immutable URLs.
    const sharedModules = ["/shared/card.gts", "/shared/format.ts"]
    for (const module of sharedModules) {
      const exchange = firstLoad.find((entry) => entry.path === module)
      expect(exchange, module).toBeDefined()
      expect(exchange?.search, module).toMatch(/^\?_v=/)
      expect(exchange?.status, `${module}: ${JSON.stringify(exchange)}`).toBe(200)
      expect(exchange?.cacheControl, module).toBe("public, max-age=31536000, immutable")
      expect(exchange?.cache, module).toBe("l1")
    }
    expect(existsSync(path.join(work, "demo-realm", "shared"))).toBe(false)
    // Chromium asks for br, and every module (each compressed once, with its transpile) came as
    // br, but those too small to gain (under 256 bytes), which stay identity.
    for (const module of [...modules, ...sharedModules]) {
      const plain = module === "/greeting" ? "/greeting.gts" : module
      const size = (await request(server.url, plain)).bytes.byteLength
      expect(encodingsSeen.get(plain), `${module} (${size} bytes)`).toBe(size >= 256 ? "br" : "identity")
    }
    const brModules = firstLoad.filter((entry) => entry.cache !== undefined && encodingsSeen.get(entry.path) === "br")
    expect(brModules.length).toBeGreaterThan(100)
    const moduleRequests = firstLoad.filter((entry) => entry.cache !== undefined)
    expect(moduleRequests.filter((entry) => entry.path.startsWith("/shared/")).map((entry) => entry.path).sort()).toEqual(sharedModules)
    const ownModules = moduleRequests.filter((entry) => !entry.path.startsWith("/shared/"))
    expect(ownModules.length).toBeGreaterThan(100)
    expect(ownModules.filter((entry) => entry.status !== 200 || entry.search === "")).toEqual([])
    // each module once
    expect(new Set(moduleRequests.map((entry) => entry.path)).size).toBe(moduleRequests.length)
    // no runtime template compiler was ever requested
    expect(firstLoad.filter((entry) => /template-compiler/.test(entry.path))).toEqual([])
    expect(firstLoad.every((entry) => entry.status === 200)).toBe(true)
    // Each realm counted its own: the shared realm transpiled the card and its import, and no
    // module of the realm at / is under /shared/.
    const stats = jsonOf(await request(server.url, "/_cache/stats"))
    const realms = stats.realms as Record<string, { readonly modules: number; readonly transpiles: number }>
    expect(Object.keys(realms).sort()).toEqual(["/", "/shared/"])
    expect(realms["/shared/"]).toMatchObject({ modules: 2, transpiles: 2 })
    expect(realms["/"]?.modules).toBe(ownModules.length)

    // A reload revalidates the page (304) and the stylesheet, and asks for no module of either
    // realm: the page's map lists the other mount's modules too.
    await page.reload()
    await page.locator("#app[data-ready=\"true\"]").waitFor({ timeout: 60_000 })
    // a fresh render: the count starts again at 2
    expect(await text("#count")).toBe("2")
    expect(await text("#greeting")).toBe("Hello from REALM!")
    expect(await text("#shared-heading")).toBe("[ from the shared realm ]")
    await settled(recorder.exchanges)
    const warm = recorder.exchanges.splice(0)
    expect(warm.map((entry) => [entry.path, entry.status]).sort()).toEqual([
      // the live-reload client (no-cache, not a module of the realm) and its stream
      ["/_cache/events", 200],
      ["/_cache/live-reload.js", 200],
      ["/index.html", 304],
      ["/style.css", 304]
    ])

    await page.locator("#increment").click()
    await expect.poll(() => text("#count")).toBe("3")
    expect(errors).toEqual([])
    await page.close()
    await recorder.close()
  })
})
