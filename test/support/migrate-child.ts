/**
 * One "process of the fleet" for test/Migrations.fleet.test.ts: connects to the database at
 * argv[2], prints `ready`, waits for a `go` line on stdin (unless `--now` is passed), runs
 * the migrations and prints `{"applied":[[id,name],...]}`. Exits 0 on success, 1 on failure.
 *
 *   node_modules/.bin/node test/support/migrate-child.ts <url> [--now]
 */
import { createInterface } from "node:readline"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as Migrations from "../../src/store/Migrations.ts"

const url = process.argv[2]
if (url === undefined) {
  process.stderr.write("usage: migrate-child.ts <database url> [--now]\n")
  process.exit(2)
}
const now = process.argv.includes("--now")

const waitForGo = (): Promise<void> =>
  new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin })
    lines.on("line", (line) => {
      if (line.trim() === "go") {
        lines.close()
        resolve()
      }
    })
  })

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`SELECT 1`
  process.stdout.write("ready\n")
  if (!now) yield* Effect.promise(waitForGo)
  const applied = yield* Migrations.run(Migrations.optionsFor("postgres"))
  process.stdout.write(`${JSON.stringify({ applied })}\n`)
}).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 2 })))

Effect.runPromiseExit(program).then((exit) => {
  if (exit._tag === "Failure") {
    process.stderr.write(`${String(exit.cause)}\n`)
    process.exit(1)
  }
  process.exit(0)
})
