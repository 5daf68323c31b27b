/**
 * One process of a test fleet: a ModuleCache on Postgres over a realm directory, driven by
 * its parent over IPC. The transpiler is Babel, slowed by `TRANSPILE_DELAY_MS`.
 *
 * Messages in: { id, op: "get" | "herd" | "invalidate" | "stats", ... }. Out: { id, ... }.
 */
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { createHash } from "node:crypto"
import { Effect, Layer, ManagedRuntime, Redacted } from "effect"
import * as BabelTranspiler from "../../src/transpiler/BabelTranspiler.ts"
import { hashSource, moduleKey, type ModuleKey } from "../../src/domain/Domain.ts"
import { ModuleNotFoundError } from "../../src/domain/Errors.ts"
import { ModuleCache } from "../../src/cache/ModuleCache.ts"
import * as ModuleCacheLive from "../../src/live/ModuleCacheLive.ts"
import { ModuleSources } from "../../src/domain/ModuleSources.ts"
import { Transpiler } from "../../src/domain/Transpiler.ts"

const env = process.env
const realmDir = env["REALM_DIR"] ?? "."
const realmUrl = env["REALM_URL"] ?? "https://fleet.test/"
const delay = Number(env["TRANSPILE_DELAY_MS"] ?? "0")
/** The delay of modules whose path starts with `slow-` (default: the same as the others). */
const slowDelay = Number(env["SLOW_DELAY_MS"] ?? String(delay))
const store: ModuleCacheLive.StoreChoice = env["STORE"] === "none"
  ? { _tag: "none" }
  : {
    _tag: "postgres",
    url: Redacted.make(env["DATABASE_URL"] ?? ""),
    poolSize: Number(env["POOL_SIZE"] ?? "4"),
    coordinate: env["COORDINATE"] !== "false",
    ...(env["POOLER"] === "transaction" ? { pooler: "transaction" as const } : {}),
    ...(env["DIRECT_URL"] ? { directUrl: Redacted.make(env["DIRECT_URL"]) } : {}),
    ...(env["LEASE_TTL_MS"] ? { lease: { ttl: Number(env["LEASE_TTL_MS"]) } } : {})
  }

const sources = Layer.succeed(ModuleSources, ModuleSources.of({
  read: (key) =>
    Effect.tryPromise({
      try: () => readFile(join(realmDir, key.path), "utf8"),
      catch: () => new ModuleNotFoundError({ path: key.path })
    }).pipe(Effect.map((content) => ({ key, content, hash: hashSource(content) })))
}))

const slowTranspiler = Layer.effect(
  Transpiler,
  Effect.gen(function*() {
    const inner = yield* BabelTranspiler.make({})
    return Transpiler.of({
      fingerprint: inner.fingerprint,
      transpile: (input) =>
        Effect.andThen(Effect.sleep(input.path.startsWith("slow-") ? slowDelay : delay), inner.transpile(input))
    })
  })
)

const runtime = ManagedRuntime.make(
  ModuleCacheLive.layer(store, {
    ...(env["DEADLINE"] ? { deadline: env["DEADLINE"] as `${number} millis` } : {}),
    ...(env["L1_MAX_BYTES"] ? { l1MaxBytes: Number(env["L1_MAX_BYTES"]) } : {})
  }).pipe(Layer.provide(Layer.merge(sources, slowTranspiler)))
)

const keyOf = (path: string): ModuleKey => moduleKey(realmUrl, path)
const bodyHash = (body: string) => createHash("sha256").update(body).digest("hex").slice(0, 16)

const timedGet = (path: string) =>
  Effect.gen(function*() {
    const cache = yield* ModuleCache
    const started = performance.now()
    const result = yield* Effect.result(cache.get(keyOf(path)))
    const ms = performance.now() - started
    return result._tag === "Success"
      ? { path, ok: true, outcome: result.success.outcome, hash: bodyHash(result.success.module.body), ms }
      : { path, ok: false, error: result.failure._tag, message: result.failure.message, ms }
  })

type Message =
  | { readonly id: number; readonly op: "get"; readonly path: string }
  | { readonly id: number; readonly op: "herd"; readonly paths: ReadonlyArray<string>; readonly k: number }
  | { readonly id: number; readonly op: "invalidate"; readonly path?: string }
  | { readonly id: number; readonly op: "stats" }

const handle = (message: Message): Effect.Effect<unknown, never, ModuleCache> => {
  switch (message.op) {
    case "get":
      return timedGet(message.path)
    case "herd":
      return Effect.all(
        message.paths.flatMap((path) => Array.from({ length: message.k }, () => timedGet(path))),
        { concurrency: "unbounded" }
      )
    case "invalidate":
      return Effect.flatMap(ModuleCache, (cache) =>
        message.path === undefined ? cache.invalidateRealm(realmUrl) : cache.invalidate(keyOf(message.path)))
    case "stats":
      return Effect.flatMap(ModuleCache, (cache) => cache.stats)
  }
}

process.on("message", (message: Message) => {
  runtime.runPromise(handle(message)).then(
    (result) => process.send?.({ id: message.id, result }),
    (error: unknown) => process.send?.({ id: message.id, error: String(error) })
  )
})
process.on("disconnect", () => {
  runtime.dispose().finally(() => process.exit(0))
})

runtime.runPromise(Effect.flatMap(ModuleCache, (cache) => cache.stats)).then(
  () => process.send?.({ ready: true, pid: process.pid }),
  (error: unknown) => {
    console.error("fleet child failed to start", error)
    process.exit(1)
  }
)
