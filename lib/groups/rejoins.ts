/**
 * Re-joins: a group the client left and joins again while what its membership before left in
 * the consumer's channel (queued behind a busy consumer) still waits there. That must not reach
 * the client as the new membership's. A marker sent to the channel at the re-join goes behind all
 * of it and before anything of the new membership; the group's messages are dropped until it
 * comes. A channel too full to take it lets the join go on without (logged at warn).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { ChannelLayer } from '../layers/types.js'

/** The marker's type: it starts with `_`, so no handler could ever be named after it. */
export const REJOIN_MARK = '_groups.rejoined'
let marks = 0

/** What re-joins need of their consumer; read when used, as the consumer is set up after it is made. */
export interface RejoinsOwner {
  readonly channelLayer: ChannelLayer
  readonly channelName: string
  readonly log: FastifyBaseLogger
}

export class Rejoins {
  readonly #owner: RejoinsOwner
  /** Group → the id of the marker its re-join sent, until that marker comes. */
  readonly #waiting = new Map<string, number>()

  constructor (owner: RejoinsOwner) {
    this.#owner = owner
  }

  /** Whether `group`'s messages are still the membership's before (dropped). */
  holds (group: string): boolean {
    return this.#waiting.size !== 0 && this.#waiting.has(group)
  }

  /** `group` is joined again after a leave: its marker goes to the channel now. */
  async mark (group: string): Promise<void> {
    const owner = this.#owner
    const id = ++marks
    try {
      await owner.channelLayer.send(owner.channelName, { type: REJOIN_MARK, group, id })
      this.#waiting.set(group, id)
    } catch (err) {
      owner.log.warn({ err, group, channel: owner.channelName }, 'could not mark a re-join: messages of the membership before may still reach the client')
    }
  }

  /** A marker came through the channel: its group's messages from here on are the new membership's. */
  readonly arrived = (message: object): undefined => {
    const { group, id } = message as { group?: unknown, id?: unknown }
    if (typeof group === 'string' && this.#waiting.get(group) === id) this.#waiting.delete(group)
    return undefined
  }

  /** The client left `group` (again): no marker is waited for. */
  forget (group: string): void {
    this.#waiting.delete(group)
  }
}
