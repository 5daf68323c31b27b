/**
 * The ModuleSources service: where module source text comes from. Users implement it; the
 * realm server ships a file-system one.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { hashSource, keyString, type ModuleKey, type ModuleSource } from "./Domain.ts"
import { ModuleNotFoundError, type InvalidPathError, type SourceReadError, type SourceTooLargeError } from "./Errors.ts"

/**
 * Reads the current source of a module, with its hash: the one service a user implements.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Domain, Errors, ModuleSources } from "module-transpile-cache"
 *
 * // Your storage: here a Map; yours reads your realm's files or database.
 * const myRealm = new Map([["components/card.ts", "export const title: string = \"card\"\n"]])
 *
 * const Sources = Layer.succeed(ModuleSources.ModuleSources, ModuleSources.ModuleSources.of({
 *   read: (key) => {
 *     const content = myRealm.get(key.path)
 *     return content === undefined
 *       ? Effect.fail(new Errors.ModuleNotFoundError({ path: key.path }))
 *       : Effect.succeed({ key, content, hash: Domain.hashSource(content) })
 *   }
 * }))
 * ```
 */
export class ModuleSources extends Context.Service<ModuleSources, {
  readonly read: (
    key: ModuleKey
  ) => Effect.Effect<ModuleSource, ModuleNotFoundError | InvalidPathError | SourceReadError | SourceTooLargeError>
}>()("module-transpile-cache/ModuleSources") {}

/** A mutable in-memory set of module sources, for tests: `set` and `remove` edit it. */
export interface MemorySources {
  readonly set: (key: ModuleKey, content: string) => void
  readonly remove: (key: ModuleKey) => void
  readonly service: ModuleSources["Service"]
}

/** Makes a {@link MemorySources} holding the given modules. */
export const makeMemory = (initial: Iterable<readonly [ModuleKey, string]> = []): MemorySources => {
  const files = new Map<string, ModuleSource>()
  const set = (key: ModuleKey, content: string) => {
    files.set(keyString(key), { key, content, hash: hashSource(content) })
  }
  for (const [key, content] of initial) set(key, content)
  return {
    set,
    remove: (key) => {
      files.delete(keyString(key))
    },
    service: ModuleSources.of({
      read: (key) =>
        Effect.suspend(() => {
          const file = files.get(keyString(key))
          return file ? Effect.succeed(file) : Effect.fail(new ModuleNotFoundError({ path: key.path }))
        })
    })
  }
}

/** A layer serving the given {@link MemorySources}. */
export const layerMemory = (sources: MemorySources): Layer.Layer<ModuleSources> =>
  Layer.succeed(ModuleSources, sources.service)
