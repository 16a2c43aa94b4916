/**
 * Something that happens once in a connection's life (its socket came, it finished), as a promise
 * made only when something waits for it. A promise and its resolver cost about 150 bytes, and
 * most connections are never waited on: the plugin waits for `finished` only at shutdown, a test
 * when it disconnects, and `accept()`'s promise is dropped once the socket is there.
 */
const HAPPENED: Promise<void> = Promise.resolve()

export class Occurrence {
  #waiting: { promise: Promise<void>, resolve: () => void } | null = null
  #happened = false

  /** Resolves when it has happened (at once if it has). */
  get promise (): Promise<void> {
    if (this.#happened) return HAPPENED
    if (this.#waiting === null) {
      let resolve!: () => void
      const promise = new Promise<void>(resolve_ => { resolve = resolve_ })
      this.#waiting = { promise, resolve }
    }
    return this.#waiting.promise
  }

  /** It happened: whoever waits goes on. Once; later calls do nothing. */
  happen (): void {
    if (this.#happened) return
    this.#happened = true
    this.#waiting?.resolve()
    this.#waiting = null
  }
}
