/**
 * A generated realm of N TypeScript modules behind one HTML page, for the reload tests
 * and benches: `main.ts` imports `label.ts` and every `lib/dG/mK.ts` (or the first few); each of those imports
 * the label back, by a `../../label` (extensionless) or `../../label.ts` import. The page
 * renders `<label>:<sum>` into `#out` and sets `data-ready`.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"

/** What {@link writeGraphRealm} made: the module paths (realm-relative) and the page's name. */
export interface GraphRealm {
  readonly modules: ReadonlyArray<string>
  readonly page: string
}

/** The page's import-map placeholder: the realm server fills it (see `src/http/ImportMap.ts`). */
export const importMapPlaceholder = "<script type=\"importmap\" data-realm></script>"

/** The page of a graph realm; with the placeholder or without it (for another dev server). */
export const graphPage = (withImportMap: boolean): string =>
  `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>graph realm</title>
    <link rel="icon" href="data:,">
    ${withImportMap ? importMapPlaceholder : ""}
  </head>
  <body>
    <div id="out">loading</div>
    <script type="module">
      import { render } from "./main.ts"
      render(document.getElementById("out"))
    </script>
  </body>
</html>
`

/** The source of `label.ts` with a given label. */
export const labelSource = (label: string): string => `export const label: string = ${JSON.stringify(label)}\n`

/** Writes a graph realm of `count` modules (at least 3) into `dir`; the page is `index.html`. */
export const writeGraphRealm = (
  dir: string,
  count: number,
  options: {
    readonly withImportMap?: boolean
    /** How many of the modules the page loads (main, label and the first libs); default all. */
    readonly reached?: number
  } = {}
): GraphRealm => {
  const libs = count - 2
  const imported = Math.min(libs, (options.reached ?? count) - 2)
  const modules: Array<string> = ["main.ts", "label.ts"]
  const write = (name: string, text: string) => {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    writeFileSync(path.join(dir, name), text)
  }
  write("label.ts", labelSource("v1"))
  const imports: Array<string> = []
  for (let i = 0; i < libs; i++) {
    const name = `lib/d${Math.floor(i / 20)}/m${i}.ts`
    modules.push(name)
    const label = i % 2 === 0 ? "../../label" : "../../label.ts"
    write(name, `import { label } from "${label}"\n\nexport const value${i}: number = ${i} + label.length * 0\n`)
    if (i < imported) imports.push(`import { value${i} } from "./${name}"`)
  }
  write(
    "main.ts",
    `${imports.join("\n")}
import { label } from "./label.ts"

export function render(root: HTMLElement | null): void {
  if (root === null) return
  const sum: number = ${Array.from({ length: imported }, (_, i) => `value${i}`).join(" + ") || "0"}
  root.textContent = \`\${label}:\${sum}\`
  root.dataset.ready = "true"
}
`
  )
  write("index.html", graphPage(options.withImportMap ?? true))
  return { modules, page: "index.html" }
}
