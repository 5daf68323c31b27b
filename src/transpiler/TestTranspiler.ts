/**
 * A fake Transpiler for tests: it counts its calls, can be held at a gate, and fails on a
 * marker instead of running Babel. Users can swap it in for their own tests too.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { hashSource, javascriptContentType } from "../domain/Domain.ts"
import { TranspileError } from "../domain/Errors.ts"
import { type TranspileInput, Transpiler } from "../domain/Transpiler.ts"

/** Sources containing this text fail with a TranspileError at line 1, column 0. */
export const syntaxErrorMarker = "<<SYNTAX ERROR>>"

/** Holds transpiles: `started` completes when one enters, and they all wait for `release`. */
export interface Gate {
  readonly started: Deferred.Deferred<TranspileInput>
  readonly release: Deferred.Deferred<void>
}

/** A counting, gateable transpiler. */
export interface TestTranspiler {
  readonly service: Transpiler["Service"]
  /** Transpiles started so far. */
  readonly calls: () => number
  /** Installs a gate that holds every transpile from now on, until it is released. */
  readonly gate: Effect.Effect<Gate>
  /** Removes the gate (transpiles already held still wait for its release). */
  readonly ungate: () => void
}

/** Makes a {@link TestTranspiler}: its output is the source behind a comment line. */
export const make = (options: { readonly fingerprint?: string } = {}): TestTranspiler => {
  let calls = 0
  let current: Gate | undefined
  return {
    calls: () => calls,
    gate: Effect.gen(function*() {
      const gate: Gate = { started: yield* Deferred.make<TranspileInput>(), release: yield* Deferred.make<void>() }
      current = gate
      return gate
    }),
    ungate: () => {
      current = undefined
    },
    service: Transpiler.of({
      fingerprint: options.fingerprint ?? "test-transpiler-1",
      transpile: (input) =>
        Effect.gen(function*() {
          calls++
          const gate = current
          if (gate !== undefined) {
            yield* Deferred.succeed(gate.started, input)
            yield* Deferred.await(gate.release)
          }
          if (input.source.includes(syntaxErrorMarker)) {
            return yield* new TranspileError({ path: input.path, message: "Unexpected token", line: 1, column: 0 })
          }
          return {
            body: `// transpiled ${input.path}\n${input.source}`,
            headers: { "content-type": javascriptContentType },
            dependencyKeys: [],
            sourceHash: hashSource(input.source)
          }
        })
    })
  }
}

/**
 * A layer with the given test transpiler.
 *
 * @example
 * ```ts
 * import { Deferred, Effect } from "effect"
 * import { TestTranspiler } from "module-transpile-cache/testing"
 *
 * const transpiler = TestTranspiler.make()
 * const TranspilerTest = TestTranspiler.layer(transpiler)
 *
 * // Hold every transpile until the test releases it, e.g. to see gets coalesce.
 * const held = Effect.gen(function*() {
 *   const gate = yield* transpiler.gate
 *   // ... start gets that miss, then:
 *   yield* Deferred.await(gate.started)
 *   yield* Deferred.succeed(gate.release, undefined)
 *   transpiler.ungate()
 *   return transpiler.calls()
 * })
 * ```
 */
export const layer = (transpiler: TestTranspiler): Layer.Layer<Transpiler> =>
  Layer.succeed(Transpiler, transpiler.service)
