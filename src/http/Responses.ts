/**
 * How the realm server's answers look: their headers (CORS for modules and files, none for
 * the admin routes), content types, ETags and JSON answers.
 *
 * @since 0.3.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as path from "node:path"
import { type CachedModule, hashSource } from "../domain/Domain.ts"
import type { CachedAnswer, Representation } from "../realm/RawFileCache.ts"
import { type Coding, compressAll, isCompressible, rankings } from "../internal/ContentCoding.ts"
import { answerOf, corsHeaders, formOf, ifNoneMatches, varyOf } from "./FastPath.ts"
import { privatePreflightHeaders } from "./ReadAccess.ts"

/** Headers of the admin routes: no CORS, no content sniffing. */
const adminHeaders = { "x-content-type-options": "nosniff" } as const

/**
 * The answer to a CORS preflight of a module or file. A private realm's names `authorization`
 * explicitly (the `*` wildcard does not cover it).
 */
export const preflight = (
  request: HttpServerRequest.HttpServerRequest,
  isPrivate = false
): HttpServerResponse.HttpServerResponse => {
  const requested = request.headers["access-control-request-headers"]
  return HttpServerResponse.empty({
    status: 204,
    headers: {
      ...corsHeaders,
      "access-control-allow-methods": "GET, HEAD, POST, OPTIONS",
      "access-control-allow-headers": requested ?? "*",
      "access-control-max-age": "86400",
      ...(isPrivate ? privatePreflightHeaders(requested) : {})
    }
  })
}

/** Content types of raw files, by extension; anything else is `application/octet-stream`. */
export const rawContentTypes: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/x-icon",
  ".wasm": "application/wasm",
  ".woff": "font/woff",
  ".woff2": "font/woff2"
}

/** The content type of a raw file, by its extension. */
export const contentTypeOf = (file: string): string =>
  rawContentTypes[path.posix.extname(file).toLowerCase()] ?? "application/octet-stream"

const quoted = (hex: string) => `"${hex.slice(0, 32)}"`

/** The strong ETag of a transpiled module: the same in every process that has the same source and pipeline. */
export const moduleEtag = (module: Pick<CachedModule, "sourceHash" | "fingerprint">): string =>
  quoted(hashSource(module.sourceHash + module.fingerprint))

/** The strong ETag of a raw file's bytes. */
export const rawEtag = (bytes: Uint8Array): string => quoted(hashSource(bytes))

/** A JSON answer of a module or file request: CORS headers, `cache-control: no-cache`. */
export const json = (status: number, body: unknown, extra: Record<string, string> = {}): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { ...corsHeaders, "cache-control": "no-cache", ...extra } })

/** A JSON answer of an admin route: no CORS headers, `cache-control: no-store`. */
export const adminJson = (
  status: number,
  body: unknown,
  extra: Record<string, string> = {}
): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { ...adminHeaders, "cache-control": "no-store", ...extra } })

/** Whether a request path is an admin route's (`/_cache` or below). */
export const isAdminPath = (urlPath: string): boolean => urlPath === "/_cache" || urlPath.startsWith("/_cache/")

/**
 * A `200` of bytes with an ETag (CORS headers, `cache-control: no-cache`, and any `extra`
 * headers, then the `200`'s own `okOnly`), or a `304` when `If-None-Match` matches it.
 */
export const conditional = (
  request: HttpServerRequest.HttpServerRequest,
  bytes: Uint8Array,
  etag: string,
  contentType: string,
  extra: Record<string, string> = {},
  okOnly: Record<string, string> = {}
): HttpServerResponse.HttpServerResponse => {
  const headers = { ...corsHeaders, etag, "cache-control": "no-cache", ...extra }
  if (ifNoneMatches(request.headers["if-none-match"], etag)) return HttpServerResponse.empty({ status: 304, headers })
  return HttpServerResponse.uint8Array(bytes, { headers: { ...headers, ...okOnly }, contentType })
}

/** The router's ranking of an `Accept-Encoding`, remembered by its text. */
const rankingOf = rankings()

/**
 * The form of a cached answer that the request accepts best, and the headers that go with it:
 * `vary: accept-encoding` on every form of a compressed answer, and `content-encoding` on a
 * compressed form (a 200's only: {@link conditionalAnswer} leaves it off a 304).
 */
export const negotiatedForm = (request: HttpServerRequest.HttpServerRequest, answer: CachedAnswer): {
  readonly form: Representation
  readonly vary: Record<string, string>
  readonly encoding: Record<string, string>
} => {
  if (answer.encoded === undefined) return { form: answer, vary: {}, encoding: {} }
  const { coding, form } = formOf(answer, rankingOf(request.headers["accept-encoding"]))
  return { form, vary: { vary: varyOf(false, true)! }, encoding: coding === "identity" ? {} : { "content-encoding": coding } }
}

/**
 * {@link conditional} of a cached answer, in the coding the request accepts best among the
 * answer's forms, with the headers the fast path sends them with (see `FastPath.answerOf`).
 */
export const conditionalAnswer = (
  request: HttpServerRequest.HttpServerRequest,
  answer: CachedAnswer,
  contentType: string,
  extra: Record<string, string> = {}
): HttpServerResponse.HttpServerResponse => {
  const { encoding, form, vary } = negotiatedForm(request, answer)
  return conditional(request, form.bytes, form.etag, contentType, { ...vary, ...extra }, encoding)
}

/** Where {@link AnswersOnce} keeps its answers. */
export interface AnswerStore<K> {
  get(key: K): Deferred.Deferred<CachedAnswer> | undefined
  set(key: K, value: Deferred.Deferred<CachedAnswer>): unknown
}

/**
 * The answer of a body made once elsewhere and kept as long as its bytes object is (a build's
 * import map, a page with the map injected), its compressed forms made the first time it is
 * sent (see `ContentCoding`), never per request: later and concurrent callers get the same.
 */
export class AnswersOnce<K> {
  private readonly made: AnswerStore<K>
  private readonly offered: ReadonlyArray<Coding>

  /** `store` keeps the answers (a WeakMap by bytes object, or a bounded map). */
  constructor(offered: ReadonlyArray<Coding>, store: AnswerStore<K>) {
    this.offered = offered
    this.made = store
  }

  /**
   * The answer of the body `content` gives (its bytes and ETag, asked for only the first time),
   * made once per `key`, for {@link conditionalAnswer}.
   */
  of(
    key: K,
    contentType: string,
    content: () => { readonly bytes: Uint8Array; readonly etag: string }
  ): Effect.Effect<CachedAnswer> {
    return Effect.suspend(() => {
      const known = this.made.get(key)
      if (known !== undefined) return Deferred.await(known)
      const made = Deferred.makeUnsafe<CachedAnswer>()
      this.made.set(key, made)
      const { bytes, etag } = content()
      const encoded = this.offered.length > 0 && isCompressible(contentType, bytes.byteLength)
        ? compressAll(bytes, this.offered)
        : Effect.succeed(undefined)
      // Uninterruptible (a compression takes milliseconds): the others wait for this one.
      return Effect.uninterruptible(Effect.flatMap(encoded, (forms) => {
        const answer = answerOf(bytes, etag, contentType, undefined, false, forms)
        return Effect.as(Deferred.succeed(made, answer), answer)
      }))
    })
  }
}
