/**
 * Postgres over TLS with libpq's meaning, against a real Postgres of the test's own with
 * `ssl = on`, `hostssl`-only `pg_hba.conf` and certificates from a CA made here: each
 * sslmode connects (or not) as libpq's does, and every failure names its cause, through the
 * layer (a tagged `PgTlsError`) and the CLI (one line, no password).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as ModuleCacheLive from "../src/live/ModuleCacheLive.ts"
import * as PgConnectError from "../src/store/PgConnectError.ts"
import * as PgTls from "../src/store/PgTls.ts"
import { baseUrl } from "./support/database.ts"
import { makeRealm, removeRealms, runCli } from "./support/server.ts"
import { startTlsCluster, type TlsCluster } from "./support/tlsPostgres.ts"

let cluster: TlsCluster

beforeAll(async () => {
  cluster = await startTlsCluster()
  cluster.psql("CREATE DATABASE mtc")
}, 120_000)

afterAll(() => {
  cluster?.stop()
  removeRealms()
})

/** What `pg_stat_ssl` says of a connection made with the URL (and environment defaults). */
const sslOfConnection = (url: string, env: PgTls.SslParams = {}) =>
  Effect.gen(function*() {
    const tls = yield* PgTls.resolve(Redacted.make(url), env)
    const client = yield* PgClient.make({ ...PgTls.clientOptions(tls), maxConnections: 1 })
    const rows = yield* client<{ ssl: boolean; version: string | null; client_dn: string | null }>`
      SELECT ssl, version, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()`
    return rows[0]
  }).pipe(Effect.scoped, Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make), Effect.runPromise)

/** Builds the store, coordinator and invalidations of a Postgres URL, as `serve` does; returns how it failed. */
const layerFailure = (url: string, ssl?: PgTls.SslParams) =>
  Layer.build(ModuleCacheLive.services({ _tag: "postgres", url: Redacted.make(url), ...(ssl === undefined ? {} : { ssl }) })).pipe(
    Effect.scoped,
    Effect.flip,
    Effect.runPromise
  )

describe("sslmode, as libpq means it", () => {
  it("require, with no root certificate, encrypts without checking the certificate (pg_stat_ssl)", async () => {
    const row = await sslOfConnection(cluster.url({ database: "mtc", params: { sslmode: "require" } }))
    expect(row?.ssl).toBe(true)
    expect(row?.version).toMatch(/^TLSv1\.[23]$/)
  })

  it("no-verify, a spelling some hosts document, is require without any check", async () => {
    const row = await sslOfConnection(cluster.url({ host: "127.0.0.1", database: "mtc", params: { sslmode: "no-verify", sslrootcert: cluster.files.otherCa } }))
    expect(row?.ssl).toBe(true)
  })

  it("verify-full with the right sslrootcert connects over TLS", async () => {
    const row = await sslOfConnection(cluster.url({ database: "mtc", params: { sslmode: "verify-full", sslrootcert: cluster.files.ca } }))
    expect(row?.ssl).toBe(true)
  })

  it("prefer: TLS from a server that offers it (unchecked, as libpq), none from one that does not", async () => {
    const offered = await sslOfConnection(cluster.url({ host: "127.0.0.1", database: "mtc", params: { sslmode: "prefer" } }))
    expect(offered?.ssl).toBe(true)
    const plain = new URL(baseUrl)
    plain.searchParams.set("sslmode", "prefer")
    const notOffered = await sslOfConnection(plain.toString())
    expect(notOffered?.ssl).toBe(false)
  })

  it("PGSSLMODE and PGSSLROOTCERT apply under the URL, whose own parameters win", async () => {
    const fromEnv = await sslOfConnection(cluster.url({ database: "mtc" }), { sslmode: "verify-full", sslrootcert: cluster.files.ca })
    expect(fromEnv?.ssl).toBe(true)
    // The environment says disable (refused here: hostssl only); the URL's require wins.
    const urlWins = await sslOfConnection(cluster.url({ database: "mtc", params: { sslmode: "require" } }), { sslmode: "disable" })
    expect(urlWins?.ssl).toBe(true)
  })

  it("verify-ca checks the chain but not the host name: 127.0.0.1 connects with a certificate for localhost", async () => {
    const row = await sslOfConnection(cluster.url({ host: "127.0.0.1", database: "mtc", params: { sslmode: "verify-ca", sslrootcert: cluster.files.ca } }))
    expect(row?.ssl).toBe(true)
  })

  it("a client certificate through sslcert and sslkey", async () => {
    const row = await sslOfConnection(cluster.url({
      user: "certuser",
      database: "mtc",
      params: { sslmode: "verify-full", sslrootcert: cluster.files.ca, sslcert: cluster.files.clientCert, sslkey: cluster.files.clientKey }
    }))
    expect(row).toMatchObject({ ssl: true, client_dn: "/CN=certuser" })
  })

  it("the layer of a Postgres store migrates and runs over TLS: every connection it holds is encrypted", async () => {
    const url = cluster.url({ database: "mtc", params: { sslmode: "verify-full", sslrootcert: cluster.files.ca } })
    const connections = await Effect.gen(function*() {
      yield* Layer.build(ModuleCacheLive.services({ _tag: "postgres", url: Redacted.make(url), applicationTag: "tls-layer" }))
      return cluster.psql(`SELECT a.application_name || ':' || s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
        WHERE a.application_name LIKE 'module-transpile-cache:%:tls-layer' ORDER BY 1`)
    }).pipe(Effect.scoped, Effect.runPromise)
    expect(connections.split("\n")).toContain("module-transpile-cache:listen:tls-layer:true")
    expect(connections).not.toContain(":false")
  })
})

describe("settings and classification", () => {
  it("the TLS parameters are taken out of the URL handed to the client; the rest stays", async () => {
    const url = cluster.url({
      password: "pw",
      database: "mtc",
      params: { application_name: "x y", sslmode: "no-verify", sslrootcert: cluster.files.ca, connect_timeout: "3" }
    })
    const tls = await Effect.runPromise(PgTls.resolve(Redacted.make(url)))
    const handed = new URL(Redacted.value(tls.url))
    expect([...handed.searchParams.keys()].sort()).toEqual(["application_name", "connect_timeout"])
    expect(handed.searchParams.get("application_name")).toBe("x y")
    expect(handed.password).toBe("pw")
    expect(tls).toMatchObject({ mode: "no-verify", ssl: { rejectUnauthorized: false }, target: { host: "localhost", port: cluster.port } })
  })

  it("with no TLS parameter anywhere, the URL and the client's default are left as they were", async () => {
    const url = cluster.url({ database: "mtc" })
    const tls = await Effect.runPromise(PgTls.resolve(Redacted.make(url)))
    expect(Redacted.value(tls.url)).toBe(url)
    expect(PgTls.clientOptions(tls)).not.toHaveProperty("ssl")
  })

  it("the server's 28000 answers are told apart: TLS demanded, a client certificate, a password", () => {
    expect(PgConnectError.classify({
      code: "28000",
      message: 'no pg_hba.conf entry for host "10.0.0.1", user "app", database "app", no encryption'
    })).toBe("tls required")
    expect(PgConnectError.classify({ code: "28000", message: "connection requires a valid client certificate" })).toBe("client certificate")
    expect(PgConnectError.classify({ code: "28P01", message: 'password authentication failed for user "app"' })).toBe("authentication")
    expect(PgConnectError.classify({ reason: { cause: { code: "ERR_TLS_CERT_ALTNAME_INVALID" } } })).toBe("host name mismatch")
    expect(PgConnectError.classify({ cause: { code: "CERT_HAS_EXPIRED" } })).toBe("certificate expired")
  })
})

describe("the direct URL behind a pooler (DATABASE_DIRECT_URL)", () => {
  const services = (directParams: Record<string, string>) =>
    ModuleCacheLive.services({
      _tag: "postgres",
      url: Redacted.make(cluster.url({ database: "mtc", params: { sslmode: "require" } })),
      pooler: "transaction",
      directUrl: Redacted.make(cluster.url({ database: "mtc", params: directParams })),
      applicationTag: "tls-direct"
    })

  it("gets its own TLS settings: the fleet session on it and the pool both run over TLS", async () => {
    const connections = await Effect.gen(function*() {
      yield* Layer.build(services({ sslmode: "verify-full", sslrootcert: cluster.files.ca }))
      return cluster.psql(`SELECT a.application_name || ':' || s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
        WHERE a.application_name LIKE 'module-transpile-cache:%:tls-direct' ORDER BY 1`)
    }).pipe(Effect.scoped, Effect.runPromise)
    expect(connections.split("\n")).toEqual(["module-transpile-cache:listen:tls-direct:true", "module-transpile-cache:pool:tls-direct:true"])
  })

  it("a TLS failure of the direct URL's session fails the layer with its cause, though the pool connects", async () => {
    const error = await Layer.build(services({ sslmode: "verify-full", sslrootcert: cluster.files.otherCa })).pipe(
      Effect.scoped,
      Effect.flip,
      Effect.runPromise
    )
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "CertificateUntrusted", issuer: "CN=mtc test CA" })
  })
})

describe("a failed TLS connection names its cause", () => {
  it("verify-full with the wrong CA: the certificate is not trusted, with its subject and issuer", async () => {
    const error = await layerFailure(cluster.url({ database: "mtc", params: { sslmode: "verify-full", sslrootcert: cluster.files.otherCa } }))
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "CertificateUntrusted", subject: "CN=localhost", issuer: "CN=mtc test CA" })
    expect(error.message).toContain("is not trusted")
    expect(error.message).toContain(cluster.files.otherCa)
  })

  it("verify-full with no sslrootcert checks the system's CAs, which do not know the test CA", async () => {
    const error = await layerFailure(cluster.url({ database: "mtc", params: { sslmode: "verify-full" } }))
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "CertificateUntrusted", issuer: "CN=mtc test CA" })
  })

  it("verify-full to a host name the certificate does not carry: host name mismatch", async () => {
    const error = await layerFailure(cluster.url({ host: "127.0.0.1", database: "mtc", params: { sslmode: "verify-full", sslrootcert: cluster.files.ca } }))
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "HostnameMismatch", subject: "CN=localhost" })
    expect(error.message).toContain("does not name 127.0.0.1")
    expect(error.message).toContain("DNS:localhost")
  })

  it("require with sslrootcert checks the chain as libpq does (the wrong CA fails), but not the host name", async () => {
    const wrong = await layerFailure(cluster.url({ host: "127.0.0.1", database: "mtc", params: { sslmode: "require", sslrootcert: cluster.files.otherCa } }))
    expect(wrong).toMatchObject({ _tag: "PgTlsError", reason: "CertificateUntrusted" })
    const right = await sslOfConnection(cluster.url({ host: "127.0.0.1", database: "mtc", params: { sslmode: "require", sslrootcert: cluster.files.ca } }))
    expect(right?.ssl).toBe(true)
  })

  it("disable against a server that accepts only TLS (hostssl only): named as such, not as bad credentials", async () => {
    const error = await layerFailure(cluster.url({ database: "mtc", params: { sslmode: "disable" } }))
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "TlsRequired" })
    expect(error.message).toContain("accepts no unencrypted connection")
  })

  it("require against a server without TLS: the server does not support TLS", async () => {
    const url = new URL(baseUrl)
    url.searchParams.set("sslmode", "require")
    const error = await layerFailure(url.toString())
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "ServerWithoutTls" })
    expect(error.message).toContain("does not support TLS")
  })

  it("a role that must present a client certificate, connecting without one", async () => {
    const error = await layerFailure(cluster.url({ user: "certuser", database: "mtc", params: { sslmode: "require" } }))
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "ClientCertificateRequired" })
    expect(error.message).toContain("requires a client certificate")
  })

  it("an sslrootcert that cannot be read is named, before any connection", async () => {
    const missing = `${cluster.dir}/no-such-ca.crt`
    const error = await layerFailure(cluster.url({ database: "mtc", params: { sslmode: "verify-full", sslrootcert: missing } }))
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "FileUnreadable", file: missing })
    expect(error.message).toBe(`cannot read sslrootcert ${missing}: ENOENT`)
    const notPem = await layerFailure(cluster.url({ database: "mtc", params: { sslmode: "verify-full", sslrootcert: cluster.files.serverKey } }))
    expect(notPem).toMatchObject({ _tag: "PgTlsError", reason: "FileUnreadable", file: cluster.files.serverKey })
  })

  it("an unknown sslmode is named", async () => {
    const error = await layerFailure(cluster.url({ database: "mtc", params: { sslmode: "verify-everything" } }))
    expect(error).toMatchObject({ _tag: "PgTlsError", reason: "InvalidSetting" })
    expect(error.message).toContain('unknown sslmode "verify-everything"')
  })

  it("an expired server certificate (the server reloaded with it)", async () => {
    cluster.psql(`ALTER SYSTEM SET ssl_cert_file = '${cluster.files.expiredCert}'`)
    cluster.psql("SELECT pg_reload_conf()")
    try {
      // A new backend forks from a postmaster that has reloaded.
      for (let i = 0; cluster.psql("SHOW ssl_cert_file") !== cluster.files.expiredCert; i++) {
        if (i > 200) throw new Error("the server did not reload")
        await new Promise((resolve) => setTimeout(resolve, 25))
      }
      const error = await layerFailure(cluster.url({ database: "mtc", params: { sslmode: "verify-full", sslrootcert: cluster.files.ca } }))
      expect(error).toMatchObject({ _tag: "PgTlsError", reason: "CertificateExpired", subject: "CN=localhost" })
      expect(error.message).toContain("has expired")
    } finally {
      cluster.psql("ALTER SYSTEM RESET ssl_cert_file")
      cluster.psql("SELECT pg_reload_conf()")
      for (let i = 0; cluster.psql("SHOW ssl_cert_file") !== cluster.files.serverCert && i < 200; i++) {
        await new Promise((resolve) => setTimeout(resolve, 25))
      }
    }
  })
})

describe("the CLI", () => {
  it("warm names a TLS failure in one line, with no password", async () => {
    const realm = makeRealm({ "a.ts": "export const a: number = 1\n" })
    const url = cluster.url({
      password: "s3cret-password",
      database: "mtc",
      params: { sslmode: "verify-full", sslrootcert: cluster.files.otherCa }
    })
    const result = await runCli(["warm", realm, "--store", "pg", "--transpile-workers", "0"], { env: { DATABASE_URL: url } })
    expect(result.code).toBe(1)
    // The CLI's "ERROR" heading, then the message: one line.
    const lines = result.stderr.split("\n").map((line) => line.trim()).filter((line) => line !== "" && line !== "ERROR")
    expect(lines, result.stderr).toHaveLength(1)
    expect(lines[0]).toMatch(/^warm: the certificate of Postgres at localhost:\d+ is not trusted \(subject CN=localhost; issuer CN=mtc test CA\)/)
    expect(result.stderr + result.stdout).not.toContain("s3cret-password")
  }, 60_000)

  it("warm runs over TLS with PGSSLMODE and PGSSLROOTCERT from the environment", async () => {
    const realm = makeRealm({ "a.ts": "export const a: number = 1\n", "b.ts": "export const b: string = 'b'\n" })
    const result = await runCli(["warm", realm, "--store", "pg", "--transpile-workers", "0"], {
      env: { DATABASE_URL: cluster.url({ database: "mtc" }), PGSSLMODE: "verify-full", PGSSLROOTCERT: cluster.files.ca }
    })
    expect(result.code, result.stderr).toBe(0)
    expect(Number(cluster.psql("SELECT count(*) FROM module_transpile_cache WHERE body IS NOT NULL", "mtc"))).toBeGreaterThanOrEqual(2)
  }, 60_000)
})
