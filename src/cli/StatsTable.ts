/**
 * `transpile-cache stats` as a table an operator reads at a glance: gets by outcome, the hit
 * ratio, transpiles and errors, memory, connections, realms, the versions in L2 and the last transpile errors
 * as `path:line:column`. (`--json` prints the server's JSON instead.)
 *
 * @since 0.5.0
 */
import type { StatsBody } from "../http/HttpBodies.ts"

const bytes = (n: number): string =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`

/** Lays out rows in columns, each as wide as its widest cell. */
const columns = (rows: ReadonlyArray<ReadonlyArray<string>>): Array<string> => {
  const widths: Array<number> = []
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)))
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ").trimEnd())
}

/** The stats body as a table. */
export const format = (stats: StatsBody): string => {
  const gets = stats.gets ?? { l1: stats.l1Hits, l2: stats.l2Hits, coalesced: stats.coalesced, error: stats.errors }
  const all = Object.values(gets).reduce((a, b) => a + b, 0)
  const lines: Array<string> = [`realm        ${stats.realmUrl}`, `store        ${stats.store} (coordinator: ${stats.coordinator})`, ""]
  lines.push(...columns([
    ["gets", ...Object.keys(gets)],
    ["", ...Object.values(gets).map(String)]
  ]))
  lines.push(
    `hit ratio    ${all === 0 ? "no gets yet" : `${((100 * (gets.l1 + gets.l2)) / all).toFixed(1)} % (L1 and L2 hits)`}`,
    ""
  )
  const memory: Array<[string, string]> = [
    ["transpiles", `${stats.transpiles} here, ${stats.fallbacks} of them fallbacks`],
    ["in flight", String(stats.inFlight)],
    ["persist failures", String(stats.persistFailures)],
    ["L1", `${bytes(stats.l1Bytes)}${stats.l1MaxBytes === undefined || stats.l1MaxBytes === 0 ? "" : ` of ${bytes(stats.l1MaxBytes)} (${((100 * stats.l1Bytes) / stats.l1MaxBytes).toFixed(1)} %)`}, ${stats.l1Entries} modules`],
    ["raw files", stats.rawFileBytes === undefined ? "n/a" : bytes(stats.rawFileBytes)],
    ["preloaded", `${stats.preloadedEntries} modules, ${bytes(stats.preloadedBytes)} in ${stats.preloadMillis} ms`]
  ]
  const c = stats.connections
  memory.push([
    "connections",
    c === undefined
      ? "no Postgres"
      : `${c.open} open of a budget of ${c.budget} (pool ${c.poolSize}); server ${c.serverOpen} of ${c.serverMax}${c.fleetSize === undefined ? "" : `; fleet size ${c.fleetSize}`}; refusals ${stats.refusals}`
  ])
  lines.push(...columns(memory), "")
  const realms = Object.values(stats.realms ?? {})
  if (realms.length > 0) {
    lines.push(...columns([
      ["mount", "realm", "modules", "transpiles", "L2 bytes", "errors"],
      ...realms.map((r) => [
        `${r.mount}${r.private ? " (private)" : ""}`,
        r.realmUrl,
        String(r.modules),
        String(r.transpiles ?? 0),
        r.l2Bytes === undefined ? "n/a" : bytes(r.l2Bytes),
        String(r.errors)
      ])
    ]), "")
  }
  const versions = stats.versions ?? []
  if (versions.length > 0) {
    lines.push(...columns([
      ["versions in L2", "rows", "bytes", "last read"],
      ...versions.map((v) => [`${v.fingerprint}${v.current ? " (this process)" : ""}`, String(v.rows), bytes(v.bytes), v.lastReadAt])
    ]), "")
  }
  const errors = stats.recentErrors ?? []
  lines.push(errors.length === 0 ? "last transpile errors: none" : "last transpile errors (newest first):")
  for (const error of [...errors].reverse()) {
    const where = `${error.path}:${error.line ?? "?"}:${error.column ?? "?"}`
    lines.push(`  ${where}  ${error.kind}: ${error.message.split("\n")[0]}`)
  }
  return lines.join("\n")
}
