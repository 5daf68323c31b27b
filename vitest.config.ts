import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Fleet and server tests start real processes; two cores do not take more at once.
    maxWorkers: 2,
    sequence: { concurrent: false }
  }
})
