/**
 * How the realm server's answers look: their headers (CORS for modules and files, none for
 * the admin routes), content types, ETags and JSON answers.
 *
 * @since 0.3.0
 */
import { HttpServerRequest, HttpServerResponse } from "effect/http"
import * as path from "node:path"
import { type CachedModule, hashSource } from "../domain/Domain.ts"
import { corsHeaders, ifNoneMatches } from "./FastPath.ts"
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
 * headers), or a `304` when `If-None-Match` matches it.
 */
export const conditional = (
  request: HttpServerRequest.HttpServerRequest,
  bytes: Uint8Array,
  etag: string,
  contentType: string,
  extra: Record<string, string> = {}
): HttpServerResponse.HttpServerResponse => {
  const headers = { ...corsHeaders, etag, "cache-control": "no-cache", ...extra }
  if (ifNoneMatches(request.headers["if-none-match"], etag)) return HttpServerResponse.empty({ status: 304, headers })
  return HttpServerResponse.uint8Array(bytes, { headers, contentType })
}
