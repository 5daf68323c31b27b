/**
 * The grouped ClockMap (L1 and raw files) against the plain CLOCK map it replaced: a hit, and a
 * set that evicts (steady churn over the bound), with 1 group and with 200 groups (filling in
 * turn, and one group herding while 199 hold their share).
 * Run: npx node scratchpad/bench-clockmap.ts
 */
import { ClockMap } from "../src/internal/ClockMap.ts"
import { PlainClock } from "../test/support/plainClock.ts"
import { type BenchRow, nsPerOp } from "./bench-l1.ts"

const entries = 100_000
const bytes = 4096
const bound = entries * bytes
const groups = 200

export const benchClockMap = (): Array<BenchRow> => {
  const rows: Array<BenchRow> = []
  const row = (name: string, ns: number) => rows.push({ name, value: `${ns.toFixed(0)} ns` })
  const ids = Array.from({ length: entries }, (_, i) => `https://realm${i % groups}.test/|m${i}.ts`)

  const plain = new PlainClock<number>(bound)
  const single = new ClockMap<number>(bound)
  const grouped = new ClockMap<number>(bound)
  ids.forEach((id, i) => {
    plain.set(id, i, bytes)
    single.set(id, i, bytes)
    grouped.set(id, i, bytes, `g${i % groups}`)
  })
  let sink = 0
  const hits = (map: { get(id: string): number | undefined }) => (n: number) => {
    for (let i = 0; i < n; i++) sink += map.get(ids[(i * 7919) % entries]!) ?? 0
  }
  row("hit, plain CLOCK (100k entries)", nsPerOp(200_000, 7, hits(plain)))
  row("hit, grouped, 1 group", nsPerOp(200_000, 7, hits(single)))
  row("hit, grouped, 200 groups", nsPerOp(200_000, 7, hits(grouped)))

  // Churn: each set evicts one entry (the map is full). A tenth of the sets' victims were hit.
  let fresh = 0
  const churn = (set: (id: string) => void, touch: (id: string) => void) => (n: number) => {
    for (let i = 0; i < n; i++) {
      if (i % 10 === 0) touch(ids[(i * 7919) % entries]!)
      set(`new${fresh++}`)
    }
  }
  row("set + evict, plain CLOCK", nsPerOp(50_000, 7, churn((id) => plain.set(id, 0, bytes), (id) => plain.get(id))))
  row("set + evict, grouped, 1 group", nsPerOp(50_000, 7, churn((id) => single.set(id, 0, bytes), (id) => single.get(id))))
  let turn = 0
  row(
    "set + evict, grouped, 200 groups in turn",
    nsPerOp(50_000, 7, churn((id) => grouped.set(id, 0, bytes, `g${turn++ % groups}`), (id) => grouped.get(id)))
  )
  row(
    "set + evict, grouped, 1 of 200 groups herding",
    nsPerOp(50_000, 7, churn((id) => grouped.set(id, 0, bytes, "g0"), (id) => grouped.get(id)))
  )
  rows.push({ name: "(groups left, bytes of g1 after the herd)", value: `${groups}, ${grouped.bytesOf("g1")}` })
  if (sink === -1) console.log(sink)
  return rows
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const { name, value } of benchClockMap()) console.log(`${name.padEnd(48)} ${value}`)
}
