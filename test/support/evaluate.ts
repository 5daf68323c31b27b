/**
 * Evaluates transpiled modules in a real Node process, the way a host would run them:
 * the modules are written to a temporary "built realm", and a check script imports them
 * under `ember-hooks.ts` (ember-source's ESM runtime for `@ember/*` and `@glimmer/*`, and
 * `import.meta.loader` from `globalThis.__boxelLoader`). The script prints one JSON line,
 * which is returned.
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { root } from "./server.ts"

const register = path.join(root, "test", "support", "ember-register.ts")

/** Writes `modules` (path to transpiled body) under a temporary realm, runs `script` (an ES module that may import `./realm/<path>`), returns its last stdout line parsed as JSON. */
export const evaluate = (modules: Readonly<Record<string, string>>, script: string): unknown => {
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-eval-"))
  try {
    const realm = path.join(dir, "realm")
    for (const [name, body] of Object.entries(modules)) {
      const file = path.join(realm, name)
      mkdirSync(path.dirname(file), { recursive: true })
      writeFileSync(file, body)
    }
    const check = path.join(dir, "check.mjs")
    writeFileSync(check, script)
    const result = spawnSync(process.execPath, ["--import", register, check], {
      cwd: root,
      env: { ...process.env, MTC_EVAL_REALM: realm },
      encoding: "utf8",
      timeout: 30_000
    })
    if (result.status !== 0) {
      throw new Error(`evaluation failed (status ${result.status}):\n${result.stderr}\n${result.stdout}`)
    }
    const lines = result.stdout.trim().split("\n")
    return JSON.parse(lines[lines.length - 1] ?? "null")
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
