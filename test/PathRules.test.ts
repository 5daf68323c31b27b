/**
 * The pure path rules of a realm (no I/O): request path validation, executable modules,
 * real paths inside the realm, and the cached keys a changed path covers.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as path from "node:path"
import * as PathRules from "../src/realm/PathRules.ts"

const validated = (urlPath: string): string => {
  const exit = Effect.runSyncExit(PathRules.validatePath(urlPath))
  if (Exit.isSuccess(exit)) return exit.value
  const error = Exit.findErrorOption(exit)
  return error._tag === "Some" ? `invalid: ${error.value.reason}` : "defect"
}

describe("PathRules", () => {
  it("validatePath decodes once, names index.html for directories, and rejects what it must", () => {
    const long = "x".repeat(PathRules.maxPathLength)
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["/a/b.ts", "a/b.ts"],
      ["//a//b.ts", "a/b.ts"],
      ["/sp%20ace.ts", "sp ace.ts"],
      ["/%252e%252e/x.ts", "%2e%2e/x.ts"],
      ["/", "index.html"],
      ["", "index.html"],
      ["/dir/", "dir/index.html"],
      [`/${long.slice(1)}`, long.slice(1)],
      ["/../a.ts", "invalid: path traversal"],
      ["/%2e%2e/a.ts", "invalid: path traversal"],
      ["/./a.ts", "invalid: path traversal"],
      ["/.hidden/a.ts", "invalid: dotfiles and dot directories are not served"],
      ["/.transpile-cache/x", "invalid: dotfiles and dot directories are not served"],
      ["/a%00.ts", "invalid: NUL byte"],
      ["/a\\b", "invalid: backslash"],
      ["/%5c", "invalid: backslash"],
      ["/%ff", "invalid: malformed percent-encoding"],
      [`/${long}`, "invalid: path longer than 1024 characters"]
    ]
    for (const [input, expected] of cases) expect(validated(input), input).toBe(expected)
  })

  it("isExecutable and candidatesOf follow the documented extension order", () => {
    expect(PathRules.executableExtensions).toEqual([".gts", ".gjs", ".ts", ".mts", ".js", ".mjs"])
    expect(PathRules.isExecutable("a/b.GTS")).toBe(true)
    expect(PathRules.isExecutable("a/b.d.ts")).toBe(true)
    expect(PathRules.isExecutable("a/b.css")).toBe(false)
    expect(PathRules.isExecutable("a/b")).toBe(false)
    expect(PathRules.candidatesOf("a/b.ts")).toEqual(["a/b.ts"])
    expect(PathRules.candidatesOf("a/b")).toEqual(["a/b", "a/b.gts", "a/b.gjs", "a/b.ts", "a/b.mts", "a/b.js", "a/b.mjs"])
  })

  it("segmentProblem, isInside, toPosix, encodePath and pathOf", () => {
    expect(PathRules.segmentProblem("a")).toBeUndefined()
    expect(PathRules.segmentProblem("..")).toBe("path traversal")
    expect(PathRules.segmentProblem(".git")).toBe("dotfiles and dot directories are not served")
    expect(PathRules.isInside("/realm/a", "/realm")).toBe(true)
    expect(PathRules.isInside("/realm", "/realm")).toBe(true)
    expect(PathRules.isInside("/realm", "/realm/")).toBe(false)
    expect(PathRules.isInside("/realm2/a", "/realm")).toBe(false)
    expect(PathRules.toPosix(["a", "b", "c.ts"].join(path.sep))).toBe("a/b/c.ts")
    expect(PathRules.encodePath("/a b/c?.ts")).toBe("/a%20b/c%3F.ts")
    expect(PathRules.pathOf("/a.ts?x=1#y")).toBe("/a.ts")
    expect(PathRules.pathOf("a.ts#y")).toBe("/a.ts")
  })

  it("canonicalOf accepts real paths inside the realm only, outside hidden and excluded ones", () => {
    const realm = "/srv/realm"
    expect(PathRules.canonicalOf(realm, [], "/srv/realm/a/b.ts")).toEqual({ path: "a/b.ts" })
    expect(PathRules.canonicalOf(realm, [], "/srv/realm")).toEqual({ reason: "resolves outside the realm" })
    expect(PathRules.canonicalOf(realm, [], "/etc/hostname")).toEqual({ reason: "resolves outside the realm" })
    expect(PathRules.canonicalOf(realm, ["/srv/realm/data"], "/srv/realm/data/x.ts"))
      .toEqual({ reason: "the data directory is not served" })
    expect(PathRules.canonicalOf(realm, [], "/srv/realm/.hidden.ts"))
      .toEqual({ reason: "resolves to a hidden path (dotfiles and dot directories are not served)" })
  })

  it("isIgnoredIn ignores dot segments and excluded directories", () => {
    const realm = "/srv/realm"
    expect(PathRules.isIgnoredIn(realm, [], "a/b.ts")).toBe(false)
    expect(PathRules.isIgnoredIn(realm, [], ".transpile-cache/x")).toBe(true)
    expect(PathRules.isIgnoredIn(realm, [], "a/.git")).toBe(true)
    expect(PathRules.isIgnoredIn(realm, ["/srv/realm/data"], "data/x")).toBe(true)
    expect(PathRules.isIgnoredIn(realm, ["/srv/realm/data"], "database.ts")).toBe(false)
  })

  it("keysCovering: the named keys plus every known key at or below the path, sorted, once", () => {
    const known = ["a.ts", "lib/x.ts", "lib/y/z.ts", "library.ts", "other.ts"]
    expect(PathRules.keysCovering("lib", [], known)).toEqual(["lib/x.ts", "lib/y/z.ts"])
    expect(PathRules.keysCovering("a.ts", ["a.ts"], known)).toEqual(["a.ts"])
    expect(PathRules.keysCovering("new.ts", ["new.ts"], known)).toEqual(["new.ts"])
    expect(PathRules.keysCovering("other.ts", [], known)).toEqual(["other.ts"])
    expect(PathRules.keysCovering("lib/y", ["lib/y.ts"], known)).toEqual(["lib/y.ts", "lib/y/z.ts"])
    // The realm root covers only what it names.
    expect(PathRules.keysCovering("", [], known)).toEqual([])
  })
})
