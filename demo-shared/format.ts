/** A title between brackets: what the shared card shows as its heading. */
export const framed = (title: string): string => `[ ${title} ]`
