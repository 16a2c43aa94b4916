/**
 * Fences: a join or a leave of this process' channel takes effect after the group messages this
 * process published before it. Those come back to this process on the group's route, after
 * their round trip through the backend; a join or leave applied at once would overtake them (a
 * member that leaves right after a send would not get it, one that joins right after would). So
 * the change waits for a marker published on the route after them: the backend keeps one route's
 * order, so once the marker is back, so are they. As the in-memory layer, where a send is handed
 * out before the call returns, and as Channels, where a send reaches the members it had.
 *
 * A marker that does not come back within the layer's `timeout` (the route dropped meanwhile)
 * lets the change go ahead: what it waited for is then read back or lost as after any outage.
 * The process keeps hearing a group while a marker of its is on the way (`passing()`), even once
 * the group has no local member left: a join must not wait out the timeout because the last other
 * local member left meanwhile.
 */
import { Envelope, type WireCodec } from '../codec.js'
import type { Transport } from './transport.js'

export class Fences {
  readonly #token: string
  readonly #codec: WireCodec
  readonly #transport: Transport
  readonly #waiting = new Map<number, () => void>()
  // Markers on their way, per group.
  readonly #passing = new Map<string, number>()
  #next = 0
  #closed = false

  constructor (processToken: string, codec: WireCodec, transport: Transport) {
    this.#token = processToken
    this.#codec = codec
    this.#transport = transport
  }

  /**
   * Publishes a marker on `group`'s route, by `publish` (with a backend call of its own) or alone,
   * and resolves once it is back (or the timeout passed). The marker goes once `heard` says the
   * route is heard: the first local member's subscription may still be on its way (on Redis
   * Cluster, a connection to the group's shard opening for it), and a marker published before
   * would never come back. When it is not (the subscription failed), `publish` runs without one.
   */
  async pass (group: string, what: string, heard: Promise<boolean>, publish?: (marker?: Buffer) => Promise<void>): Promise<void> {
    this.#passing.set(group, (this.#passing.get(group) ?? 0) + 1)
    try {
      if (!await heard || this.#closed) {
        await publish?.()
        return
      }
      const id = this.#next++
      const marker = this.#codec.encodeEnvelope([Envelope.fence, this.#token, id])
      const back = new Promise<void>(resolve => {
        const timer = setTimeout(() => { this.#release(id) }, this.#transport.timeout).unref()
        this.#waiting.set(id, () => {
          clearTimeout(timer)
          resolve()
        })
      })
      if (publish === undefined) await this.#transport.publish({ kind: 'group', group }, marker, what)
      else await publish(marker)
      await back
    } finally {
      const left = (this.#passing.get(group) ?? 1) - 1
      if (left === 0) this.#passing.delete(group)
      else this.#passing.set(group, left)
    }
  }

  /** Whether a marker of this process is on its way on `group`'s route: the route must stay heard. */
  passing (group: string): boolean {
    return this.#passing.has(group)
  }

  /** A marker came back on a group's route (any process' marker: only this one's are waited for). */
  arrived (token: unknown, id: unknown): void {
    if (token === this.#token && typeof id === 'number') this.#release(id)
  }

  /** The layer closes: nothing waits any longer. */
  close (): void {
    this.#closed = true
    for (const id of [...this.#waiting.keys()]) this.#release(id)
  }

  #release (id: number): void {
    const release = this.#waiting.get(id)
    this.#waiting.delete(id)
    release?.()
  }
}
