/**
 * The local store's steps, one at a time (local-store.ts): a fan-out, or store changes that belong
 * together (a join and its replay), runs alone; one asked for while another runs waits until it is
 * over, then runs, in call order, and what those start runs after them.
 *
 * Why: a member's handler runs synchronously when it is handed a message (an idle connection), so
 * it may send to a group or join one from inside a fan-out. Were that done at once, the members not
 * reached yet would get the new message before the one being fanned out, and a join would land in
 * the middle of it (a member that joined after a message was sent would get it, one joining with
 * `since` would get it twice).
 */
export class Turns {
  #busy = false
  readonly #waiting: Array<() => void> = []

  /** Whether a step is under way: what is asked for now would wait for it. */
  get busy (): boolean {
    return this.#busy
  }

  /** Starts a step the caller runs itself (no closure on the way of a fan-out); `end()` in a `finally`. */
  begin (): void {
    this.#busy = true
  }

  /** Queues `step` behind the step under way (call only while `busy`). */
  defer (step: () => void): void {
    this.#waiting.push(step)
  }

  /** Ends the step under way: what waited for it runs, in order; the first error is thrown after all ran. */
  end (): void {
    let failure: { err: unknown } | undefined
    try {
      for (let i = 0; i < this.#waiting.length; i++) {
        try {
          this.#waiting[i]()
        } catch (err) {
          failure ??= { err }
        }
      }
    } finally {
      this.#waiting.length = 0
      this.#busy = false
    }
    if (failure !== undefined) throw failure.err
  }

  /** Runs `step` alone: at once, or after the step under way, resolving with what it returns. */
  turn<T> (step: () => T): T | Promise<T> {
    if (this.#busy) {
      return new Promise<T>((resolve, reject) => {
        this.defer(() => {
          try {
            resolve(step())
          } catch (err) {
            reject(err)
          }
        })
      })
    }
    this.begin()
    try {
      return step()
    } finally {
      this.end()
    }
  }

  /** `turn()` for a step that returns nothing: no promise when it waits, so nothing to reject. */
  alone (step: () => void): void {
    if (this.#busy) {
      this.defer(step)
      return
    }
    this.begin()
    try {
      step()
    } finally {
      this.end()
    }
  }
}
