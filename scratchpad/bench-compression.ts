/**
 * Compression (issue 36), side by side in one run, every figure a median of ROUNDS:
 *
 * 1. **Wire bytes** of a realm of real code: the demo realm with Ember's runtime vendored
 *    (`--pipeline ember`), every module and file requested once in identity, br and gzip.
 * 2. **Warm hits** (`wrk -t1 -c32 -d4s`) of a 12 KiB module and of that realm's module nearest
 *    58 KiB: `serve` in identity, br and gzip; a bare node:http server sending the same br bytes
 *    and headers (bare-hot-server.ts); Vite's dev server on the 12 KiB module (it does not
 *    compress); and nginx compressing our identity answers on the fly (`gzip on`, level 6),
 *    what operators put in front today.
 *
 * The cold load with compression on and off is bench-cold-stores.ts's, with variants:
 * `COLD_STORES=memory,memory+MTC_CONTENT_ENCODINGS=identity,pglite,pglite+MTC_CONTENT_ENCODINGS=identity`.
 *
 * Needs `wrk` and `nginx` (`apt-get install wrk nginx-light`); says so and stops without them.
 * Run: npx node scratchpad/bench-compression.ts (BENCH_ROUNDS=3)
 */
import type { ChildProcess } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { brotliCompressSync, constants, gzipSync } from "node:zlib"
import { copyDemoRealm } from "../test/support/demo-vendor.ts"
import { startNginx } from "../test/support/nginx.ts"
import { which } from "../test/support/prerequisites.ts"
import { startServer } from "../test/support/server.ts"
import { median } from "./bench-l1.ts"
import { filesOf, get, spawnListening, stop, twelveKiB } from "./bench-hot-path.ts"
import { hasWrk, wrkRate } from "./wrk-graph.ts"

const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 3)
const WRK_ARGS = ["-t1", "-c32", "-d4s"]

const wrk = (url: string, headers: Record<string, string> = {}): number => wrkRate(url, WRK_ARGS, headers)

const kib = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`

const main = async () => {
  if (!hasWrk() || which("nginx") === undefined) {
    console.log("bench-compression: needs wrk and nginx (apt-get install wrk nginx-light); not run")
    return
  }
  const work = mkdtempSync(join(tmpdir(), "mtc-bench-compression-"))
  const realm = join(work, "realm")
  copyDemoRealm(realm)
  mkdirSync(join(realm, "bench"), { recursive: true })
  writeFileSync(join(realm, "bench", "twelve.ts"), twelveKiB())
  const children: Array<ChildProcess> = []
  const server = await startServer({ realmDir: realm, store: "memory", args: ["--pipeline", "ember"] })
  try {
    // 1. Wire bytes: every file once per coding (the first request transpiles; all are warm after).
    const paths = filesOf(realm).filter((p) => !p.endsWith(".json") || p.includes("package"))
    const sizes = { identity: 0, br: 0, gzip: 0 }
    const moduleSizes = { identity: 0, br: 0, gzip: 0 }
    let largest = { path: "", bytes: 0 }
    let modules = 0
    const moduleBodies: Array<Buffer> = []
    for (const p of paths) {
      const identity = await get(`${server.url}${p}`)
      if (identity.status !== 200) continue
      const isModule = identity.headers["x-module-cache"] !== undefined
      if (isModule) {
        modules++
        moduleBodies.push(identity.body)
      }
      for (const coding of ["identity", "br", "gzip"] as const) {
        const reply = coding === "identity" ? identity : await get(`${server.url}${p}`, { "accept-encoding": coding })
        sizes[coding] += reply.body.byteLength
        if (isModule) moduleSizes[coding] += reply.body.byteLength
      }
      // The module nearest 58 KiB: the size the issue's nginx figure was measured on.
      if (isModule && Math.abs(identity.body.byteLength - 58 * 1024) < Math.abs(largest.bytes - 58 * 1024)) {
        largest = { path: p, bytes: identity.body.byteLength }
      }
    }
    console.log(`\n1. wire bytes of the demo realm with Ember's runtime (${paths.length} files, ${modules} of them modules):`)
    console.log("| | identity | br | gzip | br / identity | gzip / identity |")
    console.log("|---|---|---|---|---|---|")
    for (const [name, s] of [["everything", sizes], ["modules", moduleSizes]] as const) {
      console.log(`| ${name} | ${kib(s.identity)} | ${kib(s.br)} | ${kib(s.gzip)} | ${(s.br / s.identity).toFixed(3)}x | ${(s.gzip / s.identity).toFixed(3)}x |`)
    }

    // The levels: br 5 (what the workers make), br 11 and gzip 6, over the same module bodies, timed here.
    console.log(`\nlevels over the ${modules} module bodies (${kib(moduleSizes.identity)}), one thread, median per module of ${ROUNDS}:`)
    console.log("| coding | size / identity | ms per module (mean) |")
    console.log("|---|---|---|")
    for (const [name, compress] of [
      ["br 5", (b: Buffer) => brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 5 } })],
      ["br 11", (b: Buffer) => brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } })],
      ["gzip 6", (b: Buffer) => gzipSync(b, { level: 6 })]
    ] as const) {
      const times: Array<number> = []
      let size = 0
      for (let round = 0; round < ROUNDS; round++) {
        size = 0
        const started = performance.now()
        for (const body of moduleBodies) size += compress(body).byteLength
        times.push((performance.now() - started) / moduleBodies.length)
      }
      console.log(`| ${name} | ${(size / moduleSizes.identity).toFixed(3)}x | ${median(times).toFixed(2)} |`)
    }

    // 2. Warm hits.
    const twelve = `${server.url}/bench/twelve.ts`
    for (let i = 0; i < 3; i++) await get(twelve, { "accept-encoding": "br" })
    const brReply = await get(twelve, { "accept-encoding": "br" })
    const brHeaders: Record<string, string> = {}
    for (const [name, value] of Object.entries(brReply.headers)) {
      if (name !== "date" && name !== "connection" && name !== "keep-alive" && typeof value === "string") brHeaders[name] = value
    }
    writeFileSync(join(work, "body.br"), brReply.body)
    writeFileSync(join(work, "headers.json"), JSON.stringify(brHeaders))
    const bare = await spawnListening("./bare-hot-server.ts", [join(work, "body.br"), join(work, "headers.json")])
    children.push(bare.child)
    const viteRoot = join(work, "vite")
    mkdirSync(viteRoot)
    writeFileSync(join(viteRoot, "twelve.ts"), twelveKiB())
    const vite = await spawnListening("./vite-dev-server.ts", [viteRoot])
    children.push(vite.child)
    const nginx = await startNginx({
      upstreams: [Number(new URL(server.url).port)],
      location: [
        // What an operator writes to compress on the fly: our answers fetched in identity.
        "proxy_set_header Accept-Encoding \"\";",
        "gzip on;",
        "gzip_comp_level 6;",
        "gzip_proxied any;",
        "gzip_types text/javascript application/javascript;"
      ]
    })
    try {
      const nginxCheck = await get(`${nginx.url}/bench/twelve.ts`, { "accept-encoding": "gzip" })
      if (nginxCheck.headers["content-encoding"] !== "gzip") throw new Error("nginx did not gzip")
      const largestUrl = `${server.url}${largest.path}`
      const targets: Array<{ readonly name: string; readonly url: string; readonly headers?: Record<string, string> }> = [
        { name: "serve 12 KiB, identity", url: twelve },
        { name: "serve 12 KiB, br", url: twelve, headers: { "accept-encoding": "br" } },
        { name: "serve 12 KiB, gzip", url: twelve, headers: { "accept-encoding": "gzip" } },
        { name: "serve 12 KiB, a browser's header (br)", url: twelve, headers: { "accept-encoding": "gzip, deflate, br, zstd" } },
        { name: "bare node:http, the same br bytes", url: `${bare.url}/` },
        { name: "vite dev 12 KiB (no compression)", url: `${vite.url}/twelve.ts` },
        { name: "nginx gzip on the fly of serve's 12 KiB", url: `${nginx.url}/bench/twelve.ts`, headers: { "accept-encoding": "gzip" } },
        { name: `serve ${kib(largest.bytes)} (${largest.path}), identity`, url: largestUrl },
        { name: `serve ${kib(largest.bytes)}, br`, url: largestUrl, headers: { "accept-encoding": "br" } },
        { name: `nginx gzip on the fly of serve's ${kib(largest.bytes)}`, url: `${nginx.url}${largest.path}`, headers: { "accept-encoding": "gzip" } }
      ]
      for (const target of targets) {
        await get(target.url, target.headers)
        wrk(target.url, target.headers) // warm-up
      }
      const results = new Map<string, Array<number>>()
      for (let round = 0; round < ROUNDS; round++) {
        for (const target of targets) results.set(target.name, [...(results.get(target.name) ?? []), wrk(target.url, target.headers)])
      }
      const rps = (name: string) => median(results.get(name) ?? [])
      console.log(`\n2. warm hits (wrk ${WRK_ARGS.join(" ")}, req/s, median of ${ROUNDS}):`)
      console.log("| target | req/s |")
      console.log("|---|---|")
      for (const target of targets) console.log(`| ${target.name} | ${rps(target.name).toFixed(0)} |`)
      const ratio = (a: string, b: string) => `${(rps(a) / rps(b)).toFixed(2)}x`
      console.log("\nratios:")
      console.log(`- br / identity, 12 KiB: ${ratio("serve 12 KiB, br", "serve 12 KiB, identity")}`)
      console.log(`- br / identity, ${kib(largest.bytes)}: ${ratio(`serve ${kib(largest.bytes)}, br`, `serve ${kib(largest.bytes)} (${largest.path}), identity`)}`)
      console.log(`- serve br / bare node:http (same bytes): ${ratio("serve 12 KiB, br", "bare node:http, the same br bytes")}`)
      console.log(`- serve br / vite dev: ${ratio("serve 12 KiB, br", "vite dev 12 KiB (no compression)")}`)
      console.log(`- serve identity / vite dev: ${ratio("serve 12 KiB, identity", "vite dev 12 KiB (no compression)")}`)
      console.log(`- serve br / nginx gzip on the fly, 12 KiB: ${ratio("serve 12 KiB, br", "nginx gzip on the fly of serve's 12 KiB")}`)
      console.log(`- serve gzip / nginx gzip on the fly, 12 KiB: ${ratio("serve 12 KiB, gzip", "nginx gzip on the fly of serve's 12 KiB")}`)
      console.log(`- serve br / nginx gzip on the fly, ${kib(largest.bytes)}: ${ratio(`serve ${kib(largest.bytes)}, br`, `nginx gzip on the fly of serve's ${kib(largest.bytes)}`)}`)
    } finally {
      await nginx.stop()
    }
  } finally {
    for (const child of children) await stop(child)
    await server.stop()
    rmSync(work, { recursive: true, force: true })
  }
}

await main()
