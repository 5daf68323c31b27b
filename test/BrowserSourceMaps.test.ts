/**
 * Source maps in a real browser: headless Chromium (over CDP) loads modules of every pipeline
 * (`standard` on the native engine and on Babel, `ember`, `boxel`) from a real server process.
 * Each module script is parsed with its map URL (`Debugger.scriptParsed`), and so is code a
 * loader fetches and `eval`s with a `//# sourceURL=`, as Boxel's does. A `throw` in a `.ts`
 * below type-only blocks, and one in a `.gts` method below a multi-line `<template>`, read
 * back through the served map (the one the comment names, resolved as the browser resolves it),
 * land on their exact line, and the column on the statement.
 *
 * The output's runtime imports (`@glimmer/component`, the template runtime of each pipeline)
 * are mapped by the page's import map to small stand-ins in the realm: what is checked is where
 * the browser's own stack traces point, not Ember.
 */
import { TraceMap, originalPositionFor } from "@jridgewell/trace-mapping"
import type { Browser } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { launchChromium } from "./support/chromium.ts"
import { makeRealm, removeRealms, request, startServer, stopAll } from "./support/server.ts"
import { cardSource, measureSource, sourcePositionOf } from "./support/sourceMaps.ts"




/** Code a loader fetches and evaluates as a script. */
const evaluatedSource = `type N = number
function evalThrower(n: N): N {
  if (n > 0) {
    throw new Error("eval-throw")
  }
  return n
}
try {
  evalThrower(1)
} catch (error) {
  (globalThis as unknown as { evalStack: string }).evalStack = (error as Error).stack ?? ""
}
`

const page = `<!doctype html>
<html><head>
<script type="importmap">{"imports": {
  "@glimmer/component": "/stubs/component.js",
  "@ember/template-compiler": "/stubs/template-compiler.js",
  "@ember/template-factory": "/stubs/template-factory.js",
  "@ember/component": "/stubs/ember-component.js"
}}</script>
<script type="module">
  const stackOf = (run) => { try { run(); return "no throw" } catch (error) { return error.stack } }
  const { measure } = await import("/measure.ts")
  const { default: Card } = await import("/card.gts")
  const source = await (await fetch("/evaluated.ts")).text()
  eval(source + "\\n//# sourceURL=" + new URL("/evaluated.ts", location.href).href)
  window.results = {
    ts: stackOf(() => measure({ size: -1 })),
    gts: stackOf(() => new Card(undefined, { n: 1 }).label),
    eval: globalThis.evalStack
  }
</script>
</head><body></body></html>
`

const stubs: Record<string, string> = {
  "stubs/component.js": "export default class Component { constructor(owner, args) { this.args = args } }\n",
  "stubs/template-compiler.js": "export function template() {}\n",
  "stubs/template-factory.js": "export function createTemplateFactory(template) { return template }\n",
  "stubs/ember-component.js": "export function setComponentTemplate(template, component) { return component }\n"
}

const pipelines: ReadonlyArray<{ readonly name: string; readonly args: ReadonlyArray<string> }> = [
  { name: "standard, native", args: ["--pipeline", "standard", "--engine", "native"] },
  { name: "standard, Babel", args: ["--pipeline", "standard", "--engine", "babel"] },
  { name: "ember", args: ["--pipeline", "ember"] },
  { name: "boxel", args: ["--pipeline", "boxel"] }
]

/** The frame of a stack that names a URL: its URL, 1-based line and 1-based column. */
const frameOf = (stack: string, file: string): { readonly url: string; readonly line: number; readonly column: number } => {
  const match = new RegExp(`(http://[^\\s)]*/${file.replace(".", "\\.")}):(\\d+):(\\d+)`).exec(stack)
  if (match === null) throw new Error(`no frame of ${file} in ${stack}`)
  return { url: match[1]!, line: Number(match[2]), column: Number(match[3]) }
}

describe("source maps in Chromium", () => {
  let browser: Browser

  beforeAll(async () => {
    browser = await launchChromium()
  })

  afterAll(async () => {
    await browser?.close()
    await stopAll()
    removeRealms()
  })

  for (const { args, name } of pipelines) {
    it(`${name}: each script is parsed with its map URL, and its throws map to their line and statement`, async () => {
      const realm = makeRealm({
        "index.html": page,
        "measure.ts": measureSource,
        "card.gts": cardSource,
        "evaluated.ts": evaluatedSource,
        ...stubs
      })
      const server = await startServer({ realmDir: realm, store: "memory", args })
      const tab = await browser.newPage()
      const cdp = await tab.context().newCDPSession(tab)
      const parsed: Array<{ readonly url: string; readonly sourceMapURL: string }> = []
      cdp.on("Debugger.scriptParsed", (event) => parsed.push({ url: event.url, sourceMapURL: event.sourceMapURL ?? "" }))
      await cdp.send("Debugger.enable")
      await tab.goto(`${server.url}/index.html`)
      const results = await tab.waitForFunction(() => (window as unknown as { results?: Record<string, string> }).results)
        .then((handle) => handle.jsonValue() as Promise<Record<string, string>>)

      for (const [key, file, source, needle] of [
        ["ts", "measure.ts", measureSource, `throw new Error("ts-throw")`],
        ["gts", "card.gts", cardSource, `throw new Error("gts-throw")`],
        ["eval", "evaluated.ts", evaluatedSource, `throw new Error("eval-throw")`]
      ] as const) {
        const frame = frameOf(results[key]!, file)
        // The browser parsed the script with the map URL its comment names.
        const script = parsed.find((p) => p.url === frame.url)
        expect(script?.sourceMapURL, `${name}: ${file}`).toMatch(new RegExp(`^${file.replace(".", "\\.")}\\.map\\?_v=[0-9a-f]{16}$`))
        const mapUrl = new URL(script!.sourceMapURL, frame.url)
        const map = await request(server.url, mapUrl.pathname + mapUrl.search)
        expect(map.status).toBe(200)
        const original = originalPositionFor(new TraceMap(map.body), { line: frame.line, column: frame.column - 1 })
        const thrown = sourcePositionOf(source, needle)
        expect(original.line, `${name}: ${file} ${results[key]}`).toBe(thrown.line)
        // on the statement: the throw, or the Error it constructs
        expect([thrown.column, thrown.column + "throw ".length]).toContain(original.column)
      }
      await tab.close()
    })
  }
})
