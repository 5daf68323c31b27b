/**
 * Single-flight: at most one run of a piece of work per id at a time, its answer shared by
 * every caller of that id (groupcache's `singleflight`, for Effect).
 *
 * The work runs in a fiber of its own, forked by the owner's `fork`: a caller's
 * interruption never cancels it, it finishes for the others. It may answer before it ends
 * (through `answer`), so that callers do not wait for what follows; from then on a new call
 * of the id starts a new run.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"

interface Call<A, E, T> {
  readonly deferred: Deferred.Deferred<A, E>
  readonly tag: T
}

/** Runs work once per id at a time. */
export class SingleFlight<A, E, T> {
  private readonly calls = new Map<string, Call<A, E, T>>()
  private readonly fork: (work: Effect.Effect<unknown, unknown>) => Effect.Effect<unknown>
  private readonly joined: (answer: A) => A

  /**
   * `fork` starts a run's fiber (in a scope or a `FiberSet` of the owner); `joined` maps the
   * answer for a caller that joined a run already in flight.
   */
  constructor(options: {
    readonly fork: (work: Effect.Effect<unknown, unknown>) => Effect.Effect<unknown>
    readonly joined?: (answer: A) => A
  }) {
    this.fork = options.fork
    this.joined = options.joined ?? ((answer) => answer)
  }

  /**
   * The answer of the run of `id` in flight, or of a new run of `work` (labelled `tag`, for
   * {@link forget}). A run answers with `answer`, or else with its own exit.
   */
  run(
    id: string,
    tag: T,
    work: (answer: (exit: Exit.Exit<A, E>) => Effect.Effect<void>) => Effect.Effect<A, E>
  ): Effect.Effect<A, E> {
    return Effect.suspend(() => {
      const inFlight = this.calls.get(id)
      if (inFlight !== undefined) return Effect.map(Deferred.await(inFlight.deferred), this.joined)
      const call: Call<A, E, T> = { deferred: Deferred.makeUnsafe<A, E>(), tag }
      const answer = (exit: Exit.Exit<A, E>) =>
        Effect.suspend(() => {
          // Later calls start afresh instead of joining a run that answered.
          if (this.calls.get(id) === call) this.calls.delete(id)
          return Deferred.done(call.deferred, exit)
        })
      // The call is registered and its fiber forked with no interruption in between.
      const start = Effect.suspend(() => {
        this.calls.set(id, call)
        return this.fork(Effect.onExit(work(answer), answer))
      })
      return Effect.andThen(Effect.uninterruptible(start), Deferred.await(call.deferred))
    })
  }

  /** The tags of the runs later calls would join. */
  tags(): Array<T> {
    return Array.from(this.calls.values(), (call) => call.tag)
  }

  /** Later calls of the ids whose tag matches start a new run instead of joining theirs. */
  forget(predicate: (tag: T, id: string) => boolean): void {
    for (const [id, call] of [...this.calls]) if (predicate(call.tag, id)) this.calls.delete(id)
  }
}
