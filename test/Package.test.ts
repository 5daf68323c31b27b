/**
 * The package as a user gets it: `npm pack` (which builds dist/ through `prepack`), then
 * `npm install <tarball>` into an empty temporary project, on the Node 22 that npm installed
 * for this repository (node_modules/.bin first on PATH, as in npm scripts). In that project:
 *
 * - the README's "Using the library" example, extracted from README.md as it is, runs
 *   against the memory store and prints `transpiled`, then `l1`;
 * - a consumer TypeScript file (test/fixtures/package/consumer.ts) and that example
 *   typecheck, strict, against the installed types;
 * - the installed `transpile-cache serve` answers a module (and serves its live page with uPlot), with its migrations run from
 *   the package on a fresh Postgres database, where the module's row lands.
 *
 * npm reuses its cache (`--prefer-offline`); nothing optional is installed.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { isSupported, supportedRange } from "../src/internal/nodeVersion.ts"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"
import { root } from "./support/server.ts"

const bin = path.join(root, "node_modules", ".bin")

/** The environment of the npm and node children: the pinned Node 22 first, no npm_* of the parent npm. */
const childEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.toLowerCase().startsWith("npm_") && name !== "INIT_CWD" && name !== "DATABASE_URL") env[name] = value
  }
  env["PATH"] = `${bin}${path.delimiter}${process.env["PATH"] ?? ""}`
  env["NO_COLOR"] = "1"
  return env
}

const run = (command: string, args: ReadonlyArray<string>, cwd: string, timeout = 180_000): string => {
  try {
    return execFileSync(command, args, { cwd, env: childEnv(), encoding: "utf8", timeout, stdio: ["ignore", "pipe", "pipe"] })
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; message: string }
    throw new Error(`${command} ${args.join(" ")} failed: ${failed.message}\n${failed.stdout ?? ""}\n${failed.stderr ?? ""}`)
  }
}

/** The first `ts` code block of the README section whose heading starts with `heading`. */
const readmeExample = (readme: string, heading: string): string => {
  const start = readme.indexOf(`\n## ${heading}`)
  if (start < 0) throw new Error(`README.md has no section "## ${heading}"`)
  const next = readme.indexOf("\n## ", start + 1)
  const section = readme.slice(start, next < 0 ? undefined : next)
  const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
  if (block === undefined) throw new Error(`the README section "${heading}" has no ts code block`)
  return block
}

let work: string
let project: string
let packed: ReadonlyArray<string>
let databaseUrl: string | undefined

beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), "mtc-package-"))
  project = path.join(work, "consumer")
  mkdirSync(project)
  const started = performance.now()
  const out = run("npm", ["pack", "--json", "--pack-destination", work], root)
  const packedAt = performance.now()
  // The prepack build prints before the JSON report.
  const report = JSON.parse(out.slice(out.indexOf("\n[") + 1)) as ReadonlyArray<{
    readonly filename: string
    readonly files: ReadonlyArray<{ readonly path: string }>
  }>
  packed = report[0]!.files.map((f) => f.path)
  writeFileSync(
    path.join(project, "package.json"),
    JSON.stringify({ name: "consumer", private: true, type: "module" }, null, 2)
  )
  run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", path.join(work, report[0]!.filename)], project)
  console.log(`npm pack (with the build) ${((packedAt - started) / 1000).toFixed(1)} s, npm install of the tarball ${((performance.now() - packedAt) / 1000).toFixed(1)} s`)
}, 240_000)

afterAll(() => {
  if (work !== undefined) rmSync(work, { recursive: true, force: true })
  if (databaseUrl !== undefined) dropDatabase(databaseUrl)
})

describe("the packed package, installed into an empty project", () => {
  it("ships the compiled code, its types and maps, and the migrations; no tests, no scratchpad", () => {
    for (const file of ["dist/src/index.js", "dist/src/index.d.ts", "dist/src/index.js.map", "dist/src/testing.js",
      "dist/src/testing.d.ts", "dist/src/bin.js", "dist/migrations/0001_create_module_transpile_cache.js",
      "package.json", "README.md"]) {
      expect(packed, file).toContain(file)
    }
    expect(packed.filter((p) => /^(test|scratchpad|demo-realm|demo-shared|\.ci)\//.test(p) || p.includes(".test."))).toEqual([])
    // The installed manifest: compiled entry points, peers, the Node range that the bin checks.
    const manifest = JSON.parse(readFileSync(path.join(project, "node_modules/module-transpile-cache/package.json"), "utf8"))
    expect(manifest.exports["."]).toEqual({ types: "./dist/src/index.d.ts", default: "./dist/src/index.js" })
    expect(manifest.exports["./testing"]).toEqual({ types: "./dist/src/testing.d.ts", default: "./dist/src/testing.js" })
    expect(manifest.bin["transpile-cache"]).toBe("./dist/src/bin.js")
    expect(Object.keys(manifest.peerDependencies).sort()).toEqual(["@effect/platform-node", "@effect/sql-pg", "effect", "ember-source"])
    // ember-source only for the ember and boxel pipelines: an optional peer, not installed here.
    expect(manifest.peerDependenciesMeta).toEqual({ "ember-source": { optional: true } })
    expect(() => readFileSync(path.join(project, "node_modules/ember-source/package.json"))).toThrow()
    expect(manifest.engines.node).toBe(supportedRange)
    // One copy of effect: the consumer's (installed as a peer), not one nested in the package.
    expect(() => readFileSync(path.join(project, "node_modules/module-transpile-cache/node_modules/effect/package.json")))
      .toThrow()
  })

  it("runs the README's library example against the memory store: transpiled, then l1", () => {
    const example = readmeExample(readFileSync(path.join(root, "README.md"), "utf8"), "Using the library")
    expect(example).toContain(`from "module-transpile-cache"`)
    writeFileSync(path.join(project, "example.ts"), example)
    const out = run("node", ["example.ts"], project, 60_000)
    expect(out.trim().split("\n")).toEqual(["transpiled", "l1"])
  })

  it("typechecks a consumer of the public types (and the README example), strict", () => {
    cpSync(path.join(root, "test/fixtures/package/consumer.ts"), path.join(project, "consumer.ts"))
    writeFileSync(path.join(project, "example.ts"), readmeExample(readFileSync(path.join(root, "README.md"), "utf8"), "Using the library"))
    writeFileSync(
      path.join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2023",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          lib: ["ES2023"],
          types: ["node"],
          typeRoots: [path.join(root, "node_modules/@types")],
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          noEmit: true,
          allowImportingTsExtensions: true,
          skipLibCheck: true
        },
        files: ["consumer.ts", "example.ts"]
      }, null, 2)
    )
    run(path.join(bin, "tsc"), ["-p", "tsconfig.json"], project, 120_000)
  })

  it("runs the installed transpile-cache serve: a module answers, and the package's migrations made the table its row went to", async () => {
    databaseUrl = freshDatabase("package")
    const realm = path.join(work, "realm")
    mkdirSync(realm)
    writeFileSync(path.join(realm, "card.ts"), "export const title: string = \"card\"\n")
    const first = await serve(realm, databaseUrl)
    try {
      const answer = await fetch(`${first.url}/card.ts`)
      expect(answer.status).toBe(200)
      expect(answer.headers.get("x-module-cache")).toBe("transpiled")
      const body = await answer.text()
      expect(body).toContain("export const title = \"card\"")
      expect(body).not.toContain(": string")
      // The live page and its chart library, resolved from the installed dependencies (no CDN).
      const page = await fetch(`${first.url}/_cache/`)
      expect(page.status).toBe(200)
      expect(await page.text()).toContain("<script src=\"uplot.js\"></script>")
      const uplot = await fetch(`${first.url}/_cache/uplot.js`)
      expect(uplot.status).toBe(200)
      expect(await uplot.text()).toContain("uPlot")
      expect((await fetch(`${first.url}/_cache/live.js`)).status).toBe(200)
    } finally {
      // It shuts down by itself on SIGTERM (an exit code, not death by the signal).
      expect(await first.stop()).toSatisfy(Number.isInteger)
    }
    // The migrations ran from the installed package (dist/migrations), and the row was written.
    expect(psql("SELECT migration_id, name FROM module_transpile_cache_migrations ORDER BY migration_id", databaseUrl).split("\n"))
      .toEqual([
        "1|create_module_transpile_cache",
        "2|create_module_transpile_cache_realm",
        "3|index_live_rows_by_realm",
        "4|create_module_transpile_cache_pooler",
        "5|version_rows_by_fingerprint",
        "6|name_edit_sources",
        "7|store_encoded_forms_and_maps",
        "8|name_log_paths"
      ])
    expect(psql("SELECT canonical_path FROM module_transpile_cache WHERE body IS NOT NULL", databaseUrl)).toBe("card.ts")
  }, 90_000)

  it("says which Node versions it supports", () => {
    expect(["22.19.0", "22.23.3", "24.11.0", "25.0.0", "v26.1.0"].filter(isSupported)).toHaveLength(5)
    expect(["20.20.2", "22.18.0", "23.11.0", "24.10.0", "v18.0.0"].filter(isSupported)).toEqual([])
    const manifest = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"))
    expect(manifest.engines.node).toBe(supportedRange)
  })
})

/** Starts the installed `transpile-cache serve <realm> --port 0` on Postgres at `databaseUrl`. */
const serve = async (realm: string, databaseUrl: string): Promise<{ readonly url: string; readonly stop: () => Promise<number | string | null> }> => {
  const child: ChildProcess = spawn(
    path.join(project, "node_modules", ".bin", "transpile-cache"),
    ["serve", realm, "--port", "0", "--store", "pg"],
    { cwd: project, env: { ...childEnv(), DATABASE_URL: databaseUrl }, stdio: ["ignore", "pipe", "pipe"] }
  )
  let output = ""
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
  const exited = new Promise<number | string | null>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal)))
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not listen within 60 s:\n${output}`)), 60_000)
    const check = () => {
      const match = /listening on (http:\/\/[^\s/]+)\//.exec(output)
      if (match?.[1] !== undefined) {
        clearTimeout(timer)
        resolve(match[1])
      }
    }
    child.stdout?.on("data", check)
    child.stderr?.on("data", check)
    void exited.then((code) => {
      clearTimeout(timer)
      reject(new Error(`serve exited (${code}) before listening:\n${output}`))
    })
  })
  return {
    url,
    stop: () => {
      child.kill("SIGTERM")
      return exited
    }
  }
}
