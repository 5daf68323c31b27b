export interface Named {
  readonly name: string
}

export function shout(text: string): string {
  return `${text.toUpperCase()}!`
}

export const sum = (values: ReadonlyArray<number>): number => values.reduce((a, b) => a + b, 0)
