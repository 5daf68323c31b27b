/**
 * Puts Ember's runtime into a demo realm, as files the realm server serves (and transpiles
 * through the cache like any module): ember-source's ESM build under
 * `vendor/ember-source/`, `@glimmer/component` and `@glimmer/env` beside it, and
 * decorator-transforms' runtime. `demo-realm/index.html` maps the bare specifiers to these
 * files with an import map. Idempotent: a realm already vendored with the same versions
 * is left alone.
 *
 * Usage: `node test/support/demo-vendor.ts [realmDir]` (default: `demo-realm`).
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..")
const rootRequire = createRequire(path.join(root, "package.json"))

/** A package's directory: where its package.json is (found from its entry when it does not export it). */
const packageDir = (name: string, require: NodeJS.Require = rootRequire): string => {
  try {
    return path.dirname(require.resolve(`${name}/package.json`))
  } catch {
    let dir = path.dirname(require.resolve(name))
    while (!existsSync(path.join(dir, "package.json")) || !readFileSync(path.join(dir, "package.json"), "utf8").includes(`"name": "${name}"`)) {
      const parent = path.dirname(dir)
      if (parent === dir) throw new Error(`no package.json for ${name}`)
      dir = parent
    }
    return dir
  }
}

const versionOf = (dir: string): string => {
  const parsed: unknown = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8"))
  return parsed !== null && typeof parsed === "object" && "version" in parsed && typeof parsed.version === "string"
    ? parsed.version
    : "unknown"
}

/** The directory, under a realm, that holds the vendored runtime. */
export const vendorDirName = "vendor"

/** Copies the Ember runtime into `realmDir/vendor/`; returns the ember-source version. */
export const vendorEmber = (realmDir: string): string => {
  const emberSource = packageDir("ember-source")
  const glimmerComponent = packageDir("@glimmer/component")
  // a dependency of @glimmer/component, resolved from there
  const glimmerEnv = packageDir("@glimmer/env", createRequire(path.join(glimmerComponent, "package.json")))
  const decoratorTransforms = packageDir("decorator-transforms")
  const stamp = JSON.stringify({
    "ember-source": versionOf(emberSource),
    "@glimmer/component": versionOf(glimmerComponent),
    "@glimmer/env": versionOf(glimmerEnv),
    "decorator-transforms": versionOf(decoratorTransforms)
  })
  const vendor = path.join(realmDir, vendorDirName)
  const stampFile = path.join(vendor, "versions.json")
  if (existsSync(stampFile) && readFileSync(stampFile, "utf8") === stamp) return versionOf(emberSource)
  rmSync(vendor, { recursive: true, force: true })
  mkdirSync(vendor, { recursive: true })
  cpSync(path.join(emberSource, "dist", "prod", "packages"), path.join(vendor, "ember-source"), { recursive: true })
  cpSync(path.join(glimmerComponent, "dist"), path.join(vendor, "glimmer-component"), {
    recursive: true,
    filter: (source) => !source.endsWith(".d.ts") && !source.endsWith(".map")
  })
  mkdirSync(path.join(vendor, "glimmer-env"), { recursive: true })
  cpSync(path.join(glimmerEnv, "dist", "modules", "es2017", "index.js"), path.join(vendor, "glimmer-env", "index.js"))
  cpSync(path.join(decoratorTransforms, "dist"), path.join(vendor, "decorator-transforms"), {
    recursive: true,
    filter: (source) => !/\.(cjs|d\.ts|map)$/.test(source) && path.basename(source) !== "index.js"
  })
  writeFileSync(stampFile, stamp)
  return versionOf(emberSource)
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const realm = path.resolve(process.argv[2] ?? path.join(root, "demo-realm"))
  const version = vendorEmber(realm)
  process.stdout.write(`ember-source ${version} runtime in ${path.join(realm, vendorDirName)}\n`)
}

/**
 * A copy of the demo realm at `to` (without its embedded store or a vendored runtime), with
 * Ember's runtime vendored afresh: real code for the benches.
 */
export const copyDemoRealm = (to: string): string => {
  cpSync(path.join(root, "demo-realm"), to, {
    recursive: true,
    filter: (source) => !source.includes(".transpile-cache") && !source.includes(`${path.sep}${vendorDirName}`)
  })
  vendorEmber(to)
  return to
}
