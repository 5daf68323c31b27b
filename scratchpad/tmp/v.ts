import { encode } from "@jridgewell/sourcemap-codec"
import { withSourceMap } from "../../src/transpiler/SourceMaps.ts"
const module = { body: "a;\nb;", headers: {}, dependencyKeys: [], sourceHash: "h" }
const valid = { version: 3, sources: ["x"], names: [], mappings: encode([[[0, 0, 0, 0]], [[0, 0, 1, 0]]]) }
for (const m of [encode([[[0, 0, 0, 0]], [[0, 0, 1, 0]], [[0, 0, 1, 0]]]), encode([[[9, 0, 0, 0]]]), encode([[[0, 0, 39, 0]]])]) console.log(withSourceMap(module, "x.ts", "a\nb\n", { ...valid, mappings: m }, "v") === module)
console.log(withSourceMap(module, "x.ts", "a\nb\n", { ...valid, sources: ["x", "y"] }, "v") === module, withSourceMap(module, "x.ts", "a\nb\n", { ...valid, mappings: "!!" }, "v") === module)
