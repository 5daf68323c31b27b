/**
 * The bytes a realm read returns, around the sizes where the read changes its way: empty
 * files, files read synchronously with one `read` sized by `fstat`, files over 1 MiB read on
 * the threadpool, the size limit on both sides; and the errors of a read by key that does
 * not open a regular file at its canonical path (the same as a resolution would give).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { execFileSync } from "node:child_process"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { moduleKey } from "../src/domain/Domain.ts"
import * as FileSystemSources from "../src/realm/FileSystemSources.ts"

const realmDir = fs.mkdtempSync(path.join(os.tmpdir(), "mtc-file-reads-"))
afterAll(() => fs.rmSync(realmDir, { recursive: true, force: true }))

const write = (name: string, content: string | Buffer) => {
  const file = path.join(realmDir, name)
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, content)
}

const mib = 1024 * 1024
const bytesOf = (size: number, seed: number) => Buffer.from(Array.from({ length: size }, (_, i) => 97 + ((i * 7 + seed) % 26)))

write("empty.ts", "")
write("small.ts", "export const small: number = 1\n")
write("page.bin", bytesOf(4096, 1))
write("just-under-sync.bin", bytesOf(mib, 2))
write("just-over-sync.bin", bytesOf(mib + 1, 3))
write("large.ts", `// ${"y".repeat(3 * mib)}\nexport const large = 1\n`)
write("at-limit.bin", bytesOf(2 * mib, 4))
write("over-limit.bin", bytesOf(2 * mib + 1, 5))
write("over-limit-small.bin", bytesOf(200, 6))
write("real/target.ts", "export const target = 1\n")
fs.symlinkSync("real/target.ts", path.join(realmDir, "alias.ts"))
fs.mkdirSync(path.join(realmDir, "dir.ts"))
execFileSync("mkfifo", [path.join(realmDir, "pipe.ts")])

const files = (maxSourceBytes: number) => FileSystemSources.make({ realmDir, maxSourceBytes })

describe("realm reads", () => {
  it.effect("every size reads back byte for byte, synchronously or on the threadpool", () =>
    Effect.gen(function*() {
      const realm = yield* files(4 * mib)
      for (const name of ["empty.ts", "page.bin", "just-under-sync.bin", "just-over-sync.bin", "at-limit.bin"]) {
        const raw = yield* realm.readRaw(name)
        expect(raw.path).toBe(name)
        expect(Buffer.from(raw.bytes).equals(fs.readFileSync(path.join(realmDir, name))), name).toBe(true)
      }
      for (const name of ["empty.ts", "small.ts", "large.ts"]) {
        const source = yield* realm.read(moduleKey(realm.realmUrl, name))
        expect(source.content, name).toBe(fs.readFileSync(path.join(realmDir, name), "utf8"))
      }
    }))

  it.effect("the size limit holds on both sides of the threadpool threshold", () =>
    Effect.gen(function*() {
      const realm = yield* files(2 * mib)
      expect((yield* realm.readRaw("at-limit.bin")).bytes.byteLength).toBe(2 * mib)
      const over = yield* Effect.flip(realm.readRaw("over-limit.bin"))
      expect(over).toMatchObject({ _tag: "SourceTooLargeError", path: "over-limit.bin", size: 2 * mib + 1, limit: 2 * mib })
      const tiny = yield* files(199)
      const small = yield* Effect.flip(tiny.readRaw("over-limit-small.bin"))
      expect(small).toMatchObject({ _tag: "SourceTooLargeError", size: 200, limit: 199 })
      expect((yield* tiny.readRaw("empty.ts")).bytes.byteLength).toBe(0)
    }))

  it.effect("a read by key that opens no regular file at its canonical path fails as a resolution says", () =>
    Effect.gen(function*() {
      const realm = yield* files(4 * mib)
      const readOf = (name: string) => Effect.flip(realm.read(moduleKey(realm.realmUrl, name)))
      expect(yield* readOf("alias.ts")).toMatchObject({
        _tag: "InvalidPathError",
        reason: "not a canonical path (the file is real/target.ts)"
      })
      expect(yield* readOf("missing.ts")).toMatchObject({ _tag: "ModuleNotFoundError", path: "missing.ts" })
      expect(yield* readOf("dir.ts")).toMatchObject({ _tag: "ModuleNotFoundError", path: "dir.ts" })
      expect(yield* readOf("pipe.ts")).toMatchObject({ _tag: "ModuleNotFoundError", path: "pipe.ts" })
      expect(yield* readOf("real/target.ts/x.ts")).toMatchObject({ _tag: "ModuleNotFoundError" })
      // The target itself reads.
      expect((yield* realm.read(moduleKey(realm.realmUrl, "real/target.ts"))).content).toBe("export const target = 1\n")
    }))
})
