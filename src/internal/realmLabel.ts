/**
 * The `realm` label of metrics, bounded: the first {@link maxRealmLabels} realm URLs a
 * process labels keep their own value, every later one is labelled `other`, so that a
 * process that mounts and unmounts realms all day keeps a bounded number of series.
 */

/** How many distinct realm values the metrics of one process carry at most. */
export const maxRealmLabels = 100

const labelled = new Set<string>()

/** The `realm` label value of a realm URL: itself while fewer than {@link maxRealmLabels} were seen, else `other`. */
export const realmLabel = (realmUrl: string): string => {
  if (labelled.has(realmUrl)) return realmUrl
  if (labelled.size >= maxRealmLabels) return "other"
  labelled.add(realmUrl)
  return realmUrl
}
