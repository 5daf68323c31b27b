import { decode } from "@jridgewell/sourcemap-codec"
console.log(JSON.stringify(decode("!!")))
