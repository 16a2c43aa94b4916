/**
 * The channel layer rules, once for every backend: `BaseChannelLayer` is the facade users call.
 * Each public method checks that the layer is open, validates names and copies the message
 * (recipients get their own copy; the caller's object is only read), then calls a `do*` hook.
 * The hooks default to the process-local store, which makes this class a complete in-memory
 * layer; a backend that spans processes overrides the hooks and uses the store for whatever lives
 * in this process. Backends do not override the public methods, or they would lose the rules.
 */
import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import { ChannelFullError, InvalidOptionError, LayerClosedError } from '../errors.js'
import { copyMessage } from './message.js'
import { assertChannelName, assertChannelPrefix, assertGroupName, isProcessSpecific } from './names.js'
import { LocalStore, type LayerInspection } from './local-store.js'
import type {
  ChannelDiscarding, ChannelLayer, ChannelListener, ChannelListening, ChannelSink, LayerLogger, LayerMessage,
  LoggerAttaching, ReceiveOptions
} from './types.js'

export type { LayerInspection } from './local-store.js'

export interface BaseChannelLayerOptions {
  /** Undelivered messages a channel may hold before `send()` rejects with ChannelFullError. Default 100. */
  capacity?: number
  /** Seconds an undelivered message is kept. Default 60. */
  expiry?: number
  /** Seconds a group membership lasts unless `groupAdd()` renews it. Default 86400. */
  groupExpiry?: number
  /**
   * Where the layer logs what it drops or recovers from (pino's and Fastify's loggers fit).
   * Default: the app's logger when the plugin is registered with this layer, else nothing.
   */
  log?: LayerLogger
}

export interface LayerStats {
  /** Deliveries `groupSend()` skipped because the member's channel was full. */
  groupSendSkipped: number
}

const noop = (): void => {}
const silentLogger: LayerLogger = { warn: noop, debug: noop, error: noop }

/** A layer option that must be a positive number (or integer); `fallback` when unset. */
export function positiveOption (name: string, value: unknown, fallback: number, integer: boolean): number {
  if (value === undefined) return fallback
  const ok = typeof value === 'number' && Number.isFinite(value) && value > 0 && (!integer || Number.isInteger(value))
  if (!ok) {
    throw new InvalidOptionError(`Channel layer option "${name}" must be a positive ${integer ? 'integer' : 'number'}` +
      `, got ${typeof value === 'number' ? String(value) : typeof value}`)
  }
  return value
}

function checkLogger (log: unknown): LayerLogger | undefined {
  if (log === undefined) return undefined
  const methods = log as Partial<Record<keyof LayerLogger, unknown>> | null
  if (typeof methods !== 'object' || methods === null ||
    typeof methods.warn !== 'function' || typeof methods.debug !== 'function' || typeof methods.error !== 'function') {
    throw new InvalidOptionError('Channel layer option "log" must be a logger with warn, debug and error methods')
  }
  return log as LayerLogger
}

export abstract class BaseChannelLayer extends EventEmitter
  implements ChannelLayer, ChannelDiscarding, ChannelListening, LoggerAttaching {
  readonly extensions: readonly string[] = ['groups', 'flush']
  readonly stats: LayerStats = { groupSendSkipped: 0 }
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

  #log: LayerLogger
  readonly #ownLogger: boolean
  #closed = false
  readonly #sweeper: NodeJS.Timeout

  constructor (options: BaseChannelLayerOptions = {}) {
    super()
    if (typeof options !== 'object' || options === null) {
      throw new InvalidOptionError('Channel layer options must be an object')
    }
    this.capacity = positiveOption('capacity', options.capacity, 100, true)
    const expiry = positiveOption('expiry', options.expiry, 60, false)
    const groupExpiry = positiveOption('groupExpiry', options.groupExpiry, 86400, false)
    this.expiryMs = expiry * 1000
    this.groupExpiryMs = groupExpiry * 1000
    const log = checkLogger(options.log)
    this.#log = log ?? silentLogger
    this.#ownLogger = log !== undefined
    this.processToken = randomBytes(8).readBigUInt64BE().toString(36).padStart(12, '0').slice(-12)
    this.store = new LocalStore({
      capacity: this.capacity,
      expiryMs: this.expiryMs,
      groupExpiryMs: this.groupExpiryMs,
      skipped: (group, channel) => this.reportSkipped(group, channel)
    })

    this.group_add = this.groupAdd.bind(this)
    this.group_discard = this.groupDiscard.bind(this)
    this.group_send = this.groupSend.bind(this)
    this.new_channel = this.newChannel.bind(this)

    // Lazy expiry keeps busy channels tidy; the sweep is for channels and groups nobody touches again.
    // It holds the store weakly, so a layer dropped without close() can still be collected.
    const every = Math.min(Math.max(Math.min(expiry, groupExpiry), 0.1), 60)
    const store = new WeakRef(this.store)
    const sweeper: NodeJS.Timeout = setInterval(() => {
      const alive = store.deref()
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

  /** Called by the plugin with the app's logger; a `log` given to the constructor is kept. */
  attachLogger (log: LayerLogger): void {
    if (!this.#ownLogger) this.#log = checkLogger(log) ?? silentLogger
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
    if (!isProcessSpecific(channel)) throw new InvalidOptionError(`listen() takes a channel of this process, not the named channel "${channel}"`)
    const listener = this.store.listen(channel, sink)
    if (listener === undefined) throw new InvalidOptionError(`channel "${channel}" already has a listener`)
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
    return this.store.inspect()
  }

  // Hooks. `message` arguments are copies owned by the layer and may be handed to a receiver as is.

  /** Runs before `newChannel()` hands out `channel`, e.g. to make it reachable from other processes. */
  protected async doNewChannel (_channel: string): Promise<void> {}

  protected async doSend (channel: string, message: LayerMessage): Promise<void> {
    if (!this.store.deliver(channel, message)) throw new ChannelFullError(channel)
  }

  protected doReceive (channel: string, signal: AbortSignal | undefined): Promise<LayerMessage> {
    return this.store.receive(channel, signal)
  }

  protected async doGroupAdd (group: string, channel: string): Promise<void> {
    this.store.addMember(group, channel)
  }

  protected async doGroupDiscard (group: string, channel: string): Promise<void> {
    this.store.removeMember(group, channel)
  }

  protected async doGroupSend (group: string, message: LayerMessage): Promise<void> {
    this.store.fanOut(group, message)
  }

  protected async doDiscardChannel (channel: string): Promise<void> {
    this.store.discardChannel(channel)
  }

  protected async doFlush (): Promise<void> {
    this.store.flush()
  }

  protected async doClose (): Promise<void> {
    this.store.close()
  }

  protected assertOpen (): void {
    if (this.#closed) throw new LayerClosedError()
  }

  /** A group member skipped because its channel was full: counted and logged, never an error. */
  protected reportSkipped (group: string, channel: string): void {
    this.stats.groupSendSkipped++
    this.#log.warn({ group, channel }, 'groupSend skipped a full channel')
  }
}
