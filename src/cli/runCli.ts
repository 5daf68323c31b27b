/**
 * Runs the command line (see {@link Cli}) on Node's runtime; loaded by `bin.ts` once the
 * Node version is known to be supported. A graceful stop on SIGINT or SIGTERM (the program
 * interrupted, nothing else failing) exits 0.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Effect, Exit, Runtime } from "effect"
import * as Cli from "./Cli.ts"

const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

Cli.run.pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain({ teardown }))
