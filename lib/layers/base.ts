import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import { ChannelFullError, InvalidOptionError, LayerClosedError } from '../errors.js'
import { Mailbox, Waiter } from './mailbox.js'
import { cloneMessage, copyMessage } from './message.js'
import { assertChannelName, assertChannelPrefix, assertGroupName } from './names.js'
import type {
  ChannelDiscarding, ChannelLayer, ChannelListener, ChannelListening, ChannelSink, LayerLogger, LayerMessage, ReceiveOptions
} from './types.js'

export interface BaseChannelLayerOptions {
  /** Undelivered messages a channel may hold before `send()` rejects with ChannelFullError. Default 100. */
  capacity?: number
  /** Seconds an undelivered message is kept. Default 60. */
  expiry?: number
  /** Seconds a group membership lasts unless `groupAdd()` renews it. Default 86400. */
  groupExpiry?: number
}

export interface LayerStats {
  /** Deliveries `groupSend()` skipped because the member's channel was full. */
  groupSendSkipped: number
}

/** Counts of the process-local state, for diagnostics and leak tests; not a stable format. */
export interface LayerInspection {
  /** Channels holding messages, waiting receivers or a listener. */
  channels: number
  groups: number
  memberships: number
}

const noop = (): void => {}
const silentLogger: LayerLogger = { warn: noop, debug: noop, error: noop }

function checkPositive (name: string, value: unknown, fallback: number, integer: boolean): number {
  if (value === undefined) return fallback
  const ok = typeof value === 'number' && Number.isFinite(value) && value > 0 && (!integer || Number.isInteger(value))
  if (!ok) {
    throw new InvalidOptionError(`Channel layer option "${name}" must be a positive ${integer ? 'integer' : 'number'}` +
      `, got ${typeof value === 'number' ? String(value) : typeof value}`)
  }
  return value
}

/**
 * The channel layer rules and the process-local bookkeeping, once for every backend.
 *
 * Public methods check that the layer is open, validate names and copy the message, then call a
 * `do*` hook. The hooks default to process-local delivery, which makes this class a complete
 * in-memory layer; a distributed backend overrides the hooks and calls the `*Local` primitives for
 * whatever lives in this process (waiting receivers, fan-out to local channels). Backends should
 * not override the public methods, or they lose the validation.
 */
export abstract class BaseChannelLayer extends EventEmitter implements ChannelLayer, ChannelDiscarding, ChannelListening {
  readonly extensions: readonly string[] = ['groups', 'flush']
  /** Where skipped deliveries are reported; the plugin assigns Fastify's logger. */
  log: LayerLogger = silentLogger
  readonly stats: LayerStats = { groupSendSkipped: 0 }
  /** Identifies this instance inside `newChannel()` names (`prefix.<processToken>!<random>`). */
  readonly processToken: string

  readonly group_add: ChannelLayer['groupAdd']
  readonly group_discard: ChannelLayer['groupDiscard']
  readonly group_send: ChannelLayer['groupSend']
  readonly new_channel: ChannelLayer['newChannel']

  protected readonly capacity: number
  /** Milliseconds, like every deadline kept by this class. */
  protected readonly expiryMs: number
  protected readonly groupExpiryMs: number

  #closed = false
  readonly #mailboxes = new Map<string, Mailbox>()
  // group → channel → expiry deadline, and the reverse index that makes discardChannel cheap.
  readonly #groups = new Map<string, Map<string, number>>()
  readonly #channelGroups = new Map<string, Set<string>>()
  readonly #sinks = new Map<string, ChannelSink>()
  readonly #sweeper: NodeJS.Timeout

  constructor (options: BaseChannelLayerOptions = {}) {
    super()
    if (typeof options !== 'object' || options === null) {
      throw new InvalidOptionError('Channel layer options must be an object')
    }
    this.capacity = checkPositive('capacity', options.capacity, 100, true)
    const expiry = checkPositive('expiry', options.expiry, 60, false)
    const groupExpiry = checkPositive('groupExpiry', options.groupExpiry, 86400, false)
    this.expiryMs = expiry * 1000
    this.groupExpiryMs = groupExpiry * 1000
    this.processToken = randomBytes(8).readBigUInt64BE().toString(36).padStart(12, '0').slice(-12)

    this.group_add = this.groupAdd.bind(this)
    this.group_discard = this.groupDiscard.bind(this)
    this.group_send = this.groupSend.bind(this)
    this.new_channel = this.newChannel.bind(this)

    // Lazy expiry keeps busy channels tidy; the sweep is for channels and groups nobody touches again.
    // It holds the layer weakly, so a layer dropped without close() can still be collected.
    const every = Math.min(Math.max(Math.min(expiry, groupExpiry), 0.1), 60)
    const layer = new WeakRef(this)
    const sweeper: NodeJS.Timeout = setInterval(() => {
      const alive = layer.deref()
      if (alive === undefined) clearInterval(sweeper)
      else alive.sweepLocal()
    }, every * 1000).unref()
    this.#sweeper = sweeper
  }

  get closed (): boolean {
    return this.#closed
  }

  async newChannel (prefix = 'specific'): Promise<string> {
    this.assertOpen()
    const name = `${prefix}.${this.processToken}!${randomBytes(9).toString('base64url')}`
    assertChannelPrefix(prefix, name)
    await this.doNewChannel(name)
    return name
  }

  async send (channel: string, message: LayerMessage): Promise<void> {
    this.assertOpen()
    assertChannelName(channel)
    return this.doSend(channel, copyMessage(message))
  }

  async receive (channel: string, options?: ReceiveOptions): Promise<LayerMessage> {
    this.assertOpen()
    assertChannelName(channel)
    const signal = options?.signal
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new InvalidOptionError('receive() option "signal" must be an AbortSignal')
    }
    // Checked before touching the queue: an aborted receive never consumes a message.
    if (signal?.aborted === true) throw signal.reason
    return this.doReceive(channel, signal)
  }

  async groupAdd (group: string, channel: string): Promise<void> {
    this.assertOpen()
    assertGroupName(group)
    assertChannelName(channel)
    return this.doGroupAdd(group, channel)
  }

  async groupDiscard (group: string, channel: string): Promise<void> {
    this.assertOpen()
    assertGroupName(group)
    assertChannelName(channel)
    return this.doGroupDiscard(group, channel)
  }

  async groupSend (group: string, message: LayerMessage): Promise<void> {
    this.assertOpen()
    assertGroupName(group)
    return this.doGroupSend(group, copyMessage(message))
  }

  /**
   * Pushes the channel's messages to `sink` as they arrive (for a channel of this process: one
   * from `newChannel()`), before any waiting `receive()`. While the sink is not accepting they wait
   * in the channel as usual, under `capacity` and `expiry`, until `resume()`. One sink per channel.
   */
  listen (channel: string, sink: ChannelSink): ChannelListener {
    this.assertOpen()
    assertChannelName(channel)
    if (!channel.includes('!')) throw new InvalidOptionError(`listen() takes a channel of this process, not the named channel "${channel}"`)
    if (this.#sinks.has(channel)) throw new InvalidOptionError(`channel "${channel}" already has a listener`)
    this.#sinks.set(channel, sink)
    const listener: ChannelListener = {
      resume: () => { if (this.#sinks.get(channel) === sink) this.#resume(channel, sink) },
      close: () => { if (this.#sinks.get(channel) === sink) this.#sinks.delete(channel) }
    }
    listener.resume()
    return listener
  }

  /** Drops the channel's queued messages and every group membership it has. */
  async discardChannel (channel: string): Promise<void> {
    this.assertOpen()
    assertChannelName(channel)
    return this.doDiscardChannel(channel)
  }

  /** Empties every channel and group; waiting receivers keep waiting. */
  async flush (): Promise<void> {
    this.assertOpen()
    return this.doFlush()
  }

  /** Rejects waiting receivers and every later call with LayerClosedError. Closing twice is harmless. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#sweeper)
    return this.doClose()
  }

  /** Diagnostics: sizes of the process-local state (expired entries count until swept). */
  inspect (): LayerInspection {
    let memberships = 0
    for (const members of this.#groups.values()) memberships += members.size
    let channels = this.#mailboxes.size
    for (const channel of this.#sinks.keys()) if (!this.#mailboxes.has(channel)) channels++
    return { channels, groups: this.#groups.size, memberships }
  }

  // Hooks. `message` arguments are copies owned by the layer and may be handed to a receiver as is.

  /** Runs before `newChannel()` hands out `channel`, e.g. to make it reachable from other processes. */
  protected async doNewChannel (_channel: string): Promise<void> {}

  protected async doSend (channel: string, message: LayerMessage): Promise<void> {
    if (!this.deliverLocal(channel, message)) throw new ChannelFullError(channel)
  }

  protected doReceive (channel: string, signal: AbortSignal | undefined): Promise<LayerMessage> {
    return this.receiveLocal(channel, signal)
  }

  protected async doGroupAdd (group: string, channel: string): Promise<void> {
    this.addMembershipLocal(group, channel)
  }

  protected async doGroupDiscard (group: string, channel: string): Promise<void> {
    this.removeMembershipLocal(group, channel)
  }

  protected async doGroupSend (group: string, message: LayerMessage): Promise<void> {
    this.groupSendLocal(group, message)
  }

  protected async doDiscardChannel (channel: string): Promise<void> {
    this.discardChannelLocal(channel)
  }

  protected async doFlush (): Promise<void> {
    this.flushLocal()
  }

  protected async doClose (): Promise<void> {
    this.closeLocal()
  }

  // Process-local primitives: synchronous, no validation, for hooks of this class and subclasses.

  protected assertOpen (): void {
    if (this.#closed) throw new LayerClosedError()
  }

  /**
   * Hands `message` (owned by the layer, not copied again) to the channel's longest-waiting local
   * receiver, or queues it. Returns false, delivering nothing, when the channel is full.
   */
  protected deliverLocal (channel: string, message: LayerMessage): boolean {
    return this.#deliver(channel, message, false)
  }

  /**
   * Gives each channel its own copy of `message`, skipping (counted and logged) the full ones.
   * For a backend that learns a group's local members from elsewhere; `group` is for the log line.
   */
  protected deliverManyLocal (channels: Iterable<string>, message: LayerMessage, group: string): void {
    for (const channel of channels) this.#offer(channel, message, group, true)
  }

  /**
   * Fans `message` out to the group's live local members; expired memberships are dropped on the way.
   * Takes ownership of `message` (the last member receives it uncopied): serialize it before calling.
   */
  protected groupSendLocal (group: string, message: LayerMessage): void {
    const members = this.#groups.get(group)
    if (members === undefined) return
    const now = performance.now()
    const count = members.size
    let seen = 0
    for (const [channel, expiresAt] of members) {
      seen++
      if (expiresAt <= now) {
        this.#unlink(group, members, channel)
        continue
      }
      // The last member may take the layer's own copy: one clone fewer per groupSend.
      this.#offer(channel, message, group, seen !== count)
    }
  }

  /** Waits for the next message on a channel of this process, FIFO among receivers. */
  protected receiveLocal (channel: string, signal: AbortSignal | undefined): Promise<LayerMessage> {
    // Again here: a subclass may have awaited since receive() checked, and an aborted signal never fires.
    if (signal?.aborted === true) return Promise.reject(signal.reason)
    let mailbox = this.#mailboxes.get(channel)
    if (mailbox !== undefined) {
      mailbox.dropExpired(performance.now())
      const message = mailbox.shift()
      if (message !== undefined) {
        mailbox.releaseIfIdle()
        return Promise.resolve(message)
      }
    } else {
      mailbox = new Mailbox(channel, this.#mailboxes)
      this.#mailboxes.set(channel, mailbox)
    }
    const box = mailbox
    return new Promise((resolve, reject) => {
      const waiter = new Waiter(box, resolve, reject, signal)
      box.addWaiter(waiter)
      signal?.addEventListener('abort', waiter, { once: true })
    })
  }

  /**
   * The group's local members with their expiry deadlines (`performance.now()` ms; expired ones stay
   * until swept), or undefined when it has none. Read-only view: change it through the primitives.
   */
  protected membersLocal (group: string): ReadonlyMap<string, number> | undefined {
    return this.#groups.get(group)
  }

  /** The groups a local channel is a member of (a read-only view), or undefined when none. */
  protected groupsOfLocal (channel: string): ReadonlySet<string> | undefined {
    return this.#channelGroups.get(channel)
  }

  /** Whether a `receive()` in this process is waiting on the channel. */
  protected hasLocalReceivers (channel: string): boolean {
    return this.#mailboxes.get(channel)?.hasWaiters === true
  }

  protected addMembershipLocal (group: string, channel: string): void {
    let members = this.#groups.get(group)
    if (members === undefined) {
      members = new Map()
      this.#groups.set(group, members)
    }
    members.set(channel, performance.now() + this.groupExpiryMs)
    let groups = this.#channelGroups.get(channel)
    if (groups === undefined) {
      groups = new Set()
      this.#channelGroups.set(channel, groups)
    }
    groups.add(group)
  }

  protected removeMembershipLocal (group: string, channel: string): void {
    const members = this.#groups.get(group)
    if (members !== undefined) this.#unlink(group, members, channel)
  }

  /** Costs O(memberships of this channel), thanks to the reverse index. */
  protected discardChannelLocal (channel: string): void {
    const mailbox = this.#mailboxes.get(channel)
    if (mailbox !== undefined) {
      mailbox.clearMessages()
      mailbox.releaseIfIdle()
    }
    const groups = this.#channelGroups.get(channel)
    if (groups === undefined) return
    this.#channelGroups.delete(channel)
    for (const group of groups) {
      const members = this.#groups.get(group)
      if (members === undefined) continue
      members.delete(channel)
      if (members.size === 0) this.#groups.delete(group)
    }
  }

  protected flushLocal (): void {
    for (const mailbox of this.#mailboxes.values()) {
      mailbox.clearMessages()
      mailbox.releaseIfIdle()
    }
    this.#groups.clear()
    this.#channelGroups.clear()
  }

  protected closeLocal (): void {
    for (const mailbox of this.#mailboxes.values()) {
      for (let waiter = mailbox.takeWaiter(); waiter !== null; waiter = mailbox.takeWaiter()) {
        waiter.reject(new LayerClosedError())
      }
    }
    this.#mailboxes.clear()
    this.#groups.clear()
    this.#channelGroups.clear()
    const sinks = [...this.#sinks.values()]
    this.#sinks.clear()
    for (const sink of sinks) sink.layerClosed(new LayerClosedError())
  }

  /** Drops expired messages, memberships and whatever is left empty. Runs on a timer; callable directly. */
  protected sweepLocal (): void {
    // Deleting from a Map while iterating it is well defined, so the loops need no snapshot.
    const now = performance.now()
    for (const mailbox of this.#mailboxes.values()) {
      mailbox.dropExpired(now)
      mailbox.releaseIfIdle()
    }
    for (const [group, members] of this.#groups) {
      for (const [channel, expiresAt] of members) {
        if (expiresAt <= now) this.#unlink(group, members, channel)
      }
    }
  }

  // `copy` clones only once the channel is known to accept, so skipping a full member costs nothing.
  #deliver (channel: string, message: LayerMessage, copy: boolean): boolean {
    let mailbox = this.#mailboxes.get(channel)
    const sink = this.#sinks.get(channel)
    // Straight to the listener, unless older messages still wait for it (order is kept).
    if (sink !== undefined && sink.accepting && (mailbox === undefined || mailbox.size === 0)) {
      sink.push(copy ? cloneMessage(message) : message)
      return true
    }
    const now = performance.now()
    if (mailbox === undefined) {
      mailbox = new Mailbox(channel, this.#mailboxes)
      this.#mailboxes.set(channel, mailbox)
    } else {
      const waiter = mailbox.takeWaiter()
      if (waiter !== null) {
        waiter.resolve(copy ? cloneMessage(message) : message)
        mailbox.releaseIfIdle()
        return true
      }
      mailbox.dropExpired(now)
      if (mailbox.size >= this.capacity) return false
    }
    mailbox.push(copy ? cloneMessage(message) : message, now + this.expiryMs)
    return true
  }

  #resume (channel: string, sink: ChannelSink): void {
    const mailbox = this.#mailboxes.get(channel)
    if (mailbox === undefined) return
    mailbox.dropExpired(performance.now())
    while (sink.accepting && this.#sinks.get(channel) === sink) {
      const message = mailbox.shift()
      if (message === undefined) break
      sink.push(message)
    }
    mailbox.releaseIfIdle()
  }

  #offer (channel: string, message: LayerMessage, group: string, copy: boolean): void {
    if (this.#deliver(channel, message, copy)) return
    this.stats.groupSendSkipped++
    this.log.warn({ group, channel }, 'groupSend skipped a full channel')
  }

  #unlink (group: string, members: Map<string, number>, channel: string): void {
    if (!members.delete(channel)) return
    if (members.size === 0) this.#groups.delete(group)
    const groups = this.#channelGroups.get(channel)
    if (groups === undefined) return
    groups.delete(group)
    if (groups.size === 0) this.#channelGroups.delete(channel)
  }
}
