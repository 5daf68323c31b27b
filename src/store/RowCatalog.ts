/**
 * What the embedded store knows of its own table without reading it: for every key, the
 * generation and liveness of each version's row, and each realm's epoch.
 *
 * PGlite's data directory has one owner (the process holding its {@link DataDirLock}), and
 * every change to the table goes through that process's one store. So the store can answer
 * a read of a row that is absent, or a tombstone, from memory: the answer a SELECT would give
 * (`Absent`, with the key's generation and the realm's epoch) without running one. A read of
 * a live row (a module, a recorded failure) still runs its SELECT: its bytes and source hash
 * live in the table only.
 *
 * The catalog is updated only after a change committed, and each update only moves a row
 * forward (a write never goes below the row's generation, a tombstone only above it; epochs
 * only grow), so updates applied out of order leave it at a state the table held, or at
 * "live" (which sends the read to the table). It never captures more than the table holds:
 * a capture it gives is at worst an earlier one, whose write OCC rejects, or which costs a
 * second transpile; never a stale byte.
 *
 * A change whose outcome is unknown (a failed statement) turns the catalog off for good: every
 * read then runs its SELECT. Prune reloads it (rows were deleted).
 *
 * A Postgres store keeps one too while its process is solo (the only fleet session: no peer
 * writes rows then; see `fleet/AdvisoryLockCoordinator.ts`): loaded when the process goes solo,
 * off when it stops being solo. A change from outside the fleet (the CLI's `invalidate`) shows as
 * a rejected write, which sends that row's reads back to the table ({@link RowCatalog.rejected}).
 *
 * @since 0.3.0
 */
import type { Captured } from "../domain/TranspileStore.ts"

interface RowState {
  generation: number
  live: boolean
}

interface KeyState {
  /** The highest generation over the key's rows. */
  generation: number
  readonly rows: Map<string, RowState>
}

/** One row of the table, as {@link RowCatalog.replace} loads it. */
export interface CatalogRow {
  readonly realmUrl: string
  readonly path: string
  readonly fingerprint: string
  readonly generation: number
  readonly live: boolean
}

/** Rows above which the catalog stays off (its memory would outgrow its use). */
export const maxRows = 500_000

const idOf = (realmUrl: string, path: string) => `${realmUrl}\u0000${path}`

/** The catalog of one store's table. */
export class RowCatalog {
  private keys = new Map<string, KeyState>()
  private realmKeys = new Map<string, Set<string>>()
  private epochs = new Map<string, number>()
  private on = false

  /** Whether reads may be answered from the catalog. */
  get enabled(): boolean {
    return this.on
  }

  /** Loads the whole table's state, turning the catalog on (off when there are too many rows). */
  replace(rows: ReadonlyArray<CatalogRow>, epochs: ReadonlyArray<readonly [string, number]>): void {
    this.keys = new Map()
    this.realmKeys = new Map()
    this.epochs = new Map(epochs)
    this.on = rows.length <= maxRows
    if (!this.on) return
    for (const row of rows) this.row(row.realmUrl, row.path, row.fingerprint, row.generation, row.live, "load")
  }

  /** Turns the catalog off: every read runs its SELECT. */
  disable(): void {
    this.on = false
    this.keys = new Map()
    this.realmKeys = new Map()
  }

  /**
   * The capture of a read of `(realmUrl, path, fingerprint)` when its row is absent or a
   * tombstone; undefined when the row is live (or the catalog is off): run the SELECT.
   */
  absent(realmUrl: string, path: string, fingerprint: string): Captured | undefined {
    if (!this.on) return undefined
    const key = this.keys.get(idOf(realmUrl, path))
    if (key?.rows.get(fingerprint)?.live === true) return undefined
    return { generation: key?.generation ?? 0, realmEpoch: this.epochs.get(realmUrl) ?? 0 }
  }

  /** A write of `generation` applied. */
  wrote(realmUrl: string, path: string, fingerprint: string, generation: number): void {
    if (this.on) this.row(realmUrl, path, fingerprint, generation, true, "write")
  }

  /**
   * A write of the row was rejected (its capture was behind the table: a change the catalog
   * did not see). The row's reads run their SELECT from now on.
   */
  rejected(realmUrl: string, path: string, fingerprint: string): void {
    if (!this.on) return
    const key = this.keys.get(idOf(realmUrl, path))
    const generation = key?.rows.get(fingerprint)?.generation ?? 0
    this.row(realmUrl, path, fingerprint, generation, true, "load")
  }

  /**
   * A tombstone made the rows of the listed versions of the key dead at `generation` (`''`: the
   * row made for a key that had none). Rows it left (they held the source it named) are unchanged.
   */
  tombstoned(realmUrl: string, path: string, generation: number, fingerprints: ReadonlyArray<string>): void {
    if (!this.on) return
    for (const fingerprint of fingerprints) this.row(realmUrl, path, fingerprint, generation, false, "tombstone")
  }

  /** A wipe set the realm's epoch to `epoch` and made its live rows dead one generation up. */
  wiped(realmUrl: string, epoch: number): void {
    if (!this.on) return
    this.epochs.set(realmUrl, Math.max(this.epochs.get(realmUrl) ?? 0, epoch))
    for (const id of this.realmKeys.get(realmUrl) ?? []) {
      const key = this.keys.get(id)
      if (key === undefined) continue
      for (const row of key.rows.values()) {
        if (!row.live) continue
        row.live = false
        row.generation += 1
        key.generation = Math.max(key.generation, row.generation)
      }
    }
  }

  private row(
    realmUrl: string,
    path: string,
    fingerprint: string,
    generation: number,
    live: boolean,
    change: "load" | "write" | "tombstone"
  ): void {
    const id = idOf(realmUrl, path)
    let key = this.keys.get(id)
    if (key === undefined) {
      key = { generation: 0, rows: new Map() }
      this.keys.set(id, key)
      let realm = this.realmKeys.get(realmUrl)
      if (realm === undefined) {
        realm = new Set()
        this.realmKeys.set(realmUrl, realm)
      }
      realm.add(id)
    }
    const current = key.rows.get(fingerprint)
    // Forward only: a write at the row's generation or above; a tombstone strictly above (a
    // write at a tombstone's generation captured it, so it came after).
    const forward = current === undefined || change === "load" ||
      (change === "write" ? generation >= current.generation : generation > current.generation)
    if (forward) key.rows.set(fingerprint, { generation, live })
    key.generation = Math.max(key.generation, generation)
  }
}
