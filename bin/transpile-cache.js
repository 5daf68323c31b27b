#!/usr/bin/env node
// The `transpile-cache` binary: Node >= 22.19 runs the TypeScript entry directly (type stripping).
import "../src/bin.ts"
