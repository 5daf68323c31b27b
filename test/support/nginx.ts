/**
 * A real nginx (Debian's `nginx-light`) as a load balancer in front of `serve` processes, run
 * as a child (`nginx -c <conf> -p <dir> -g 'daemon off;'`) with its config, logs and temp
 * files in a temp directory, listening on a free port.
 *
 * The upstream is what an operator would write for a fleet that restarts: keep-alive
 * connections to the upstreams, and `proxy_next_upstream error timeout http_502 http_503 http_504`
 * so that a request refused by a stopping or starting process (or whose kept-alive connection
 * it closed) goes to another one. `max_fails=0`: a refused process is tried again at once
 * once it is back, rather than after a `fail_timeout`.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { which } from "./prerequisites.ts"
import { RawConnection } from "./restarts.ts"
import { freePort, sleep } from "./server.ts"

/** A running nginx. */
export interface Nginx {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string
  readonly port: number
  /** Its error log so far. */
  readonly errorLog: () => string
  /** Stops it (SIGQUIT: a graceful stop) and removes its directory. */
  readonly stop: () => Promise<void>
}

/** The config of an nginx in front of `upstreams` (ports on 127.0.0.1), with `location` lines added to its one location. */
export const nginxConfig = (dir: string, port: number, upstreams: ReadonlyArray<number>, location: ReadonlyArray<string> = []): string =>
  [
    "worker_processes 1;",
    `error_log ${join(dir, "error.log")} warn;`,
    `pid ${join(dir, "nginx.pid")};`,
    "events { worker_connections 2048; }",
    "http {",
    "  access_log off;",
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((kind) => `  ${kind}_temp_path ${join(dir, kind)};`),
    "  upstream realm {",
    ...upstreams.map((upstream) => `    server 127.0.0.1:${upstream} max_fails=0;`),
    "    keepalive 32;",
    "  }",
    "  server {",
    `    listen 127.0.0.1:${port};`,
    "    location / {",
    "      proxy_pass http://realm;",
    "      proxy_http_version 1.1;",
    "      proxy_set_header Connection \"\";",
    "      proxy_next_upstream error timeout http_502 http_503 http_504;",
    "      proxy_next_upstream_tries 0;",
    "      proxy_next_upstream_timeout 10s;",
    "      proxy_connect_timeout 2s;",
    "      proxy_read_timeout 30s;",
    ...location.map((line) => `      ${line}`),
    "    }",
    "  }",
    "}",
    ""
  ].join("\n")

/** Starts nginx in front of `upstreams` and waits until its port accepts connections. */
export const startNginx = async (options: {
  readonly upstreams: ReadonlyArray<number>
  /** Directives added to the location (a bench's `gzip on;`, say). */
  readonly location?: ReadonlyArray<string>
}): Promise<Nginx> => {
  const binary = which("nginx")
  if (binary === undefined) throw new Error("nginx is not installed (Debian package `nginx-light`; npm test installs it)")
  const dir = mkdtempSync(join(tmpdir(), "mtc-nginx-"))
  // The workers run as an unprivileged user when the master is root: they write the temp paths.
  chmodSync(dir, 0o777)
  for (const kind of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]) mkdirSync(join(dir, kind), { mode: 0o777 })
  const port = await freePort()
  const conf = join(dir, "nginx.conf")
  writeFileSync(conf, nginxConfig(dir, port, options.upstreams, options.location))
  const child: ChildProcess = spawn(binary, ["-c", conf, "-p", dir, "-g", "daemon off;"], { stdio: ["ignore", "ignore", "pipe"] })
  let stderr = ""
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const errorLog = () => {
    try {
      return readFileSync(join(dir, "error.log"), "utf8")
    } catch {
      return ""
    }
  }
  const deadline = Date.now() + 10_000
  for (;;) {
    const connection = await RawConnection.open(port).catch(() => undefined)
    if (connection !== undefined) {
      connection.destroy()
      break
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`nginx did not listen on ${port}: ${stderr}${errorLog()}`)
    }
    await sleep(25)
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    errorLog,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
        child.kill("SIGQUIT")
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000)
        await exited
        clearTimeout(timer)
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
