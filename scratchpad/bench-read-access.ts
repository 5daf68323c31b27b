/**
 * What read access costs a request to a private realm: the fast path's synchronous
 * `allowsCached` (hit and miss), and the router's `allows` when the header is remembered and
 * when it is verified in full (HS256 through jose), against the admin token's comparison.
 * Run: npx node scratchpad/run-one.ts bench-read-access benchReadAccess
 */
import { Effect, Redacted } from "effect"
import * as AdminToken from "../src/http/AdminToken.ts"
import * as ReadAccess from "../src/http/ReadAccess.ts"
import { type BenchRow, median, nsPerOp } from "./bench-l1.ts"

/** µs per call of an effectful `run`, median over rounds. */
const usPerEffect = (n: number, rounds: number, run: (i: number) => Effect.Effect<unknown>) =>
  Effect.gen(function*() {
    for (let i = 0; i < n; i++) yield* run(i) // warm up
    const samples: Array<number> = []
    for (let r = 0; r < rounds; r++) {
      const started = process.hrtime.bigint()
      for (let i = 0; i < n; i++) yield* run(i)
      samples.push(Number(process.hrtime.bigint() - started) / n / 1000)
    }
    return median(samples)
  })

export const benchReadAccess = async (): Promise<Array<BenchRow>> =>
  Effect.runPromise(Effect.gen(function*() {
    const secret = Redacted.make("bench-secret-".padEnd(48, "x"))
    const admin = Redacted.make("bench-admin-token-0123456789")
    const access = yield* ReadAccess.make({ readSecret: secret, adminToken: admin })
    // Capacity 1 and two alternating tokens: every `allows` of `uncached` verifies in full.
    const uncached = yield* ReadAccess.make({ readSecret: secret, cacheCapacity: 1 })
    const token = `Bearer ${yield* ReadAccess.issueReadToken(secret, ["/alice/notes/"], "1 hour")}`
    const other = `Bearer ${yield* ReadAccess.issueReadToken(secret, ["/alice/notes/"], "2 hours")}`
    yield* access.allows(token, "/alice/notes/")
    let sink = 0
    const n = 200_000
    const hitNs = nsPerOp(n, 7, (n) => {
      for (let i = 0; i < n; i++) sink += access.allowsCached(token, "/alice/notes/") ? 1 : 0
    })
    const missNs = nsPerOp(n, 7, (n) => {
      for (let i = 0; i < n; i++) sink += access.allowsCached(other, "/alice/notes/") ? 1 : 0
    })
    const adminNs = nsPerOp(n, 7, (n) => {
      for (let i = 0; i < n; i++) sink += AdminToken.matches(admin, "bench-admin-token-0123456789") ? 1 : 0
    })
    const rememberedUs = yield* usPerEffect(20_000, 5, () => access.allows(token, "/alice/notes/"))
    const headers = [token, other] as const
    const fullUs = yield* usPerEffect(2_000, 5, (i) => uncached.allows(headers[i % 2], "/alice/notes/"))
    if (sink === 42) console.log(sink)
    return [
      { name: "allowsCached, remembered header (ns/call)", value: hitNs.toFixed(0) },
      { name: "allowsCached, unknown header (ns/call)", value: missNs.toFixed(0) },
      { name: "AdminToken.matches (ns/call)", value: adminNs.toFixed(0) },
      { name: "allows, remembered header (µs/call)", value: rememberedUs.toFixed(2) },
      { name: "allows, full HS256 verify via jose (µs/call)", value: fullUs.toFixed(2) },
      { name: "token length (chars)", value: String(token.length - 7) }
    ]
  }))
