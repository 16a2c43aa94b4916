/**
 * An app's connections, kept in buckets by heartbeat slot: the heartbeat's tick reads the
 * connections it pings and no other (a slice of them every 250 ms, heartbeat.ts), instead of
 * every connection of the process four times a second.
 */
import { MAX_SLICES } from './heartbeat.js'

export interface Slotted {
  /** Which of the MAX_SLICES buckets holds it: fixed for its life. */
  readonly heartbeatSlot: number
}

export class ConnectionSet<T extends Slotted> implements Iterable<T> {
  readonly #buckets: Array<Set<T>> = Array.from({ length: MAX_SLICES }, () => new Set())

  get size (): number {
    let size = 0
    for (const bucket of this.#buckets) size += bucket.size
    return size
  }

  add (item: T): void {
    this.#buckets[item.heartbeatSlot].add(item)
  }

  delete (item: T): void {
    this.#buckets[item.heartbeatSlot].delete(item)
  }

  /** Calls `fn` for each connection in slice `slice` of `slices` (its slot modulo `slices`). */
  forEachInSlice (slice: number, slices: number, fn: (item: T) => void): void {
    for (let slot = slice; slot < MAX_SLICES; slot += slices) this.#buckets[slot].forEach(fn)
  }

  * [Symbol.iterator] (): Iterator<T> {
    for (const bucket of this.#buckets) yield * bucket
  }
}
