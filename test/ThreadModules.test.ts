/**
 * What each thread of a real `serve` process loads (issue 38): the main thread of a pool
 * only routes, serves and computes the fingerprint, so it never loads a transpiler; a
 * `standard` worker on the native engine loads oxc and content-tag, and Babel only for a
 * module it hands to Babel (decorators). Read from every module each thread resolved
 * (test/support/module-log.ts, preloaded into every thread).
 */
import { afterAll, describe, expect, it } from "vitest"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { makeRealm, removeRealms, request, root, startServer, stopAll } from "./support/server.ts"

const hook = path.join(root, "test", "support", "module-log.ts")
const logs = mkdtempSync(path.join(tmpdir(), "mtc-module-log-"))

afterAll(async () => {
  await stopAll()
  removeRealms()
  rmSync(logs, { recursive: true, force: true })
})

const realm = makeRealm({
  "plain.ts": "export const plain: number = 1\n",
  "card.gts": "import Component from '@glimmer/component'\nexport default class Card extends Component {\n  <template>hello</template>\n}\n",
  "decorated.ts": "const logged = (value: unknown, _context: ClassMethodDecoratorContext) => value\nexport class Decorated {\n  @logged greet() { return 1 }\n}\n"
})

/** The packages a thread loaded, from the log: `@babel/core`, `oxc-transform`, ... */
const packagesByThread = (log: string): Map<number, Set<string>> => {
  const byThread = new Map<number, Set<string>>()
  for (const line of readFileSync(log, "utf8").split("\n")) {
    const match = /^(\d+) .*\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(line)
    if (match?.[1] === undefined || match[2] === undefined) continue
    const thread = Number(match[1])
    const packages = byThread.get(thread) ?? new Set<string>()
    packages.add(match[2])
    byThread.set(thread, packages)
  }
  return byThread
}

/** What no main thread loads: the transpilers, the embedded database, read tokens and scoped CSS. */
const neverInMain = ["@babel/core", "@babel/plugin-transform-typescript", "oxc-transform", "oxc-parser", "content-tag", "@electric-sql/pglite", "jose", "glimmer-scoped-css"]

const serveLogged = async (name: string, args: ReadonlyArray<string>) => {
  const log = path.join(logs, `${name}.log`)
  const server = await startServer({
    realmDir: realm,
    args: ["--transpile-workers", "1", ...args],
    env: { NODE_OPTIONS: `--import ${hook}`, MTC_MODULE_LOG: log }
  })
  return { server, log }
}

describe("the threads of a serve process load only what they run", () => {
  it("native engine: the main thread loads no transpiler; the worker loads oxc and content-tag, and Babel only for a decorator", async () => {
    const { log, server } = await serveLogged("native", [])
    expect((await request(server.url, "/plain.ts")).status).toBe(200)
    expect((await request(server.url, "/card.gts")).status).toBe(200)
    const before = packagesByThread(log)
    const main = before.get(0)
    expect(main?.has("effect")).toBe(true)
    for (const name of neverInMain) expect(main?.has(name), `main thread loaded ${name}`).toBe(false)
    const workers = [...before.entries()].filter(([thread]) => thread !== 0)
    expect(workers).toHaveLength(1)
    const worker = workers[0]![1]
    expect(worker.has("oxc-transform")).toBe(true)
    expect(worker.has("content-tag")).toBe(true)
    expect(worker.has("@babel/core")).toBe(false)
    // A decorator goes to Babel's plugin: the worker loads Babel then, and only then.
    const decorated = await request(server.url, "/decorated.ts")
    expect(decorated.status).toBe(200)
    expect(decorated.body).toContain("greet")
    const after = packagesByThread(log)
    expect(after.get(workers[0]![0])?.has("@babel/core")).toBe(true)
    expect(after.get(0)?.has("@babel/core")).toBe(false)
    await server.stop()
  })

  it("babel engine: the worker loads Babel at its start, the main thread still does not", async () => {
    const { log, server } = await serveLogged("babel", ["--engine", "babel"])
    expect((await request(server.url, "/plain.ts")).status).toBe(200)
    const byThread = packagesByThread(log)
    for (const name of neverInMain) expect(byThread.get(0)?.has(name), `main thread loaded ${name}`).toBe(false)
    const workers = [...byThread.entries()].filter(([thread]) => thread !== 0)
    expect(workers.map(([, packages]) => packages.has("@babel/core"))).toEqual([true])
    await server.stop()
  })
})
