/**
 * `node scratchpad/run-one.ts bench-engines benchEngines`: one benchmark section on its own, printed as a table.
 */
const [file, exported] = process.argv.slice(2)
if (file === undefined || exported === undefined) {
  console.error("usage: node scratchpad/run-one.ts <bench file without .ts> <exported function>")
  process.exit(2)
}
const module = (await import(`./${file}.ts`)) as Record<string, () => Promise<Array<unknown>>>
const run = module[exported]
if (run === undefined) throw new Error(`${file}.ts exports no ${exported}`)
console.table(await run())
