/**
 * Where a GroupsConsumer's client stands in the history of each group it joined: the position of
 * the last message it was sent or has. Each message is checked against it, so the client gets
 * every message once and in order; a gap is filled from the group's history, and what cannot be
 * recovered here closes the connection (1013) for the client to re-join from where it stands.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { ChannelLayer, Delivery, GroupJoin, LayerMessage, StreamPosition } from '../layers/types.js'
import type { Outbound } from '../connection/outbound.js'
import { kOutbound } from '../base-consumer.js'

/** What positions need of their consumer; read when used, as the consumer is set up after it is made. */
export interface PositionsOwner {
  readonly channelLayer: ChannelLayer
  readonly channelName: string
  readonly log: FastifyBaseLogger
  readonly [kOutbound]: Outbound
  close (code: number, reason: string): Promise<void>
}

/** Sends one group message to the client as a live one would be (the consumer's forward()). */
export type ForwardOne = (group: string, message: LayerMessage, info: Delivery) => Promise<void> | undefined

export class Positions {
  readonly #owner: PositionsOwner
  readonly #forwardOne: ForwardOne
  /** Per joined group with history: the position of the last message the client was sent or has. */
  readonly #positions = new Map<string, StreamPosition>()

  constructor (owner: PositionsOwner, forwardOne: ForwardOne) {
    this.#owner = owner
    this.#forwardOne = forwardOne
  }

  get (group: string): StreamPosition | undefined {
    return this.#positions.get(group)
  }

  /** The client joined `group` (`since`: the position it said it has), or joined it again. */
  joined (group: string, joined: GroupJoin, since: StreamPosition | undefined, rejoin: boolean): void {
    // What the client has now: what it said it had when that was recovered, else the group's position.
    const has = joined.recovered && since !== undefined ? since : joined.position
    // A second join of a group leaves what the client has as it was: nothing is replayed to a
    // member, and messages older than the group's position may still be queued for it.
    if (!rejoin || !this.#positions.has(group)) {
      if (has === null) this.#positions.delete(group)
      else this.#positions.set(group, { offset: has.offset, epoch: has.epoch })
    }
  }

  forget (group: string): void {
    this.#positions.delete(group)
  }

  /**
   * A message of `group` about to be sent: `undefined` when it is the next one (or the group has
   * no history), now what the client has. Else it is not to be sent as it is, and this resolves
   * with whether it may be sent after all: once the gap before it is filled, or never, as the
   * group's history went back.
   */
  next (group: string, info: Delivery): Promise<boolean> | undefined {
    const offset = info.offset
    if (offset === undefined) return undefined
    const had = this.#positions.get(group)
    if (had === undefined || info.epoch !== had.epoch) {
      this.#positions.set(group, { offset, epoch: info.epoch as string })
      return undefined
    }
    if (offset <= had.offset) return this.#wentBack(group, had, offset)
    if (offset > had.offset + 1) return this.#fillGap(group, had, offset - 1)
    had.offset = offset
    return undefined
  }

  /** The layer skipped messages of a group for this channel, up to `info`: fetched from the history. */
  async skipped (info: Delivery): Promise<void> {
    const group = info.group
    const had = group === undefined ? undefined : this.#positions.get(group)
    if (group === undefined || had === undefined || info.offset === undefined || info.epoch !== had.epoch || info.offset <= had.offset) return
    await this.#fillGap(group, had, info.offset)
  }

  /**
   * The group's offsets went back in the same epoch (Redis lost its last writes and gives their
   * offsets out again, or the channel still held messages of the membership before a re-join whose
   * marker it had no room for): the client, which has `had`, would drop this message as one it has. It is
   * closed (1013) to re-join from `had`, which the group has not reached again, so the re-join
   * reports the gap and the app reloads.
   */
  async #wentBack (group: string, had: StreamPosition, offset: number): Promise<false> {
    const owner = this.#owner
    owner.log.warn({ group, channel: owner.channelName, offset, had: had.offset }, 'the group\'s offsets went back (Redis lost its last writes, or the channel still held messages of the membership before a re-join it could not mark); closing so that the client recovers')
    await owner.close(1013, 'the group\'s history went back: reconnect to recover')
    return false
  }

  /** The client cannot be given what it missed here: closed (1013) so that its re-join recovers it or reports the gap. */
  async #closeToRecover (fields: object, why: string): Promise<false> {
    this.#owner.log.warn(fields, why)
    await this.#owner.close(1013, 'messages were skipped: reconnect to recover')
    return false
  }

  /**
   * Messages of the group were skipped for this channel (it was full while the client caught up):
   * those after `had` up to `upTo` are read back from the group's history and sent, so the client
   * still gets every message once and in order. When the history no longer holds them, the
   * connection closes (1013): the client reconnects, re-joins from its last position and is told
   * of the gap. Resolves with whether they were sent.
   */
  async #fillGap (group: string, had: StreamPosition, upTo: number): Promise<boolean> {
    const owner = this.#owner
    const missing = upTo - had.offset
    const gap = { group, channel: owner.channelName, from: had.offset + 1, to: upTo }
    let read: Awaited<ReturnType<ChannelLayer['history']>>
    try {
      read = await owner.channelLayer.history(group, { since: had, limit: missing })
    } catch (err) {
      // The layer cannot answer now (Redis too slow, or gone): the client re-joins from where it
      // stands, and its recovery reads them once the layer answers again.
      return await this.#closeToRecover({ err, ...gap }, 'messages skipped for this client could not be read back; closing so that it recovers')
    }
    const { messages, position } = read
    if (position?.epoch !== had.epoch || messages.length !== missing || messages[0].offset !== had.offset + 1) {
      return await this.#closeToRecover(gap, 'messages skipped for this client are gone from the history; closing so that it recovers')
    }
    owner.log.debug({ group, channel: owner.channelName, missing }, 'sent messages skipped for this client from the history')
    for (const kept of messages) {
      // At the pace the client reads: a read-back can be the whole history.
      await owner[kOutbound].whenUncongested()
      await this.#forwardOne(group, kept.message, { group, offset: kept.offset, epoch: had.epoch })
    }
    had.offset = upTo
    return true
  }
}
