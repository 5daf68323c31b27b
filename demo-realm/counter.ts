import { sum } from "./util.ts"

/** A standard (2023-11) method decorator: counts the calls of the method. */
function counted<This, Args extends Array<unknown>, Return>(
  method: (this: This, ...args: Args) => Return,
  _context: ClassMethodDecoratorContext<This, (this: This, ...args: Args) => Return>
) {
  return function(this: This, ...args: Args): Return {
    Counter.calls++
    return method.call(this, ...args)
  }
}

export class Counter {
  static calls = 0
  declare readonly label?: string
  private steps: Array<number> = []

  @counted
  increment(by: number = 1): void {
    this.steps.push(by)
  }

  get count(): number {
    return sum(this.steps)
  }
}
