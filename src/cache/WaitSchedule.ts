/**
 * The loser's wait for a winner: it re-reads L2 on a {@link pollSchedule}, each delay cut
 * short by a wake-up, until a read answers, and gives up at a deadline (the caller then
 * transpiles itself).
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"

/**
 * The delays between a loser's re-reads of L2: `initial`, growing 1.5x, at most `max` (what
 * a lost wake-up costs at most).
 */
export const pollSchedule = (initial: Duration.Input, max: Duration.Input): Schedule.Schedule<Duration.Duration> =>
  Schedule.min([Schedule.exponential(initial, 1.5), Schedule.spaced(max)])

/**
 * Runs `poll` after each delay of `schedule` (the first one included), a delay ending early
 * when `wake` completes, until `poll` answers `Some`. `None` when `deadline` passes first.
 */
export const pollUntil = <A, E, R>(
  poll: Effect.Effect<Option.Option<A>, E, R>,
  options: {
    readonly schedule: Schedule.Schedule<unknown>
    readonly wake: Effect.Effect<void>
    readonly deadline: Duration.Input
  }
): Effect.Effect<Option.Option<A>, E, R> =>
  Effect.scheduleFrom(
    poll,
    Option.none(),
    options.schedule.pipe(
      Schedule.setInputType<Option.Option<A>>(),
      Schedule.passthrough,
      Schedule.while(({ input }) => Option.isNone(input)),
      // Checked before the wait: an answer is returned at once.
      Schedule.modifyDelay(({ duration }) =>
        Effect.as(Effect.raceFirst(options.wake, Effect.sleep(duration)), Duration.zero)
      )
    )
  ).pipe(Effect.timeoutOption(options.deadline), Effect.map(Option.flatten))
