import { Preprocessor } from "content-tag"
const p = new Preprocessor()
const src = `import Component from "@glimmer/component";\ninterface X { a: number }\nexport default class Foo extends Component {\n  <template>\n    <div>\n      hi {{this.x}}\n    </div>\n  </template>\n  get x(): number {\n    throw new Error("boom")\n  }\n}\n`
const r = p.process(src, { filename: "dir/foo.gts" })
console.log(r.code); console.log(r.map.slice(0,300))
import { transformSync } from "oxc-transform"
const o = transformSync("foo.ts", r.code, { sourcemap: true, lang: "ts", sourceType: "module" })
console.log(Object.keys(o.map), o.map.sources, o.map.sourcesContent?.length)
