/**
 * The live-reload client served at `/_cache/live-reload.js`: a module that reads the realm's
 * event stream and reloads the page when the page itself, or a module or file it loaded,
 * changed (or anything did: a wipe, missed events). A changed stylesheet that the page links is
 * swapped in place, with no reload.
 *
 * - `<script type="module" src="/_cache/live-reload.js"></script>` connects at once, to the realm
 *   of `data-realm` on that element, else to the server's default realm.
 * - `import { connect } from "/_cache/live-reload.js"` then `connect({ realm, token, onChange })`
 *   for a private realm (the token goes in an `Authorization` header, never in a URL) or to act
 *   on events yourself; add `?manual` to the script's URL so that it does not connect by itself.
 *
 * What a page loaded is read from the Resource Timing entries (whose buffer it raises to 10,000),
 * so it covers modules that a loader fetched and evaluated as well as module scripts.
 *
 * @since 0.6.0
 */

/** The client's source. */
export const source = `// module-transpile-cache live reload: see docs/http.md#live-reload
const here = new URL(import.meta.url)
const loaded = new Set()
const note = (name) => { try { loaded.add(new URL(name, location.href).pathname) } catch {} }
try { performance.setResourceTimingBufferSize(10000) } catch {}
try {
  new PerformanceObserver((list) => { for (const entry of list.getEntries()) note(entry.name) })
    .observe({ type: "resource", buffered: true })
} catch {}
for (const entry of performance.getEntriesByType("resource")) note(entry.name)

const pagePaths = () => {
  const path = location.pathname
  return path.endsWith("/") ? [path, path + "index.html"] : [path]
}

/** Whether the page shows a change of \`path\`: reloads it, or swaps a stylesheet. */
const apply = (body) => {
  if (body.everything) return reload()
  let swapped = 0
  for (const change of body.changed) {
    if (pagePaths().includes(change.path)) return reload()
    const links = [...document.querySelectorAll('link[rel="stylesheet"]')]
      .filter((link) => new URL(link.href, location.href).pathname === change.path)
    if (links.length > 0 && !change.deleted) {
      for (const link of links) {
        const next = new URL(link.href, location.href)
        next.searchParams.set("_t", String(Date.now()))
        link.href = next.pathname + next.search
      }
      swapped++
      continue
    }
    if (loaded.has(change.path)) return reload()
  }
  return swapped > 0
}

let reloading = false
const reload = () => {
  if (!reloading) {
    reloading = true
    // A burst of events (a branch switch) reloads once.
    setTimeout(() => location.reload(), 30)
  }
  return true
}

/** Reads a text/event-stream with fetch; reconnects with Last-Event-ID. */
export function connect(options = {}) {
  const url = new URL("/_cache/events", here)
  if (options.realm) url.searchParams.set("realm", options.realm)
  const onChange = options.onChange ?? apply
  let lastId
  let retry = 1000
  let stopped = false
  const controller = new AbortController()
  const run = async () => {
    while (!stopped) {
      try {
        const headers = { accept: "text/event-stream" }
        if (options.token) headers.authorization = "Bearer " + options.token
        if (lastId !== undefined) headers["last-event-id"] = lastId
        const response = await fetch(url, { headers, cache: "no-store", signal: controller.signal })
        if (response.status === 401 || response.status === 404) {
          console.warn("live reload: " + url.pathname + " answered " + response.status)
          return
        }
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
        let buffer = ""
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          buffer += value
          let end
          while ((end = buffer.indexOf("\\n\\n")) !== -1) {
            const frame = buffer.slice(0, end)
            buffer = buffer.slice(end + 2)
            let data = ""
            let id
            for (const line of frame.split("\\n")) {
              if (line.startsWith("data: ")) data += line.slice(6)
              else if (line.startsWith("id: ")) id = line.slice(4)
              else if (line.startsWith("retry: ")) retry = Number(line.slice(7)) || retry
            }
            if (id !== undefined) lastId = id
            if (data !== "") onChange(JSON.parse(data))
          }
        }
      } catch (error) {
        if (stopped) return
      }
      await new Promise((resolve) => setTimeout(resolve, retry))
    }
  }
  run()
  return { close: () => { stopped = true; controller.abort() } }
}

if (!here.searchParams.has("manual")) {
  const element = document.querySelector('script[src*="/_cache/live-reload.js"]')
  connect({ realm: element?.dataset.realm })
}
`
