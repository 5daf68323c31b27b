/**
 * The answers of modules' source maps (see `SourceMaps`): `<module path>.map` beside each
 * module, with the module's rules (a private realm's only to its readers, CORS, an ETag and
 * `304`s, the immutable variant `?_v=<version>` that the module's comment names, `404` for a
 * version that is not current) and compressed once per map, never per request.
 *
 * The map of `card.gts` answers at `card.gts.map`. While maps are on, that path is the map's,
 * not a file's of the same name; when a module has no map (maps are off, or its map could not
 * be made), the path is an ordinary file path again.
 *
 * @since 0.7.0
 */
import type * as Effect from "effect/Effect"
import { type CachedModule, sourceMapContentType } from "../domain/Domain.ts"
import type { Coding } from "../internal/ContentCoding.ts"
import { isExecutable } from "../realm/PathRules.ts"
import type { CachedAnswer } from "../realm/RawFileCache.ts"
import { mapSuffix } from "../transpiler/SourceMaps.ts"
import { AnswersOnce, moduleEtag } from "./Responses.ts"

/**
 * The module path a request path names the map of (`card.gts` for `card.gts.map`), or
 * undefined when it names no module's map.
 */
export const modulePathOfMap = (relative: string): string | undefined => {
  if (!relative.endsWith(mapSuffix)) return undefined
  const modulePath = relative.slice(0, -mapSuffix.length)
  return isExecutable(modulePath) ? modulePath : undefined
}

/**
 * The strong ETag of a module's map: the module's with `-map` (so it begins with the module's
 * version, as an immutable URL requires).
 */
export const mapEtag = (module: Pick<CachedModule, "sourceHash" | "fingerprint">): string =>
  `${moduleEtag(module).slice(0, -1)}-map"`

/** The answers of maps, one per module object (an L1 entry), compressed the first time it is sent. */
export class SourceMapAnswers {
  private readonly answers: AnswersOnce<CachedModule>
  private readonly encoder = new TextEncoder()

  constructor(offered: ReadonlyArray<Coding>) {
    this.answers = new AnswersOnce<CachedModule>(offered, new WeakMap())
  }

  /** The answer of a module's map, or undefined when it has none. */
  of(module: CachedModule): Effect.Effect<CachedAnswer> | undefined {
    const map = module.sourceMap
    if (map === undefined) return undefined
    return this.answers.of(module, sourceMapContentType, () => ({ bytes: this.encoder.encode(map), etag: mapEtag(module) }))
  }
}
