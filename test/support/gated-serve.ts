/**
 * A `serve` process whose transpiles are held at a gate, for drain tests: `RealmServer.layer`
 * on the realm `REALM_DIR` (memory store, port 0), with the counting `TestTranspiler`, run by
 * `NodeRuntime.runMain` as the CLI runs it (SIGTERM or SIGINT drain, then exit 0).
 *
 * Over IPC (see `startGatedServer` in ./restarts.ts): `{ started: path }` as each transpile
 * enters the gate; the message `"release"` lets every held transpile go on.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Deferred, Effect, Exit, Layer, Redacted, Runtime } from "effect"
import { Transpiler } from "../../src/domain/Transpiler.ts"
import * as RealmServer from "../../src/http/RealmServer.ts"
import * as TestTranspiler from "../../src/transpiler/TestTranspiler.ts"

const realmDir = process.env["REALM_DIR"] ?? "."
const test = TestTranspiler.make()
const gate = Effect.runSync(test.gate)

process.on("message", (message) => {
  if (message === "release") Effect.runSync(Deferred.succeed(gate.release, undefined))
})

const transpiler = Layer.succeed(Transpiler, Transpiler.of({
  ...test.service,
  transpile: (input) =>
    Effect.andThen(Effect.sync(() => process.send?.({ started: input.path })), test.service.transpile(input))
}))

const server = RealmServer.layer({
  realmDir,
  store: { _tag: "memory" },
  port: 0,
  adminToken: Redacted.make(process.env["MTC_ADMIN_TOKEN"] ?? "gated-serve-admin-token")
}).pipe(Layer.provide(transpiler))

// As the CLI (src/cli/runCli.ts): a stop by a signal alone exits 0.
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

Layer.launch(server).pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain({ teardown }))
