/**
 * The HTTP fast path of {@link RealmServer.layer}: answers warm requests (L1 hits of modules
 * and cached raw files, their `304`s and `HEAD`s) straight from Node's request event, before
 * the Effect router, with header blocks and ETags computed once per cached entry.
 *
 * How it stays correct:
 * - It knows only request paths that the router answered before, or that name a module the
 *   preload put into L1 (`RealmServer.preloader`) under its own canonical path
 *   ({@link FastPath.remember}), each mapped to its realm and canonical path. A route holds only
 *   while its realm's generation has not moved: every file event of the realm's watcher (a new or
 *   deleted file can change what an extensionless path resolves to), a lost watch and the unmount
 *   move it. Routes are used only while a watcher reports the realm's changes.
 * - A private realm's route answers only an `Authorization` header the router verified before
 *   (`ReadAccess.allowsCached`); anyone else goes to the router, which answers 401.
 * - A module is answered only while it is the key's current L1 entry (`ModuleCache.peekL1`):
 *   every invalidation (API, watcher, peer, realm) drops the L1 entry synchronously, so a
 *   request after `invalidate` returned falls through to the router and gets the new bytes.
 *   A raw file likewise only while it is in the {@link RawFileCache}.
 * - Anything else falls through to the router: other methods, `/_cache/*`, requests with a
 *   body, HTTP/2, paths never answered, misses, errors (which are never cached).
 *
 * Hits are counted (`ModuleCache.countL1Hit` for the stats, and plain counters here: module
 * hits and answer times, which the metrics route folds into `module_cache_gets_total` and
 * `module_cache_answer_seconds` when it renders, see `MetricsRoutes`) but not traced: only
 * requests that reach the router get spans, and no hit makes an Effect call.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type { IncomingMessage, ServerResponse } from "node:http"
import {
  type CachedModule,
  type EncodedBodies,
  javascriptContentType,
  sourceMapContentType,
  type TranspiledModule
} from "../domain/Domain.ts"
import type { ModuleCache } from "../cache/ModuleCache.ts"
import { answerBoundaries, PlainHistogram } from "./AnswerMetrics.ts"
import type { CachedAnswer, Representation } from "../realm/RawFileCache.ts"
import { type Coding, codedEtag, codings, type ContentCoding, missingCodings, rankings } from "../internal/ContentCoding.ts"
import type { MountedRealm } from "../realm/Realms.ts"
import { privateHeaders } from "./ReadAccess.ts"
import { immutableCacheControl, requestedVersion, versionOfEtag } from "./ImmutableUrls.ts"

/** Headers of module and file responses: CORS for any origin, and no content sniffing (the router's too). */
export const corsHeaders = {
  "access-control-allow-origin": "*",
  "access-control-expose-headers": "etag, x-module-cache",
  "x-content-type-options": "nosniff"
} as const

/**
 * The `vary` of an answer: `accept-encoding` when it has compressed forms (on every form, identity
 * and 304s included), `authorization` for a private realm's; undefined for neither.
 */
export const varyOf = (isPrivate: boolean, compressed: boolean): string | undefined =>
  isPrivate
    ? (compressed ? `${privateHeaders["vary"]!}, accept-encoding` : privateHeaders["vary"]!)
    : compressed
    ? "accept-encoding"
    : undefined

/**
 * The header blocks of a cached answer, in the order the router sends them: CORS, `etag`,
 * `cache-control`, `vary` when it varies, then `x-module-cache` when given, then (200 only)
 * content type, encoding and length. `encoded` are the body's compressed forms (absent: the body
 * is sent as it is, and varies by no encoding), each of which gets an ETag of its own.
 */
export const answerOf = (
  bytes: Uint8Array,
  etag: string,
  contentType: string,
  moduleCache?: string,
  isPrivate = false,
  encoded?: Readonly<Partial<Record<Coding, Uint8Array>>>,
  cacheControl: string = isPrivate ? privateHeaders["cache-control"]! : "no-cache"
): CachedAnswer => {
  const vary = varyOf(isPrivate, encoded !== undefined)
  const form = (body: Uint8Array, formEtag: string, coding?: Coding): Representation => {
    const common = [
      "access-control-allow-origin",
      corsHeaders["access-control-allow-origin"],
      "access-control-expose-headers",
      corsHeaders["access-control-expose-headers"],
      "x-content-type-options",
      corsHeaders["x-content-type-options"],
      "etag",
      formEtag,
      "cache-control",
      cacheControl,
      ...(vary === undefined ? [] : ["vary", vary]),
      ...(moduleCache === undefined ? [] : ["x-module-cache", moduleCache])
    ]
    return {
      bytes: body,
      etag: formEtag,
      notModified: common,
      ok: [
        ...common,
        "content-type",
        contentType,
        ...(coding === undefined ? [] : ["content-encoding", coding]),
        "content-length",
        String(body.byteLength)
      ]
    }
  }
  const identity = form(bytes, etag)
  if (encoded === undefined) return identity
  const forms: Partial<Record<Coding, Representation>> = {}
  for (const coding of codings) {
    const body = encoded[coding]
    if (body !== undefined) forms[coding] = form(body, codedEtag(etag, coding), coding)
  }
  return { ...identity, encoded: forms }
}

/**
 * The compressed forms of a module's body that are among those offered (`MTC_CONTENT_ENCODINGS`),
 * or undefined for none: a row may hold forms that this server does not send.
 */
export const offeredForms = (module: TranspiledModule, offered: ReadonlyArray<Coding>): EncodedBodies | undefined => {
  const encoded = module.encoded
  if (encoded === undefined) return undefined
  let forms: { br?: Uint8Array; gzip?: Uint8Array } | undefined
  for (const coding of offered) {
    const body = encoded[coding]
    if (body !== undefined) (forms ??= {})[coding] = body
  }
  return forms
}

/** The compressed bodies of an answer's forms. */
const bodiesOf = (forms: Readonly<Partial<Record<Coding, Representation>>>): Partial<Record<Coding, Uint8Array>> => {
  const bodies: Partial<Record<Coding, Uint8Array>> = {}
  for (const coding of codings) {
    const form = forms[coding]
    if (form !== undefined) bodies[coding] = form.bytes
  }
  return bodies
}

/**
 * The form of an answer to send for a request's ranking of codings (`ContentCoding.ranking`): the
 * first of them the answer has, a compressed form or the identity form, and its coding.
 */
export const formOf = (
  answer: CachedAnswer,
  ranked: ReadonlyArray<ContentCoding>
): { readonly form: Representation; readonly coding: ContentCoding } => {
  for (const coding of ranked) {
    if (coding === "identity") break
    const form = answer.encoded?.[coding]
    if (form !== undefined) return { form, coding }
  }
  return { form: answer, coding: "identity" }
}

/**
 * Whether an `If-None-Match` header matches an ETag: `*`, or a comma-separated list of
 * entity tags compared weakly (as RFC 9110 prescribes for If-None-Match). Malformed
 * entries never match.
 */
export const ifNoneMatches = (header: string | undefined, etag: string): boolean => {
  if (header === undefined) return false
  // The common case, one strong tag exactly as sent: no splitting.
  if (header === etag) return true
  if (header.length > 8192) return false
  for (const raw of header.split(",")) {
    const entry = raw.trim()
    if (entry === "*") return true
    const tag = entry.startsWith("W/") ? entry.slice(2) : entry
    if (tag.length >= 2 && tag.startsWith("\"") && tag.endsWith("\"") && tag === etag) return true
  }
  return false
}

/** What a remembered request path leads to: a module, a module's source map (both by key id) or a raw file (by canonical path). */
export type RouteKind = "module" | "map" | "raw"

/** Where a remembered request path leads, in a realm. */
interface Route {
  readonly realm: MountedRealm
  /** The realm's generation when the route was remembered: the route holds while it has not moved. */
  readonly generation: number
  readonly kind: RouteKind
  readonly id: string
}

/** A source map's answers here: under its plain URL and under its immutable one (`?_v=`). */
interface MapAnswers {
  readonly plain: CachedAnswer
  readonly immutable: CachedAnswer
}

/** The fast path's counts of one realm, for its metrics. */
export interface RealmAnswers {
  /** Module hits (L1) answered here, but for the warm-up's. */
  moduleHits: number
  readonly answerTimes: { readonly l1: PlainHistogram; readonly raw: PlainHistogram }
}

const maxRoutes = 10_000

/** Whether the bearer of an `Authorization` header is known to read a private realm (`ReadAccess.allowsCached`). */
export type CachedReadCheck = (authorization: string | undefined, mount: string) => boolean

/** The fast path of one server. */
export class FastPathHandler {
  private readonly routes = new Map<string, Route>()
  private cache: ModuleCache["Service"] | undefined
  private readAllowed: CachedReadCheck = () => false
  /** The codings a module's compressed forms are sent in. */
  private offered: ReadonlyArray<Coding> = codings
  /** Requests answered here so far, but for those of a start's warm-up. */
  answered = 0
  /** Module hits and answer times, per realm (see {@link answersOf}). */
  private readonly byRealm = new WeakMap<MountedRealm, RealmAnswers>()
  /**
   * Set during a start's JIT warm-up (see `JitWarmup`): its answers are counted in
   * {@link warmupAnswered}, not as L1 hits nor in {@link answered}.
   */
  warming = false
  /** Requests answered while {@link warming}. */
  warmupAnswered = 0
  /** How long the start's warm-up took, in milliseconds (set by `JitWarmup`). */
  warmupMillis = 0
  /** Per module object: its answer as an L1 hit, computed once. */
  private readonly encodings = new WeakMap<CachedModule, CachedAnswer>()
  /** Per module object: its source map's answers, computed once. */
  private readonly maps = new WeakMap<CachedModule, MapAnswers>()
  /** The ranking of an `Accept-Encoding`, remembered by its text. */
  private readonly rankingOf = rankings()

  /**
   * Connects the cache the answers come from, the check of private realms' readers (without
   * one, private realms are never answered here) and the codings modules are sent in (default
   * br and gzip). `RealmServer.layer` does, when it builds the
   * {@link FastPath} service.
   */
  install(cache: ModuleCache["Service"], readAllowed?: CachedReadCheck, offered: ReadonlyArray<Coding> = codings): void {
    this.cache = cache
    this.offered = offered
    if (readAllowed !== undefined) this.readAllowed = readAllowed
  }

  /** The fast path's counts of a realm: its module hits (L1) and answer times (`l1`, `raw`), in seconds, but for the warm-up's. */
  answersOf(realm: MountedRealm): RealmAnswers {
    let answers = this.byRealm.get(realm)
    if (answers === undefined) {
      answers = { moduleHits: 0, answerTimes: { l1: new PlainHistogram(answerBoundaries), raw: new PlainHistogram(answerBoundaries) } }
      this.byRealm.set(realm, answers)
    }
    return answers
  }

  /**
   * Remembers that a request path leads to a module (see {@link remember}), whose answer as an
   * L1 hit is computed once per module object from its encoded body and ETag, and the
   * compressed forms it has of those offered.
   */
  rememberModule(
    realm: MountedRealm,
    urlPath: string,
    id: string,
    module: CachedModule,
    bytes: Uint8Array,
    etag: string,
    captured: number
  ): void {
    // A module whose compressed forms are still to come (see `ModuleCache`) stays the router's
    // until they are there: its answer would be identity to everyone.
    if (!this.encodings.has(module) && missingCodings(module, this.offered).length === 0) {
      const forms = offeredForms(module, this.offered)
      this.encodings.set(module, answerOf(bytes, etag, javascriptContentType, "l1", realm.isPrivate, forms))
    }
    this.remember(realm, urlPath, "module", id, captured)
  }

  /**
   * Remembers that a request path leads to a module's source map (see {@link remember}), with
   * the router's answer of it (its bytes, ETag and compressed forms), for its plain URL and its
   * immutable one.
   */
  rememberMap(realm: MountedRealm, urlPath: string, id: string, module: CachedModule, answer: CachedAnswer, captured: number): void {
    if (!this.maps.has(module)) {
      const forms = answer.encoded === undefined ? undefined : bodiesOf(answer.encoded)
      const made = (cacheControl?: string) =>
        answerOf(answer.bytes, answer.etag, sourceMapContentType, undefined, realm.isPrivate, forms, cacheControl)
      // A private realm's answers stay private under an immutable URL, as the router's do.
      this.maps.set(module, { plain: made(), immutable: realm.isPrivate ? made() : made(immutableCacheControl) })
    }
    this.remember(realm, urlPath, "map", id, captured)
  }

  /** Up to `limit` request paths of public realms remembered as leading to modules. */
  modulePaths(limit: number): Array<string> {
    const paths: Array<string> = []
    for (const [path, route] of this.routes) {
      if (paths.length >= limit) break
      if (route.kind === "module" && !route.realm.isPrivate) paths.push(path)
    }
    return paths
  }

  /** The realm's generation before a request resolves its path; {@link remember} uses it. */
  capture(realm: MountedRealm): number {
    return realm.generation
  }

  /**
   * Remembers that a request path (as sent, without its query) leads to a module or a raw
   * file of a realm, if no file event of the realm came since `captured` (a resolution it
   * overtook is not kept) and a watcher reports its changes.
   */
  remember(realm: MountedRealm, urlPath: string, kind: RouteKind, id: string, captured: number): void {
    if (!realm.watching || captured !== realm.generation) return
    if (this.routes.size >= maxRoutes) this.routes.clear()
    this.routes.set(urlPath, { realm, generation: captured, kind, id })
  }

  /**
   * Answers a request when it is a warm hit; returns false (having written nothing) when
   * the router must answer it.
   */
  handle(request: IncomingMessage, response: ServerResponse): boolean {
    const method = request.method
    if (method !== "GET" && method !== "HEAD") return false
    const url = request.url
    if (url === undefined) return false
    const query = url.indexOf("?")
    // An immutable URL (`?_v=<version>`, see ImmutableUrls): a map's is answered here when its
    // version is current; any other's the router checks.
    const version = query === -1 ? undefined : requestedVersion(url)
    const urlPath = query === -1 ? url : url.slice(0, query)
    const route = this.routes.get(urlPath)
    if (route === undefined || (version !== undefined && route.kind !== "map")) return false
    const realm = route.realm
    // A file event, a lost watch or the unmount since: what the path resolves to may differ.
    if (route.generation !== realm.generation || !realm.watching) {
      this.routes.delete(urlPath)
      return false
    }
    const started = performance.now()
    const headers = request.headers
    if (
      request.httpVersionMajor !== 1 || headers["content-length"] !== undefined ||
      headers["transfer-encoding"] !== undefined || headers["expect"] !== undefined
    ) return false
    // A private realm only to a reader the router let in before (anyone else gets the router's 401).
    if (realm.isPrivate && !this.readAllowed(headers.authorization, realm.mount)) return false
    let cached: CachedAnswer | undefined
    if (route.kind === "module") {
      const cache = this.cache
      const module = cache?.peekL1(route.id)
      if (cache === undefined || module === undefined) return false
      cached = this.encodings.get(module)
      if (cached === undefined) return false
      if (!this.warming) cache.countL1Hit(realm.realmUrl)
    } else if (route.kind === "map") {
      const module = this.cache?.peekL1(route.id)
      const answers = module === undefined ? undefined : this.maps.get(module)
      if (answers === undefined) return false
      // A version that is not current: the router's 404.
      if (version !== undefined && version !== versionOfEtag(answers.plain.etag)) return false
      cached = version === undefined ? answers.plain : answers.immutable
    } else {
      cached = realm.raw.get(route.id)
      if (cached === undefined) return false
    }
    const answer = cached.encoded === undefined ? cached : formOf(cached, this.rankingOf(headers["accept-encoding"])).form
    const ifNoneMatch = headers["if-none-match"]
    if (ifNoneMatch !== undefined && ifNoneMatches(ifNoneMatch, answer.etag)) {
      response.writeHead(304, answer.notModified as Array<string>)
      response.end()
    } else {
      response.writeHead(200, answer.ok as Array<string>)
      if (method === "HEAD") response.end()
      else response.end(answer.bytes)
    }
    if (this.warming) {
      this.warmupAnswered++
    } else {
      this.answered++
      const seconds = (performance.now() - started) / 1000
      const answers = this.answersOf(realm)
      if (route.kind === "module") {
        answers.moduleHits++
        answers.answerTimes.l1.observe(seconds)
      } else {
        answers.answerTimes.raw.observe(seconds)
      }
    }
    return true
  }
}

/** The fast path of the server being built (see {@link RealmServer.layer}); absent in an app that mounts the routes itself. */
export class FastPath extends Context.Service<FastPath, FastPathHandler>()("module-transpile-cache/FastPath") {}
