/** Content codings (src/internal/ContentCoding.ts): the Accept-Encoding table of RFC 9110, and compressed forms that decode to the same bytes. */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import { answerOf, formOf } from "../src/http/FastPath.ts"
import * as ContentCoding from "../src/internal/ContentCoding.ts"

const table: ReadonlyArray<readonly [string | undefined, ContentCoding.ContentCoding]> = [
  [undefined, "identity"],
  ["", "identity"],
  ["gzip", "gzip"],
  ["br", "br"],
  ["gzip, deflate, br", "br"],
  ["gzip, deflate, br, zstd", "br"],
  ["BR", "br"],
  ["x-gzip", "gzip"],
  ["deflate", "identity"],
  ["gzip;q=1.0, br;q=0.5", "gzip"],
  ["gzip; q=0.8, br; q=0.9", "br"],
  ["br;q=0", "identity"],
  ["br;q=0, gzip", "gzip"],
  ["*", "br"],
  ["*;q=0", "identity"],
  ["*;q=0, gzip;q=0.2", "gzip"],
  ["identity", "identity"],
  ["identity;q=1, br;q=0.5", "identity"],
  ["identity;q=0.5, br", "br"],
  ["identity;q=0", "identity"],
  [",, br ,", "br"],
  // Malformed: identity, never an error.
  ["br;q=2", "identity"],
  ["br;q=abc", "identity"],
  ["br;q=0.5;q=1", "identity"],
  ["br;level=9", "identity"],
  ["b r", "identity"],
  [";q=1", "identity"],
  ["br".padEnd(5000, " "), "identity"]
]

describe("ContentCoding", () => {
  it("negotiates as RFC 9110 says: q-values, identity, *, q=0, ties br > gzip > identity, malformed to identity", () => {
    for (const [header, expected] of table) expect([header, ContentCoding.negotiate(header)]).toEqual([header, expected])
  })

  it("only among the codings offered; the remembered ranking answers the same, and an answer's form follows it", () => {
    expect(ContentCoding.negotiate("br, gzip;q=0.5", ["gzip"])).toBe("gzip")
    expect(ContentCoding.negotiate("br", ["gzip"])).toBe("identity")
    expect(ContentCoding.negotiate("br, gzip", [])).toBe("identity")
    const rankingOf = ContentCoding.rankings()
    for (const [header, expected] of table) {
      expect(rankingOf(header)[0]).toBe(expected)
      expect(rankingOf(header)[0]).toBe(expected)
    }
    expect(ContentCoding.ranking("gzip;q=0.5, br")).toEqual(["br", "gzip", "identity"])
    expect(ContentCoding.ranking("br;q=0, gzip")).toEqual(["gzip", "identity"])
    // An answer with a gzip form only (MTC_CONTENT_ENCODINGS=gzip) goes as gzip to a browser preferring br.
    const bytes = new TextEncoder().encode("x".repeat(300))
    const gzipOnly = answerOf(bytes, "\"abc\"", "text/plain", undefined, false, { gzip: bytes })
    expect(formOf(gzipOnly, rankingOf("br, gzip")).coding).toBe("gzip")
    expect(formOf(gzipOnly, rankingOf("br")).coding).toBe("identity")
  })

  it.effect("compressed forms decode to exactly the bytes, and carry an ETag of their own", () =>
    Effect.gen(function*() {
      const bytes = new TextEncoder().encode("export const greeting = 'hello';\n".repeat(200))
      const forms = yield* ContentCoding.compressAll(bytes)
      expect(Buffer.from(brotliDecompressSync(forms.br!)).equals(Buffer.from(bytes))).toBe(true)
      expect(Buffer.from(gunzipSync(forms.gzip!)).equals(Buffer.from(bytes))).toBe(true)
      expect(forms.br!.byteLength).toBeLessThan(bytes.byteLength / 4)
      expect(ContentCoding.codedEtag("\"abc\"", "br")).toBe("\"abc-br\"")
      expect(ContentCoding.isCompressible("text/css; charset=utf-8", 1024)).toBe(true)
      expect(ContentCoding.isCompressible("text/css; charset=utf-8", 100)).toBe(false)
      expect(ContentCoding.isCompressible("image/png", 100_000)).toBe(false)
    }))
})
