/**
 * Something that happens once in a connection's life (its socket came, it finished), as a promise
 * made only when something waits for it. A promise and its resolver cost about 150 bytes, and
 * most connections are never waited on: the plugin waits for `finished` only at shutdown, a test
 * when it disconnects, and `accept()`'s promise is waited on only until the socket is there.
 *
 * The connection holds `null` until something waits, and `Occurrence.HAPPENED` once it happened:
 * no object of its own at rest.
 */
export class Occurrence {
  static readonly HAPPENED: Occurrence = new Occurrence(true)

  readonly #promise: Promise<void>
  #resolve: (() => void) | null = null

  private constructor (happened = false) {
    this.#promise = happened ? Promise.resolve() : new Promise<void>(resolve => { this.#resolve = resolve })
  }

  /** What waits on `slot` (null: nothing yet) waits on this. */
  static of (slot: Occurrence | null): Occurrence {
    return slot ?? new Occurrence()
  }

  /** Resolves when it has happened (at once if it has). */
  get promise (): Promise<void> {
    return this.#promise
  }

  /** It happened: whoever waits goes on. Returns what the slot holds from now on. */
  static happen (slot: Occurrence | null): Occurrence {
    if (slot !== null) slot.#resolve?.()
    return Occurrence.HAPPENED
  }
}
