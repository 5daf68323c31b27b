/**
 * A Postgres cluster of a test's own, with TLS on: a certificate authority made here with
 * `openssl`, a server certificate it signs for `localhost` only (so `127.0.0.1` does not
 * match it), a client certificate for the role `certuser`, a second, unrelated CA, and an
 * already expired server certificate. The cluster runs as the `postgres` OS user on a free
 * port; `pg_hba.conf` has `hostssl` lines only (no unencrypted TCP connection is accepted),
 * and `certuser` must present its client certificate.
 *
 * Stop it in `afterAll` ({@link TlsCluster.stop}); a process exit stops it too.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { freePort } from "./server.ts"

/** The directory of the newest installed Postgres server binaries (`initdb`, `pg_ctl`). */
export const postgresBin = (): string => {
  const root = "/usr/lib/postgresql"
  const versions = existsSync(root)
    ? readdirSync(root).filter((v) => existsSync(path.join(root, v, "bin", "initdb"))).sort((a, b) => Number(b) - Number(a))
    : []
  if (versions[0] === undefined) throw new Error(`no Postgres server binaries under ${root}/*/bin (Debian package postgresql)`)
  return path.join(root, versions[0], "bin")
}

/** The files the cluster's TLS uses. */
export interface TlsFiles {
  /** The CA that signs the server and client certificates. */
  readonly ca: string
  /** Another CA, which signed nothing of this server. */
  readonly otherCa: string
  readonly serverCert: string
  readonly serverKey: string
  /** The server's certificate, with the server's key, already expired. */
  readonly expiredCert: string
  /** A client certificate (CN=certuser) signed by `ca`, and its key. */
  readonly clientCert: string
  readonly clientKey: string
}

export interface TlsCluster {
  readonly port: number
  readonly dir: string
  readonly files: TlsFiles
  /** `postgres://<user>@<host>:<port>/<database>?<params>`. */
  readonly url: (options?: {
    readonly host?: string
    readonly user?: string
    readonly password?: string
    readonly database?: string
    readonly params?: Record<string, string>
  }) => string
  /** Runs SQL as the superuser over the cluster's Unix socket; returns its output (tuples only). */
  readonly psql: (sql: string, database?: string) => string
  /** Stops the cluster at once and removes its directory. Safe to call twice. */
  readonly stop: () => void
}

const run = (command: string, args: ReadonlyArray<string>, cwd?: string): string =>
  execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...(cwd === undefined ? {} : { cwd }) })

/** Runs a command as the `postgres` OS user (the tests run as root; Postgres refuses root). */
const asPostgres = (command: string, args: ReadonlyArray<string>): string => run("runuser", ["-u", "postgres", "--", command, ...args])

const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

/** Makes the CA, the other CA, the server, expired and client certificates in `dir`. */
const makeCertificates = (dir: string): TlsFiles => {
  const file = (name: string) => path.join(dir, name)
  const ca = (name: string, cn: string) =>
    run("openssl", [
      "req", "-x509", ...ecKey, "-keyout", file(`${name}.key`), "-out", file(`${name}.crt`), "-days", "30",
      "-subj", `/CN=${cn}`, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"
    ])
  ca("ca", "mtc test CA")
  ca("other-ca", "mtc unrelated CA")
  const sign = (name: string, subject: string, extensions: string, days: string, key?: string) => {
    writeFileSync(file(`${name}.ext`), extensions)
    const keyArgs = key === undefined ? [...ecKey, "-keyout", file(`${name}.key`)] : ["-key", key]
    run("openssl", ["req", "-new", ...keyArgs, "-out", file(`${name}.csr`), "-subj", subject])
    run("openssl", [
      "x509", "-req", "-in", file(`${name}.csr`), "-CA", file("ca.crt"), "-CAkey", file("ca.key"), "-set_serial",
      String(Date.now()), "-days", days, "-out", file(`${name}.crt`), "-extfile", file(`${name}.ext`)
    ])
  }
  sign("server", "/CN=localhost", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n", "30")
  // Valid from now until now: expired a second later. Same key as the server's.
  sign("expired", "/CN=localhost", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n", "0", file("server.key"))
  sign("client", "/CN=certuser", "extendedKeyUsage=clientAuth\n", "30")
  return {
    ca: file("ca.crt"),
    otherCa: file("other-ca.crt"),
    serverCert: file("server.crt"),
    serverKey: file("server.key"),
    expiredCert: file("expired.crt"),
    clientCert: file("client.crt"),
    clientKey: file("client.key")
  }
}

const clusters = new Set<TlsCluster>()
process.once("exit", () => {
  for (const cluster of clusters) cluster.stop()
})

/** Makes and starts a TLS-only cluster on a free port. */
export const startTlsCluster = async (): Promise<TlsCluster> => {
  const bin = postgresBin()
  const dir = mkdtempSync(path.join(tmpdir(), "mtc-tls-pg-"))
  const data = path.join(dir, "data")
  let started = false
  const stop = () => {
    if (started) {
      started = false
      try {
        asPostgres(path.join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"])
      } catch {
        // Already stopped.
      }
    }
    rmSync(dir, { recursive: true, force: true })
    clusters.delete(cluster)
  }
  const port = await freePort()
  const files = makeCertificates(dir)
  const cluster: TlsCluster = {
    port,
    dir,
    files,
    url: (options = {}) => {
      const auth = `${options.user ?? "postgres"}${options.password === undefined ? "" : `:${options.password}`}`
      const query = new URLSearchParams(options.params ?? {}).toString()
      return `postgres://${auth}@${options.host ?? "localhost"}:${port}/${options.database ?? "postgres"}${query === "" ? "" : `?${query}`}`
    },
    psql: (sql, database = "postgres") =>
      run("psql", [`host=${dir} port=${port} user=postgres dbname=${database}`, "-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql]).trim(),
    stop
  }
  clusters.add(cluster)
  try {
    chownSync(dir, uid("postgres"), gid("postgres"))
    chmodSync(dir, 0o755)
    // The server's key must belong to the server's user and be private to it.
    for (const name of ["server.key"]) {
      chownSync(path.join(dir, name), uid("postgres"), gid("postgres"))
      chmodSync(path.join(dir, name), 0o600)
    }
    asPostgres(path.join(bin, "initdb"), ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"])
    const conf = [
      `port = ${port}`,
      "listen_addresses = 'localhost'",
      `unix_socket_directories = '${dir}'`,
      "ssl = on",
      `ssl_cert_file = '${files.serverCert}'`,
      `ssl_key_file = '${files.serverKey}'`,
      `ssl_ca_file = '${files.ca}'`,
      "fsync = off",
      "synchronous_commit = off",
      "max_connections = 60",
      "shared_buffers = 16MB"
    ]
    writeFileSync(path.join(data, "postgresql.conf"), `${conf.join("\n")}\n`, { flag: "a" })
    const hba = [
      "local all all trust",
      "hostssl all certuser 127.0.0.1/32 cert",
      "hostssl all certuser ::1/128 cert",
      "hostssl all all 127.0.0.1/32 trust",
      "hostssl all all ::1/128 trust"
    ]
    writeFileSync(path.join(data, "pg_hba.conf"), `${hba.join("\n")}\n`)
    asPostgres(path.join(bin, "pg_ctl"), ["-D", data, "-l", path.join(dir, "server.log"), "-w", "-t", "60", "start"])
    started = true
    cluster.psql("CREATE ROLE certuser LOGIN SUPERUSER")
    return cluster
  } catch (error) {
    stop()
    throw error
  }
}

const idOf = (flag: "-u" | "-g", name: string): number => Number(run("id", [flag, name]).trim())
const uid = (name: string) => idOf("-u", name)
const gid = (name: string) => idOf("-g", name)
