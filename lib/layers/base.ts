/**
 * The channel layer rules, once for every backend: `BaseChannelLayer` is the facade users call.
 * Each public method checks that the layer is open, validates names, arguments and messages
 * (recipients get their own copy; the caller's object is only read), then calls a `do*` hook that
 * a backend implements: the in-memory layer with the process-local store alone, a layer shared by
 * processes with the store for whatever lives here. Backends do not override the public methods,
 * or they would lose the rules.
 */
import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import { InvalidOptionError, LayerClosedError } from '../errors.js'
import { copyMessage } from './message.js'
import { assertChannelName, assertChannelPrefix, assertGroupName, isProcessSpecific } from './names.js'
import { LocalStore, type LayerInspection } from './local-store.js'
import { ThrottledWarning } from './throttled-warning.js'
import { GroupPolicies, type Policy } from './policies.js'
import type { HistoryPolicy } from './history.js'
import { MAX_SECONDS, checkHistoryOptions, checkJoin, checkLogger, positiveOption, type JoinRequest } from './arguments.js'
import type {
  ChannelDiscarding, ChannelLayer, ChannelListener, ChannelListening, ChannelSink, DeliveryReceiving, GroupAddOptions,
  GroupHistory, GroupJoin, GroupPolicy, HistoryOptions, LayerLogger, LayerMessage, LoggerAttaching, OpTiming, PresenceEntry,
  PresenceInfo, ReceiveOptions, Received, StreamPosition
} from './types.js'

export type { LayerInspection } from './local-store.js'

export interface BaseChannelLayerOptions {
  /** Undelivered messages a channel may hold before `send()` rejects with ChannelFullError. Default 100. */
  capacity?: number | undefined
  /** Seconds an undelivered message is kept. Default 60. */
  expiry?: number | undefined
  /** Seconds a group membership lasts unless `groupAdd()` renews it. Default 86400. */
  groupExpiry?: number | undefined
  /**
   * Where the layer logs what it drops or recovers from (pino's and Fastify's loggers fit).
   * Default: the app's logger when the plugin is registered with this layer, else nothing.
   */
  log?: LayerLogger | undefined
  /**
   * Policies by group name (exact, or a prefix ending in `*`; the longest match applies): history
   * with offsets and recovery, presence events. Every process sharing a layer is configured alike.
   */
  groups?: Record<string, GroupPolicy> | undefined
}

/** Every option name of the layers' common part: a layer refuses names that are none of its own. */
export const BASE_OPTIONS: Readonly<Record<keyof BaseChannelLayerOptions, true>> = { capacity: true, expiry: true, groupExpiry: true, log: true, groups: true }

/** Running counts of what the layer did in this process (what the plugin's metrics report). */
export interface LayerStats {
  /** Deliveries `groupSend()` skipped because the member's channel was full. */
  groupSendSkipped: number
  /** `groupSend()` calls that went out. */
  groupSends: number
  /** Messages handed to a listener (a consumer) or a `receive()` caller here. */
  deliveries: number
  /**
   * Messages that expired in a channel before anyone received them, counted where they were
   * dropped (a Redis named channel's: by the process whose send or pop found them expired).
   */
  expired: number
  /**
   * Messages a channel still held, never handed to its consumer, when it was discarded: its
   * connection ended (a consumer that fell behind, then left).
   */
  discarded: number
}

const noop = (): void => {}
const silentLogger: LayerLogger = { warn: noop, debug: noop, error: noop }

export abstract class BaseChannelLayer extends EventEmitter
  implements ChannelLayer, ChannelDiscarding, ChannelListening, LoggerAttaching, DeliveryReceiving, OpTiming {
  readonly extensions: readonly string[] = ['groups', 'flush']
  readonly stats: LayerStats = { groupSendSkipped: 0, groupSends: 0, deliveries: 0, expired: 0, discarded: 0 }
  /** Identifies this instance inside `newChannel()` names (`prefix.<processToken>!<random>`). */
  readonly processToken: string

  readonly group_add: ChannelLayer['groupAdd']
  readonly group_discard: ChannelLayer['groupDiscard']
  readonly group_send: ChannelLayer['groupSend']
  readonly new_channel: ChannelLayer['newChannel']

  protected readonly capacity: number
  /** Milliseconds, like every deadline the layer keeps. */
  protected readonly expiryMs: number
  protected readonly groupExpiryMs: number
  /** This process' channels, groups and listeners. */
  protected readonly store: LocalStore
  protected readonly policies: GroupPolicies

  #log: LayerLogger
  readonly #ownLogger: boolean
  #closed = false
  readonly #sweeper: NodeJS.Timeout
  readonly #skips = new ThrottledWarning(() => this.#log, 'groupSend skipped a full channel',
    count => `groupSend skipped full channels ${count} more times within a second (the last: this one)`, 'skipped')
  #observe: ((op: string, seconds: number) => void) | undefined

  constructor (options: BaseChannelLayerOptions = {}) {
    super()
    if (typeof options !== 'object' || options === null) {
      throw new InvalidOptionError('Channel layer options must be an object')
    }
    this.capacity = positiveOption('capacity', options.capacity, 100, true)
    const expiry = positiveOption('expiry', options.expiry, 60, false, MAX_SECONDS)
    const groupExpiry = positiveOption('groupExpiry', options.groupExpiry, 86400, false, MAX_SECONDS)
    this.expiryMs = expiry * 1000
    this.groupExpiryMs = groupExpiry * 1000
    const log = checkLogger(options.log)
    this.#log = log ?? silentLogger
    this.#ownLogger = log !== undefined
    this.policies = new GroupPolicies(options.groups)
    this.processToken = randomBytes(8).readBigUInt64BE().toString(36).padStart(12, '0').slice(-12)
    this.store = new LocalStore({
      capacity: this.capacity,
      expiryMs: this.expiryMs,
      groupExpiryMs: this.groupExpiryMs,
      skipped: (group, channel) => this.reportSkipped(group, channel),
      counts: this.stats,
      presenceLeft: (group, channel, info) => this.presenceLeft(group, channel, info)
    })

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
      else alive.sweep()
    }, every * 1000).unref()
    this.#sweeper = sweeper
  }

  get closed (): boolean {
    return this.#closed
  }

  /** Where the layer logs: the `log` option, else the logger the plugin attached, else nowhere. */
  get log (): LayerLogger {
    return this.#log
  }

  /** Reports how long each operation takes (the plugin's metrics); undefined stops it. */
  timeOperations (observe: ((op: string, seconds: number) => void) | undefined): void {
    this.#observe = observe
  }

  /** Called by the plugin with the app's logger; a `log` given to the constructor is kept. */
  attachLogger (log: LayerLogger): void {
    if (!this.#ownLogger) this.#log = checkLogger(log) ?? silentLogger
  }

  async newChannel (prefix = 'specific'): Promise<string> {
    this.assertOpen()
    const name = `${prefix}.${this.processToken}!${randomBytes(9).toString('base64url')}`
    assertChannelPrefix(prefix, name)
    await this.#timed('newChannel', () => this.doNewChannel(name))
    return name
  }

  async send (channel: string, message: LayerMessage): Promise<void> {
    this.assertOpen()
    assertChannelName(channel)
    return this.#timed('send', () => this.doSend(channel, copyMessage(message)))
  }

  async receive (channel: string, options?: ReceiveOptions): Promise<LayerMessage> {
    return (await this.receiveDelivery(channel, options)).message
  }

  /** `receive()` with how the message came (its group, offset and epoch): what workers use. */
  async receiveDelivery (channel: string, options?: ReceiveOptions): Promise<Received> {
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

  /**
   * Adds `channel` to `group`. With `since` on a group with history, what the member missed is
   * delivered first; with `presence`, the membership is listed by `presence()`.
   */
  async groupAdd (group: string, channel: string, options?: GroupAddOptions): Promise<GroupJoin> {
    this.assertOpen()
    assertGroupName(group)
    assertChannelName(channel)
    const join = checkJoin(options)
    // A named channel (a queue) is no process' member: it gets the group's messages from the join
    // on, with no recovery (a layer answers { position: null, recovered: false }) and no presence.
    if (join.presence !== undefined && !isProcessSpecific(channel)) {
      throw new InvalidOptionError(`groupAdd(): "${channel}" is a named channel, which has no presence (only a consumer's channel has)`)
    }
    return this.#timed('groupAdd', () => this.doGroupAdd(group, channel, join, this.policies.of(group)))
  }

  async groupDiscard (group: string, channel: string): Promise<void> {
    this.assertOpen()
    assertGroupName(group)
    assertChannelName(channel)
    return this.#timed('groupDiscard', () => this.doGroupDiscard(group, channel))
  }

  /** Resolves with the message's position in a group with history, else undefined. */
  async groupSend (group: string, message: LayerMessage): Promise<StreamPosition | undefined> {
    this.assertOpen()
    assertGroupName(group)
    const sent = this.#timed('groupSend', () => this.doGroupSend(group, copyMessage(message), this.policies.of(group)))
    this.stats.groupSends++
    return sent
  }

  /**
   * The group's retained messages, oldest first: after `since` (when its epoch is current) up to
   * `limit`, or else the latest `limit`. A group without history has none and a null position.
   */
  async history (group: string, options?: HistoryOptions): Promise<GroupHistory> {
    this.assertOpen()
    assertGroupName(group)
    const { since, limit } = checkHistoryOptions(options)
    const history = this.policies.of(group)?.history
    // Timed also without a policy (answered here at once): every call is counted.
    return await this.#timed('history', async () => history === undefined ? { messages: [], position: null } : await this.doHistory(group, history, since, limit))
  }

  /** The presence entries of the group's members, across every process sharing the layer. */
  async presence (group: string): Promise<PresenceEntry[]> {
    this.assertOpen()
    assertGroupName(group)
    return this.#timed('presence', () => this.doPresence(group))
  }

  /**
   * Pushes the channel's messages to `sink` as they arrive (for a channel of this process: one
   * from `newChannel()`), before any waiting `receive()`. While the sink is not accepting they wait
   * in the channel as usual, under `capacity` and `expiry`, until `resume()`. One sink per channel.
   */
  listen (channel: string, sink: ChannelSink): ChannelListener {
    this.assertOpen()
    assertChannelName(channel)
    if (!isProcessSpecific(channel)) throw new InvalidOptionError(`listen() takes a channel of this process, not the named channel "${channel}"`)
    if (typeof sink?.push !== 'function' || typeof sink.layerClosed !== 'function') {
      throw new InvalidOptionError('listen() takes a sink: an object with push(message, info) and layerClosed(err) (ChannelSink)')
    }
    const listener = this.store.listen(channel, sink)
    if (listener === undefined) throw new InvalidOptionError(`channel "${channel}" already has a listener`)
    return listener
  }

  /** Drops the channel's queued messages and every group membership it has. */
  async discardChannel (channel: string): Promise<void> {
    this.assertOpen()
    assertChannelName(channel)
    return this.#timed('discardChannel', () => this.doDiscardChannel(channel))
  }

  /** Empties every channel and group; waiting receivers keep waiting. */
  async flush (): Promise<void> {
    this.assertOpen()
    return this.#timed('flush', () => this.doFlush())
  }

  /** Rejects waiting receivers and every later call with LayerClosedError. Closing twice is harmless. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#sweeper)
    this.#skips.close()
    return this.doClose()
  }

  /** Diagnostics: sizes of the process-local state (expired entries count until swept). */
  inspect (): LayerInspection {
    return this.store.inspect()
  }

  // Hooks. `message` arguments are copies owned by the layer and may be handed to a receiver as is.

  /** Runs before `newChannel()` hands out `channel`, e.g. to make it reachable from other processes. */
  protected abstract doNewChannel (channel: string): Promise<void>
  protected abstract doSend (channel: string, message: LayerMessage): Promise<void>
  protected abstract doReceive (channel: string, signal: AbortSignal | undefined): Promise<Received>
  protected abstract doGroupAdd (group: string, channel: string, join: JoinRequest, policy: Policy | undefined): Promise<GroupJoin>
  protected abstract doGroupDiscard (group: string, channel: string): Promise<void>
  /** Resolves with the position in a group with history (`policy.history`). */
  protected abstract doGroupSend (group: string, message: LayerMessage, policy: Policy | undefined): Promise<StreamPosition | undefined>
  protected abstract doHistory (group: string, history: HistoryPolicy, since: StreamPosition | undefined, limit: number): Promise<GroupHistory>
  protected abstract doPresence (group: string): Promise<PresenceEntry[]>
  protected abstract doDiscardChannel (channel: string): Promise<void>
  protected abstract doFlush (): Promise<void>
  protected abstract doClose (): Promise<void>

  /** A membership with presence ended in the local store (left, discarded, expired). */
  protected presenceLeft (_group: string, _channel: string, _info: PresenceInfo): void {}

  /** Drops what expired; runs on a timer. */
  protected sweep (): void {
    this.store.sweep()
  }

  protected assertOpen (): void {
    if (this.#closed) throw new LayerClosedError()
  }

  /**
   * Runs `operation`, timed when the plugin's metrics asked: from before it starts, so what it does
   * synchronously (a copy, an in-process fan-out) counts too.
   */
  #timed<T> (op: string, operation: () => Promise<T>): Promise<T> {
    const observe = this.#observe
    if (observe === undefined) return operation()
    const started = performance.now()
    const running = operation()
    const done = (): void => observe(op, (performance.now() - started) / 1000)
    running.then(done, done)
    return running
  }

  /** A group member skipped because its channel was full: counted and logged, never an error. */
  protected reportSkipped (group: string, channel: string): void {
    this.stats.groupSendSkipped++
    this.#skips.warn({ group, channel })
  }
}
