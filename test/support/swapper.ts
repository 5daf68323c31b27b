/**
 * A file-system race partner for tests: a python3 process that, as fast as it can,
 * - `exchange A B`: swaps two names atomically with `renameat2(RENAME_EXCHANGE)` (through
 *   ctypes), e.g. a directory and a symlink to outside the realm;
 * - `fifo FILE`: replaces a regular file by a FIFO and back, each by an atomic rename.
 * It runs `count` rounds (or until stopped) and prints how many it made. Exchanges pause
 * 0.2 ms each, so that the kernel still lets other path lookups in the directory through.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"

const script = String.raw`
import ctypes, os, sys, time
mode, a, b, count, stop_file = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
done = 0
def stopped():
    return done % 64 == 0 and os.path.exists(stop_file)
if mode == "exchange":
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    while done < count and not stopped():
        if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")
        done += 1
        # A breath between exchanges: a tight rename loop starves every path lookup in the
        # directory (the kernel's rename seqlock), which would test the kernel, not the server.
        time.sleep(0.0002)
else:
    fifo, regular = a + ".fifo-tmp", a + ".file-tmp"
    while done < count and not stopped():
        os.mkfifo(fifo)
        os.rename(fifo, a)
        with open(regular, "w") as f:
            f.write(b)
        os.rename(regular, a)
        done += 1
    # Leave a FIFO in place at the end.
    os.mkfifo(fifo)
    os.rename(fifo, a)
print(done, flush=True)
`

/** A running swapper. */
export interface Swapper {
  /** Resolves to the number of rounds made, once the process has exited. */
  readonly done: Promise<number>
  readonly child: ChildProcess
  /** Asks it to stop (within 64 rounds). */
  readonly stop: () => void
}

/** Starts `exchange a b` (content unused) or `fifo a content`. */
export const startSwapper = (mode: "exchange" | "fifo", a: string, b: string, count: number): Swapper => {
  const stopFile = path.join(tmpdir(), `mtc-swapper-stop-${randomBytes(6).toString("hex")}`)
  const child = spawn("python3", ["-c", script, mode, a, b, String(count), stopFile], { stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  let err = ""
  child.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString("utf8")
  })
  child.stderr.on("data", (chunk: Buffer) => {
    err += chunk.toString("utf8")
  })
  const done = new Promise<number>((resolve, reject) =>
    child.once("close", (code) => {
      rmSync(stopFile, { force: true })
      if (code === 0) resolve(Number(out.trim()))
      else reject(new Error(`swapper exited ${code}: ${err}`))
    })
  )
  return { done, child, stop: () => writeFileSync(stopFile, "stop") }
}
