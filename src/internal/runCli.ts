/**
 * Runs the command line (see {@link Cli}) on Node's runtime; loaded by `bin.ts` once the
 * Node version is known to be supported.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import * as Cli from "../Cli.ts"

Cli.run.pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain)
