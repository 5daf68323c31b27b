/**
 * The demo realm in a real browser: headless Chromium loads the page from a real server,
 * runs the module graph (TypeScript, a .gts template, decorators, extensionless imports),
 * and a reload is answered from the cache.
 */
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type Browser, chromium, type Response } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { which } from "./support/prerequisites.ts"
import { root, type ServerProcess, startServer, stopAll } from "./support/server.ts"

const executablePath = process.env.CHROMIUM_PATH ?? which("chromium") ?? "/usr/bin/chromium"
const demoRealm = path.join(root, "demo-realm")

interface Seen {
  readonly path: string
  readonly status: number
  readonly cache: string | undefined
  readonly fromServiceWorkerOrCache: boolean
}

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
      filter: (source) => !path.basename(source).startsWith(".transpile-cache")
    })
    server = await startServer({ realmDir: realm, store: "memory" })
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

  it("runs the module graph, and a reload is answered from the cache", async () => {
    const page = await browser.newPage()
    const errors: Array<string> = []
    page.on("pageerror", (error) => errors.push(error.message))
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(message.text())
    })
    let seen: Array<Seen> = []
    const record = async (response: Response) => {
      const url = new URL(response.url())
      if (!url.href.startsWith(server.url)) return
      seen.push({
        path: url.pathname,
        status: response.status(),
        cache: (await response.allHeaders())["x-module-cache"],
        fromServiceWorkerOrCache: response.fromServiceWorker()
      })
    }
    page.on("response", (response) => {
      void record(response)
    })

    await page.goto(`${server.url}/index.html`)
    const app = page.locator("#app[data-ready=\"true\"]")
    await app.waitFor({ timeout: 15_000 })
    expect(await app.textContent()).toBe("Hello from REALM! | REALM!! | count=2")
    expect(errors).toEqual([])

    const modules = ["/app.ts", "/util.ts", "/greeting", "/counter", "/vendor/template-compiler.js"]
    const firstLoad = seen
    for (const module of modules) {
      const response = firstLoad.find((entry) => entry.path === module)
      expect(response, module).toBeDefined()
      expect(response?.status, module).toBe(200)
      expect(response?.cache, module).toBe("transpiled")
    }

    seen = []
    await page.reload()
    await page.locator("#app[data-ready=\"true\"]").waitFor({ timeout: 15_000 })
    expect(await page.locator("#app").textContent()).toBe("Hello from REALM! | REALM!! | count=2")
    await page.waitForLoadState("networkidle")
    for (const module of modules) {
      const response = seen.find((entry) => entry.path === module)
      expect(response, module).toBeDefined()
      // revalidated by its ETag (cache-control: no-cache) and answered from L1
      expect(response?.status, `${module}: ${JSON.stringify(response)}`).toBe(304)
      expect(response?.cache, module).toBe("l1")
    }
    expect(errors).toEqual([])
    await page.close()
  })
})
