// The entry module: imports with extensions (./util.ts) and without (./greeting is greeting.gts,
// ./counter is counter.ts); the server resolves both.
import { shout, type Named } from "./util.ts"
import { Greeting, name } from "./greeting"
import { Counter } from "./counter"

export function render(root: HTMLElement | null): void {
  if (root === null) return
  const counter = new Counter()
  counter.increment()
  counter.increment()
  const item: Named = { name }
  root.textContent = `${Greeting.render()} | ${shout(item.name.toLowerCase())} | count=${counter.count}`
  root.dataset.ready = "true"
}
