/**
 * Runs the command line (see {@link Cli}) on Node's runtime; loaded by `bin.ts` once the
 * Node version is known to be supported. A graceful stop on SIGINT or SIGTERM (the program
 * interrupted, nothing else failing) exits 0.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import * as Cli from "./Cli.ts"

const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

Cli.run.pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain({ teardown }))
