/**
 * Live reload in a real browser: headless Chromium (over CDP) opens a page of a realm served by
 * a real `serve` process, the page includes `<script type="module" src="/_cache/live-reload.js">`,
 * and the client reads `/_cache/events` with fetch. Then, on disk:
 *
 * - an edit of a module the page imports (not the page's own script: a module two imports
 *   away) reloads the page by itself, which shows the new content, within 1.5 s of the write;
 * - an edit of the linked stylesheet swaps it in place (its href gets `?_t=`): no reload, and
 *   the new rule applies;
 * - an edit of index.html itself reloads the page (opened at `/`, as a user opens it).
 *
 * A reload is seen as a CDP `Page.loadEventFired`, and as a marker set in `window` that is gone.
 */
import { writeFileSync } from "node:fs"
import * as path from "node:path"
import type { Browser, CDPSession, Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { launchChromium } from "./support/chromium.ts"
import { pageErrors } from "./support/recorder.ts"
import { makeRealm, removeRealms, type ServerProcess, sleep, startServer, stopAll } from "./support/server.ts"


/** The requirement: an edit shows in the page within this long. */
const reloadBudgetMs = 1500

const page = (title: string) => `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>${title}</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="./style.css">
  </head>
  <body>
    <h1 id="title">${title}</h1>
    <div id="app">loading</div>
    <script type="module">
      import { render } from "./main.ts"
      render(document.getElementById("app"))
    </script>
    <script type="module" src="/_cache/live-reload.js"></script>
  </body>
</html>
`

const mainSource = `import { message } from "./dep.ts"
export function render(element: HTMLElement): void {
  element.textContent = message()
  element.dataset.ready = "true"
}
`

const depSource = (word: string) => `type Word = string
const word: Word = ${JSON.stringify(word)}
export function message(): string {
  return "dep says " + word
}
`

const styleSource = (color: string) => `#title { color: ${color}; }\n`

/** What CDP reports of the page: its loads, and the requests of the event stream. */
interface Watch {
  /** When each `Page.loadEventFired` came (Date.now()). */
  readonly loads: Array<number>
  /** The event-stream requests that received their first bytes (the client is subscribed then). */
  readonly streamsOpen: Array<string>
  readonly stylesheetRequests: Array<string>
}

const watch = async (cdp: CDPSession): Promise<Watch> => {
  const result: Watch = { loads: [], streamsOpen: [], stylesheetRequests: [] }
  const streamRequests = new Set<string>()
  cdp.on("Page.loadEventFired", () => result.loads.push(Date.now()))
  cdp.on("Network.requestWillBeSent", (event) => {
    const url = new URL(event.request.url)
    if (url.pathname === "/_cache/events") streamRequests.add(event.requestId)
    if (url.pathname === "/style.css") result.stylesheetRequests.push(url.pathname + url.search)
  })
  // The server subscribes the stream before it writes its first line (`retry:`): once bytes of
  // it reached the page, an edit is announced to it.
  cdp.on("Network.dataReceived", (event) => {
    if (streamRequests.has(event.requestId) && !result.streamsOpen.includes(event.requestId)) result.streamsOpen.push(event.requestId)
  })
  await cdp.send("Page.enable")
  await cdp.send("Network.enable")
  return result
}

/** Waits until `condition` holds, polling every 10 ms, for at most `timeoutMs` (then fails with `what`). */
const until = async (what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<number> => {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}`)
    await sleep(10)
  }
  return Date.now()
}

const markerOf = (tab: Page) =>
  tab.evaluate(() => (window as unknown as { liveReloadMarker?: string }).liveReloadMarker).catch(() => "evaluating")

describe("live reload in Chromium", () => {
  let browser: Browser
  let server: ServerProcess

  beforeAll(async () => {
    browser = await launchChromium()
  })

  afterAll(async () => {
    await browser?.close()
    await stopAll()
    removeRealms()
  })

  it("an edited import reloads the page, an edited stylesheet is swapped in place, an edited index.html reloads the page", async () => {
    const realm = makeRealm({
      "index.html": page("first title"),
      "main.ts": mainSource,
      "dep.ts": depSource("one"),
      "style.css": styleSource("rgb(255, 0, 0)")
    }, "mtc-live-reload-")
    server = await startServer({ realmDir: realm, store: "memory", args: ["--pipeline", "standard"] })
    const tab = await browser.newPage()
    const errors = pageErrors(tab)
    const cdp = await tab.context().newCDPSession(tab)
    const seen = await watch(cdp)
    const text = (selector: string) => tab.locator(selector).textContent()
    const titleColor = () => tab.locator("#title").evaluate((element) => getComputedStyle(element).color)

    /** Waits for the page's render and for its client's stream; marks the page (a reload drops the mark). */
    const ready = async (marker: string) => {
      await tab.locator("#app[data-ready=\"true\"]").waitFor({ timeout: 30_000 })
      // the client of this load subscribed (it connects as the page loads: maybe before this call)
      await until("the page's event stream", () => seen.streamsOpen.length > streamsBefore)
      streamsBefore = seen.streamsOpen.length
      await tab.evaluate((value) => {
        (window as unknown as { liveReloadMarker?: string }).liveReloadMarker = value
      }, marker)
      expect(await markerOf(tab)).toBe(marker)
    }
    /** The streams that had opened before the page's last load. */
    let streamsBefore = 0

    const started = Date.now()
    await tab.goto(`${server.url}/`)
    await ready("first")
    console.log(`[live reload] first load, rendered and streaming: ${Date.now() - started} ms`)
    expect(await text("#app")).toBe("dep says one")
    expect(await text("#title")).toBe("first title")
    expect(await titleColor()).toBe("rgb(255, 0, 0)")
    expect(seen.loads).toHaveLength(1)
    expect(seen.streamsOpen).toHaveLength(1)

    // a. A module the page's script imports: the page reloads by itself and shows the new content.
    const loadsBeforeEdit = seen.loads.length
    const wroteModule = Date.now()
    writeFileSync(path.join(realm, "dep.ts"), depSource("two"))
    const reloaded = await until("a reload after the edit of dep.ts", () => seen.loads.length > loadsBeforeEdit, 10_000)
    const shown = await until("the new content of dep.ts", async () => (await text("#app").catch(() => "")) === "dep says two", 10_000)
    const reloadMs = seen.loads[loadsBeforeEdit]! - wroteModule
    console.log(`[live reload] dep.ts written -> load event: ${reloadMs} ms; -> new content shown: ${shown - wroteModule} ms (polled at ${reloaded - wroteModule} ms)`)
    expect(reloadMs).toBeLessThan(reloadBudgetMs)
    expect(shown - wroteModule).toBeLessThan(reloadBudgetMs)
    expect(await markerOf(tab)).toBeUndefined()
    // one reload for one edit
    await ready("after module edit")
    await sleep(300)
    expect(seen.loads).toHaveLength(loadsBeforeEdit + 1)

    // b. The stylesheet: swapped in place (its href gets `?_t=`), the page is not reloaded.
    const loadsBeforeStyle = seen.loads.length
    const wroteStyle = Date.now()
    writeFileSync(path.join(realm, "style.css"), styleSource("rgb(0, 0, 255)"))
    await until("the new stylesheet's rule", async () => (await titleColor()) === "rgb(0, 0, 255)", 10_000)
    const styled = Date.now()
    console.log(`[live reload] style.css written -> new rule applies, no reload: ${styled - wroteStyle} ms`)
    expect(styled - wroteStyle).toBeLessThan(reloadBudgetMs)
    const href = await tab.locator("link[rel=\"stylesheet\"]").getAttribute("href")
    expect(href).toMatch(/^\/style\.css\?_t=\d+$/)
    expect(seen.stylesheetRequests.at(-1)).toBe(href)
    // give a (wrong) reload the time to happen
    await sleep(500)
    expect(seen.loads).toHaveLength(loadsBeforeStyle)
    expect(await markerOf(tab)).toBe("after module edit")
    expect(await text("#app")).toBe("dep says two")

    // c. index.html itself (the page was opened at `/`): the page reloads.
    const loadsBeforePage = seen.loads.length
    const wrotePage = Date.now()
    writeFileSync(path.join(realm, "index.html"), page("second title"))
    await until("a reload after the edit of index.html", () => seen.loads.length > loadsBeforePage, 10_000)
    const pageReloadMs = seen.loads[loadsBeforePage]! - wrotePage
    await until("the new title", async () => (await text("#title").catch(() => "")) === "second title", 10_000)
    console.log(`[live reload] index.html written -> load event: ${pageReloadMs} ms`)
    expect(pageReloadMs).toBeLessThan(reloadBudgetMs)
    expect(await markerOf(tab)).toBeUndefined()
    await ready("after page edit")
    expect(await text("#app")).toBe("dep says two")
    // the stylesheet the new page links is the current one
    expect(await titleColor()).toBe("rgb(0, 0, 255)")
    await sleep(300)
    expect(seen.loads).toHaveLength(loadsBeforePage + 1)

    expect(errors).toEqual([])
    await tab.close()
  })
})
