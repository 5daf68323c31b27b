/**
 * A wake-up latch: `fire` wakes the current `wait`, or the next one if nobody waits yet.
 * Registered waiters of the coordinators are made of these.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Waiter } from "../domain/Coordinator.ts"

interface Signal {
  readonly fire: () => void
  readonly wait: Effect.Effect<void>
}

const makeSignal = (): Signal => {
  let pending = false
  let resume: (() => void) | undefined
  return {
    fire: () => {
      if (resume === undefined) {
        pending = true
        return
      }
      const wake = resume
      resume = undefined
      wake()
    },
    wait: Effect.callback<void>((done) => {
      if (pending) {
        pending = false
        done(Effect.void)
        return
      }
      resume = () => done(Effect.void)
      return Effect.sync(() => {
        resume = undefined
      })
    })
  }
}

/** Waiters registered per lock key; shared by the coordinators. */
export class WaiterRegistry {
  private readonly byKey = new Map<bigint, Set<Signal>>()

  /** Registers a waiter of `key` for the life of the scope. */
  register(key: bigint): Effect.Effect<Waiter, never, Scope.Scope> {
    return Effect.acquireRelease(
      Effect.sync(() => {
        const signal = makeSignal()
        this.add(key, signal)
        return signal
      }),
      (signal) => Effect.sync(() => this.remove(key, signal))
    ).pipe(Effect.map((signal) => ({ wake: signal.wait })))
  }

  add(key: bigint, signal: Signal): void {
    let set = this.byKey.get(key)
    if (set === undefined) {
      set = new Set()
      this.byKey.set(key, set)
    }
    set.add(signal)
  }

  remove(key: bigint, signal: Signal): void {
    const set = this.byKey.get(key)
    if (set === undefined) return
    set.delete(signal)
    if (set.size === 0) this.byKey.delete(key)
  }

  /** Wakes the waiters of one key. */
  wake(key: bigint): void {
    const set = this.byKey.get(key)
    if (set !== undefined) for (const signal of set) signal.fire()
  }

  /** The keys with registered waiters. */
  keys(): IterableIterator<bigint> {
    return this.byKey.keys()
  }

  /** Wakes every waiter (after a reconnect, when notices may have been lost). */
  wakeAll(): void {
    for (const set of this.byKey.values()) for (const signal of set) signal.fire()
  }

  get size(): number {
    let n = 0
    for (const set of this.byKey.values()) n += set.size
    return n
  }
}
