/**
 * A miss resolves its path once: the server's resolution is handed to the cache's
 * `ModuleSources.read` (through `FileSystemSources.CurrentResolution`), which opens the file
 * it found instead of resolving the path again. Counted as `realPath` calls of the
 * `FileSystem` the realm's files go through.
 */
import { NodeFileSystem } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, FileSystem, Layer, Scope } from "effect"
import { HttpRouter } from "effect/http"
import { afterAll } from "vitest"
import { moduleKey } from "../src/domain/Domain.ts"
import * as Realms from "../src/realm/Realms.ts"
import * as RealmServer from "../src/http/RealmServer.ts"
import * as TestTranspiler from "../src/transpiler/TestTranspiler.ts"
import { makeRealm, removeRealms } from "./support/server.ts"

afterAll(() => removeRealms())

/** Node's FileSystem, counting its `realPath` calls. */
const countingFileSystem = (calls: Array<string>) =>
  Layer.effect(
    FileSystem.FileSystem,
    Effect.map(Effect.service(FileSystem.FileSystem), (fs) =>
      FileSystem.FileSystem.of({
        ...fs,
        realPath: (file) => {
          calls.push(file)
          return fs.realPath(file)
        }
      }))
  ).pipe(Layer.provide(NodeFileSystem.layer))

describe("one resolution per miss", () => {
  it("a transpiling request calls realPath as often as one resolution does, and no more", async () => {
    const realm = makeRealm({ "a.ts": "export const a: number = 1\n", "b.ts": "export const b: number = 2\n" })
    const calls: Array<string> = []
    const scope = Effect.runSync(Scope.make())
    try {
      const services = await Effect.runPromise(Layer.buildWithScope(
        RealmServer.layerServices({ realmDir: realm, store: { _tag: "memory" } }).pipe(
          Layer.provide(TestTranspiler.layer(TestTranspiler.make())),
          Layer.provide(countingFileSystem(calls))
        ),
        scope
      ))
      const files = Context.get(services, Realms.Realms).get("/")!.files
      const counted = async <A>(effect: Effect.Effect<A, unknown>) => {
        calls.length = 0
        const value = await Effect.runPromise(effect)
        return { value, realPaths: calls.length }
      }

      // What one resolution costs, and what a read by key alone (no resolution at hand) costs.
      const resolution = await counted(files.resolve("/b"))
      expect(resolution.value.path).toBe("b.ts")
      expect(resolution.realPaths).toBeGreaterThan(0)
      const read = await counted(files.read(moduleKey(files.realmUrl, "b.ts")))
      expect(read.realPaths).toBe(resolution.realPaths)

      // A miss through the routes: the server resolves, the cache reads, the file is resolved once.
      const { dispose, handler } = HttpRouter.toWebHandler(
        RealmServer.routes.pipe(Layer.provide(Layer.succeedContext(services))),
        { disableLogger: true }
      )
      try {
        calls.length = 0
        const miss = await handler(new Request("http://realm.test/a"))
        expect(miss.status).toBe(200)
        expect(miss.headers.get("x-module-cache")).toBe("transpiled")
        expect(await miss.text()).toContain("// transpiled a.ts")
        expect(calls).toHaveLength(resolution.realPaths)
        expect(files.knownHash("a.ts")).toBeDefined()
      } finally {
        await dispose()
      }
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })
})
