/**
 * The realm table's pure parts: which mounts are valid, and which realm a request path
 * belongs to (the longest mount that prefixes it).
 */
import { Effect, Exit } from "effect"
import { describe, expect, it } from "vitest"
import type { RealmFiles } from "../src/realm/FileSystemSources.ts"
import { SharedRawFiles } from "../src/realm/RawFileCache.ts"
import { makeRegistry, MountedRealm, realmUrlOf, validateMount } from "../src/realm/Realms.ts"

const realmAt = (mount: string) =>
  new MountedRealm({
    mount,
    isPrivate: false,
    files: { realmUrl: `https://realms.test${mount}` } as RealmFiles["Service"],
    raw: new SharedRawFiles(0).of(mount),
    hidden: []
  })

describe("mounts", () => {
  it("accepts / and /a/b/, and refuses what is not a path prefix or is reserved", () => {
    for (const mount of ["/", "/a/", "/alice/notes/", "/a-b_c.d~e/"]) {
      expect(Effect.runSync(validateMount(mount))).toBe(mount)
    }
    for (const mount of ["", "a/", "/a", "//", "/a//b/", "/../", "/./", "/.git/", "/_cache/", "/_cache/x/", "/a%2Fb/", "/a b/", `/${"x".repeat(300)}/`]) {
      const exit = Effect.runSyncExit(validateMount(mount))
      expect(Exit.isFailure(exit), mount).toBe(true)
    }
  })

  it("a realm URL is the base and the mount", () => {
    expect(realmUrlOf("https://realms.example", "/alice/notes/")).toBe("https://realms.example/alice/notes/")
    expect(realmUrlOf("https://realms.example/", "/")).toBe("https://realms.example/")
  })
})

describe("the realm of a request path", () => {
  it("is the longest mount that prefixes it, and none outside every mount", () => {
    const registry = makeRegistry()
    const a = realmAt("/a/")
    const ab = realmAt("/a/b/")
    registry.add(a)
    registry.add(ab)
    expect(registry.lookup("/a/x.ts")).toBe(a)
    expect(registry.lookup("/a/b/x.ts")).toBe(ab)
    expect(registry.lookup("/a/b/c/d/x.ts")).toBe(ab)
    expect(registry.lookup("/a/bx.ts")).toBe(a)
    expect(registry.lookup("/a")).toBeUndefined()
    expect(registry.lookup("/c/x.ts")).toBeUndefined()
    expect(registry.lookup("/")).toBeUndefined()
    expect(registry.lookup("x")).toBeUndefined()
    const root = realmAt("/")
    registry.add(root)
    expect(registry.lookup("/c/x.ts")).toBe(root)
    expect(registry.lookup("/a/x.ts")).toBe(a)
    registry.remove(a)
    expect(registry.lookup("/a/x.ts")).toBe(root)
    expect(registry.list().map((realm) => realm.mount)).toEqual(["/", "/a/b/"])
    expect(registry.ofRealmUrl("https://realms.test/a/b/")).toBe(ab)
  })
})
