/**
 * Content codings: which one an answer is sent in (`Accept-Encoding`, RFC 9110 §12.5.3), and
 * the compressed forms themselves, made once per body off the event loop.
 *
 * - **Negotiation** ({@link negotiate}): q-values, `identity`, `*` and `;q=0` as RFC 9110
 *   says. The highest weight among the codings offered wins; on a tie, br, then gzip, then
 *   identity. A malformed header, or one that accepts nothing offered, gets identity: never an
 *   error, never a 406. No header at all gets identity too (curl, health checks, proxies that
 *   strip it).
 * - **Compression** ({@link compress}): zlib's br and gzip on libuv's thread pool, never on
 *   the event loop.
 *
 * @since 0.4.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { brotliCompress, brotliCompressSync, constants, gzip, gzipSync } from "node:zlib"
import type { EncodedBodies, TranspiledModule } from "../domain/Domain.ts"

/** A coding a body is compressed with. */
export type Coding = "br" | "gzip"

/** What an answer is sent in. */
export type ContentCoding = Coding | "identity"

/** Every coding this server can send, in order of preference on a tie. */
export const codings: ReadonlyArray<Coding> = ["br", "gzip"]

/**
 * The coding the request that is being answered will be sent in, when the server knows it: a
 * server provides it around `ModuleCache.get`, so that a cold load of a process with no peers
 * waits only for that coding (see `ModuleCacheOptions.contentEncodings`). Undefined: not known,
 * every coding offered is made with the transpile.
 */
export const RequestedCoding = Context.Reference<ContentCoding | undefined>(
  "module-transpile-cache/RequestedCoding",
  { defaultValue: () => undefined }
)

/** Bodies below this many bytes stay identity: the gain would not pay for the header. */
export const minCompressedBytes = 256

/** br quality and gzip level of the compressed forms made here. */
export const levels = { br: 5, gzip: 6 } as const

const token = /^[!#$%&'*+.^_`|~0-9a-z-]+$/
const weight = /^q=(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/

/** The weights a header gives, by coding name (lowercase); undefined when it is malformed. */
const weightsOf = (header: string): Map<string, number> | undefined => {
  const weights = new Map<string, number>()
  if (header.length > 4096) return undefined
  for (const item of header.split(",")) {
    const [rawName, ...parameters] = item.split(";")
    const name = rawName!.trim().toLowerCase()
    if (name === "") {
      if (parameters.length > 0) return undefined
      continue
    }
    if (!token.test(name) || parameters.length > 1) return undefined
    let q = 1
    if (parameters.length === 1) {
      const match = weight.exec(parameters[0]!.trim().toLowerCase().replace(/\s*=\s*/, "="))
      if (match === null) return undefined
      q = Number(match[1])
    }
    const coding = name === "x-gzip" ? "gzip" : name
    weights.set(coding, Math.max(weights.get(coding) ?? 0, q))
  }
  return weights
}

/** What a request accepts when it names nothing (or nothing well-formed). */
const identityOnly: ReadonlyArray<ContentCoding> = ["identity"]

/**
 * The codings a request's `Accept-Encoding` accepts, best first: those it weighs above 0 and no
 * lower than identity, by weight, br before gzip on a tie; then identity, which is always
 * possible. The first of them that an answer has is the one to send it in.
 */
export const ranking = (header: string | undefined): ReadonlyArray<ContentCoding> => {
  if (header === undefined) return identityOnly
  const weights = weightsOf(header)
  if (weights === undefined) return identityOnly
  const any = weights.get("*")
  // identity weighs what it is given, or what `*` is; unnamed, it is the last resort (any coding
  // the header accepts beats it). Excluded (`identity;q=0`, `*;q=0`) with nothing else acceptable,
  // it is still what is sent.
  const identity = weights.get("identity") ?? any ?? Number.MIN_VALUE
  const accepted = codings
    .map((coding) => ({ coding, q: weights.get(coding) ?? any ?? 0 }))
    .filter(({ q }) => q > 0 && q >= identity)
    // Stable: on a tie, the order of `codings`.
    .sort((a, b) => b.q - a.q)
  return [...accepted.map(({ coding }) => coding), "identity"]
}

/**
 * The coding to send an answer in, among `offered` (identity is always possible), for the
 * request's `Accept-Encoding`.
 */
export const negotiate = (header: string | undefined, offered: ReadonlyArray<Coding> = codings): ContentCoding => {
  for (const coding of ranking(header)) if (coding === "identity" || offered.includes(coding)) return coding
  return "identity"
}

/**
 * {@link ranking} remembered by header text (browsers send a handful of distinct values), for
 * the fast path: a hit is one map lookup. At most 256 values are kept.
 */
export const rankings = (): (header: string | undefined) => ReadonlyArray<ContentCoding> => {
  const known = new Map<string, ReadonlyArray<ContentCoding>>()
  return (header) => {
    if (header === undefined) return identityOnly
    let ranked = known.get(header)
    if (ranked === undefined) {
      ranked = ranking(header)
      if (known.size >= 256) known.clear()
      known.set(header, ranked)
    }
    return ranked
  }
}

/** Whether a body of this content type and size is worth compressing (text, JSON, JavaScript, SVG). */
export const isCompressible = (contentType: string, size: number): boolean =>
  size >= minCompressedBytes &&
  (contentType.startsWith("text/") || contentType.startsWith("application/json") ||
    contentType.startsWith("application/javascript") || contentType.startsWith("image/svg+xml") ||
    contentType.startsWith("application/manifest+json") || contentType.startsWith("application/xml"))

const brotliOptions = (size: number) => ({
  params: { [constants.BROTLI_PARAM_QUALITY]: levels.br, [constants.BROTLI_PARAM_SIZE_HINT]: size }
})

const bytesOf = (buffer: Buffer): Uint8Array => new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)

/** `bytes` compressed with `coding`, on libuv's thread pool (interruptible: the result is then dropped). */
export const compress = (bytes: Uint8Array, coding: Coding): Effect.Effect<Uint8Array> =>
  Effect.callback<Uint8Array>((resume) => {
    const done = (error: Error | null, result: Buffer) => {
      // zlib fails only on bad options or memory exhaustion: a defect.
      resume(error === null ? Effect.succeed(bytesOf(result)) : Effect.die(error))
    }
    if (coding === "br") {
      brotliCompress(bytes, brotliOptions(bytes.byteLength), done)
    } else {
      gzip(bytes, { level: levels.gzip }, done)
    }
  })

/** Every coding of `offered` applied to `bytes`, at once. */
export const compressAll = (
  bytes: Uint8Array,
  offered: ReadonlyArray<Coding> = codings
): Effect.Effect<Partial<Record<Coding, Uint8Array>>> =>
  Effect.map(
    Effect.forEach(offered, (coding) => Effect.map(compress(bytes, coding), (compressed) => [coding, compressed] as const), {
      concurrency: "unbounded"
    }),
    (pairs) => Object.fromEntries(pairs)
  )

/**
 * The codings of `offered` that a module's body lacks and is worth compressing with: none when
 * it is too small, or has them all.
 */
export const missingCodings = (module: TranspiledModule, offered: ReadonlyArray<Coding>): ReadonlyArray<Coding> => {
  if (offered.length === 0) return []
  const missing = offered.filter((coding) => module.encoded?.[coding] === undefined)
  if (missing.length === 0) return missing
  const contentType = module.headers["content-type"] ?? "text/javascript"
  return isCompressible(contentType, Buffer.byteLength(module.body, "utf8")) ? missing : []
}

/**
 * The module with the compressed forms of `offered` it lacks, made in this thread at once:
 * for a transpile worker, whose thread is off the event loop already. The same module when it
 * lacks none.
 */
export const withFormsSync = (module: TranspiledModule, offered: ReadonlyArray<Coding>): TranspiledModule => {
  const missing = missingCodings(module, offered)
  if (missing.length === 0) return module
  const bytes = Buffer.from(module.body, "utf8")
  const encoded: { br?: Uint8Array; gzip?: Uint8Array } = { ...module.encoded }
  for (const coding of missing) {
    encoded[coding] = bytesOf(coding === "br" ? brotliCompressSync(bytes, brotliOptions(bytes.byteLength)) : gzipSync(bytes, { level: levels.gzip }))
  }
  return { ...module, encoded }
}

/**
 * The module with the compressed forms of `offered` it lacks, made on libuv's thread pool, or
 * undefined when it lacks none (nothing was compressed).
 */
export const withForms = (
  module: TranspiledModule,
  offered: ReadonlyArray<Coding>
): Effect.Effect<TranspiledModule | undefined> => {
  const missing = missingCodings(module, offered)
  if (missing.length === 0) return Effect.succeed(undefined)
  return Effect.map(
    compressAll(new TextEncoder().encode(module.body), missing),
    (made): TranspiledModule => ({ ...module, encoded: { ...module.encoded, ...made } satisfies EncodedBodies })
  )
}

/** The strong ETag of a coding of a body whose identity ETag is `etag` (`"<hex>"` becomes `"<hex>-br"`). */
export const codedEtag = (etag: string, coding: Coding): string => `${etag.slice(0, -1)}-${coding}"`

/** `MTC_CONTENT_ENCODINGS` as written (default: every coding). */
const encodingsText = Config.String("MTC_CONTENT_ENCODINGS").pipe(Config.withDefault(codings.join(",")))

/** The names a list gives, lowercase, without `identity`. */
const namesOf = (text: string): ReadonlyArray<string> =>
  text.split(",").map((name) => name.trim().toLowerCase()).filter((name) => name !== "" && name !== "identity")

/** The codings a list of names offers, in order of preference. */
const offeredOf = (names: ReadonlyArray<string>): ReadonlyArray<Coding> => codings.filter((coding) => names.includes(coding))

/**
 * The codings to offer, from `MTC_CONTENT_ENCODINGS` (a comma-separated list of `br` and
 * `gzip`; default both; empty or `identity` for none). Unknown names are left out.
 */
export const encodingsConfig: Config.Config<ReadonlyArray<Coding>> = encodingsText.pipe(
  Config.map((text) => offeredOf(namesOf(text)))
)

/** {@link encodingsConfig}, with a warning for each unknown name (the realm server's, once at start). */
export const offeredConfig: Effect.Effect<ReadonlyArray<Coding>> = Effect.gen(function*() {
  const names = namesOf(yield* Effect.orElseSucceed(encodingsText, () => codings.join(",")))
  const unknown = names.filter((name) => !(codings as ReadonlyArray<string>).includes(name))
  if (unknown.length > 0) {
    yield* Effect.logWarning(`module-transpile-cache: MTC_CONTENT_ENCODINGS: ${unknown.join(", ")} left out (br and gzip are offered)`)
  }
  return offeredOf(names)
})
