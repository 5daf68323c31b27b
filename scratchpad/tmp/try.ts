import { Effect } from "effect"
import { TraceMap, originalPositionFor } from "@jridgewell/trace-mapping"
import * as BabelTranspiler from "../../src/transpiler/BabelTranspiler.ts"
const gts = `import Component from "@glimmer/component";
interface Args { n: number }
export default class Card extends Component<{ Args: Args }> {
  <template>
    <div class="card">
      {{this.label}}
    </div>
  </template>
  get label(): string {
    throw new Error("gts-throw");
  }
}
`
const ts = `type A = { a: number }
interface B {
  b: string
}
export function f(x: A): number {
  if (x.a > 1) {
    throw new Error("ts-throw")
  }
  return x.a
}
`
for (const [pipeline, engine] of [["standard","native"],["standard","babel"],["ember","babel"],["boxel","babel"]] as const) {
  const t = await Effect.runPromise(BabelTranspiler.make({ pipeline, engine }))
  for (const [path, source, needle] of [["a/card.gts", gts, "throw new Error(\"gts-throw\")"], ["a/f.ts", ts, "throw new Error(\"ts-throw\")"]] as const) {
    const m = await Effect.runPromise(t.transpile({ path, source }))
    const at = m.body.indexOf(needle)
    const before = m.body.slice(0, at).split("\n")
    const pos = originalPositionFor(new TraceMap(m.sourceMap!), { line: before.length, column: before[before.length - 1]!.length })
    console.log(pipeline, engine, path, JSON.stringify(pos), m.body.slice(-60).replace(/\n/g, "\\n"))
  }
}
