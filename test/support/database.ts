/**
 * Postgres for tests: each test file gets a database of its own, made fresh on the real
 * server at `DATABASE_URL` (default: the local trust-auth server). A test that cannot reach
 * Postgres fails loudly; it never passes vacuously.
 */
import { randomBytes } from "node:crypto"
import { execFileSync } from "node:child_process"

/** The server the tests use. */
export const baseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

const adminUrl = (): string => {
  const url = new URL(baseUrl)
  url.pathname = "/postgres"
  return url.toString()
}

/** Runs SQL on the admin database with psql and returns its output (tuples only). */
export const psql = (sql: string, url: string = adminUrl()): string =>
  execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql], { encoding: "utf8" }).trim()

/** Creates a fresh database and returns its URL. */
export const freshDatabase = (prefix: string): string => {
  const name = `mtc_${prefix.replace(/[^a-z0-9_]/gi, "_").toLowerCase()}_${randomBytes(4).toString("hex")}`
  psql(`CREATE DATABASE ${name}`)
  const url = new URL(baseUrl)
  url.pathname = `/${name}`
  return url.toString()
}

/** Drops a database made by {@link freshDatabase}, closing its sessions first. */
export const dropDatabase = (url: string): void => {
  const name = new URL(url).pathname.slice(1)
  psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
}
