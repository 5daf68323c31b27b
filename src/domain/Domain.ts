/**
 * Values shared by every service: module keys, cache entries, outcomes and the hashes
 * that name them across a fleet.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"

/** A module of a realm: its realm URL and its canonical path (with the real extension, no leading slash). */
export interface ModuleKey {
  readonly realmUrl: string
  readonly path: string
}

/** Builds a {@link ModuleKey}. */
export const moduleKey = (realmUrl: string, path: string): ModuleKey => ({ realmUrl, path })

/** The in-process map key of a module: `<realmUrl>|<path>`. */
export const keyString = (key: ModuleKey): string => `${key.realmUrl}|${key.path}`

/**
 * A module key of one version of the output: the key and the pipeline fingerprint. L2 keeps
 * a row per versioned key, and a fleet coalesces per versioned key, so two versions of the
 * server on one database never wait on nor overwrite each other.
 */
export interface VersionedKey extends ModuleKey {
  readonly fingerprint: string
}

/** Builds a {@link VersionedKey}. */
export const versionedKey = (key: ModuleKey, fingerprint: string): VersionedKey => ({
  realmUrl: key.realmUrl,
  path: key.path,
  fingerprint
})

/** The fleet-wide coalesce key of one version of a module: `transpile|<fingerprint>|<realmUrl>|<path>`. */
export const coalesceKey = (key: VersionedKey): string => `transpile|${key.fingerprint}|${key.realmUrl}|${key.path}`

/**
 * The signed 64-bit hash of a string (the first 8 bytes of its SHA-256). It is both the
 * advisory-lock key and the NOTIFY payload of a module.
 */
export const hash64 = (value: string): bigint =>
  createHash("sha256").update(value).digest().readBigInt64BE(0)

/**
 * The hash of a versioned key's coalesce key: its advisory-lock key, lease key and the payload of
 * its "populated" NOTIFY.
 */
export const lockKey = (key: VersionedKey): bigint => hash64(coalesceKey(key))

/**
 * The version-blind hash of a module key (`transpile|<realmUrl>|<path>`): the payload of its
 * invalidation, which every version of the server applies, and how L1 finds its entries.
 */
export const keyHash = (key: ModuleKey): bigint => hash64(`transpile|${key.realmUrl}|${key.path}`)

/** The hash of a realm URL, used as the payload of a realm-wide invalidation. */
export const realmHash = (realmUrl: string): bigint => hash64(`realm|${realmUrl}`)

/** The hex SHA-256 of a module's source text: the `sourceHash` of rows and transpile results. */
export const hashSource = (source: string | Uint8Array): string =>
  createHash("sha256").update(source).digest("hex")

/**
 * The version of a module made from a source (by its hash) under a fingerprint: 16 hex digits,
 * the same in every process. A module's ETag begins with it (see `RealmServer.moduleEtag`), and
 * its immutable URL and its map's name it.
 */
export const moduleVersion = (sourceHash: string, fingerprint: string): string =>
  hashSource(sourceHash + fingerprint).slice(0, 16)

/**
 * The source hash an invalidation names for a module whose file is gone (see
 * `ModuleCache.invalidate`): no source hashes to it, so nothing satisfies it but a later
 * report of the same deletion.
 */
export const goneSourceHash = "gone"

/** The source of a module as it is now, as {@link ModuleSources} reads it. */
export interface ModuleSource {
  readonly key: ModuleKey
  readonly content: string
  readonly hash: string
}

/**
 * A module body's compressed forms, by content coding (`br`, `gzip`): each decodes to exactly
 * the body's UTF-8 bytes. Made once per module version (see `ContentCoding`) and stored with it.
 */
export type EncodedBodies = Readonly<Partial<Record<"br" | "gzip", Uint8Array>>>

/** What the transpiler makes of one module. */
export interface TranspiledModule {
  readonly body: string
  readonly headers: Readonly<Record<string, string>>
  readonly dependencyKeys: ReadonlyArray<string>
  readonly sourceHash: string
  /** The body's compressed forms (absent: none made; the body is sent as it is). */
  readonly encoded?: EncodedBodies
  /** The module's source map (v3 JSON) back to its source (absent: none). */
  readonly sourceMap?: string
}

/**
 * The bytes a module holds, as L1's bound and L2's cap count them: its body (UTF-8), its
 * compressed forms and its source map.
 */
export const moduleBytes = (module: TranspiledModule): number => {
  let bytes = Buffer.byteLength(module.body, "utf8")
  if (module.encoded !== undefined) {
    bytes += (module.encoded.br?.byteLength ?? 0) + (module.encoded.gzip?.byteLength ?? 0)
  }
  if (module.sourceMap !== undefined) bytes += Buffer.byteLength(module.sourceMap, "utf8")
  return bytes
}

/** A module ready to serve, with the pipeline fingerprint it was made under. */
export interface CachedModule extends TranspiledModule {
  readonly key: ModuleKey
  readonly fingerprint: string
}

/** How a `get` was answered. `error` is reported in spans and metrics for failed gets. */
export type Outcome = "l1" | "l2" | "transpiled" | "coalesced" | "fallback"

/** The outcomes as reported in spans and metrics, failures included. */
export type ReportedOutcome = Outcome | "error"

/** The answer of `ModuleCache.get`. */
export interface GetResult {
  readonly module: CachedModule
  readonly outcome: Outcome
}

/** The default bound on a module's source size: 8 MiB (`MTC_MAX_SOURCE_BYTES`). */
export const defaultMaxSourceBytes = 8 * 1024 * 1024

/** The content type of every transpiled module. */
export const javascriptContentType = "text/javascript; charset=utf-8"

/** The content type of a module's source map. */
export const sourceMapContentType = "application/json; charset=utf-8"
