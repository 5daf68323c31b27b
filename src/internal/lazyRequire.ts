/**
 * Packages loaded on first use rather than when the module that names them is imported: a
 * thread that never transpiles (the main thread of a pool), or never runs Babel (a native
 * engine's worker), never pays for their code.
 *
 * @since 0.4.0
 */
import { createRequire } from "node:module"

/**
 * A function that loads `specifier`, resolved from `from` (an `import.meta.url`), on its first
 * call, and returns the same module on every call. ES modules load through `require` too
 * (Node 22.12 and later), so a synchronous caller needs no `await`.
 */
export const lazyRequire = <A>(from: string, specifier: string): () => A => {
  let loaded: { readonly module: A } | undefined
  return () => {
    if (loaded === undefined) {
      const module: A = createRequire(from)(specifier)
      loaded = { module }
    }
    return loaded.module
  }
}
