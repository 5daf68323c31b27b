/**
 * Immutable module URLs through the realm's import map, in real Chromium: a realm of 300
 * TypeScript modules behind a page that opts in (`<script type="importmap" data-realm>`).
 * The first load fetches each module once, at its immutable URL; a warm reload asks the server for the page alone (revalidated, 304) and for no module;
 * after an edit of one module, the reload fetches exactly that module again and shows the
 * edit. Plain URLs keep their ETags and 304s; a version that is no longer current is a 404.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type Browser, chromium, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { labelSource, writeGraphRealm } from "./support/graph-realm.ts"
import { which } from "./support/prerequisites.ts"
import { type Exchange, pageErrors, startRecorder } from "./support/recorder.ts"
import { eventually, request, type ServerProcess, startServer, stopAll } from "./support/server.ts"

const executablePath = process.env.CHROMIUM_PATH ?? which("chromium") ?? "/usr/bin/chromium"
const moduleCount = 300
const immutable = "public, max-age=31536000, immutable"

/** The map the server answers now. */
const mapOf = async (base: string): Promise<Record<string, string>> => {
  const response = await request(base, "/_cache/importmap.json")
  expect(response.status).toBe(200)
  const parsed = JSON.parse(response.body) as { readonly imports: Record<string, string> }
  return parsed.imports
}

describe("immutable URLs through the import map, in Chromium", () => {
  let realm: string
  let server: ServerProcess
  let browser: Browser
  let modules: ReadonlyArray<string>

  beforeAll(async () => {
    if (!existsSync(executablePath)) {
      throw new Error(`no Chromium at ${executablePath}: run npm test (it installs it as root), apt-get install chromium, or set CHROMIUM_PATH`)
    }
    realm = mkdtempSync(path.join(tmpdir(), "mtc-immutable-"))
    modules = writeGraphRealm(realm, moduleCount).modules
    server = await startServer({ realmDir: realm, store: "memory" })
    browser = await chromium.launch({
      executablePath,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
    })
  })

  afterAll(async () => {
    await browser?.close()
    await stopAll()
    rmSync(realm, { recursive: true, force: true })
  })

  const sum = (moduleCount - 2) * (moduleCount - 3) / 2

  /** Loads (or reloads) the page until it has rendered, and returns what the server answered meanwhile. */
  const load = async (page: Page, exchanges: Array<Exchange>, go: () => Promise<unknown>) => {
    exchanges.splice(0)
    await go()
    await page.locator("#out[data-ready=\"true\"]").waitFor({ timeout: 60_000 })
    await page.waitForLoadState("networkidle")
    return exchanges.splice(0)
  }

  it("a warm reload revalidates the page alone; after an edit exactly the edited module is fetched again", async () => {
    const recorder = await startRecorder(server.url)
    const page = await browser.newPage()
    const errors = pageErrors(page)

    // A first load: the page's request transpiles what the page reaches, so its map names
    // every module at its immutable URL, and each is fetched once, there.
    const first = await load(page, recorder.exchanges, () => page.goto(`${recorder.url}/index.html`))
    expect(await page.locator("#out").textContent()).toBe(`v1:${sum}`)
    expect(first[0]).toMatchObject({ path: "/index.html", status: 200, cacheControl: "no-cache" })
    const fetched = first.slice(1)
    expect(fetched.map((entry) => entry.path).sort()).toEqual(modules.map((module) => `/${module}`).sort())
    for (const entry of fetched) {
      expect(entry.search, entry.path).toMatch(/^\?_v=[0-9a-f]{16}$/)
      expect(entry.status, entry.path).toBe(200)
      expect(entry.cacheControl, entry.path).toBe(immutable)
      expect(entry.cache, entry.path).toBe("l1")
    }

    // The warm reload: the page is revalidated (304), and no module is asked for.
    const warm = await load(page, recorder.exchanges, () => page.reload())
    expect(warm.map((entry) => [entry.path, entry.status])).toEqual([["/index.html", 304]])
    expect(await page.locator("#out").textContent()).toBe(`v1:${sum}`)

    // An edit of one module: the map names its new version, and only that entry changes.
    const before = await mapOf(server.url)
    writeFileSync(path.join(realm, "label.ts"), labelSource("v2"))
    const after = await eventually(async () => {
      const map = await mapOf(server.url)
      return map["/label.ts"] !== before["/label.ts"] ? map : undefined
    }, 10_000, "the map names the edited module's new version")
    const changed = Object.keys(after).filter((key) => after[key] !== before[key]).sort()
    // `/label` (extensionless, imported by half the modules) leads to the same module URL.
    expect(changed).toEqual(["/label", "/label.ts"])
    expect(after["/label"]).toBe(after["/label.ts"])

    const edited = await load(page, recorder.exchanges, () => page.reload())
    expect(edited.map((entry) => [entry.path + entry.search, entry.status])).toEqual([
      ["/index.html", 200],
      [after["/label.ts"], 200]
    ])
    expect(await page.locator("#out").textContent()).toBe(`v2:${sum}`)

    // And warm again.
    const again = await load(page, recorder.exchanges, () => page.reload())
    expect(again.map((entry) => [entry.path, entry.status])).toEqual([["/index.html", 304]])
    expect(errors).toEqual([])
    await page.close()
    await recorder.close()
  })

  it("plain URLs keep their ETags and 304s; the immutable URL answers the same bytes; an old version is a 404", async () => {
    const plain = await request(server.url, "/lib/d0/m3.ts")
    expect(plain.status).toBe(200)
    expect(plain.headers["cache-control"]).toBe("no-cache")
    const etag = String(plain.headers.etag)
    // the plain ETag is what it always was (source hash and fingerprint), in a second request too
    expect((await request(server.url, "/lib/d0/m3.ts")).headers.etag).toBe(etag)
    const notModified = await request(server.url, "/lib/d0/m3.ts", { headers: { "if-none-match": etag } })
    expect(notModified.status).toBe(304)
    expect(notModified.headers["cache-control"]).toBe("no-cache")

    const map = await mapOf(server.url)
    const url = map["/lib/d0/m3.ts"]!
    expect(url).toBe(`/lib/d0/m3.ts?_v=${etag.slice(1, 17)}`)
    const versioned = await request(server.url, url)
    expect(versioned.status).toBe(200)
    expect(versioned.body).toBe(plain.body)
    expect(versioned.headers.etag).toBe(etag)
    expect(versioned.headers["cache-control"]).toBe(immutable)
    expect(versioned.headers["access-control-allow-origin"]).toBe("*")

    // The module changes: its old immutable URL is a 404 (never other bytes, never cached),
    // its plain URL gets a new ETag, and the map names the new version.
    writeFileSync(path.join(realm, "lib/d0/m3.ts"), "export const value3: number = 3\n")
    const fresh = await eventually(async () => {
      const answer = await request(server.url, "/lib/d0/m3.ts")
      return answer.headers.etag !== etag ? answer : undefined
    }, 10_000, "the edit is seen")
    const old = await request(server.url, url)
    expect(old.status).toBe(404)
    expect(old.headers["cache-control"]).toBe("no-store")
    expect(JSON.parse(old.body)).toMatchObject({ error: "VersionNotCurrent", path: "/lib/d0/m3.ts" })
    expect((await mapOf(server.url))["/lib/d0/m3.ts"]).toBe(`/lib/d0/m3.ts?_v=${String(fresh.headers.etag).slice(1, 17)}`)

    // Raw files have immutable URLs too (the version of their bytes' ETag).
    writeFileSync(path.join(realm, "note.txt"), "a raw file\n")
    const note = await request(server.url, "/note.txt")
    const noteUrl = `/note.txt?_v=${String(note.headers.etag).slice(1, 17)}`
    const noteImmutable = await request(server.url, noteUrl)
    expect([noteImmutable.status, noteImmutable.body, noteImmutable.headers.etag]).toEqual([200, "a raw file\n", note.headers.etag])
    expect(noteImmutable.headers["cache-control"]).toBe(immutable)
    expect((await request(server.url, "/note.txt?_v=0123456789abcdef")).status).toBe(404)
    // a query that is not a version is a plain request, as before
    expect((await request(server.url, "/note.txt?x=1")).headers["cache-control"]).toBe("no-cache")

    // The JSON map is public like the modules: no token, their CORS headers, their preflight.
    const json = await request(server.url, "/_cache/importmap.json", { admin: false, headers: { origin: "https://host.test" } })
    expect(json.status).toBe(200)
    expect(json.headers["access-control-allow-origin"]).toBe("*")
    const asked = await request(server.url, "/_cache/importmap.json", {
      method: "OPTIONS",
      admin: false,
      headers: { origin: "https://host.test", "access-control-request-method": "GET", "access-control-request-headers": "if-none-match" }
    })
    expect(asked.status).toBe(204)
    // the admin routes still refuse theirs
    expect((await request(server.url, "/_cache/stats", { method: "OPTIONS", admin: false })).status).toBe(403)

    // The page that opts in: the map injected, revalidated by an ETag of what was sent.
    const page = await request(server.url, "/index.html")
    expect(page.status).toBe(200)
    expect(page.body).toContain("\"/main.ts\":\"/main.ts?_v=")
    expect(page.headers["cache-control"]).toBe("no-cache")
    expect((await request(server.url, "/index.html", { headers: { "if-none-match": String(page.headers.etag) } })).status).toBe(304)
  })
})
