/**
 * The host's packages decide the runtime imports of the `ember` and `boxel` output
 * (`hostPackages`, `--host-packages`, `MTC_HOST_PACKAGES`).
 *
 * Each test builds a host-like `node_modules` in a temporary directory, with symlinks as a
 * pnpm host has them: `ember-concurrency` is either major (4 is installed as the
 * devDependency `ember-concurrency-4`), `decorator-transforms` and `ember-source` are the
 * installed ones. The differential test runs Boxel-style modules through the pipeline and
 * through the same plugins called directly on Babel 8 (as the pipeline runs them), taken
 * from that directory, and compares import specifiers and export names read by
 * es-module-lexer.
 */
import * as Babel8 from "@babel/core"
import typescriptPlugin from "@babel/plugin-transform-typescript"
import { describe, expect, it } from "@effect/vitest"
import templateCompilation from "babel-plugin-ember-template-compilation/browser"
import { Preprocessor } from "content-tag"
import { Effect, Exit } from "effect"
import { init, parse } from "es-module-lexer"
import { generateScopedCSSPlugin } from "glimmer-scoped-css/ast-transform"
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { afterAll } from "vitest"
import * as BabelTranspiler from "../src/transpiler/BabelTranspiler.ts"
import * as Boxel from "../src/transpiler/pipelines/Boxel.ts"
import * as HostPackages from "../src/transpiler/pipelines/HostPackages.ts"
import * as TranspilerPool from "../src/transpiler/TranspilerPool.ts"
import { makeRealm, removeRealms, root, runCli } from "./support/server.ts"

const installed = (name: string): string => path.join(root, "node_modules", name)

const tempDirs: Array<string> = []
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
  removeRealms()
})

/** A host's `node_modules`: each entry a symlink to an installed package, or a package.json of our making. */
const hostDir = (entries: Readonly<Record<string, string | Readonly<Record<string, unknown>>>>): string => {
  const app = mkdtempSync(path.join(tmpdir(), "mtc-host-"))
  tempDirs.push(app)
  const dir = path.join(app, "node_modules")
  mkdirSync(dir)
  for (const [name, entry] of Object.entries(entries)) {
    const target = path.join(dir, name)
    mkdirSync(path.dirname(target), { recursive: true })
    if (typeof entry === "string") {
      symlinkSync(entry, target)
    } else {
      mkdirSync(target)
      writeFileSync(path.join(target, "package.json"), JSON.stringify({ name, ...entry }))
    }
  }
  return dir
}

/** A host like Boxel's: ember-concurrency of the given major, decorator-transforms 2.x, ember-source. */
const hostOf = (major: 4 | 5): string =>
  hostDir({
    "ember-concurrency": installed(major === 4 ? "ember-concurrency-4" : "ember-concurrency"),
    "decorator-transforms": installed("decorator-transforms"),
    "ember-source": installed("ember-source")
  })

// -----------------------------------------------------------------------------
// Boxel-style modules
// -----------------------------------------------------------------------------

const realm: Readonly<Record<string, string>> = {
  "card.gts": `import { contains, field, CardDef, Component } from "https://cardstack.com/base/card-api"
import StringField from "https://cardstack.com/base/string"
import { task, restartableTask, timeout } from "ember-concurrency"
import { formatName } from "./helpers.ts"
import type { Signature } from "./types.ts"

export class Person extends CardDef {
  static displayName = "Person"
  @field firstName = contains(StringField)
  @field declare nickname: string
  load = task(async () => {
    const response = await fetch("./data.json")
    return response.json()
  })
  search = restartableTask({ maxConcurrency: 2 }, async (term: string) => {
    await timeout(250)
    return (await import("./search.ts")).run(term)
  })
  lazy() {
    return import("https://example.test/remote.js")
  }
  named(name: string) {
    return import(name)
  }
  static isolated = class Isolated extends Component<Signature> {
    <template>
      <h1 class="name">{{formatName @model.firstName}}</h1>
      <style scoped>
        .name { color: rebeccapurple; }
      </style>
    </template>
  }
}

export default Person
`,
  "helpers.ts": `export const formatName = (name: string | undefined): string => (name ?? "").trim()
export function shout(text: string): string {
  return text.toUpperCase()
}
export * from "./more-helpers.ts"
export { shout as yell }
`,
  "service.ts": `import Service, { service } from "@ember/service"
import { tracked } from "@glimmer/tracking"
import { action } from "@ember/object"
import { dropTask, task } from "ember-concurrency"
import type RouterService from "@ember/routing/router-service"

export default class Loader extends Service {
  @service declare router: RouterService
  @tracked declare status: string
  @tracked count = 0
  refresh = dropTask(async () => {
    const response = await fetch(new URL("/status", "https://example.test"))
    this.status = await response.text()
  })
  // a generator task: the factory import stays in use
  legacy = task(function* (this: Loader) {
    yield 1
  })
  @action bump() {
    this.count++
  }
}
`,
  "counter.gts": `import Component from "@glimmer/component"
import { tracked } from "@glimmer/tracking"
import { on } from "@ember/modifier"
import { fn } from "@ember/helper"
import { enqueueTask } from "ember-concurrency"
import { shout } from "./helpers.ts"

export class Counter extends Component<{ Args: { label: string } }> {
  @tracked count = 0
  save = enqueueTask(async (by: number) => {
    this.count += by
    await fetch("/save", { method: "POST" })
  })
  <template>
    <button class="counter" {{on "click" (fn this.save.perform 1)}}>{{shout @label}} {{this.count}}</button>
    <style scoped>.counter { font-weight: bold; }</style>
  </template>
}

export const Badge = <template><span>{{shout "badge"}}</span></template>
`,
  "plain.js": `import { task } from "ember-concurrency"
export class Poller {
  poll = task(async () => {
    return fetch("./poll")
  })
}
export const loadLater = () => import("../shared/later.js")
`
}

// -----------------------------------------------------------------------------
// The same plugins, called directly
// -----------------------------------------------------------------------------

/** Boxel's loader rewrites, as its realm server's plugin does them (written here from PIPELINES.md). */
const boxelLoaderPlugin = ({ types: t }: Babel8.PluginAPI): Babel8.PluginObject => {
  const member = (name: string) =>
    t.memberExpression(t.memberExpression(t.metaProperty(t.identifier("import"), t.identifier("meta")), t.identifier("loader")), t.identifier(name))
  return {
    visitor: {
      CallExpression(p) {
        if (p.node.callee.type === "Identifier" && p.node.callee.name === "fetch" && !p.scope.hasBinding("fetch")) {
          p.node.callee = member("fetch")
        }
      },
      ImportExpression(p) {
        const source = p.node.source
        const pathLike = source.type === "StringLiteral" &&
          (/^(\.\.?\/|\/)/.test(source.value) || source.value.includes("://"))
        const specifier = pathLike
          ? t.memberExpression(
            t.newExpression(t.identifier("URL"), [source, t.memberExpression(t.metaProperty(t.identifier("import"), t.identifier("meta")), t.identifier("url"))]),
            t.identifier("href")
          )
          : source
        p.replaceWith(t.callExpression(member("import"), [specifier]))
      }
    }
  }
}

/** `require` as the host's own modules do: from the directory that holds its `node_modules`. */
const requireInHost = (host: string): NodeJS.Require => createRequire(path.join(host, "..", "index.js"))

/** A Babel plugin function of a package, `require`d from the host directory. */
const hostPlugin = (host: string, specifier: string): Babel8.PluginTarget => {
  const loaded: unknown = requireInHost(host)(specifier)
  const plugin = loaded !== null && typeof loaded === "object" && "default" in loaded ? loaded.default : loaded
  if (typeof plugin !== "function") throw new Error(`${specifier} is not a plugin`)
  return plugin as Babel8.PluginTarget
}

/** ember-concurrency 4's transform declares Babel 7 only: run it on Babel 8 as the pipeline does, answering that check. */
const onBabel8 = (plugin: Babel8.PluginTarget): Babel8.PluginTarget =>
  ((api: Babel8.PluginAPI, options: object, dirname: string) =>
    (plugin as (api: Babel8.PluginAPI, options: object, dirname: string) => unknown)(
      Object.create(api, { assertVersion: { value: () => undefined } }),
      options,
      dirname
    )) as Babel8.PluginTarget

/** Boxel's plugins in Boxel's order, each from the host directory where its runtime lives. */
const directly = async (host: string, major: 4 | 5, file: string, source: string): Promise<string> => {
  const gts = file.endsWith(".gts")
  const code = gts ? new Preprocessor().process(source, { filename: file }).code : source
  const compiler: unknown = createRequire(path.join(host, "ember-source", "package.json"))(
    path.join(host, "ember-source", "dist/prod/packages/ember-template-compiler/index.js")
  )
  const asyncArrow = hostPlugin(host, "ember-concurrency/async-arrow-task-transform")
  const typescript: Array<Babel8.PluginItem> = file.endsWith(".ts") || gts ? [[typescriptPlugin, { allowDeclareFields: true }]] : []
  const result = await Babel8.transformAsync(code, {
    babelrc: false,
    configFile: false,
    filename: file,
    sourceType: "module",
    plugins: [
      major === 4 ? onBabel8(asyncArrow) : asyncArrow,
      ...typescript,
      [hostPlugin(host, "decorator-transforms"), {}],
      [templateCompilation as Babel8.PluginTarget, {
        compiler,
        targetFormat: "wire",
        transforms: [generateScopedCSSPlugin({ noGlobal: true })]
      }],
      boxelLoaderPlugin
    ]
  })
  if (typeof result?.code !== "string") throw new Error(`no output for ${file}`)
  return result.code
}

/** What a module imports (static and dynamic specifiers, in order) and exports, as es-module-lexer reads it. */
const shapeOf = (code: string) => {
  const [imports, exports] = parse(code)
  return {
    imports: imports.flatMap((entry) => (entry.n === undefined ? [] : [entry.n])),
    /** `import()` expressions left (Boxel's loader rewrites them all into `import.meta.loader.import`) */
    dynamic: imports.filter((entry) => entry.d > -1).length,
    exports: exports.map((entry) => entry.n).sort()
  }
}

const transpileAll = (options: BabelTranspiler.BabelTranspilerOptions) =>
  Effect.gen(function*() {
    const transpiler = yield* BabelTranspiler.make(options)
    const out: Record<string, string> = {}
    for (const [file, source] of Object.entries(realm)) out[file] = (yield* transpiler.transpile({ path: file, source })).body
    return { fingerprint: transpiler.fingerprint, out }
  })

/** The bare specifiers Boxel's host provides that these modules use (its shimmed modules, PIPELINES.md), and URLs. */
const loadsInBoxelHost = (specifier: string): boolean =>
  specifier.startsWith("./") || specifier.startsWith("../") || specifier.includes("://") ||
  ["ember-concurrency", Boxel.asyncArrowRuntime].includes(specifier) ||
  /^@(ember|glimmer)\//.test(specifier)

describe("the differential test: the pipeline against the same plugins run directly at the host's versions", () => {
  for (const major of [4, 5] as const) {
    it.effect(`ember-concurrency ${major}: the same imports (the async-arrow runtime where the host provides it) and exports`, () =>
      Effect.gen(function*() {
        yield* Effect.promise(() => init)
        const host = hostOf(major)
        const ours = yield* transpileAll({ pipeline: "boxel", hostPackages: host })
        const hostRequire = requireInHost(host)
        for (const [file, source] of Object.entries(realm)) {
          const reference = shapeOf(yield* Effect.promise(() => directly(host, major, file, source)))
          const got = shapeOf(ours.out[file] ?? "")
          // the one difference: buildTask comes from the module Boxel's host provides
          expect(got.imports, file).toEqual(
            reference.imports.map((s) => (s === Boxel.transformRuntime ? Boxel.asyncArrowRuntime : s))
          )
          expect(got.exports, file).toEqual(reference.exports)
          expect(got.dynamic, file).toBe(reference.dynamic)
          expect(got.imports.every(loadsInBoxelHost), `${file}: ${got.imports.join(", ")}`).toBe(true)
          // and the host's own ember-concurrency has each ember-concurrency module imported
          for (const specifier of got.imports.filter((s) => s.startsWith("ember-concurrency"))) {
            expect(() => hostRequire.resolve(specifier), specifier).not.toThrow()
          }
        }
        // what was compared is the real thing
        const card = shapeOf(ours.out["card.gts"] ?? "")
        expect(card.exports).toEqual(["Person", "default"])
        expect(card.dynamic).toBe(0)
        expect(card.imports).toEqual(expect.arrayContaining(["./helpers.ts", "@ember/template-factory", "https://cardstack.com/base/card-api"]))
        expect(card.imports.some((s) => s.endsWith(".glimmer-scoped.css"))).toBe(true)
        expect(ours.out["card.gts"]).toContain(`import.meta.loader.import(new URL("./search.ts", import.meta.url).href)`)
        expect(ours.out["card.gts"]).toContain(`import.meta.loader.fetch("./data.json")`)
        expect(shapeOf(ours.out["counter.gts"] ?? "").exports).toEqual(["Badge", "Counter"])
        expect(shapeOf(ours.out["helpers.ts"] ?? "").exports).toEqual(["formatName", "shout", "yell"])
        // the modules with async arrows import the runtime; the majors differ in the factory import
        expect(card.imports).toContain(Boxel.asyncArrowRuntime)
        expect(card.imports).not.toContain(Boxel.transformRuntime)
        // 5 drops the factory imports it made unused (timeout stays in use), 4 keeps them
        expect(ours.out["plain.js"]?.includes(`from "ember-concurrency"`)).toBe(major === 4)
        expect(shapeOf(ours.out["service.ts"] ?? "").imports).toContain("ember-concurrency")
        // evidence it is the host's transform that ran, not the bundled one: 5's import cleanup or not
        expect(ours.out["card.gts"]).toMatch(major === 4 ? /import \{ task, restartableTask, timeout \}/ : /import \{ timeout \}/)
      }), 120_000)
  }

  it.effect("an import of the public runtime the module wrote itself is left as written", () =>
    Effect.gen(function*() {
      const transpiler = yield* BabelTranspiler.make({ pipeline: "boxel", hostPackages: hostOf(4) })
      const module = yield* transpiler.transpile({
        path: "own.js",
        source: `import { buildTask } from "${Boxel.transformRuntime}"\nimport { task } from "ember-concurrency"\nexport const b = buildTask\nexport class A { t = task(async () => 1) }\n`
      })
      expect(module.dependencyKeys).toEqual(expect.arrayContaining([Boxel.transformRuntime, Boxel.asyncArrowRuntime]))
      // the transform added its specifier to the module's own import: moved out to the host's module
      expect(module.body).toContain(`import { buildTask } from "${Boxel.transformRuntime}";`)
      expect(module.body).toContain(`import { buildTask as _buildTask } from "${Boxel.asyncArrowRuntime}";`)
    }))

  it.effect("every version used is in the fingerprint; the host's versions decide it", () =>
    Effect.gen(function*() {
      const four = yield* BabelTranspiler.pipelineOf({ pipeline: "boxel", hostPackages: hostOf(4) })
      const five = yield* BabelTranspiler.pipelineOf({ pipeline: "boxel", hostPackages: hostOf(5) })
      expect(BabelTranspiler.versionsOf(four)["ember-concurrency"]).toMatch(/^4\./)
      expect(BabelTranspiler.versionsOf(five)["ember-concurrency"]).toMatch(/^5\./)
      const fingerprint = (hostPackages?: string) =>
        BabelTranspiler.fingerprintFor({ pipeline: "boxel", ...(hostPackages === undefined ? {} : { hostPackages }) })
      expect(yield* fingerprint(hostOf(4))).not.toBe(yield* fingerprint(hostOf(5)))
      // the same versions wherever they are: the same fingerprint (this host's are the installed ones)
      expect(yield* fingerprint(hostOf(5))).toBe(yield* fingerprint())
      // another decorator-transforms or ember-source version in the host is another fingerprint
      const versions = BabelTranspiler.versionsOf(five)
      const config = BabelTranspiler.configOf(five)
      for (const name of ["decorator-transforms", "ember-source", "ember-concurrency"]) {
        expect(BabelTranspiler.fingerprintOf({ versions: { ...versions, [name]: "0.0.1" }, config }), name)
          .not.toBe(BabelTranspiler.fingerprintOf({ versions, config }))
      }
    }))

  it.effect("ember: decorator-transforms and ember-source come from the host", () =>
    Effect.gen(function*() {
      yield* Effect.promise(() => init)
      const host = hostDir({ "decorator-transforms": installed("decorator-transforms"), "ember-source": installed("ember-source") })
      const { out } = yield* transpileAll({ pipeline: "ember", hostPackages: host })
      const service = shapeOf(out["service.ts"] ?? "")
      expect(service.imports).toContain("decorator-transforms/runtime-esm")
      expect(() => requireInHost(host).resolve("decorator-transforms/runtime-esm")).not.toThrow()
      // ember has no ember-concurrency transform: the host needs none
      expect(service.imports).toContain("ember-concurrency")
    }))
})

describe("ember-concurrency 4's transform on Babel 8", () => {
  it("gives what it gives on Babel 7.29, which it declares", () => {
    const babel7: typeof Babel8 = createRequire(import.meta.url)("babel-core-7")
    expect(babel7.version).toMatch(/^7\./)
    const pkg = HostPackages.locate("boxel", "ember-concurrency", hostOf(4))
    expect(pkg.major).toBe(4)
    const raw = pkg.require("ember-concurrency/async-arrow-task-transform")
    const options = { babelrc: false, configFile: false, sourceType: "module", filename: "x.js" } as const
    // Babel 8 refuses it as it is
    expect(() => Babel8.transformSync("1", { ...options, plugins: [raw] })).toThrow(/Requires Babel "\^7/)
    for (const source of [realm["plain.js"] ?? "", `import { task as t, dropTask, keepLatestTask } from "ember-concurrency"
export default class A {
  a = t(async () => { await this.x(); return this })
  b = dropTask({ group: "g" }, async function named() { await 1 })
  c = keepLatestTask(async (...args) => { for await (const x of args) { await x } })
  static d = t(async () => 1)
}
`]) {
      const seven = babel7.transformSync(source, { ...options, plugins: [raw] })?.code
      const eight = Babel8.transformSync(source, { ...options, plugins: [Boxel.asyncArrowTransform(pkg)] })?.code
      expect(seven).toContain(Boxel.transformRuntime)
      expect(eight).toBe(seven)
    }
  })
})

// -----------------------------------------------------------------------------
// Bad host directories: clear errors at start, never a fallback
// -----------------------------------------------------------------------------

const loadError = (options: BabelTranspiler.BabelTranspilerOptions) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(BabelTranspiler.make(options))
    if (Exit.isSuccess(exit)) throw new Error("the pipeline loaded")
    const error = Exit.findErrorOption(exit)
    if (error._tag === "None") throw new Error("no typed error")
    return error.value
  })

describe("a host directory the pipeline cannot use", () => {
  it.effect("a missing package, an undrivable version or a missing runtime module is a HostPackageError", () =>
    Effect.gen(function*() {
      const base = { "decorator-transforms": installed("decorator-transforms"), "ember-source": installed("ember-source") }
      const cases: ReadonlyArray<readonly [string, string, RegExp]> = [
        [hostDir(base), "ember-concurrency", /^no ember-concurrency in .*mtc-host-.*: the boxel pipeline needs the host's ember-concurrency$/],
        [
          hostDir({ ...base, "ember-concurrency": { version: "3.1.1" } }),
          "ember-concurrency",
          /ember-concurrency 3\.1\.1 in .* cannot be driven by the boxel pipeline \(it drives ember-concurrency 4\.x or 5\.x\)/
        ],
        [
          hostDir({ ...base, "ember-concurrency": { version: "5.9.0", exports: { "./async-arrow-task-transform": "./t.js" } } }),
          "ember-concurrency",
          /does not export \.\/async-arrow-task-transform, \.\/-private\/async-arrow-runtime, which the boxel pipeline needs/
        ],
        [
          hostDir({ ...base, "ember-concurrency": installed("ember-concurrency"), "decorator-transforms": installed("ember-concurrency-4/node_modules/decorator-transforms") }),
          "decorator-transforms",
          /decorator-transforms 1\.\d+\.\d+ in .* cannot be driven by the boxel pipeline \(it drives decorator-transforms 2\.x\)/
        ],
        [hostDir({ "ember-concurrency": installed("ember-concurrency") }), "ember-source", /^no ember-source in /],
        ["/nonexistent/node_modules", "ember-source", /the host packages directory \/nonexistent\/node_modules does not exist/]
      ]
      for (const [host, packageName, message] of cases) {
        const error = yield* loadError({ pipeline: "boxel", hostPackages: host })
        expect(error._tag, host).toBe("HostPackageError")
        if (error._tag !== "HostPackageError") continue
        expect(error.packageName).toBe(packageName)
        expect(error.hostPackages).toBe(path.resolve(host))
        expect(error.message).toMatch(message)
        expect(error.message).not.toContain("\n")
      }
      // ember needs no ember-concurrency, but the host's decorator-transforms
      const noDecorators = yield* loadError({ pipeline: "ember", hostPackages: hostDir({ "ember-source": installed("ember-source") }) })
      expect(noDecorators._tag === "HostPackageError" && noDecorators.packageName).toBe("decorator-transforms")
      // an explicit ember-source wins over the host's, which then need not exist
      const host = hostDir({ "decorator-transforms": installed("decorator-transforms"), "ember-concurrency": installed("ember-concurrency-4") })
      expect((yield* BabelTranspiler.make({ pipeline: "boxel", hostPackages: host, emberSource: installed("ember-source") })).fingerprint)
        .toMatch(/^[0-9a-f]+$/)
    }))
})

// -----------------------------------------------------------------------------
// Worker threads and the command line
// -----------------------------------------------------------------------------

describe("host packages reach the worker threads and come from the command line", () => {
  it.effect("a pool's workers run the host's ember-concurrency", () =>
    Effect.gen(function*() {
      const hostPackages = hostOf(4)
      const transpiler = yield* TranspilerPool.make({ workers: 1, transpiler: { pipeline: "boxel", hostPackages } })
      expect(transpiler.fingerprint).toBe(yield* BabelTranspiler.fingerprintFor({ pipeline: "boxel", hostPackages }))
      const module = yield* transpiler.transpile({ path: "plain.js", source: realm["plain.js"] ?? "" })
      expect(module.body).toContain(`from "${Boxel.asyncArrowRuntime}"`)
      // 4's transform keeps the factory import
      expect(module.body).toContain(`import { task } from "ember-concurrency"`)
    }), 60_000)

  it("--host-packages and MTC_HOST_PACKAGES: a bad directory is a one-line error, a good one transpiles", async () => {
    const dir = makeRealm({ "plain.js": realm["plain.js"] ?? "" })
    const missing = hostDir({ "decorator-transforms": installed("decorator-transforms"), "ember-source": installed("ember-source") })
    const bad = await runCli(["warm", dir, "--store", "memory", "--pipeline", "boxel", "--host-packages", missing])
    expect(bad.code).toBe(1)
    // effect/cli prints "ERROR" above the message: the message is one line
    expect(bad.stderr.split("\n").filter((line) => line.trim() !== "" && line.trim() !== "ERROR")).toHaveLength(1)
    expect(bad.stderr).toContain(`no ember-concurrency in ${missing}`)
    const old = hostDir({
      "decorator-transforms": installed("decorator-transforms"),
      "ember-source": installed("ember-source"),
      "ember-concurrency": { version: "3.1.1" }
    })
    const fromEnv = await runCli(["warm", dir, "--store", "memory", "--pipeline", "boxel"], { env: { MTC_HOST_PACKAGES: old } })
    expect(fromEnv.code).toBe(1)
    expect(fromEnv.stderr).toContain("ember-concurrency 3.1.1")
    expect(fromEnv.stderr).toContain("cannot be driven by the boxel pipeline")
    // the flag wins over the variable
    const good = await runCli(["warm", dir, "--store", "memory", "--pipeline", "boxel", "--host-packages", hostOf(4), "--transpile-workers", "1"], {
      env: { MTC_HOST_PACKAGES: old }
    })
    expect(good.code, good.stderr).toBe(0)
    expect(good.stdout).toContain("ok: 1 (transpiled 1)")
  }, 120_000)
})
