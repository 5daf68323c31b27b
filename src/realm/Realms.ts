/**
 * The realms of a server: each is a directory mounted at a URL path prefix (its **mount**,
 * `/`, `/base/` or `/alice/notes/`), with its own files, watcher and raw files, while the
 * process shares one {@link ModuleCache} (one L1 bound, one store, one fleet session), one
 * raw-file bound and one transpiler among them all.
 *
 * - A request path belongs to the realm of the **longest** mount that prefixes it.
 * - A realm's URL (its modules' cache key) is `realmUrlBase + mount` when a base is given,
 *   else its directory's `file://` URL, so that processes serving one directory share rows.
 * - Realms are mounted and unmounted while the server runs ({@link Realms.mount},
 *   {@link Realms.unmount}). An unmount stops the realm's watcher and drops its L1 entries and
 *   raw files in this process only; its L2 rows stay, since a peer may serve it. Requests in
 *   flight to other realms never see either.
 *
 * {@link RealmRegistry} is the table itself and the {@link ModuleSources} over it (a module is
 * read from the realm its key names); {@link Realms} mounts into it over the cache.
 *
 * @since 0.4.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as path from "node:path"
import { ChangeFeed } from "../cache/ChangeFeed.ts"
import { ModuleCache } from "../cache/ModuleCache.ts"
import { type ModuleKey } from "../domain/Domain.ts"
import { ModuleNotFoundError, type SourceReadError } from "../domain/Errors.ts"
import { ModuleSources } from "../domain/ModuleSources.ts"
import * as FileSystemSources from "./FileSystemSources.ts"
import { fileSystem, type RealmFiles } from "./FileSystemSources.ts"
import { segmentProblem } from "./PathRules.ts"
import { RawFiles, SharedRawFiles } from "./RawFileCache.ts"
import * as Watcher from "./Watcher.ts"

// -----------------------------------------------------------------------------
// Mounts
// -----------------------------------------------------------------------------

/** The longest mount accepted, in characters. */
export const maxMountLength = 256

/** Why a mount is refused: not a path prefix of the form `/` or `/a/b/`, or reserved (`/_cache/`). */
export class InvalidMountError extends Schema.TaggedError<InvalidMountError>()("InvalidMountError", {
  mount: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `invalid mount ${JSON.stringify(this.mount.slice(0, 100))}: ${this.reason}`
  }
}

/** A mount is taken already, or another mount serves the same realm URL. */
export class MountConflictError extends Schema.TaggedError<MountConflictError>()("MountConflictError", {
  mount: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `cannot mount ${this.mount}: ${this.reason}`
  }
}

/** No realm is mounted there. */
export class NotMountedError extends Schema.TaggedError<NotMountedError>()("NotMountedError", {
  mount: Schema.String
}) {
  override get message() {
    return `no realm is mounted at ${this.mount}`
  }
}

/** Why `Realms.mount` fails: a bad mount, a taken one, or a directory that cannot be read. */
export type MountError = InvalidMountError | MountConflictError | SourceReadError

/**
 * Checks a mount: it starts and ends with `/`, has no empty, dot or percent-encoded segment,
 * and is not below `/_cache/` (the admin routes). Returns it unchanged.
 */
export const validateMount = (mount: string): Effect.Effect<string, InvalidMountError> =>
  Effect.suspend(() => {
    const fail = (reason: string) => Effect.fail(new InvalidMountError({ mount, reason }))
    if (mount.length > maxMountLength) return fail(`longer than ${maxMountLength} characters`)
    if (!mount.startsWith("/") || !mount.endsWith("/")) return fail("a mount starts and ends with /")
    if (mount === "/") return Effect.succeed(mount)
    const segments = mount.slice(1, -1).split("/")
    for (const segment of segments) {
      if (segment === "") return fail("empty segment")
      const problem = segmentProblem(segment)
      if (problem !== undefined) return fail(problem)
      if (!/^[A-Za-z0-9._~!$&'()*+,;=:@-]+$/.test(segment)) {
        return fail("a segment may hold only unreserved URL characters (no percent-encoding)")
      }
    }
    if (segments[0] === "_cache") return fail("/_cache/ is the admin routes'")
    return Effect.succeed(mount)
  })

/** One realm to mount. */
export interface RealmSpec {
  /** The URL path prefix, `/` or `/a/b/` (see {@link validateMount}). */
  readonly mount: string
  /** The realm directory. */
  readonly dir: string
  /** The realm URL; defaults to `realmUrlBase + mount`, else the directory's `file://` URL. */
  readonly realmUrl?: string | undefined
  /** Whether reads need a token (see `ReadAccess`). Default false. */
  readonly private?: boolean | undefined
}

/** What every realm of a server shares: the base of realm URLs and the file rules. */
export interface RealmDefaults {
  /** `https://realms.example`: a realm's URL is this + its mount, unless its spec names one. */
  readonly realmUrlBase?: string | undefined
  /** Largest source or raw file served (default 8 MiB). */
  readonly maxSourceBytes?: number | undefined
  /** Directories never served, besides dot directories (the data directory, say). */
  readonly excluded?: ReadonlyArray<string> | undefined
}

/** The URL of a realm mounted at `mount` under a base (`https://realms.example` + `/alice/` = `https://realms.example/alice/`). */
export const realmUrlOf = (base: string, mount: string): string => `${base.replace(/\/+$/, "")}${mount}`

// -----------------------------------------------------------------------------
// Realm
// -----------------------------------------------------------------------------

/**
 * A mounted realm. Its `generation` moves on every file event and every change of its watch,
 * and when it is unmounted: whatever a request path resolved to before (a fast-path route, say)
 * is stale then.
 */
export class MountedRealm {
  /** Bumped by every file event, every change of the watch, and the unmount. */
  generation = 0
  /** Whether a watcher reports this realm's changes (what a route remembered may rely on). */
  watching = false

  readonly mount: string
  readonly realmUrl: string
  readonly isPrivate: boolean
  readonly files: RealmFiles["Service"]
  readonly raw: RawFiles
  /** The realm directory as given and as its real path: never shown in an answer. */
  readonly hidden: ReadonlyArray<string>

  constructor(options: {
    readonly mount: string
    readonly isPrivate: boolean
    readonly files: RealmFiles["Service"]
    readonly raw: RawFiles
    readonly hidden: ReadonlyArray<string>
  }) {
    this.mount = options.mount
    this.realmUrl = options.files.realmUrl
    this.isPrivate = options.isPrivate
    this.files = options.files
    this.raw = options.raw
    this.hidden = options.hidden
  }

  /** The request path of a module or file of this realm (its canonical path, percent-encoded). */
  urlPathOf(encodedPath: string): string {
    return this.mount + encodedPath
  }

  /** A request path of this realm as its realm-relative request path (`/alice/x.gts` -> `/x.gts`). */
  relativeUrlPath(urlPath: string): string {
    return urlPath.slice(this.mount.length - 1)
  }
}

// -----------------------------------------------------------------------------
// Registry
// -----------------------------------------------------------------------------

/** The table of mounted realms, by mount and by realm URL. Synchronous lookups. */
export interface RealmTable {
  /** The realm of the longest mount that prefixes a request path (still percent-encoded). */
  readonly lookup: (urlPath: string) => MountedRealm | undefined
  /** The realm mounted exactly at `mount`. */
  readonly get: (mount: string) => MountedRealm | undefined
  /** The realm whose URL this is. */
  readonly ofRealmUrl: (realmUrl: string) => MountedRealm | undefined
  /** Every mounted realm, in mount order. */
  readonly list: () => ReadonlyArray<MountedRealm>
  /** The raw files of every realm: one byte bound. */
  readonly raw: SharedRawFiles
}

/** The realm table, and the {@link ModuleSources} over it; {@link Realms} mounts into it. */
export class RealmRegistry extends Context.Service<RealmRegistry, RealmTable & {
  readonly add: (realm: MountedRealm) => void
  readonly remove: (realm: MountedRealm) => void
}>()("module-transpile-cache/RealmRegistry") {}

/** Makes an empty registry whose realms share a raw-file bound of `rawMaxBytes`. */
export const makeRegistry = (rawMaxBytes?: number): RealmRegistry["Service"] => {
  const byMount = new Map<string, MountedRealm>()
  const byUrl = new Map<string, MountedRealm>()
  const raw = new SharedRawFiles(rawMaxBytes)
  return RealmRegistry.of({
    raw,
    lookup: (urlPath) => {
      // The prefixes ending in `/`, longest first: a path is a few segments deep.
      let end = urlPath.lastIndexOf("/")
      while (end >= 0) {
        const realm = byMount.get(urlPath.slice(0, end + 1))
        if (realm !== undefined) return realm
        if (end === 0) return undefined
        end = urlPath.lastIndexOf("/", end - 1)
      }
      return undefined
    },
    get: (mount) => byMount.get(mount),
    ofRealmUrl: (realmUrl) => byUrl.get(realmUrl),
    list: () => [...byMount.values()].sort((a, b) => a.mount < b.mount ? -1 : a.mount > b.mount ? 1 : 0),
    add: (realm) => {
      byMount.set(realm.mount, realm)
      byUrl.set(realm.realmUrl, realm)
    },
    remove: (realm) => {
      if (byMount.get(realm.mount) === realm) byMount.delete(realm.mount)
      if (byUrl.get(realm.realmUrl) === realm) byUrl.delete(realm.realmUrl)
    }
  })
}

/** The module sources of the registry's realms: a key is read from the realm of its URL. */
const sourcesOf = (registry: RealmRegistry["Service"]): ModuleSources["Service"] =>
  ModuleSources.of({
    read: (key: ModuleKey) => {
      const realm = registry.ofRealmUrl(key.realmUrl)
      return realm === undefined ? Effect.fail(new ModuleNotFoundError({ path: key.path })) : realm.files.read(key)
    }
  })

/** An empty {@link RealmRegistry} and the {@link ModuleSources} over it. */
export const layerRegistry = (rawMaxBytes?: number): Layer.Layer<RealmRegistry | ModuleSources> =>
  Layer.effectContext(Effect.sync(() => {
    const registry = makeRegistry(rawMaxBytes)
    return Context.make(RealmRegistry, registry).pipe(Context.add(ModuleSources, sourcesOf(registry)))
  }))

// -----------------------------------------------------------------------------
// Realms
// -----------------------------------------------------------------------------

/** What a mount did. */
export interface Mounted {
  readonly realm: MountedRealm
  /** The keys put into L1 from L2 by the mount's preload (none when it was not asked for). */
  readonly preloaded: ReadonlyArray<ModuleKey>
  /** The realm's generation before the preload: what its routes may be remembered under. */
  readonly generation: number
}

/** Mounting and unmounting realms at run time. */
export class Realms extends Context.Service<Realms, RealmTable & {
  /**
   * Mounts a realm: checks the mount, reads the directory, starts its watcher (when the server
   * watches), and with `preload` loads its L2 rows into L1. Mounts are serialized.
   */
  readonly mount: (spec: RealmSpec, options?: { readonly preload?: boolean }) => Effect.Effect<Mounted, MountError>
  /** Unmounts a realm: stops its watcher, drops its L1 entries and raw files here (its L2 rows stay). */
  readonly unmount: (mount: string) => Effect.Effect<MountedRealm, NotMountedError>
}>()("module-transpile-cache/Realms") {}

/** The options of {@link make}. */
export interface RealmsOptions extends RealmDefaults {
  /** Watch every realm's directory (default true). */
  readonly watch?: boolean | undefined
}

/** Makes the {@link Realms} over a registry and a cache; every realm is unmounted when the scope closes. */
export const make = Effect.fnUntraced(function*(
  registry: RealmRegistry["Service"],
  cache: ModuleCache["Service"],
  options: RealmsOptions
) {
  const scope = yield* Effect.scope
  const lock = yield* Semaphore.make(1)
  const scopes = new Map<MountedRealm, Scope.Closeable>()
  const fsys = yield* fileSystem
  const feed = Option.getOrUndefined(yield* Effect.serviceOption(ChangeFeed))

  const hiddenOf = (dir: string) =>
    fsys.realPath(dir).pipe(
      Effect.map((real): ReadonlyArray<string> => [dir, real]),
      Effect.orElseSucceed((): ReadonlyArray<string> => [dir])
    )

  const open = Effect.fnUntraced(function*(spec: RealmSpec) {
    const mount = yield* validateMount(spec.mount)
    if (registry.get(mount) !== undefined) {
      return yield* new MountConflictError({ mount, reason: "the mount is taken" })
    }
    const dir = path.resolve(spec.dir)
    const realmUrl = spec.realmUrl ?? (options.realmUrlBase === undefined ? undefined : realmUrlOf(options.realmUrlBase, mount))
    const files = yield* FileSystemSources.make({
      realmDir: dir,
      realmUrl,
      maxSourceBytes: options.maxSourceBytes,
      excluded: options.excluded
    })
    const other = registry.ofRealmUrl(files.realmUrl)
    if (other !== undefined) {
      return yield* new MountConflictError({ mount, reason: `the same realm is mounted at ${other.mount}` })
    }
    const realm = new MountedRealm({
      mount,
      isPrivate: spec.private === true,
      files,
      raw: registry.raw.of(files.realmUrl),
      hidden: yield* hiddenOf(dir)
    })
    const realmScope = yield* Scope.fork(scope, "sequential")
    if (options.watch !== false) {
      yield* Watcher.watch({
        cache,
        files,
        raw: realm.raw,
        feed,
        onChange: () => {
          realm.generation++
        },
        onWatching: (watching) => {
          realm.watching = watching
          realm.generation++
        }
      }).pipe(Scope.provide(realmScope))
    }
    scopes.set(realm, realmScope)
    registry.add(realm)
    return realm
  })

  const mount = (spec: RealmSpec, mountOptions?: { readonly preload?: boolean }) =>
    Effect.gen(function*() {
      const realm = yield* lock.withPermits(1)(open(spec))
      const generation = realm.generation
      if (mountOptions?.preload !== true) return { realm, preloaded: [], generation }
      const summary = yield* cache.preload(realm.realmUrl)
      return { realm, preloaded: summary.keys, generation }
    }).pipe(Effect.withSpan("Realms.mount", { attributes: { "mtc.mount": spec.mount } }))

  const close = (realm: MountedRealm) =>
    Effect.gen(function*() {
      realm.watching = false
      realm.generation++
      registry.remove(realm)
      const realmScope = scopes.get(realm)
      scopes.delete(realm)
      if (realmScope !== undefined) yield* Scope.close(realmScope, Exit.void)
      realm.raw.clear()
      yield* cache.forgetRealm(realm.realmUrl)
    })

  const unmount = (mountPath: string) =>
    lock.withPermits(1)(Effect.gen(function*() {
      const realm = registry.get(mountPath)
      if (realm === undefined) return yield* new NotMountedError({ mount: mountPath })
      yield* close(realm)
      return realm
    })).pipe(Effect.withSpan("Realms.unmount", { attributes: { "mtc.mount": mountPath } }))

  yield* Effect.addFinalizer(() => Effect.forEach([...scopes.keys()], close, { discard: true }))

  return Realms.of({
    lookup: registry.lookup,
    get: registry.get,
    ofRealmUrl: registry.ofRealmUrl,
    list: registry.list,
    raw: registry.raw,
    mount,
    unmount
  })
})

/** {@link Realms} over the context's registry and cache, with `specs` mounted in order (a failed mount fails the layer). */
export const layer = (
  specs: ReadonlyArray<RealmSpec>,
  options: RealmsOptions = {}
): Layer.Layer<Realms, MountError, RealmRegistry | ModuleCache> =>
  Layer.effect(Realms, Effect.gen(function*() {
    const realms = yield* make(yield* RealmRegistry, yield* ModuleCache, options)
    for (const spec of specs) yield* realms.mount(spec)
    return realms
  }))

