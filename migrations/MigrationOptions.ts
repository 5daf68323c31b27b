/**
 * What the migrations need to know about the database. The migrations import nothing from
 * `src/`; `src/store/Migrations.ts` runs them.
 */
export interface MigrationOptions {
  /**
   * Create `module_transpile_cache` UNLOGGED. `true` on Postgres (a crash costs only a cold
   * start); `false` on PGlite, where an UNLOGGED table would be empty after every unclean exit.
   */
  readonly unlogged: boolean
}
