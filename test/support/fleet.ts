/**
 * Starts and drives test fleet processes (test/support/fleet-child.ts) over IPC.
 */
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"

const childPath = fileURLToPath(new URL("./fleet-child.ts", import.meta.url))

export interface GetReport {
  readonly path: string
  readonly ok: boolean
  readonly outcome?: string
  readonly hash?: string
  readonly error?: string
  readonly message?: string
  readonly ms: number
}

export interface StatsReport {
  /** Loads still running: a transpile answers before its L2 write commits. */
  readonly inFlight: number
  readonly transpiles: number
  readonly l1Hits: number
  readonly l2Hits: number
  readonly coalesced: number
  readonly fallbacks: number
  readonly persistFailures: number
  readonly l1Entries: number
}

export interface FleetProcess {
  readonly pid: number
  readonly child: ChildProcess
  readonly request: <A>(message: Record<string, unknown>) => Promise<A>
  readonly get: (path: string) => Promise<GetReport>
  readonly herd: (paths: ReadonlyArray<string>, k: number) => Promise<Array<GetReport>>
  readonly invalidate: (path?: string) => Promise<void>
  readonly stats: () => Promise<StatsReport>
  readonly stop: () => Promise<void>
}

/** Starts one fleet process and waits until its cache is up. */
export const startProcess = (env: Record<string, string>): Promise<FleetProcess> =>
  new Promise((resolve, reject) => {
    const child = fork(childPath, [], {
      env: { ...process.env, ...env },
      execPath: process.execPath,
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    let next = 0
    const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>()
    const exited = new Promise<void>((done) => child.once("exit", () => done()))
    child.on("message", (raw) => {
      const message = raw as { id?: number; ready?: boolean; result?: unknown; error?: string; pid?: number }
      if (message.ready) {
        const request = <A>(body: Record<string, unknown>) =>
          new Promise<A>((ok, fail) => {
            const id = next++
            pending.set(id, { resolve: (value) => ok(value as A), reject: fail })
            child.send({ ...body, id })
          })
        resolve({
          pid: child.pid ?? 0,
          child,
          request,
          get: (path) => request({ op: "get", path }),
          herd: (paths, k) => request({ op: "herd", paths, k }),
          invalidate: (path) => request(path === undefined ? { op: "invalidate" } : { op: "invalidate", path }),
          stats: () => request({ op: "stats" }),
          stop: async () => {
            if (child.exitCode === null && child.signalCode === null) {
              child.disconnect()
              const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
              await exited
              clearTimeout(timer)
            }
          }
        })
        return
      }
      if (message.id === undefined) return
      const waiter = pending.get(message.id)
      pending.delete(message.id)
      if (message.error !== undefined) waiter?.reject(new Error(message.error))
      else waiter?.resolve(message.result)
    })
    child.once("exit", (code, signal) => {
      for (const waiter of pending.values()) waiter.reject(new Error(`fleet process exited (${code ?? signal})`))
      pending.clear()
      reject(new Error(`fleet process exited before it was ready (${code ?? signal})`))
    })
  })

/** The p-th percentile of some numbers. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0
}
