/**
 * The packages whose runtime a pipeline's output imports, found where the host keeps them.
 *
 * The output of `ember` and `boxel` imports runtime modules: decorator-transforms' runtime
 * (or its `dt7948` global), ember-concurrency's async-arrow runtime, ember-source's
 * template factory. A module loads only where the host provides what it imports, so the
 * plugins that emit those imports, and ember-source's template compiler, come from the
 * host's own `node_modules` (`hostPackages`, `--host-packages`, `MTC_HOST_PACKAGES`) when
 * one is given, and otherwise from beside this package. A host directory without a package,
 * or with a version the pipeline cannot drive, is a {@link HostPackageError} at start:
 * never a silent fallback to the bundled one.
 *
 * @since 0.3.0
 */
import { existsSync, readFileSync, realpathSync } from "node:fs"
import { createRequire } from "node:module"
import { join, relative, resolve } from "node:path"
import { HostPackageError } from "./Pipeline.ts"

/** A package as found: its directory and version, and a `require` inside it. */
export interface HostPackage {
  readonly name: string
  readonly dir: string
  readonly version: string
  /** The major version, from `version`. */
  readonly major: number
  /** `require` from the package's own directory: its entries by its own name, its dependencies. */
  readonly require: NodeJS.Require
  /** The host's `node_modules` it came from, resolved; empty for the one installed beside this package. */
  readonly hostPackages: string
}

const isRecord = (u: unknown): u is Record<string, unknown> => u !== null && typeof u === "object"

const bundledRequire = createRequire(import.meta.url)

/** The directory of a package installed beside this package, found as Node looks up a bare name. */
const bundledDir = (name: string): string | undefined =>
  (bundledRequire.resolve.paths(name) ?? [])
    .map((dir) => join(dir, name))
    .find((dir) => existsSync(join(dir, "package.json")))

/**
 * Finds a package: `<hostPackages>/<name>` when a host directory is given (and nowhere else),
 * else the one installed beside this package. Throws a {@link HostPackageError} when it is
 * missing or is not that package.
 */
export const locate = (pipeline: string, name: string, hostPackages: string | undefined): HostPackage => {
  const fromHost = hostPackages !== undefined
  const where = fromHost ? resolve(hostPackages) : ""
  const fail = (message: string) => new HostPackageError({ pipeline, packageName: name, hostPackages: where, message })
  if (fromHost && !existsSync(where)) throw fail(`the host packages directory ${where} does not exist`)
  const dir = fromHost ? join(where, name) : bundledDir(name)
  if (dir === undefined || !existsSync(join(dir, "package.json"))) {
    throw fail(
      fromHost
        ? `no ${name} in ${where}: the ${pipeline} pipeline needs the host's ${name}`
        : `${name} is not installed beside module-transpile-cache: the ${pipeline} pipeline needs it`
    )
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"))
  } catch (cause) {
    throw fail(`cannot read ${join(dir, "package.json")}: ${String(cause)}`)
  }
  if (!isRecord(parsed) || parsed.name !== name || typeof parsed.version !== "string") {
    throw fail(`${dir} is not a ${name} package (its package.json names ${isRecord(parsed) ? String(parsed.name) : "nothing"})`)
  }
  return {
    name,
    dir,
    version: parsed.version,
    major: Number.parseInt(parsed.version, 10),
    require: createRequire(join(dir, "package.json")),
    hostPackages: where
  }
}

/**
 * The file of a package's entry (`""`) or subpath (`"./runtime-esm"`), resolved by the
 * package's own name through its `exports`; undefined when it has none there, or when the
 * name would resolve to another copy (a package without `exports` cannot name itself).
 */
export const fileOf = (pkg: HostPackage, subpath: string): string | undefined => {
  let file: string
  try {
    file = realpathSync(pkg.require.resolve(subpath === "" ? pkg.name : `${pkg.name}${subpath.slice(1)}`))
  } catch {
    return undefined
  }
  const inside = relative(realpathSync(pkg.dir), file)
  return inside.startsWith("..") ? undefined : file
}

/** Loads a package's entry or subpath (see {@link fileOf}); throws a {@link HostPackageError} when it has none. */
export const load = (pipeline: string, pkg: HostPackage, subpath: string): unknown => {
  const file = fileOf(pkg, subpath)
  if (file === undefined) {
    throw new HostPackageError({
      pipeline,
      packageName: pkg.name,
      hostPackages: pkg.hostPackages,
      message: `${pkg.name} ${pkg.version} in ${pkg.dir} has no ${subpath === "" ? "entry" : subpath} of its own`
    })
  }
  const loaded: unknown = pkg.require(file)
  return loaded
}

/**
 * Checks that a package is a version the pipeline drives: its major is one of `majors`, and
 * it exports every subpath in `needs` (its plugin, the runtime modules the output will import).
 */
export const requireDrivable = (
  pipeline: string,
  pkg: HostPackage,
  majors: ReadonlyArray<number>,
  needs: ReadonlyArray<string> = []
): HostPackage => {
  const fail = (message: string) =>
    new HostPackageError({
      pipeline,
      packageName: pkg.name,
      hostPackages: pkg.hostPackages,
      message
    })
  const supported = majors.map((major) => `${major}.x`).join(" or ")
  if (!majors.includes(pkg.major)) {
    throw fail(`${pkg.name} ${pkg.version} in ${pkg.dir} cannot be driven by the ${pipeline} pipeline (it drives ${pkg.name} ${supported})`)
  }
  const missing = needs.filter((subpath) => fileOf(pkg, subpath) === undefined)
  if (missing.length > 0) {
    throw fail(`${pkg.name} ${pkg.version} in ${pkg.dir} does not export ${missing.join(", ")}, which the ${pipeline} pipeline needs`)
  }
  return pkg
}
