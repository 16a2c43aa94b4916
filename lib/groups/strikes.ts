/**
 * A client's protocol errors, counted so that the count drains by one a second (on the monotonic
 * clock: a wall clock stepped back must not add an hour's worth): only a client that keeps
 * breaking the protocol goes past a limit.
 */
export class Strikes {
  #count = 0
  #at = 0

  /** Counts one more error; the count now. */
  add (): number {
    const now = performance.now()
    this.#count = Math.max(0, this.#count - (now - this.#at) / 1000) + 1
    this.#at = now
    return this.#count
  }
}
