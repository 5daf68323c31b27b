/**
 * `npm run docs`, first step: every ```ts block of an `@example` tag in the doc comments of
 * src/**\/*.ts type-checks, as Effect's docgen checks its examples.
 *
 * Each block becomes a file of its own under dist-docs/examples/ (git-ignored, rewritten on
 * every run), where `module-transpile-cache` and `module-transpile-cache/testing` resolve to
 * src/index.ts and src/testing.ts (tsconfig `paths`), so an example imports the package as a
 * user would. Then the repo's tsc checks them all, with the repo's compiler options. Any error
 * fails the run, named by the source file and line of the example; so does finding no example
 * at all (the check would check nothing).
 *
 * Usage: node docs/tools/check-examples.ts
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative } from "node:path"

const root = join(import.meta.dirname, "..", "..")
const outDir = join(root, "dist-docs", "examples")

/** One ```ts block of an @example tag: where it is, and its code. */
export interface Example {
  readonly file: string
  /** The 1-based line of the source file where the code's first line is. */
  readonly line: number
  readonly code: string
}

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts") ? [path] : []
  })

/** The ```ts blocks of the @example tags of one file's doc comments. */
export const examplesOf = (file: string, text: string): Array<Example> => {
  const examples: Array<Example> = []
  const lines = text.split("\n")
  let inDoc = false
  let inExample = false
  let fence: { start: number; code: Array<string> } | undefined
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!
    if (!inDoc) {
      if (/^\s*\/\*\*/.test(raw) && !raw.includes("*/")) inDoc = true
      continue
    }
    if (/^\s*\*\//.test(raw) || (raw.includes("*/") && fence === undefined)) {
      inDoc = false
      inExample = false
      continue
    }
    // The comment's text: the line without its leading ` * `.
    const body = raw.replace(/^\s*\* ?/, "")
    if (fence !== undefined) {
      if (/^```\s*$/.test(body)) {
        examples.push({ file, line: fence.start + 1, code: fence.code.join("\n") + "\n" })
        fence = undefined
      } else {
        fence.code.push(body)
      }
      continue
    }
    if (/^@example\b/.test(body)) {
      inExample = true
      continue
    }
    if (/^@\w+/.test(body)) {
      inExample = false
      continue
    }
    if (inExample && /^```(ts|typescript)\s*$/.test(body)) fence = { start: i + 1, code: [] }
  }
  return examples
}

const main = () => {
  const examples = sourceFiles(join(root, "src")).flatMap((path) =>
    examplesOf(relative(root, path), readFileSync(path, "utf8"))
  )
  if (examples.length === 0) {
    console.error("check-examples: no ```ts block in any @example tag under src/: nothing was checked")
    process.exit(1)
  }
  rmSync(outDir, { recursive: true, force: true })
  mkdirSync(outDir, { recursive: true })
  const names = new Map<string, Example>()
  examples.forEach((example, index) => {
    const name = `example-${String(index + 1).padStart(3, "0")}.ts`
    names.set(name, example)
    // The first line names the origin; the code starts on line 2.
    writeFileSync(join(outDir, name), `// ${example.file}:${example.line}\n${example.code}`)
  })
  writeFileSync(
    join(outDir, "tsconfig.json"),
    JSON.stringify(
      {
        extends: "../../tsconfig.json",
        compilerOptions: {
          noEmit: true,
          // Examples may leave values unused (a layer shown, not run).
          noUnusedLocals: false,
          paths: {
            "module-transpile-cache": ["../../src/index.ts"],
            "module-transpile-cache/testing": ["../../src/testing.ts"]
          }
        },
        include: ["./*.ts"],
        exclude: []
      },
      null,
      2
    ) + "\n"
  )
  const tsc = join(root, "node_modules", ".bin", "tsc")
  const result = spawnSync(tsc, ["-p", join(outDir, "tsconfig.json"), "--pretty", "false"], {
    cwd: root,
    encoding: "utf8"
  })
  const output = `${result.stdout}${result.stderr}`
  if (result.status !== 0) {
    // Point each error at the example's line in src/.
    const mapped = output.replace(
      /(?:[^\s(]*[\\/])?(example-\d{3}\.ts)\((\d+),(\d+)\)/g,
      (whole, name: string, line: string, column: string) => {
        const example = names.get(name)
        return example === undefined ? whole : `${example.file}:${example.line + Number(line) - 2}:${column} (${name})`
      }
    )
    console.error(mapped.trim())
    console.error(`check-examples: the @example blocks do not type-check (${examples.length} checked, in ${outDir})`)
    process.exit(1)
  }
  console.log(`check-examples: ${examples.length} @example blocks type-check`)
}

if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) main()
