/**
 * The live page at `/_cache/` in real Chromium: after a cold herd, warm hits (the fast
 * path's) and a transpile error on a real `serve`, the page asks for the admin token, then
 * shows the gets by outcome as the server counted them, the error as `file:line:column`,
 * and a uPlot chart. A screenshot is saved (`mtc-live-page.png` in the temp directory).
 */
import { existsSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type Browser, chromium } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { which } from "./support/prerequisites.ts"
import { pageErrors } from "./support/recorder.ts"
import {
  jsonOf,
  makeRealm,
  removeRealms,
  request,
  type ServerProcess,
  startServer,
  stopAll,
  testAdminToken
} from "./support/server.ts"

const executablePath = process.env.CHROMIUM_PATH ?? which("chromium") ?? "/usr/bin/chromium"
const screenshot = path.join(tmpdir(), "mtc-live-page.png")
const modules = Array.from({ length: 8 }, (_, i) => `c${i}.ts`)

describe("the live page in Chromium", () => {
  let server: ServerProcess
  let browser: Browser

  beforeAll(async () => {
    if (!existsSync(executablePath)) {
      throw new Error(`no Chromium at ${executablePath}: run npm test (it installs it as root), apt-get install chromium, or set CHROMIUM_PATH`)
    }
    const realm = makeRealm({
      ...Object.fromEntries(modules.map((name, i) => [name, `export const value: number = ${i}\n`])),
      "broken.ts": "const ok = 1\nexport const broken = ok +\n"
    })
    server = await startServer({ realmDir: realm, store: "memory" })
    browser = await chromium.launch({
      executablePath,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
    })
  }, 90_000)

  afterAll(async () => {
    await browser?.close()
    await stopAll()
    removeRealms()
  })

  it("asks for the token, then shows the counts of a cold herd and warm hits, the last error and a chart", async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1100 } })
    const errors = pageErrors(page)
    const text = (selector: string) => page.locator(selector).textContent()
    await page.goto(`${server.url}/_cache/`)

    // First a wrong token: refused, and asked again.
    await page.locator("#token").fill("not-the-admin-token-at-all")
    await page.locator("#login button").click()
    await expect.poll(() => text("#login-message")).toBe("The server refused that token.")
    expect(await page.evaluate(() => sessionStorage.getItem("module-transpile-cache/admin-token"))).toBeNull()
    // The browser logs the 401s of both requests (stats and metrics), the second maybe after the
    // page showed the refusal: wait for both before clearing them.
    await expect.poll(() => errors.filter((error) => error.includes("401")).length).toBeGreaterThanOrEqual(2)
    errors.length = 0

    await page.locator("#token").fill(testAdminToken)
    await page.locator("#login button").click()
    await expect.poll(() => text("#gets-l1"), { timeout: 15_000 }).toBe("0")
    expect(await text("#hit-ratio")).toBe("no gets yet")

    // While the page polls: a cold herd (4 concurrent gets of each module), 25 warm hits of each, an error.
    await Promise.all(modules.flatMap((name) => [0, 1, 2, 3].map(() => request(server.url, `/${name}`))))
    for (const name of modules) {
      for (let i = 0; i < 25; i++) expect((await request(server.url, `/${name}`)).status).toBe(200)
    }
    expect((await request(server.url, "/broken.ts")).status).toBe(422)
    const stats = jsonOf(await request(server.url, "/_cache/stats"))
    const gets = stats["gets"] as Record<string, number>
    expect(gets["transpiled"]).toBe(modules.length)
    expect(gets["l1"]! + gets["coalesced"]!).toBe(modules.length * 28)

    await expect.poll(() => text("#gets-error"), { timeout: 15_000 }).toBe("1")
    expect(await text("#gets-l1")).toBe(String(gets["l1"]))
    expect(await text("#gets-transpiled")).toBe(String(modules.length))
    expect(await text("#gets-coalesced")).toBe(String(gets["coalesced"]))
    expect(await text("#transpiles")).toBe(String(stats["transpiles"]))
    expect(await text("#transpile-p50")).toMatch(/^\d+(\.\d)? (ms|s)$/)
    expect(await text("#hit-ratio")).toMatch(/^\d+\.\d % \(last 1 min\)$/)
    expect(await text("#connections")).toBe("no Postgres (memory store)")
    const [recent] = stats["recentErrors"] as Array<{ path: string; line: number; column: number }>
    expect(recent).toMatchObject({ path: "broken.ts", line: 3, column: 0 })
    expect(await text("#errors")).toContain("broken.ts:3:0 syntax: ")
    expect(await text("#realms")).toContain(String(stats["realmUrl"]))
    // Its L2 bytes (the memory store reports them): the 8 modules' bodies.
    const [realmStats] = Object.values(stats["realms"] as Record<string, { l2Bytes: number }>)
    expect(realmStats?.l2Bytes).toBeGreaterThan(0)
    expect(await page.locator("#realms tbody td").nth(3).textContent()).toMatch(/^\d+(\.\d)? (B|KiB)$/)

    // The chart: a series per outcome and the hit ratio, with the herd's gets in it.
    await page.locator("#chart .uplot canvas").waitFor({ timeout: 15_000 })
    expect(await page.locator("#chart .u-legend .u-series").count()).toBe(1 + 6 + 1)
    // Its samples: from before the traffic (all zero) to after it, so the chart shows the herd's rates.
    const charted = () =>
      page.evaluate(() => {
        const kept = JSON.parse(sessionStorage.getItem("module-transpile-cache/samples") ?? "[]") as Array<
          { counts: Record<string, number> }
        >
        return { samples: kept.length, first: kept[0]?.counts["l1"], last: kept[kept.length - 1]?.counts["l1"] }
      })
    await expect.poll(async () => (await charted()).samples >= 3, { timeout: 15_000 }).toBe(true)
    expect(await charted()).toMatchObject({ first: 0, last: gets["l1"] })

    // A reload keeps the token and the minutes of samples of this tab.
    await page.reload()
    await expect.poll(() => text("#gets-l1"), { timeout: 15_000 }).toBe(String(gets["l1"]))
    expect(await page.locator("#login").isHidden()).toBe(true)
    await page.locator("#chart .uplot canvas").waitFor({ timeout: 15_000 })
    await page.screenshot({ path: screenshot, fullPage: true })
    expect(statSync(screenshot).size).toBeGreaterThan(10_000)
    expect(errors).toEqual([])
    await page.close()
  }, 120_000)
})
