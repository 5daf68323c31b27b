/**
 * The demo realm in a real browser: headless Chromium loads the page from a real server
 * (`--pipeline ember`), Ember's own ESM runtime (served from the realm, through the cache)
 * renders the precompiled .gts components, a click updates a `@tracked` counter, and a
 * reload is answered from the cache.
 */
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type Browser, chromium } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { which } from "./support/prerequisites.ts"
import { vendorEmber } from "./support/demo-vendor.ts"
import { root, type ServerProcess, startServer, stopAll } from "./support/server.ts"

const executablePath = process.env.CHROMIUM_PATH ?? which("chromium") ?? "/usr/bin/chromium"
const demoRealm = path.join(root, "demo-realm")

/** One request as the server answered it. */
interface Exchange {
  readonly path: string
  readonly ifNoneMatch: string | undefined
  readonly status: number
  readonly etag: string | undefined
  readonly cache: string | undefined
}

/**
 * An HTTP proxy in front of the server that records every exchange as the server answered
 * it. (Chromium reports a revalidated module as `200` to the page once Ember has rendered,
 * so the statuses are taken on the wire.)
 */
const startRecorder = (target: string) =>
  new Promise<{ readonly url: string; readonly exchanges: Array<Exchange>; readonly close: () => Promise<void> }>(
    (resolve) => {
      const upstream = new URL(target)
      const exchanges: Array<Exchange> = []
      const proxy = http.createServer((req, res) => {
        const forward = http.request({
          host: upstream.hostname,
          port: upstream.port,
          path: req.url,
          method: req.method,
          headers: req.headers
        }, (answer) => {
          const header = (name: string) => {
            const value = answer.headers[name]
            return typeof value === "string" ? value : undefined
          }
          exchanges.push({
            path: new URL(req.url ?? "/", target).pathname,
            ifNoneMatch: typeof req.headers["if-none-match"] === "string" ? req.headers["if-none-match"] : undefined,
            status: answer.statusCode ?? 0,
            etag: header("etag"),
            cache: header("x-module-cache")
          })
          res.writeHead(answer.statusCode ?? 502, answer.headers)
          answer.pipe(res)
        })
        forward.on("error", () => res.destroy())
        req.pipe(forward)
      })
      proxy.listen(0, "127.0.0.1", () => {
        const address = proxy.address()
        const port = address !== null && typeof address === "object" ? address.port : 0
        resolve({
          url: `http://127.0.0.1:${port}`,
          exchanges,
          close: () => new Promise((done) => proxy.close(() => done()))
        })
      })
    }
  )

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
    const errors: Array<string> = []
    page.on("pageerror", (error) => errors.push(error.message))
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(message.text())
    })
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
    for (const module of modules) {
      const exchange = firstLoad.find((entry) => entry.path === module)
      expect(exchange, module).toBeDefined()
      expect(exchange?.status, module).toBe(200)
      expect(exchange?.cache, module).toBe("transpiled")
    }
    // no runtime template compiler was ever requested
    expect(firstLoad.filter((entry) => /template-compiler/.test(entry.path))).toEqual([])
    expect(firstLoad.every((entry) => entry.status === 200)).toBe(true)

    await page.reload()
    await page.locator("#app[data-ready=\"true\"]").waitFor({ timeout: 60_000 })
    // a fresh render: the count starts again at 2
    expect(await text("#count")).toBe("2")
    expect(await text("#greeting")).toBe("Hello from REALM!")
    await page.waitForLoadState("networkidle")
    const reload = recorder.exchanges.splice(0)
    for (const module of modules) {
      const exchange = reload.find((entry) => entry.path === module)
      const first = firstLoad.find((entry) => entry.path === module)
      expect(exchange, module).toBeDefined()
      // revalidated by its ETag (cache-control: no-cache) and answered from L1
      expect(exchange?.ifNoneMatch, module).toBe(first?.etag)
      expect(exchange?.status, `${module}: ${JSON.stringify(exchange)}`).toBe(304)
      expect(exchange?.cache, module).toBe("l1")
    }
    // every module of the page, Ember's runtime included, came from the cache
    const modulesReloaded = reload.filter((entry) => entry.cache !== undefined)
    expect(modulesReloaded.length).toBeGreaterThan(100)
    expect(modulesReloaded.filter((entry) => entry.status !== 304 || entry.cache !== "l1")).toEqual([])

    await page.locator("#increment").click()
    await expect.poll(() => text("#count")).toBe("3")
    expect(errors).toEqual([])
    await page.close()
    await recorder.close()
  })
})
