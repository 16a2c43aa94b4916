import { loopStalledMs } from './loop-stalls.js'

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
  /** How long the process' loop had been held up at the last reading (loop-stalls.ts). */
  #stalled: number

  constructor (messages: number, interval: number, now = performance.now()) {
    this.#capacity = messages
    this.#perMs = messages / interval
    this.#tokens = messages
    this.#at = now
    this.#stalled = loopStalledMs()
  }

  /**
   * Takes a token for one frame; false when the client is over the limit. A stall of the process
   * since the last frame counts as a pause of this connection (see resumed()).
   */
  take (now = performance.now()): boolean {
    const stalled = loopStalledMs()
    const held = stalled - this.#stalled
    this.#stalled = stalled
    this.#refill(now, held > 0 ? this.#capacity + held * this.#perMs : this.#capacity)
    if (this.#tokens < 1) return false
    this.#tokens--
    return true
  }

  /**
   * The connection was not read for `pausedMs` (flow control held it back while its consumer was
   * behind): the frames its client sent meanwhile are read together. That time refills the bucket
   * past its brim, by what it would have refilled, so that a client within the limit is not
   * charged with a burst it did not send: up to `messages` plus `pausedMs`' worth. What is left
   * of an earlier pause's is kept (the burst read after a pause fills the queue again at once, and
   * is paused again) but never added to: the bucket holds at most `messages` plus the longest
   * pause's worth.
   */
  resumed (pausedMs: number, now = performance.now()): void {
    this.#refill(now, this.#capacity + pausedMs * this.#perMs)
  }

  /** Refills for the time since the last reading, never past `brim`; what is above it already stays until it is spent. */
  #refill (now: number, brim: number): void {
    const refilled = this.#tokens + (now - this.#at) * this.#perMs
    if (refilled <= brim) this.#tokens = refilled
    else if (this.#tokens < brim) this.#tokens = brim
    this.#at = now
  }
}
