/**
 * Pipelines through the command line, as real processes: `--pipeline` and `MTC_PIPELINE`
 * choose the pipeline, rows written under one pipeline are never served under another,
 * and a `boxel` server answers the scoped CSS its modules import.
 */
import { afterAll, describe, expect, it } from "vitest"
import { makeRealm, removeRealms, request, runCli, startServer, stopAll } from "./support/server.ts"

afterAll(async () => {
  await stopAll()
  removeRealms()
})

const realmFiles = {
  "counter.gts": `import Component from "@glimmer/component"
import { tracked } from "@glimmer/tracking"
export default class Counter extends Component {
  @tracked count = 0
  <template><p class="count">{{this.count}}</p><style scoped>.count { font-weight: bold; }</style></template>
}
`,
  "util.ts": `export const twice = (n: number): number => n * 2\n`
}

describe("pipelines from the command line", () => {
  it("--pipeline and MTC_PIPELINE choose the pipeline; L2 rows serve it across processes", async () => {
    const realm = makeRealm(realmFiles)
    const ember = await runCli(["warm", realm, "--store", "pglite", "--pipeline", "ember"], {
      env: { MTC_PIPELINE: "standard" }
    })
    expect(ember.code, ember.stderr).toBe(0)
    expect(ember.stdout).toContain("ok: 2 (transpiled 2)")
    // the same pipeline, from the environment: the rows are hits
    const again = await runCli(["warm", realm, "--store", "pglite"], { env: { MTC_PIPELINE: "ember" } })
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toContain("ok: 2 (l2 2)")
  }, 120_000)

  it("an ember-source directory without a template compiler is refused", async () => {
    const realm = makeRealm(realmFiles)
    const badSource = await runCli(["warm", realm, "--store", "memory", "--pipeline", "ember", "--ember-source", realm])
    expect(badSource.code).toBe(1)
    expect(badSource.stderr).toContain("not an ember-source directory")
  }, 60_000)

  it("a boxel server serves precompiled modules and answers their scoped CSS as text/css", async () => {
    const realm = makeRealm(realmFiles)
    const server = await startServer({ realmDir: realm, args: ["--pipeline", "boxel"] })
    const module = await request(server.url, "/counter.gts")
    expect(module.status).toBe(200)
    expect(module.body).toContain("createTemplateFactory")
    expect(module.body).toContain("dt7948.g(")
    const specifier = /import "\.\/(counter\.gts\.[^"]+\.glimmer-scoped\.css)";/.exec(module.body)?.[1]
    expect(specifier).toBeDefined()

    const css = await request(server.url, `/${specifier}`)
    expect(css.status).toBe(200)
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8")
    const attribute = /data-scopedcss-[0-9a-f]+-[0-9a-f]+/.exec(module.body)?.[0]
    expect(attribute).toBeDefined()
    expect(css.body.trim()).toBe(`.count[${attribute}] { font-weight: bold; }`)
    const etag = css.headers.etag
    expect(etag).toBeDefined()
    const revalidated = await request(server.url, `/${specifier}`, { headers: { "if-none-match": etag ?? "" } })
    expect(revalidated.status).toBe(304)

    const malformed = await request(server.url, "/counter.gts.%%%.glimmer-scoped.css")
    expect(malformed.status).toBe(400)
    await server.stop()
  }, 60_000)
})
