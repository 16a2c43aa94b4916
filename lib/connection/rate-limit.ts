/**
 * The per-connection rate limit (plugin option `rateLimit: { messages, interval }`): a token
 * bucket that holds `messages` tokens and refills at `messages` per `interval` ms, so a client may
 * send a burst of `messages` frames and then `messages` per `interval` on average. One frame, one
 * token; a frame that finds the bucket empty is over the limit.
 */
export class TokenBucket {
  readonly #capacity: number
  readonly #perMs: number
  #tokens: number
  #at: number

  constructor (messages: number, interval: number, now = performance.now()) {
    this.#capacity = messages
    this.#perMs = messages / interval
    this.#tokens = messages
    this.#at = now
  }

  /** Takes a token for one frame; false when the client is over the limit. */
  take (now = performance.now()): boolean {
    const refilled = this.#tokens + (now - this.#at) * this.#perMs
    this.#tokens = refilled > this.#capacity ? this.#capacity : refilled
    this.#at = now
    if (this.#tokens < 1) return false
    this.#tokens--
    return true
  }
}
