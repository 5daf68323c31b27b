/**
 * The demo realm in a real browser: headless Chromium loads the page from a real server
 * (`--pipeline ember`), Ember's own ESM runtime (served from the realm, through the cache)
 * renders the precompiled .gts components, a click updates a `@tracked` counter, and a
 * reload is answered from the cache: the page opts into the realm's import map, so every
 * module is fetched once, at its immutable URL, and a reload asks for the page (and its
 * stylesheet) alone.
 */
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type Browser, chromium } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { which } from "./support/prerequisites.ts"
import { vendorEmber } from "./support/demo-vendor.ts"
import { pageErrors, startRecorder } from "./support/recorder.ts"
import { root, type ServerProcess, startServer, stopAll } from "./support/server.ts"

const executablePath = process.env.CHROMIUM_PATH ?? which("chromium") ?? "/usr/bin/chromium"
const demoRealm = path.join(root, "demo-realm")

describe("demo realm in Chromium", () => {
  let realm: string
  let server: ServerProcess
  let browser: Browser

  beforeAll(async () => {
    // `npm test` installs Debian's chromium first (test/support/prerequisites.ts); a machine
    // without it fails here, loudly.
    if (!existsSync(executablePath)) {
      throw new Error(`no Chromium at ${executablePath}: run npm test (it installs it as root), apt-get install chromium, or set CHROMIUM_PATH`)
    }
    realm = mkdtempSync(path.join(tmpdir(), "mtc-demo-"))
    cpSync(demoRealm, realm, {
      recursive: true,
      filter: (source) =>
        !path.basename(source).startsWith(".transpile-cache") &&
        path.relative(demoRealm, source).split(path.sep)[0] !== "vendor"
    })
    vendorEmber(realm)
    server = await startServer({ realmDir: realm, store: "memory", args: ["--pipeline", "ember"] })
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
    rmSync(realm, { recursive: true, force: true })
  })

  it("renders the components with Ember's runtime, a click updates the @tracked count, and a reload is answered from the cache", async () => {
    const recorder = await startRecorder(server.url)
    const page = await browser.newPage()
    const errors = pageErrors(page)
    const text = (selector: string) => page.locator(selector).textContent()

    await page.goto(`${recorder.url}/index.html`)
    // the first load transpiles Ember's runtime too (about 120 modules), under the others' load
    await page.locator("#app[data-ready=\"true\"]").waitFor({ timeout: 60_000 })
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
    await page.waitForLoadState("networkidle")
    const firstLoad = recorder.exchanges.splice(0)
    // The page carries the realm's import map: its request transpiled every module it reaches
    // (Ember's runtime too, through the bare specifiers of the page's own map), so even the
    // first load asks for each module once, at its immutable URL, answered from L1.
    expect(firstLoad[0]).toMatchObject({ path: "/index.html", status: 200, cacheControl: "no-cache" })
    for (const module of modules) {
      const exchange = firstLoad.find((entry) => entry.path === (module === "/greeting" ? "/greeting.gts" : module))
      expect(exchange, module).toBeDefined()
      expect(exchange?.search, module).toMatch(/^\?_v=[0-9a-f]{16}$/)
      expect(exchange?.status, `${module}: ${JSON.stringify(exchange)}`).toBe(200)
      expect(exchange?.cacheControl, module).toBe("public, max-age=31536000, immutable")
      expect(exchange?.cache, module).toBe("l1")
    }
    const moduleRequests = firstLoad.filter((entry) => entry.cache !== undefined)
    expect(moduleRequests.length).toBeGreaterThan(100)
    expect(moduleRequests.filter((entry) => entry.status !== 200 || entry.search === "")).toEqual([])
    // each module once
    expect(new Set(moduleRequests.map((entry) => entry.path)).size).toBe(moduleRequests.length)
    // no runtime template compiler was ever requested
    expect(firstLoad.filter((entry) => /template-compiler/.test(entry.path))).toEqual([])
    expect(firstLoad.every((entry) => entry.status === 200)).toBe(true)

    // A reload revalidates the page (304) and the stylesheet (a plain URL), and asks for no module.
    await page.reload()
    await page.locator("#app[data-ready=\"true\"]").waitFor({ timeout: 60_000 })
    // a fresh render: the count starts again at 2
    expect(await text("#count")).toBe("2")
    expect(await text("#greeting")).toBe("Hello from REALM!")
    await page.waitForLoadState("networkidle")
    const warm = recorder.exchanges.splice(0)
    expect(warm.map((entry) => [entry.path, entry.status])).toEqual([["/index.html", 304], ["/style.css", 304]])

    await page.locator("#increment").click()
    await expect.poll(() => text("#count")).toBe("3")
    expect(errors).toEqual([])
    await page.close()
    await recorder.close()
  })
})
