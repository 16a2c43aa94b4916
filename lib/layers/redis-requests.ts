/**
 * Requests a layer sends to the process that owns a channel (only that process can add the
 * channel to a group or discard it), waiting for the reply that comes back to its own inbox.
 */
export class Requests {
  /** The reply of every request still open when the layer closes. */
  static readonly closed = '\0closed'

  readonly #pending = new Map<number, (error: string) => void>()
  #lastId = 0

  /** Requests waiting for their reply: for leak checks. */
  get size (): number {
    return this.#pending.size
  }

  /** A new request: its id, and its reply ('' when it succeeded, the error message otherwise). */
  open (): { id: number, reply: Promise<string> } {
    const id = ++this.#lastId
    const reply = new Promise<string>(resolve => this.#pending.set(id, resolve))
    return { id, reply }
  }

  settle (id: number, error: string): void {
    this.#pending.get(id)?.(error)
    this.#pending.delete(id)
  }

  forget (id: number): void {
    this.#pending.delete(id)
  }

  close (): void {
    for (const resolve of this.#pending.values()) resolve(Requests.closed)
    this.#pending.clear()
  }
}
