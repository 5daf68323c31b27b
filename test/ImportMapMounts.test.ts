/**
 * A page's import map over several mounts. A path under a longer mount (`/shared/`) is that
 * realm's, even when the realm at `/` has a file at the same place (`shared/card.ts`): the page
 * lists it at the version the `/shared/` realm serves (the `/` realm's version would send the
 * browser to an immutable URL the `/shared/` realm answers with a 404). A private realm's
 * modules are never listed in another realm's page. The JSON map of a realm lists its own.
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
    writeFileSync(
      path.join(rootRealm, "main.ts"),
      `import { value } from "/shared/card.ts"\nimport { hidden } from "/secret/x.ts"\nexport const shown: string = value + hidden\n`
    )
    const secretRealm = path.join(work, "secret")
    mkdirSync(secretRealm)
    writeFileSync(path.join(secretRealm, "x.ts"), `export const hidden: string = "secret"\n`)
    // shadowed by the realm mounted at /shared/: never served
    writeFileSync(path.join(rootRealm, "shared", "card.ts"), `export const value: string = "the root realm's"\n`)
    writeFileSync(path.join(sharedRealm, "card.ts"), `export const value: string = "the shared realm's"\n`)
    server = await startServer({
      args: ["--realm", `/=${rootRealm}`, "--realm", `/shared/=${sharedRealm}`, "--realm", `/secret/=${secretRealm}`, "--private", "/secret/"]
    })
  })

  afterAll(async () => {
    await stopAll()
    rmSync(work, { recursive: true, force: true })
  })

  it("lists the other public realm's module at the version that realm serves, and no private realm's", async () => {
    const page = await request(server.url, "/index.html")
    expect(page.status).toBe(200)
    const imports = injectedMap(page.body)
    expect(imports["/main.ts"]).toMatch(/^\/main\.ts\?_v=[0-9a-f]{16}$/)
    expect(Object.keys(imports).filter((key) => key.startsWith("/secret/"))).toEqual([])
    const listed = imports["/shared/card.ts"]
    expect(listed).toMatch(/^\/shared\/card\.ts\?_v=[0-9a-f]{16}$/)
    // what the browser then asks for: the shared realm's module, at that immutable URL
    const card = await request(server.url, listed ?? "")
    expect(card.status).toBe(200)
    expect(card.body).toContain("the shared realm's")
    expect(card.body).not.toContain("the root realm's")
    // the JSON map of the realm at / lists its own modules only
    const json = await request(server.url, "/_cache/importmap.json?realm=/")
    expect(json.status).toBe(200)
    const own: { readonly imports: Record<string, string> } = JSON.parse(json.body)
    expect(Object.keys(own.imports).filter((key) => key.startsWith("/shared/") || key.startsWith("/secret/"))).toEqual([])
  })

  it("after an edit in the other realm, the page names the edited module's new version", async () => {
    const before = injectedMap((await request(server.url, "/index.html")).body)["/shared/card.ts"]
    expect(before).toBeDefined()
    writeFileSync(path.join(work, "shared", "card.ts"), `export const value: string = "the shared realm's, edited"\n`)
    let after = before
    const deadline = Date.now() + 10_000
    while (after === before && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      after = injectedMap((await request(server.url, "/index.html")).body)["/shared/card.ts"]
    }
    expect(after).not.toBe(before)
    const edited = await request(server.url, after ?? "")
    expect(edited.status).toBe(200)
    expect(edited.body).toContain("edited")
    // the old version is no longer served at its immutable URL
    expect((await request(server.url, before ?? "")).status).toBe(404)
  })
})
