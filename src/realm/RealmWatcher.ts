/**
 * Watches a realm directory tree with one non-recursive `fs.watch` per directory.
 *
 * Node's recursive watcher on Linux walks the tree with `readdirSync` and `statSync` on the
 * event loop and watches every file: under heavy churn (a directory swapped thousands of
 * times a second) it stalls the whole server for seconds. Here every event costs a few
 * map operations; new directories are found by an asynchronous, debounced check
 * (`lstat`, never following symlinks, then `readdir`), one at a time.
 *
 * Reports, through its callbacks, the realm-relative (`/`-separated) path of every entry
 * that changed, and `onLost` when the watch of the root itself ends (the directory was
 * removed or replaced). Ignored paths (dot entries, the data directory) are neither
 * reported nor descended into. At most {@link maxDirectories} directories are watched.
 *
 * @since 0.1.0
 */
import { type FSWatcher, watch } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/** The most directories one tree watch holds. */
const maxDirectories = 10_000

/** What a tree watch reports to. */
interface TreeWatchOptions {
  readonly root: string
  readonly isIgnored: (relativePath: string) => boolean
  readonly onChange: (relativePath: string) => void
  readonly onLost: () => void
}

/** A running tree watch. */
export interface TreeWatch {
  readonly close: () => void
  /** How many directories are watched. */
  readonly size: () => number
}

const join = (dir: string, name: string) => (dir === "" ? name : `${dir}/${name}`)

/** Starts watching; resolves once the root's existing directories are watched. */
export const watchTree = async (options: TreeWatchOptions): Promise<TreeWatch> => {
  const watchers = new Map<string, FSWatcher>()
  const pending = new Set<string>()
  let closed = false
  let checking = false

  const absolute = (relative: string) => path.join(options.root, ...relative.split("/").filter((s) => s !== ""))

  const removeDir = (relative: string) => {
    for (const [dir, watcher] of watchers) {
      if (dir === relative || (relative === "" ? true : dir.startsWith(`${relative}/`))) {
        watchers.delete(dir)
        try {
          watcher.close()
        } catch {
          // already closed
        }
      }
    }
  }

  /** Checks the entries that changed: watches new directories, drops watches of vanished ones. */
  const check = async () => {
    if (checking || closed) return
    checking = true
    try {
      while (pending.size > 0 && !closed) {
        const batch = Array.from(pending)
        pending.clear()
        for (const relative of batch) {
          if (closed) return
          let isDirectory = false
          try {
            isDirectory = (await fs.lstat(absolute(relative))).isDirectory()
          } catch {
            isDirectory = false
          }
          if (isDirectory) {
            if (!watchers.has(relative)) await addDir(relative)
          } else {
            removeDir(relative)
          }
        }
      }
    } finally {
      checking = false
    }
  }

  const addDir = async (relative: string): Promise<void> => {
    if (closed || watchers.has(relative) || watchers.size >= maxDirectories) return
    if (relative !== "" && options.isIgnored(relative)) return
    let watcher: FSWatcher
    try {
      watcher = watch(absolute(relative), { persistent: false }, (_event, filename) => {
        if (closed) return
        if (typeof filename !== "string" || filename === "") {
          if (relative === "") options.onLost()
          else {
            pending.add(relative)
            void check()
          }
          return
        }
        const child = join(relative, filename.split(path.sep).join("/"))
        if (options.isIgnored(child)) return
        options.onChange(child)
        pending.add(child)
        void check()
      })
    } catch (error) {
      if (relative === "") throw error
      return
    }
    watcher.on("error", () => {
      if (relative === "") {
        if (!closed) options.onLost()
      } else {
        removeDir(relative)
        pending.add(relative)
        void check()
      }
    })
    watchers.set(relative, watcher)
    let entries: ReadonlyArray<{ readonly name: string; isDirectory(): boolean }>
    try {
      entries = await fs.readdir(absolute(relative), { withFileTypes: true })
    } catch {
      return
    }
    for (const entry of entries) {
      // Dirent.isDirectory() is false for a symlink to a directory: symlinks are never followed.
      if (entry.isDirectory()) await addDir(join(relative, entry.name))
    }
  }

  await addDir("")
  return {
    close: () => {
      closed = true
      removeDir("")
    },
    size: () => watchers.size
  }
}
