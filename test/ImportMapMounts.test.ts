/**
 * A page's import map over several mounts: the realm at `/` lists only the request paths it
 * serves. A path under a longer mount (`/shared/`) is that realm's, even when the realm at `/`
 * has a file at the same place (`shared/card.ts`): listing it at the `/` realm's version would
 * send the browser to an immutable URL the `/shared/` realm answers with a 404.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { request, type ServerProcess, startServer, stopAll } from "./support/server.ts"

/** The import map injected into a page. */
const injectedMap = (html: string): Record<string, string> => {
  const json = /<script type="importmap" data-realm>([\s\S]*?)<\/script>/.exec(html)?.[1]
  expect(json, html).toBeDefined()
  const parsed: { readonly imports: Record<string, string> } = JSON.parse(json ?? "{}")
  return parsed.imports
}

describe("the import map of the realm at / with a realm mounted under it", () => {
  let work: string
  let server: ServerProcess

  beforeAll(async () => {
    work = mkdtempSync(path.join(tmpdir(), "mtc-map-mounts-"))
    const rootRealm = path.join(work, "root")
    const sharedRealm = path.join(work, "shared")
    mkdirSync(path.join(rootRealm, "shared"), { recursive: true })
    mkdirSync(sharedRealm)
    writeFileSync(
      path.join(rootRealm, "index.html"),
      `<!doctype html>\n<script type="importmap" data-realm></script>\n<script type="module">import "./main.ts"</script>\n`
    )
    writeFileSync(path.join(rootRealm, "main.ts"), `import { value } from "/shared/card.ts"\nexport const shown: string = value\n`)
    // shadowed by the realm mounted at /shared/: never served
    writeFileSync(path.join(rootRealm, "shared", "card.ts"), `export const value: string = "the root realm's"\n`)
    writeFileSync(path.join(sharedRealm, "card.ts"), `export const value: string = "the shared realm's"\n`)
    server = await startServer({ args: ["--realm", `/=${rootRealm}`, "--realm", `/shared/=${sharedRealm}`] })
  })

  afterAll(async () => {
    await stopAll()
    rmSync(work, { recursive: true, force: true })
  })

  it("lists the page's own modules at their immutable URLs and nothing under the longer mount", async () => {
    const page = await request(server.url, "/index.html")
    expect(page.status).toBe(200)
    const imports = injectedMap(page.body)
    expect(imports["/main.ts"]).toMatch(/^\/main\.ts\?_v=[0-9a-f]{16}$/)
    expect(Object.keys(imports).filter((key) => key.startsWith("/shared/"))).toEqual([])
    // the JSON map of the realm at / neither
    const json = await request(server.url, "/_cache/importmap.json?realm=/")
    expect(json.status).toBe(200)
    const listed: { readonly imports: Record<string, string> } = JSON.parse(json.body)
    expect(Object.keys(listed.imports).filter((key) => key.startsWith("/shared/"))).toEqual([])
    // what the browser then asks for: the shared realm's module
    const card = await request(server.url, "/shared/card.ts")
    expect(card.status).toBe(200)
    expect(card.body).toContain("the shared realm's")
    expect(card.body).not.toContain("the root realm's")
  })
})
