/**
 * The command line as a real process: `warm`, and `stats` / `invalidate` against a
 * running server.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { jsonOf, makeRealm, removeRealms, request, runCli, startServer, stopAll } from "./support/server.ts"

afterAll(async () => {
  await stopAll()
  removeRealms()
})

describe("warm", () => {
  it("transpiles every module into L2 and prints a summary with counts and file:line of errors", async () => {
    const realm = makeRealm({
      "a.ts": "export const a: number = 1\n",
      "sub/b.gts": "export const B = <template>hi</template>\n",
      "sub/c.js": "export const c = 3\n",
      "broken.ts": "export const ok = 1\nexport const broken = ;\n",
      "page.html": "<p>not a module</p>\n",
      ".hidden/skip.ts": "export const skipped = ;\n"
    })
    const first = await runCli(["warm", realm, "--store", "pglite"])
    expect(first.code, first.stderr).toBe(1)
    expect(first.stdout).toMatch(/warmed 4 modules in \d+\.\d+ s/)
    expect(first.stdout).toContain("ok: 3 (transpiled 3)")
    expect(first.stdout).toContain("errors: 1")
    expect(first.stdout).toMatch(/broken\.ts:2:\d+ TranspileError: /)
    expect(first.stdout).not.toContain("skip.ts")
    // progress on stderr (not a terminal here: plain lines)
    expect(first.stderr).toContain("warm: 4/4")

    // a second run finds everything in L2, the recorded failure included
    writeFileSync(path.join(realm, "broken.ts"), "export const ok = 1\nexport const fixed = 2\n")
    const second = await runCli(["warm", realm, "--store", "pglite"])
    expect(second.code, second.stdout + second.stderr).toBe(0)
    expect(second.stdout).toContain("ok: 4 (l2 3, transpiled 1)")
    expect(second.stdout).toContain("errors: 0")

    // the summary ends with what a server starting now would preload
    expect(second.stdout).toMatch(/preloaded 4 modules \([\d.]+ KiB\) into L1 in \d+ ms/)

    // and a server on the same data directory preloads them: served from L1 without transpiling
    const server = await startServer({ realmDir: realm, store: "pglite" })
    for (const p of ["/a.ts", "/sub/b", "/sub/c.js", "/broken"]) {
      expect((await request(server.url, p)).headers["x-module-cache"], p).toBe("l1")
    }
    expect(jsonOf(await request(server.url, "/_cache/stats"))).toMatchObject({ transpiles: 0, l2Hits: 0, preloadedEntries: 4 })
    await server.stop()
  }, 180_000)

  it("exits 0 on a realm without modules", async () => {
    const realm = makeRealm({ "readme.md": "# nothing\n" })
    const result = await runCli(["warm", realm, "--store", "memory"])
    expect(result.code).toBe(0)
    expect(result.stdout).toContain("warmed 0 modules")
  })

  it("fails clearly on a realm directory that does not exist", async () => {
    const result = await runCli(["warm", "/nonexistent/realm", "--store", "memory"])
    expect(result.code).not.toBe(0)
    expect(result.stdout + result.stderr).toMatch(/nonexistent/)
  })
})

describe("stats and invalidate", () => {
  it("call a running server's admin routes with the token it generated, and print their JSON", async () => {
    const realm = makeRealm({ "a.ts": "export const a = 1\n", "lib/b.ts": "export const b = 2\n" })
    // No MTC_ADMIN_TOKEN: serve generates a token and leaves it in a 0600 file of the state directory.
    // (Six CLI processes: a longer timeout than the default on two loaded cores.)
    const stateDir = makeRealm({}, "mtc-state-")
    const env = { MTC_ADMIN_TOKEN: "", MTC_STATE_DIR: stateDir }
    const server = await startServer({ realmDir: realm, store: "memory", env })
    const tokenFile = path.join(stateDir, `admin-token-${server.port}`)
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600)
    const token = readFileSync(tokenFile, "utf8")
    expect(token).toMatch(/^[0-9a-f]{64}$/)
    expect(server.output()).not.toContain(token)
    await request(server.url, "/a.ts")
    await request(server.url, "/lib/b")
    // The test token of the other servers is not this one.
    expect((await request(server.url, "/_cache/stats")).status).toBe(401)

    const noToken = await runCli(["stats", "--url", server.url], { env: { MTC_ADMIN_TOKEN: "", MTC_STATE_DIR: makeRealm({}) } })
    expect(noToken.code).toBe(1)
    expect(noToken.stdout + noToken.stderr).toContain("401")

    const run = (args: ReadonlyArray<string>) => runCli(args, { env })
    const stats = await run(["stats", "--json", "--url", server.url])
    expect(stats.code, stats.stderr).toBe(0)
    const counters: unknown = JSON.parse(stats.stdout)
    expect(counters).toMatchObject({ transpiles: 2, store: "memory" })

    const one = await run(["invalidate", "lib/b", "--url", server.url])
    expect(one.code, one.stderr).toBe(0)
    expect(JSON.parse(one.stdout)).toMatchObject({ invalidated: "module", paths: ["lib/b.ts"] })
    expect((await request(server.url, "/lib/b")).headers["x-module-cache"]).toBe("transpiled")
    expect((await request(server.url, "/a.ts")).headers["x-module-cache"]).toBe("l1")

    const all = await run(["invalidate", "--url", `${server.url}/`])
    expect(all.code, all.stderr).toBe(0)
    expect(JSON.parse(all.stdout)).toMatchObject({ invalidated: "realm", paths: [] })
    expect((await request(server.url, "/a.ts")).headers["x-module-cache"]).toBe("transpiled")

    const bad = await run(["invalidate", "../outside", "--url", server.url])
    expect(bad.code).toBe(1)
    expect(bad.stdout + bad.stderr).toContain("400")
    expect(await server.stop()).toBe(0)
    // Removed when the server stops.
    expect(existsSync(tokenFile)).toBe(false)
  }, 120_000)

  it("exit 1 with a message when no server answers", async () => {
    const result = await runCli(["stats", "--url", "http://127.0.0.1:1"])
    expect(result.code).toBe(1)
    expect(result.stdout + result.stderr).toContain("cannot reach http://127.0.0.1:1/_cache/stats")
  })
})
