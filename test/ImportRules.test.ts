/**
 * The folder import rules of the code map (docs/contributing.md), checked on every relative import
 * (type-only ones too) of every file under src/ and migrations/.
 */
import { readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { root } from "./support/server.ts"

/** The folders each folder may import from, besides its own. `*` is any folder. */
const allowed: Readonly<Record<string, ReadonlyArray<string>>> = {
  domain: ["internal"],
  internal: ["domain"],
  cache: ["domain", "internal"],
  transpiler: ["domain", "internal"],
  store: ["domain", "internal", "migrations"],
  fleet: ["domain", "internal"],
  live: ["domain", "internal", "cache", "store", "fleet"],
  realm: ["domain", "internal", "cache"],
  http: ["domain", "internal", "cache", "store", "fleet", "transpiler", "live", "realm"],
  cli: ["*"],
  entry: ["*"],
  migrations: []
}

/** The folder a repository-relative file belongs to: `entry` for the files directly in src/. */
const folderOf = (file: string): string | undefined => {
  const parts = file.split("/")
  if (parts[0] === "migrations") return "migrations"
  if (parts[0] !== "src") return undefined
  return parts.length === 2 ? "entry" : parts[1]
}

const specifiers = (text: string): ReadonlyArray<string> =>
  [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|new URL\(\s*)["'](\.{1,2}\/[^"']+)["']/g)].map((match) => match[1]!)

/** The broken rules of one file: "<file> imports <target>" for each import its folder may not make. */
const violations = (file: string, text: string): ReadonlyArray<string> => {
  const from = folderOf(file)
  if (from === undefined) return [`${file} is outside src/ and migrations/`]
  const may = allowed[from]
  if (may === undefined) return [`${file} is in a folder the code map does not name`]
  return specifiers(text).flatMap((specifier) => {
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier))
    const to = folderOf(target)
    if (to === from || may.includes("*") || (to !== undefined && may.includes(to))) return []
    return [`${file} imports ${target}`]
  })
}

const filesUnder = (dir: string): ReadonlyArray<string> =>
  readdirSync(path.join(root, dir), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith(".ts"))
    .map((entry) => path.relative(root, path.join(entry.parentPath, entry.name)).split(path.sep).join("/"))

describe("import rules", () => {
  it("every file under src/ and migrations/ imports only what its folder may", () => {
    const files = [...filesUnder("src"), ...filesUnder("migrations")]
    expect(files.length).toBeGreaterThan(40)
    const broken = files.flatMap((file) => violations(file, readFileSync(path.join(root, file), "utf8")))
    expect(broken).toEqual([])
  })

  it("flags a store that imports the server and a cache core that imports an adapter", () => {
    expect(violations("src/store/SqlTranspileStore.ts", `import { x } from "../http/RealmServer.ts"`))
      .toEqual(["src/store/SqlTranspileStore.ts imports src/http/RealmServer.ts"])
    expect(violations("src/cache/ModuleCache.ts", `import type { X } from "../store/SqlTranspileStore.ts"`))
      .toEqual(["src/cache/ModuleCache.ts imports src/store/SqlTranspileStore.ts"])
    expect(violations("src/cache/ModuleCache.ts", `const m = await import("../fleet/PgFleet.ts")`))
      .toEqual(["src/cache/ModuleCache.ts imports src/fleet/PgFleet.ts"])
    expect(violations("migrations/0003_x.ts", `import { run } from "../src/store/Migrations.ts"`))
      .toEqual(["migrations/0003_x.ts imports src/store/Migrations.ts"])
  })

  it("allows a folder's own files, its allowed folders, and anything from the entry points", () => {
    expect(violations("src/cache/ModuleCache.ts", `import { L1Cache } from "./L1Cache.ts"\nimport { Transpiler } from "../domain/Transpiler.ts"`))
      .toEqual([])
    expect(violations("src/index.ts", `export * as RealmServer from "./http/RealmServer.ts"`)).toEqual([])
  })
})
