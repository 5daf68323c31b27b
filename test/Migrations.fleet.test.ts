/**
 * Migrations under a fleet start: four real OS processes migrate one fresh database at the
 * same moment. Every one must succeed, the schema must exist once, and a later start must
 * find nothing to do.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { dropDatabase, freshDatabase, psql } from "./support/database.ts"

const nodeBin = path.resolve("node_modules/.bin/node")
const childScript = path.resolve("test/support/migrate-child.ts")

interface ChildResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

interface Child {
  readonly process: ChildProcessWithoutNullStreams
  readonly ready: Promise<void>
  readonly done: Promise<ChildResult>
}

const startChild = (url: string, args: ReadonlyArray<string> = []): Child => {
  const child = spawn(nodeBin, [childScript, url, ...args], { stdio: ["pipe", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  let markReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    markReady = resolve
  })
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk
    if (stdout.includes("ready\n")) markReady()
  })
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk
  })
  const done = new Promise<ChildResult>((resolve, reject) => {
    child.on("error", reject)
    child.on("close", (code) => {
      markReady()
      resolve({ code, stdout, stderr })
    })
  })
  return { process: child, ready, done }
}

const appliedOf = (result: ChildResult): ReadonlyArray<readonly [number, string]> => {
  const line = result.stdout.split("\n").find((l) => l.startsWith("{"))
  if (line === undefined) throw new Error(`no result from child: ${result.stdout}\n${result.stderr}`)
  const parsed: { applied: ReadonlyArray<readonly [number, string]> } = JSON.parse(line)
  return parsed.applied
}

const allMigrations = [
  [1, "create_module_transpile_cache"],
  [2, "create_module_transpile_cache_realm"],
  [3, "index_live_rows_by_realm"],
  [4, "create_module_transpile_cache_pooler"],
  [5, "version_rows_by_fingerprint"],
  [6, "name_edit_sources"],
  [7, "store_encoded_forms_and_maps"],
  [8, "name_log_paths"]
]

describe("migrations started by a fleet at once", () => {
  // Made at collection: an unreachable Postgres fails this file, never skips it.
  const url = freshDatabase("fleet")
  afterAll(() => dropDatabase(url))

  it("four processes migrating one fresh database at the same moment all succeed, once", async () => {
    const children = Array.from({ length: 4 }, () => startChild(url))
    // Every child has started and connected; release them together.
    await Promise.all(children.map((child) => child.ready))
    for (const child of children) child.process.stdin.write("go\n")
    const results = await Promise.all(children.map((child) => child.done))

    for (const result of results) {
      expect(result.stderr).toBe("")
      expect(result.code).toBe(0)
    }
    // Exactly one process applied the migrations; the others found them applied.
    const applied = results.map(appliedOf)
    expect(applied.filter((a) => a.length > 0)).toEqual([allMigrations])
    expect(applied.filter((a) => a.length === 0)).toHaveLength(3)

    expect(psql(
      `SELECT relname || ':' || relpersistence::text FROM pg_class
       WHERE relname LIKE 'module_transpile_cache%' AND relkind = 'r' ORDER BY relname`,
      url
    ).split("\n")).toEqual([
      "module_transpile_cache:u",
      "module_transpile_cache_lease:u",
      "module_transpile_cache_log:p",
      "module_transpile_cache_log_head:p",
      "module_transpile_cache_migrations:p",
      "module_transpile_cache_realm:p"
    ])
    expect(psql("SELECT migration_id || ':' || name FROM module_transpile_cache_migrations ORDER BY 1", url))
      .toBe("1:create_module_transpile_cache\n2:create_module_transpile_cache_realm\n3:index_live_rows_by_realm\n4:create_module_transpile_cache_pooler\n5:version_rows_by_fingerprint\n6:name_edit_sources\n7:store_encoded_forms_and_maps\n8:name_log_paths")
    expect(psql(
      `SELECT indexname FROM pg_indexes WHERE tablename = 'module_transpile_cache' ORDER BY indexname`,
      url
    ).split("\n")).toEqual([
      "module_transpile_cache_accessed_at_idx",
      "module_transpile_cache_dead_created_at_idx",
      "module_transpile_cache_live_realm_idx",
      "module_transpile_cache_pkey"
    ])
  })

  it("a later start finds nothing to do, and the statements are idempotent on their own", async () => {
    const again = await Promise.all([startChild(url, ["--now"]).done, startChild(url, ["--now"]).done])
    for (const result of again) {
      expect(result.stderr).toBe("")
      expect(result.code).toBe(0)
      expect(appliedOf(result)).toEqual([])
    }
    // Even with its bookkeeping gone, re-running every migration changes nothing.
    psql("DELETE FROM module_transpile_cache_migrations", url)
    const rerun = await startChild(url, ["--now"]).done
    expect(rerun.stderr).toBe("")
    expect(rerun.code).toBe(0)
    expect(appliedOf(rerun)).toEqual(allMigrations)
    expect(psql("SELECT count(*) FROM pg_class WHERE relname = 'module_transpile_cache'", url)).toBe("1")
  })
})
