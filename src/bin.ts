/**
 * The entry point of the `transpile-cache` command line (see {@link Cli}).
 *
 * @since 0.1.0
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import * as Cli from "./Cli.ts"

Cli.run.pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain)
