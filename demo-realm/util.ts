export interface Named {
  readonly name: string
}

export function shout(text: string): string {
  return `${text.toUpperCase()}!`
}

export const double = (value: number): number => value * 2
