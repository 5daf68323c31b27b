/**
 * The documentation stays true to the code (no network, no process):
 *
 * - every environment variable the code reads (found in src/ by regex: `Config.*("NAME")`, a
 *   `Config.*(name)` whose `const name = "NAME"` is in the same file, `process.env.NAME` and
 *   `env.NAME`) has its row in docs/configuration.md, and every row there names one the code reads;
 * - every command-line flag of src/cli/Cli.ts (`Flag.*("name")`) is documented as `--name` in docs/;
 * - every tagged error of src/ (`Schema.TaggedError<...>()("Name"`) has its section in
 *   docs/troubleshooting.md;
 * - every relative link and `#anchor` of README.md and docs/*.md resolves (GitHub's heading slugs);
 * - the README stays within 250 lines;
 * - the @example extractor of `npm run docs` finds examples in src/.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { examplesOf } from "../docs/tools/check-examples.ts"

const root = path.join(import.meta.dirname, "..")
const read = (file: string): string => readFileSync(path.join(root, file), "utf8")

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(file)
    return entry.name.endsWith(".ts") ? [file] : []
  })

const sources = sourceFiles("src").map((file) => ({ file, text: read(file) }))
const docPages = readdirSync(path.join(root, "docs")).filter((name) => name.endsWith(".md")).map((name) => `docs/${name}`)
const markdownFiles = ["README.md", ...docPages]

/** Strips comments, so a name mentioned in a doc comment does not count as read. */
const code = (text: string): string => text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1")

/** The environment variables a source reads. */
export const variablesRead = (text: string): Set<string> => {
  const body = code(text)
  const names = new Set<string>()
  const constants = new Map<string, string>()
  for (const m of body.matchAll(/\bconst\s+(\w+)\s*=\s*"([A-Z][A-Z0-9_]*)"/g)) constants.set(m[1]!, m[2]!)
  // Config.String("NAME"), Config.Literals(values, "NAME"), Config.Literal("value", "NAME"), ...
  // Config.schema(Schema, "NAME") too.
  for (const m of body.matchAll(/\bConfig\.[A-Za-z]\w*\(\s*(?:(?:[\w.]+|"[^"]*")\s*,\s*)?"([A-Z][A-Z0-9_]*)"/g)) names.add(m[1]!)
  // Config.Redacted(envVar), with `const envVar = "NAME"` in the file.
  for (const m of body.matchAll(/\bConfig\.[A-Z]\w*\(\s*([a-zA-Z_]\w*)\s*[,)]/g)) {
    const name = constants.get(m[1]!)
    if (name !== undefined) names.add(name)
  }
  // process.env.NAME, process.env["NAME"], env.NAME (a NodeJS.ProcessEnv parameter).
  for (const m of body.matchAll(/\benv(?:\.([A-Z][A-Z0-9_]*)\b|\[\s*"([A-Z][A-Z0-9_]*)"\s*\])/g)) names.add((m[1] ?? m[2])!)
  return names
}

/** GitHub's anchor of a heading: lowercase, punctuation but `-` and `_` dropped, spaces to `-`. */
export const slug = (heading: string): string =>
  heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
    .replace(/`/g, "")
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\- _]/gu, "")
    .replace(/ /g, "-")

/** The anchors of a Markdown file's headings (outside code fences), duplicates numbered -1, -2. */
export const anchorsOf = (markdown: string): Set<string> => {
  const anchors = new Set<string>()
  const seen = new Map<string, number>()
  let fenced = false
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced
    if (fenced) continue
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (heading === null) continue
    const base = slug(heading[1]!)
    const count = seen.get(base) ?? 0
    seen.set(base, count + 1)
    anchors.add(count === 0 ? base : `${base}-${count}`)
  }
  return anchors
}

/** The link targets of a Markdown file, outside code fences and code spans. */
export const linksOf = (markdown: string): Array<string> => {
  const links: Array<string> = []
  let fenced = false
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced
    if (fenced) continue
    const text = line.replace(/`[^`]*`/g, "")
    for (const m of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) links.push(m[1]!)
  }
  return links
}

describe("docs/configuration.md", () => {
  const read = new Set(sources.flatMap(({ text }) => [...variablesRead(text)]))
  const page = readFileSync(path.join(root, "docs/configuration.md"), "utf8")
  const rows = [...page.matchAll(/^\| `([A-Z][A-Z0-9_]*)` \|/gm)].map((m) => m[1]!)

  it("finds the variables in the code and the rows on the page", () => {
    expect(read.size).toBeGreaterThan(40)
    expect(read).toContain("MTC_CONTENT_ENCODINGS")
    expect(read).toContain("MTC_READ_SECRET") // through `const envVar`
    expect(read).toContain("MTC_STATE_DIR") // through `env.MTC_STATE_DIR`
    expect(rows.length).toBeGreaterThan(40)
  })

  it("lists every variable the code reads, one row each", () => {
    expect([...read].filter((name) => !rows.includes(name)).sort()).toEqual([])
    expect(rows.filter((name, i) => rows.indexOf(name) !== i)).toEqual([])
  })

  it("lists no variable the code does not read", () => {
    expect(rows.filter((name) => !read.has(name)).sort()).toEqual([])
  })
})

describe("the command line", () => {
  const cli = code(readFileSync(path.join(root, "src/cli/Cli.ts"), "utf8"))
  const flags = [...new Set([...cli.matchAll(/\bFlag\.[A-Z]\w*\(\s*"([a-z][a-z0-9-]*)"/g)].map((m) => m[1]!))]
  const docs = docPages.map((file) => readFileSync(path.join(root, file), "utf8")).join("\n")

  it("finds the flags", () => {
    expect(flags.length).toBeGreaterThan(10)
    expect(flags).toContain("realm")
    expect(flags).toContain("transpile-workers")
  })

  it("documents every flag in docs/", () => {
    expect(flags.filter((flag) => !new RegExp(`--${flag}(?![a-z0-9-])`).test(docs)).sort()).toEqual([])
  })
})

describe("docs/troubleshooting.md", () => {
  const errors = [
    ...new Set(
      sources.flatMap(({ text }) => [...code(text).matchAll(/Schema\.TaggedError<\w+>\(\)\(\s*"(\w+)"/g)].map((m) => m[1]!))
    )
  ]
  const sections = anchorsOf(readFileSync(path.join(root, "docs/troubleshooting.md"), "utf8"))

  it("has a section for every tagged error of src/, by name", () => {
    expect(errors.length).toBeGreaterThan(15)
    expect(errors.filter((name) => !sections.has(name.toLowerCase())).sort()).toEqual([])
  })
})

describe("links", () => {
  const anchors = new Map(markdownFiles.map((file) => [file, anchorsOf(read(file))]))

  it("computes GitHub's slugs", () => {
    expect(slug("Connections: fleet size x budget <= max_connections - headroom"))
      .toBe("connections-fleet-size-x-budget--max_connections---headroom")
    expect(slug("Managed Postgres (TLS)")).toBe("managed-postgres-tls")
    expect([...anchorsOf("# A\n## A\n```\n# B\n```\n## A")]).toEqual(["a", "a-1", "a-2"])
  })

  it("resolves every relative link and anchor of README.md and docs/*.md", () => {
    const broken: Array<string> = []
    let checked = 0
    for (const file of markdownFiles) {
      for (const link of linksOf(read(file))) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue // https:, mailto:
        checked++
        const [target = "", anchor] = link.split("#", 2)
        const resolved = target === "" ? file : path.posix.normalize(path.posix.join(path.posix.dirname(file), target))
        if (!existsSync(path.join(root, resolved))) {
          broken.push(`${file}: ${link} (no ${resolved})`)
          continue
        }
        if (anchor === undefined) continue
        if (!resolved.endsWith(".md") || statSync(path.join(root, resolved)).isDirectory()) {
          broken.push(`${file}: ${link} (an anchor into a file that is not Markdown)`)
          continue
        }
        const known = anchors.get(resolved) ?? anchorsOf(read(resolved))
        if (!known.has(anchor)) broken.push(`${file}: ${link} (no heading #${anchor} in ${resolved})`)
      }
    }
    expect(checked).toBeGreaterThan(50)
    expect(broken).toEqual([])
  })

  it("links every docs page from the README", () => {
    const links = linksOf(read("README.md"))
    expect(docPages.length).toBeGreaterThan(5)
    expect(docPages.filter((page) => !links.includes(page))).toEqual([])
  })
})

describe("README.md", () => {
  it("stays within 250 lines, with the library example test/Package.test.ts runs", () => {
    const readme = read("README.md")
    expect(readme.split("\n").length).toBeLessThanOrEqual(250)
    expect(readme).toContain("\n## Using the library in your own Effect server")
    expect(readme).toMatch(/## Using the library[^]*?```ts\n[^]*?from "module-transpile-cache"/)
  })
})

describe("the @example check of npm run docs", () => {
  it("finds the examples of src/, with their lines", () => {
    const examples = sources.flatMap(({ file, text }) => examplesOf(file, text))
    expect(examples.length).toBeGreaterThanOrEqual(4)
    expect(examples.map((e) => e.file)).toContain("src/live/ModuleCacheLive.ts")
    for (const example of examples) {
      const lines = read(example.file).split("\n")
      expect(lines[example.line - 1]!.replace(/^\s*\* ?/, "")).toBe(example.code.split("\n")[0])
    }
  })

  it("takes only ts blocks of @example tags", () => {
    const text = [
      "/**",
      " * ```ts",
      " * notAnExample()",
      " * ```",
      " *",
      " * @example",
      " * ```ts",
      " * const a = 1",
      " * ```",
      " * @since 0.1.0",
      " */"
    ].join("\n")
    expect(examplesOf("x.ts", text)).toEqual([{ file: "x.ts", line: 8, code: "const a = 1\n" }])
  })
})
