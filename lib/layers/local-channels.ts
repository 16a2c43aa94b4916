/**
 * The channels a layer keeps in this process: each channel's queued messages and waiting
 * `receive()` calls (its mailbox), and the listener a connection put on its own channel (its
 * sink). A message for a channel goes to its sink when the sink accepts and nothing older waits,
 * else to its longest-waiting receiver, else to its queue, under capacity and expiry. The local
 * store (local-store.ts) holds these beside the groups whose fan-outs deliver here.
 */
import { LayerClosedError } from '../errors.js'
import { Mailbox, Waiter, type ExpiryMarks } from './mailbox.js'
import { isPresenceEvent } from './message.js'
import type { Structure } from './message-structure.js'
import type { ChannelSink, Delivery, LayerMessage, Received } from './types.js'

/** The `Delivery` of a message sent to the channel itself. */
export const DIRECT: Delivery = Object.freeze({})

/**
 * Queued in a listened channel in place of the group messages skipped because it was full (a
 * group with history only; one marker for a run of skips, with the last skipped one's Delivery),
 * so that its consumer learns, in order, what it did not get and can fetch it from the history.
 * Compared by identity: no layer message can be it, and no handler is chosen by its type.
 */
export const SKIPPED: LayerMessage = Object.freeze({ type: 'channels.skipped' }) as LayerMessage

/**
 * Whether a consumer that did not get `message` can get it after all, so that a marker tells it:
 * a message with an offset is read back from the group's history, a presence announcement stands
 * for a list read afresh. Skipped for capacity or expired in a listened channel, alike.
 */
export function canBeReadBack (message: LayerMessage, info: Delivery): boolean {
  return info.offset !== undefined || isPresenceEvent(message.type)
}

/** Markers of one kind (offsets or presence) and group in a row are one, the last one's. */
function sameRun (earlier: Delivery, later: Delivery): boolean {
  return earlier.group === later.group && (earlier.offset === undefined) === (later.offset === undefined)
}

// What expires in a listened channel: the same markers as for skips.
const EXPIRY_MARKS: ExpiryMarks = { marker: SKIPPED, leavesMarker: canBeReadBack, sameRun }

export interface ChannelSettings {
  /** Undelivered messages a channel may hold. */
  capacity: number
  /** Milliseconds an undelivered message is kept. */
  expiryMs: number
  /** Where messages handed to a receiver, and messages that expired unreceived, are counted. */
  counts: { deliveries: number, expired: number, discarded: number }
}

export class LocalChannels {
  readonly #settings: ChannelSettings
  readonly #mailboxes = new Map<string, Mailbox>()
  readonly #sinks = new Map<string, ChannelSink>()

  constructor (settings: ChannelSettings) {
    this.#settings = settings
  }

  /** The channel's listener's sink, if it has one. */
  sinkOf (channel: string): ChannelSink | undefined {
    return this.#sinks.get(channel)
  }

  /**
   * Hands `message` (what `copy` makes of it, when given) to `sink`, the channel's longest-waiting
   * receiver, or its queue. False, delivering nothing, when the channel is full; `force` queues it
   * anyway: a replay is not refused for capacity, nor counted against it. The copy is made only
   * once the channel is known to accept, so skipping a full member costs nothing.
   */
  deliver (channel: string, sink: ChannelSink | undefined, message: LayerMessage, info: Delivery, copy: Structure['clone'] | null, force: boolean): boolean {
    // Most of the time no channel has a mailbox: then the name is not even hashed.
    let mailbox = this.#mailboxes.size === 0 ? undefined : this.#mailboxes.get(channel)
    // Straight to the listener, unless older messages still wait for it (order is kept), or a
    // replay meets a client that has not read what it was sent.
    if (sink !== undefined && sink.accepting && (mailbox === undefined || mailbox.size === 0) && !(force && sink.congested === true)) {
      this.#settings.counts.deliveries++
      sink.push(copy === null ? message : copy(message), info)
      return true
    }
    const now = performance.now()
    if (mailbox === undefined) {
      mailbox = this.#newMailbox(channel)
    } else {
      const waiter = mailbox.takeWaiter()
      if (waiter !== null) {
        this.#settings.counts.deliveries++
        waiter.resolve({ message: copy === null ? message : copy(message), info })
        mailbox.releaseIfIdle()
        return true
      }
      this.#dropExpired(channel, mailbox, now)
      if (mailbox.backlog >= this.#settings.capacity && !force) return false
    }
    // A replay to a consumer does not expire while it waits (for a client reading a large recovery
    // slowly): the history's size bounds it, and the connection's end drops it. One to a channel
    // nobody listens to expires as any message does.
    const forever = force && sink !== undefined
    mailbox.push(copy === null ? message : copy(message), info, forever ? Infinity : now + this.#settings.expiryMs, force)
    if (sink !== undefined) sink.behind?.()
    return true
  }

  /**
   * The marker for a skipped message of a group with history (its `info` has the offset), or for a
   * skipped presence announcement (just the group), in a channel a consumer listens to. Markers of
   * one kind and group in a row are one, the last one's.
   */
  markSkipped (channel: string, info: Delivery): void {
    const mailbox = this.#mailboxes.get(channel)
    if (mailbox === undefined || !this.#sinks.has(channel)) return
    const last = mailbox.lastInfo
    if (last !== undefined && mailbox.endsWith(SKIPPED) && sameRun(last, info)) mailbox.setLastInfo(info)
    // It does not expire: it stands for the messages read back for it, which may have expired.
    else mailbox.push(SKIPPED, info, Infinity, true)
  }

  /** The next message of a channel of this process, FIFO among receivers. */
  receive (channel: string, signal: AbortSignal | undefined): Promise<Received> {
    // A caller may have awaited since it checked, and an aborted signal never fires again.
    if (signal?.aborted === true) return Promise.reject(signal.reason)
    let mailbox = this.#mailboxes.get(channel)
    if (mailbox !== undefined) {
      this.#dropExpired(channel, mailbox, performance.now())
      let received = mailbox.shift()
      // A skip marker left by a listener that has closed: for a consumer only, never a receiver's.
      while (received !== undefined && received.message === SKIPPED) received = mailbox.shift()
      if (received !== undefined) {
        mailbox.releaseIfIdle()
        this.#settings.counts.deliveries++
        return Promise.resolve(received)
      }
    } else {
      mailbox = this.#newMailbox(channel)
    }
    const box = mailbox
    return new Promise((resolve, reject) => {
      const waiter = new Waiter(box, resolve, reject, signal)
      box.addWaiter(waiter)
      signal?.addEventListener('abort', waiter, { once: true })
    })
  }

  /** Whether a `receive()` waits on the channel. */
  hasReceivers (channel: string): boolean {
    return this.#mailboxes.get(channel)?.hasWaiters === true
  }

  /** Makes `sink` the channel's listener; false when it already has one. */
  listen (channel: string, sink: ChannelSink): boolean {
    if (this.#sinks.has(channel)) return false
    this.#sinks.set(channel, sink)
    return true
  }

  /** Ends `sink`'s listening, if it is still the channel's listener; whether it was. */
  unlisten (channel: string, sink: ChannelSink): boolean {
    if (this.#sinks.get(channel) !== sink) return false
    this.#sinks.delete(channel)
    return true
  }

  /** Hands `sink` what waited in the channel, while it accepts and is still the channel's listener. */
  resume (channel: string, sink: ChannelSink): void {
    if (this.#sinks.get(channel) !== sink) return
    const mailbox = this.#mailboxes.get(channel)
    if (mailbox === undefined) return
    this.#dropExpired(channel, mailbox, performance.now())
    while (sink.accepting && this.#sinks.get(channel) === sink) {
      // What waited goes on at the pace the client reads: the rest of a replay, and the live
      // messages held behind it (up to capacity), which would otherwise all be written at once.
      if (sink.congested === true) break
      const received = mailbox.shift()
      if (received === undefined) break
      this.#settings.counts.deliveries++
      sink.push(received.message, received.info)
    }
    mailbox.releaseIfIdle()
  }

  /** Drops the channel's queued messages (counted: `discarded`); its waiting receivers and listener stay. */
  discard (channel: string): void {
    const mailbox = this.#mailboxes.get(channel)
    if (mailbox === undefined) return
    this.#settings.counts.discarded += mailbox.size
    mailbox.clearMessages()
    mailbox.releaseIfIdle()
  }

  /** Drops every channel's queued messages; waiting receivers and listeners stay. */
  flush (): void {
    for (const mailbox of this.#mailboxes.values()) {
      mailbox.clearMessages()
      mailbox.releaseIfIdle()
    }
  }

  /** Rejects waiting receivers with LayerClosedError, tells listeners, and forgets everything. */
  close (): void {
    for (const mailbox of this.#mailboxes.values()) {
      for (let waiter = mailbox.takeWaiter(); waiter !== null; waiter = mailbox.takeWaiter()) {
        waiter.reject(new LayerClosedError())
      }
    }
    this.#mailboxes.clear()
    const sinks = [...this.#sinks.values()]
    this.#sinks.clear()
    for (const sink of sinks) sink.layerClosed(new LayerClosedError())
  }

  /** Drops expired messages, and the mailboxes left idle. */
  sweep (now: number): void {
    for (const [channel, mailbox] of this.#mailboxes) {
      this.#dropExpired(channel, mailbox, now)
      mailbox.releaseIfIdle()
    }
  }

  /** Channels holding messages, waiting receivers or a listener. */
  get size (): number {
    let channels = this.#mailboxes.size
    for (const channel of this.#sinks.keys()) if (!this.#mailboxes.has(channel)) channels++
    return channels
  }

  /**
   * Drops what expired, counted. In a channel a consumer listens to, what it can read back leaves
   * a marker, as a skip does: a message that waited too long behind a slow client is recovered.
   */
  #dropExpired (channel: string, mailbox: Mailbox, now: number): void {
    this.#settings.counts.expired += mailbox.dropExpired(now, this.#sinks.has(channel) ? EXPIRY_MARKS : undefined)
  }

  #newMailbox (channel: string): Mailbox {
    const mailbox = new Mailbox(channel, this.#mailboxes)
    this.#mailboxes.set(channel, mailbox)
    return mailbox
  }
}
