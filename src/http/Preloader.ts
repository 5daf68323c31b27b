/**
 * The start's preload of every mounted realm, and the fast-path routes of what it loaded.
 *
 * @since 0.4.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { ModuleCache } from "../cache/ModuleCache.ts"
import * as Preload from "../cache/Preload.ts"
import { keyString, type ModuleKey } from "../domain/Domain.ts"
import { encodePath } from "../realm/PathRules.ts"
import * as Realms from "../realm/Realms.ts"
import * as FastPath from "./FastPath.ts"
import { moduleEtag } from "./Responses.ts"

/**
 * Preloads every mounted realm into L1 from L2 (see `ModuleCache.preload`) and logs a
 * summary. {@link layer} builds it after the realms are mounted (their watchers run) and
 * before it listens, so that an edit during the preload is never missed and the first request
 * already finds L1 warm.
 */
export const preloader: Layer.Layer<never, never, ModuleCache | Realms.Realms> = Layer.effectDiscard(Effect.gen(function*() {
  const cache = yield* ModuleCache
  const realms = yield* Realms.Realms
  const fast = Option.getOrUndefined(yield* Effect.serviceOption(FastPath.FastPath))
  const mounted = realms.list()
  if (mounted.length === 0) return
  // Before the preload: a file event during it keeps its routes from the fast path.
  const captured = mounted.map((realm) => realm.generation)
  // One bound over every realm, the most recently read rows first.
  const summary = yield* cache.preload(mounted.map((realm) => realm.realmUrl))
  if (fast !== undefined) {
    const keysByRealm = new Map<string, Array<ModuleKey>>()
    for (const key of summary.keys) {
      const keys = keysByRealm.get(key.realmUrl)
      if (keys === undefined) keysByRealm.set(key.realmUrl, [key])
      else keys.push(key)
    }
    yield* Effect.forEach(mounted, (realm, i) =>
      routePreloaded(fast, cache, realm, keysByRealm.get(realm.realmUrl) ?? [], captured[i]!), { discard: true })
  }
  if (summary.rows > 0 || summary.error !== undefined) {
    const where = mounted.length === 1 ? "" : `${mounted.length} realms: `
    yield* Effect.logInfo(`module-transpile-cache: ${where}${Preload.formatSummary(summary)}`)
  }
}))

/**
 * Gives the fast path a route to each preloaded module, so that a restarted process answers
 * even the first request of a path there (no span: hits are counted, see {@link FastPath}).
 * A route is kept only where the module's own path resolves to it, as the router would
 * resolve it, and no file event came since `captured`.
 */
export const routePreloaded = (
  fast: FastPath.FastPathHandler,
  cache: ModuleCache["Service"],
  realm: Realms.MountedRealm,
  keys: ReadonlyArray<ModuleKey>,
  captured: number
) => {
  const encoder = new TextEncoder()
  return Effect.forEach(keys, (key) => {
    const encodedPath = encodePath(key.path)
    return realm.files.resolve(`/${encodedPath}`).pipe(
      Effect.map((resolved) => {
        const id = keyString(key)
        const module = cache.peekL1(id)
        if (!resolved.executable || resolved.path !== key.path || module === undefined) return
        fast.rememberModule(realm, realm.urlPathOf(encodedPath), id, module, encoder.encode(module.body), moduleEtag(module), captured)
      }),
      Effect.ignore
    )
  }, { concurrency: 16, discard: true })
}

