/**
 * A timeout that forgives a blocked event loop. A process that was busy in a synchronous
 * transpile for longer than the timeout sees the timer and the answer become ready
 * together, and Node runs timers before I/O: a plain `Effect.timeout` then fails a query
 * whose answer is already in the socket. Here the timer only opens a short grace period
 * for the same, still running, effect.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"

/** `Effect.timeout(duration)`, plus `grace` (default 100 ms) after the timer fires. */
export const timeoutLenient = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  duration: Duration.Input,
  grace: Duration.Input = Duration.millis(100)
): Effect.Effect<A, E | Cause.TimeoutError, R> =>
  Effect.flatMap(Effect.forkChild(effect), (fiber) =>
    Fiber.join(fiber).pipe(
      Effect.timeoutOrElse({
        duration,
        orElse: () => Fiber.join(fiber).pipe(Effect.timeout(grace), Effect.onError(() => Fiber.interrupt(fiber)))
      })
    ))
