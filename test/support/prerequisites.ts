/**
 * Installs what the test suite needs from the machine and does not find, before `npm test`
 * runs vitest (package.json's `test` script runs this first):
 *
 * - the Debian packages of the tools in {@link requirements} (Chromium for the browser test,
 *   psql for the test databases, PgBouncer for the pooler test, Prometheus for the metrics test,
 *   nginx for the rolling restart), through `apt-get update` then `apt-get install`, when
 *   running as root on a machine with apt-get;
 * - a stopped local Postgres cluster is started (`pg_ctlcluster`), when root.
 *
 * Anywhere else a missing tool is a clear error that names the package to install. To add a
 * tool (e.g. `wrk`, `pgbouncer`), add a line to {@link requirements}.
 *
 * Run: `node test/support/prerequisites.ts` (Node 22 from the devDependencies, as npm
 * scripts do). `--check` only reports what is missing (exit 1 if anything is).
 */
import { execFileSync, spawnSync } from "node:child_process"
import { accessSync, constants, existsSync, readdirSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/** A tool the tests run, and the Debian package that brings it. */
export interface Requirement {
  /** The command looked up on PATH (and in the sbin directories). */
  readonly command: string
  readonly debianPackage: string
  /** Who needs it, for the messages. */
  readonly neededBy: string
  /** An environment variable naming the executable instead (it wins when set). */
  readonly pathVariable?: string
}

export const requirements: ReadonlyArray<Requirement> = [
  { command: "chromium", debianPackage: "chromium", neededBy: "test/Browser.test.ts, test/ImmutableReload.test.ts", pathVariable: "CHROMIUM_PATH" },
  { command: "psql", debianPackage: "postgresql-client", neededBy: "test/support/database.ts" },
  { command: "pgbouncer", debianPackage: "pgbouncer", neededBy: "test/support/pgbouncer.ts (test/Pooler.test.ts)" },
  { command: "pg_isready", debianPackage: "postgresql-client", neededBy: "this script's Postgres check" },
  { command: "openssl", debianPackage: "openssl", neededBy: "test/support/tlsPostgres.ts (test/PgTls.test.ts, test/TlsFleet.test.ts)" },
  { command: "runuser", debianPackage: "util-linux", neededBy: "test/support/tlsPostgres.ts (runs its own Postgres cluster as the postgres user)" },
  { command: "promtool", debianPackage: "prometheus", neededBy: "test/Metrics.test.ts (promtool check metrics)" },
  { command: "prometheus", debianPackage: "prometheus", neededBy: "test/Metrics.test.ts (a real scrape)" },
  { command: "nginx", debianPackage: "nginx-light", neededBy: "test/support/nginx.ts (test/RollingRestart.test.ts)" }
]

const searchPath = (): Array<string> => [
  ...(process.env.PATH ?? "").split(path.delimiter).filter((dir) => dir !== ""),
  "/usr/local/sbin",
  "/usr/sbin",
  "/sbin"
]

const isExecutable = (file: string): boolean => {
  try {
    accessSync(file, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** The executable of a command on PATH, if any. */
export const which = (command: string): string | undefined =>
  searchPath().map((dir) => path.join(dir, command)).find(isExecutable)

/** Whether a requirement is met on this machine. */
export const isMet = (requirement: Requirement): boolean => {
  const named = requirement.pathVariable === undefined ? undefined : process.env[requirement.pathVariable]
  if (named !== undefined && named !== "") return isExecutable(named)
  return which(requirement.command) !== undefined
}

const isRoot = (): boolean => process.getuid?.() === 0

const log = (line: string) => process.stderr.write(`prerequisites: ${line}\n`)

const run = (command: string, args: ReadonlyArray<string>): void => {
  log(`${command} ${args.join(" ")}`)
  const result = spawnSync(command, args, {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
  })
  if (result.error !== undefined) throw result.error
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} exited with ${result.status ?? result.signal}`)
}

/** Installs Debian packages with apt-get (root only); waits for another apt run's lock. */
export const aptInstall = (packages: ReadonlyArray<string>): void => {
  const lock = ["-o", "DPkg::Lock::Timeout=300"]
  run("apt-get", [...lock, "update", "-qq"])
  run("apt-get", [...lock, "install", "-y", "-qq", ...packages])
}

const ensureTools = (checkOnly: boolean): boolean => {
  const missing = requirements.filter((r) => !isMet(r))
  if (missing.length === 0) return true
  const packages = [...new Set(missing.map((r) => r.debianPackage))]
  const what = missing.map((r) => `${r.command} (Debian package ${r.debianPackage}, for ${r.neededBy})`).join(", ")
  if (checkOnly) {
    log(`missing: ${what}`)
    return false
  }
  if (!isRoot() || which("apt-get") === undefined) {
    log(`missing: ${what}.`)
    log(`install them (as root: apt-get update && apt-get install -y ${packages.join(" ")}), or point the`)
    log(`variables at them (${requirements.flatMap((r) => r.pathVariable ?? []).join(", ")}), then run the tests again.`)
    return false
  }
  log(`installing ${packages.join(" ")} for ${what}`)
  aptInstall(packages)
  const still = missing.filter((r) => !isMet(r))
  if (still.length > 0) {
    log(`still missing after apt-get install: ${still.map((r) => r.command).join(", ")}`)
    return false
  }
  return true
}

/** Postgres at DATABASE_URL (default the local server) answers; a stopped local cluster is started when root. */
const ensurePostgres = (checkOnly: boolean): boolean => {
  const url = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
  const ready = () => spawnSync("pg_isready", ["-d", url, "-q"]).status === 0
  if (ready()) return true
  const clusters = existsSync("/etc/postgresql") ? readdirSync("/etc/postgresql") : []
  const local = ["127.0.0.1", "localhost"].includes(new URL(url).hostname)
  if (checkOnly || !isRoot() || !local || clusters.length === 0 || which("pg_ctlcluster") === undefined) {
    log(`Postgres at ${new URL(url).host} does not answer (pg_isready); start it, or set DATABASE_URL`)
    return false
  }
  for (const version of clusters) {
    log(`starting the Postgres ${version} cluster "main"`)
    try {
      execFileSync("pg_ctlcluster", ["--skip-systemctl-redirect", version, "main", "start"], { stdio: "inherit" })
    } catch (error) {
      log(`pg_ctlcluster ${version} main start failed: ${String(error)}`)
    }
  }
  for (let i = 0; i < 30; i++) {
    if (ready()) return true
    spawnSync("sleep", ["1"])
  }
  log(`Postgres at ${new URL(url).host} still does not answer`)
  return false
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const checkOnly = process.argv.includes("--check")
  const tools = ensureTools(checkOnly)
  const postgres = tools && ensurePostgres(checkOnly)
  if (!tools || !postgres) process.exitCode = 1
}
