/**
 * Immutable URLs of a realm's modules and raw files: the plain request path with the query
 * `?_v=<version>`, answered with `cache-control: public, max-age=31536000, immutable` and
 * the same bytes (and ETag) as the plain URL.
 *
 * - **The version** is the first 16 hex digits of the plain answer's ETag, so it is made of
 *   what the ETag is made of: the source hash and the pipeline fingerprint for a module, the
 *   bytes for a raw file. The same in every process of a fleet.
 * - **A version that is not current** (the file changed since the URL was made, or the
 *   query is malformed) answers `404` JSON with `cache-control: no-store`: never other bytes
 *   under that URL, and never old bytes (an edit tombstones the old row in L2, so they are gone).
 * - **Why a query and not a path prefix** (`/_v/<version>/<path>`): a module's relative
 *   imports resolve against its own URL. Under a path prefix, `./util.ts` imported by
 *   `/_v/<A>/app.gts` would become `/_v/<A>/util.ts` (app's version, not util's), which no
 *   import map can point at util's URL without an entry per importer. A query leaves the
 *   directory alone: `./util.ts` resolves to the plain `/util.ts`, which the
 *   {@link ImportMap} maps to util's own immutable URL. Imports inside modules stay as they are.
 *
 * Only a query that starts with `_v=` makes a URL immutable; any other query is a plain
 * request as before. The fast path leaves immutable URLs to the router.
 *
 * @since 0.4.0
 */
import { HttpServerResponse } from "effect/http"
import type { HttpServerRequest } from "effect/http"
import { corsHeaders, ifNoneMatches } from "./FastPath.ts"
import type { ErrorBody } from "./HttpBodies.ts"
import { pathOf } from "../realm/PathRules.ts"
import { json } from "./Responses.ts"

/** The query prefix of an immutable URL (`?_v=<version>`). `FastPath.handle` checks the same text. */
export const versionQuery = "_v="

/** The `cache-control` of an answer under an immutable URL. */
export const immutableCacheControl = "public, max-age=31536000, immutable"

/** The version of an answer: the first 16 hex digits of its (quoted) ETag. */
export const versionOfEtag = (etag: string): string => etag.slice(1, 17)

/** The version an immutable request URL names, or undefined for a plain URL. */
export const requestedVersion = (url: string): string | undefined => {
  const query = url.indexOf("?")
  if (query === -1 || !url.startsWith(versionQuery, query + 1)) return undefined
  return url.slice(query + 1 + versionQuery.length)
}

/** The immutable URL of a request path (as sent, percent-encoded) at a version. */
export const immutableUrl = (urlPath: string, version: string): string => `${urlPath}?${versionQuery}${version}`

/**
 * The answer to an immutable URL: when `version` is the current one (that of `etag`), a
 * `200` (or `304` on a matching `If-None-Match`) with the plain answer's bytes, ETag and
 * CORS headers and an immutable `cache-control`; else `404`, never cached.
 */
export const answer = (
  request: HttpServerRequest.HttpServerRequest,
  version: string,
  bytes: Uint8Array,
  etag: string,
  contentType: string,
  extra: Record<string, string> = {}
): HttpServerResponse.HttpServerResponse => {
  if (version !== versionOfEtag(etag)) {
    const urlPath = pathOf(request.url)
    return json(404, {
      error: "VersionNotCurrent",
      message: `version ${version.slice(0, 32)} of ${urlPath} is not current: load the page (or the import map) again`,
      path: urlPath
    } satisfies ErrorBody, { "cache-control": "no-store" })
  }
  const headers = { ...corsHeaders, etag, "cache-control": immutableCacheControl, ...extra }
  if (ifNoneMatches(request.headers["if-none-match"], etag)) return HttpServerResponse.empty({ status: 304, headers })
  return HttpServerResponse.uint8Array(bytes, { headers, contentType })
}
