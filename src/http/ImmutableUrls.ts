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
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import type * as HttpServerResponse from "effect/http/HttpServerResponse"
import type { ErrorBody } from "./HttpBodies.ts"
import { pathOf } from "../realm/PathRules.ts"
import type { CachedAnswer } from "../realm/RawFileCache.ts"
import { conditionalAnswer, json } from "./Responses.ts"

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
 * The answer to an immutable URL: when `version` is the current one (that of the answer's
 * ETag), the plain answer (a `200` in the coding the request accepts best, or a `304` on a
 * matching `If-None-Match`) with an immutable `cache-control`; else `404`, never cached.
 */
export const answer = (
  request: HttpServerRequest.HttpServerRequest,
  version: string,
  cached: CachedAnswer,
  contentType: string,
  extra: Record<string, string> = {}
): HttpServerResponse.HttpServerResponse => {
  if (version !== versionOfEtag(cached.etag)) {
    const urlPath = pathOf(request.url)
    return json(404, {
      error: "VersionNotCurrent",
      message: `version ${version.slice(0, 32)} of ${urlPath} is not current: load the page (or the import map) again`,
      path: urlPath
    } satisfies ErrorBody, { "cache-control": "no-store" })
  }
  return conditionalAnswer(request, cached, contentType, { "cache-control": immutableCacheControl, ...extra })
}
