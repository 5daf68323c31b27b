/** Tuning options declared by their defaults (src/internal/tuning.ts). */
import { describe, expect, it } from "@effect/vitest"
import { Duration } from "effect"
import * as Tuning from "../src/internal/tuning.ts"

const defaults = Tuning.defaults({ interval: Duration.millis(300), timeout: Duration.seconds(2) })

describe("Tuning", () => {
  it("fills in missing options from the defaults and decodes the given ones", () => {
    expect(Tuning.resolve(defaults)).toEqual({ interval: Duration.millis(300), timeout: Duration.seconds(2) })
    const resolved = Tuning.resolve(defaults, { interval: "50 millis", timeout: undefined })
    expect(Duration.toMillis(resolved.interval)).toBe(50)
    expect(resolved.timeout).toBe(defaults.timeout)
    expect(Duration.toMillis(Tuning.resolve(defaults, { timeout: 1500 }).timeout)).toBe(1500)
  })

  it("freezes the defaults", () => {
    expect(Object.isFrozen(defaults)).toBe(true)
  })
})
