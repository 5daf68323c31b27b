#!/usr/bin/env node
/**
 * The entry point of the `transpile-cache` command line (see `Cli.ts`). It checks the Node
 * version before loading anything else, so an unsupported Node gets a clear message and
 * exit code 1 instead of a failure deep inside a dependency.
 *
 * @since 0.1.0
 */
import { unsupportedMessage } from "./internal/nodeVersion.ts"

const message = unsupportedMessage("transpile-cache")
if (message === undefined) {
  await import("./cli/runCli.ts")
} else {
  process.stderr.write(`${message}\n`)
  process.exitCode = 1
}
