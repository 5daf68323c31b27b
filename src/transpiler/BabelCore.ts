/**
 * `@babel/core`, loaded on first use: a pool's main thread and a native engine's worker that
 * meets no decorator never load it (about 45 MiB of RSS per thread).
 *
 * @since 0.4.0
 */
import { lazyRequire } from "../internal/lazyRequire.ts"

/** `@babel/core`, loaded by the first call. */
export const babelCore = lazyRequire<typeof import("@babel/core")>(import.meta.url, "@babel/core")
