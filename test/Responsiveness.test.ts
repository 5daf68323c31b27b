/**
 * A `serve` process keeps answering while it transpiles: the transpiles run in worker
 * threads, so warm L1 hits and health probes are answered before a cold herd or a very
 * large module is done. The assertions are about order (answered while the transpile is
 * still running), never about time.
 */
import { codeOf } from "../src/transpiler/SourceMaps.ts"
import { afterAll, afterEach, describe, expect, it } from "vitest"
import { stats } from "./support/load.ts"
import { jsonOf, makeRealm, removeRealms, request, type ServerProcess, startServer, stopAll } from "./support/server.ts"

afterEach(stopAll)
afterAll(removeRealms)

/** A TypeScript module of about `bytes` bytes. */
const moduleOf = (name: string, bytes: number): string => {
  const lines: Array<string> = [`// ${name}`]
  let size = 0
  for (let i = 0; size < bytes; i++) {
    const line = `export function ${name}_${i}(value: number): number { return value * ${i} + ${name.length} }\n`
    lines.push(line)
    size += line.length
  }
  return lines.join("")
}

interface Tracked {
  readonly done: () => boolean
  readonly promise: Promise<number>
}

const track = (promise: Promise<{ readonly status: number }>): Tracked => {
  let finished = false
  const settled = promise.then((response) => {
    finished = true
    return response.status
  })
  return { done: () => finished, promise: settled }
}

/** Waits until the server reports a load in flight: the transpiles have started (and are not over). */
const untilInFlight = async (server: ServerProcess, busy: () => boolean) => {
  while (busy()) {
    if ((await stats(server)).inFlight > 0) return
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error("the transpiles ended before the server reported them in flight")
}

/** A warm hit and a health probe, each with whether `busy` was still running when it was answered. */
const probe = async (server: ServerProcess, busy: () => boolean) => {
  const [hit, health] = await Promise.all([
    request(server.url, "/warm.ts").then((response) => ({ status: response.status, whileBusy: busy() })),
    request(server.url, "/_cache/health").then((response) => ({ status: response.status, whileBusy: busy() }))
  ])
  return { hit, health }
}

describe("a serve process transpiling in workers", () => {
  it("answers warm L1 hits and health probes while a cold herd and a very large module transpile", async () => {
    const herd = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`herd${i}.ts`, moduleOf(`herd${i}`, 32 * 1024)]))
    const realmDir = makeRealm({ "warm.ts": "export const warm: number = 1\n", "big.ts": moduleOf("big", 512 * 1024), ...herd })
    // Babel (about 5 ms per KiB): the native engine can finish the herd before a probe is sent.
    const server = await startServer({ realmDir, store: "memory", env: { MTC_TRANSPILE_WORKERS: "2", MTC_ENGINE: "babel" } })
    expect((await request(server.url, "/warm.ts")).status).toBe(200)

    // A cold herd: 12 modules, 8 concurrent requests each.
    const requests = Object.keys(herd).flatMap((name) => Array.from({ length: 8 }, () => track(request(server.url, `/${name}`))))
    const herdBusy = () => requests.some((r) => !r.done())
    await untilInFlight(server, herdBusy)
    const duringHerd = await probe(server, herdBusy)
    expect(duringHerd).toEqual({ hit: { status: 200, whileBusy: true }, health: { status: 200, whileBusy: true } })
    expect(await Promise.all(requests.map((r) => r.promise))).toEqual(requests.map(() => 200))
    expect((await stats(server)).transpiles).toBe(13)

    // One very large module.
    const big = track(request(server.url, "/big.ts"))
    await untilInFlight(server, () => !big.done())
    const duringBig = await probe(server, () => !big.done())
    expect(duringBig).toEqual({ hit: { status: 200, whileBusy: true }, health: { status: 200, whileBusy: true } })
    expect(await big.promise).toBe(200)
  })

  it("answers a worker over its memory limit with a JSON 500 naming the module, and keeps serving", async () => {
    const realmDir = makeRealm({ "ok.ts": "export const ok: number = 1\n", "huge.ts": moduleOf("huge", 1024 * 1024) })
    const server = await startServer({
      realmDir,
      store: "memory",
      // Babel's heap is what the limit bounds: the native engine's memory is outside the V8 heap
      env: { MTC_TRANSPILE_WORKERS: "1", MTC_TRANSPILE_MAX_MEMORY: "64", MTC_ENGINE: "babel" }
    })
    const failed = await request(server.url, "/huge.ts")
    expect(failed.status).toBe(500)
    expect(jsonOf(failed)).toMatchObject({ error: "TranspileMemoryLimitError", path: "huge.ts" })
    expect(jsonOf(failed).message).toContain("huge.ts")
    const ok = await request(server.url, "/ok.ts")
    expect(ok.status).toBe(200)
    expect(codeOf(ok.body)).toBe("export const ok = 1;")
    expect((await request(server.url, "/_cache/health")).status).toBe(200)
    // Not recorded as the module's failure: asking again transpiles again (and fails again).
    expect((await request(server.url, "/huge.ts")).status).toBe(500)
    expect((await stats(server)).transpiles).toBe(3)
  })
})
