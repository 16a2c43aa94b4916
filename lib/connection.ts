/**
 * One WebSocket connection's life: handshake decided by the consumer's `connect()`, then client
 * frames and layer messages handled one at a time in arrival order, then `disconnect()` exactly
 * once and the layer freed of the connection's channel and memberships.
 */
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { Socket } from 'node:net'
import type { WebSocket, RawData } from 'ws'
import type { ChannelLayer, ChannelListener, ChannelListening, ChannelSink, LayerMessage } from './layers/types.js'
import { canDiscardChannel, canListen } from './layers/types.js'
import { buildScope, type GetUser, type Scope } from './scope.js'
import { findHandler } from './dispatch.js'
import { DIRECT } from './layers/local-store.js'
import { InvalidOptionError, TooManyGroupsError } from './errors.js'
import { connectionLayer } from './connection-layer.js'
import { frameSender, writeText, type FrameSender } from './frame.js'
import { heartbeatSlot, type Beating } from './heartbeat.js'
import { OrderedTasks } from './ordered-tasks.js'
import { fitCloseReason, isSendableCloseCode, protocolErrorCloseCode } from './close-codes.js'

/** What every connection of one plugin instance shares. */
export interface Runtime {
  layer: ChannelLayer
  getUser: GetUser
  connections: Set<Connection>
  /** Bytes a slow reader may have queued before it is closed with 1008. */
  maxBufferedBytes: number
  /** Groups one connection's channel may join through its consumer's `channelLayer`. */
  maxGroupsPerConnection: number
}

/** The part of a consumer the connection drives. */
export interface ConsumerHooks {
  groups: string[]
  connect (): unknown
  receive (text: string | undefined, bytes: Buffer | undefined): unknown
  disconnect (code: number): unknown
}

export interface ConsumerContext {
  scope: Scope
  channelName: string
  channelLayer: ChannelLayer
  log: FastifyBaseLogger
  connection: Connection
}

/** A client frame waiting for `receive()`. */
class ClientFrame {
  constructor (readonly data: RawData, readonly binary: boolean) {}
}

/** The connection ended: `disconnect(code)` and clean-up, after everything queued before. */
class End {
  constructor (readonly code: number) {}
}

// Layer messages are queued as they are, with no wrapper: one allocation fewer per delivery.
type Task = ClientFrame | End | LayerMessage

type State = 'connecting' | 'open' | 'closing' | 'ended'

export type Decision = { accepted: true } | { accepted: false, status: number }

// Enough to keep a consumer busy without buffering a flood outside the layer's own capacity.
const HIGH_WATER = 16

/** The connection is its channel's sink: the layer pushes messages to it while it accepts. */
export class Connection extends OrderedTasks<Task> implements ChannelSink, Beating {
  state: State = 'connecting'
  /** Set by the heartbeat on ping, cleared by the peer's pong. */
  awaitingPong = false
  readonly heartbeatSlot = heartbeatSlot()
  readonly subprotocol: { value: string | undefined } = { value: undefined }
  readonly finished: Promise<void>

  #runtime: Runtime
  #request: FastifyRequest
  #consumer: ConsumerHooks
  #log: FastifyBaseLogger
  #socket: WebSocket | null = null
  #frameSender: FrameSender | null = null
  #listener: ChannelListener | null = null
  // The listener turned a message away: messages wait in the layer until resume().
  #refused = false
  #channelName = ''
  #accepted = false
  #decided = false
  #decide: ((decision: Decision) => void) | null = null
  #opened: Promise<void>
  #resolveOpened!: () => void
  // Only for a layer without listen(): the receive() loop's wake-up and its stop signal.
  #wakePump: (() => void) | null = null
  #abort: AbortController | null = null
  #endQueued = false
  // Stopped reading client frames because the consumer is behind (TCP pushes back on the client).
  #paused = false
  #joined: ReadonlySet<string> = new Set()
  #resolveFinished!: () => void

  constructor (runtime: Runtime, request: FastifyRequest, consumer: ConsumerHooks) {
    super()
    this.#runtime = runtime
    this.#request = request
    this.#consumer = consumer
    this.#log = request.log
    this.#opened = new Promise(resolve => { this.#resolveOpened = resolve })
    this.finished = new Promise(resolve => { this.#resolveFinished = resolve })
    runtime.connections.add(this)
  }

  /**
   * Runs before the upgrade: builds the scope, joins `groups`, and runs `connect()` until it
   * accepts, refuses, returns or throws. Resolves with the decision; rejects when `connect()`
   * (or the set-up before it) failed before deciding.
   */
  async handshake (init: (ctx: ConsumerContext) => void): Promise<Decision> {
    const layer = this.#runtime.layer
    try {
      const scope = await buildScope(this.#request, this.#runtime.getUser)
      this.#channelName = await layer.newChannel()
      const { view, joined } = connectionLayer(layer, this.#channelName, this.#runtime.maxGroupsPerConnection)
      this.#joined = joined
      init({ scope, channelName: this.#channelName, channelLayer: view, log: this.#log, connection: this })
      for (const group of this.#consumer.groups) await view.groupAdd(group, this.#channelName)
    } catch (err) {
      await this.#end(1011, false)
      throw err
    }
    const decision = new Promise<Decision>(resolve => { this.#decide = resolve })
    const connected = (async () => { await this.#consumer.connect() })()
    connected.then(() => {
      if (!this.#decided) this.#refuse(403)
      else this.startTasks()
    }, (err: unknown) => {
      if (!this.#decided) {
        this.#decided = true
        this.#decide?.({ accepted: false, status: 500 })
        this.#log.error({ err }, 'consumer connect() failed')
        void this.#end(1011, false)
      } else {
        this.#handlerFailed(err)
        this.startTasks()
      }
    })
    return decision
  }

  /** `accept()`: the handshake completes once the route handler has the socket. */
  accept (subprotocol?: string): Promise<void> {
    if (subprotocol !== undefined && typeof subprotocol !== 'string') {
      throw new InvalidOptionError('accept(subprotocol) takes a string')
    }
    if (this.#decided) return this.#opened
    this.#decided = true
    this.#accepted = true
    this.subprotocol.value = subprotocol
    this.#watchPrematureClose()
    this.#decide?.({ accepted: true })
    return this.#opened
  }

  /** Called by the route handler with the upgraded socket. */
  attach (socket: WebSocket): void {
    if (this.state !== 'connecting') {
      socket.terminate()
      return
    }
    this.#socket = socket
    this.#frameSender = frameSender(socket)
    this.state = 'open'
    socket.on('message', (data, binary) => {
      this.enqueueTask(new ClientFrame(data, binary))
      if (!this.#paused && this.pendingTasks >= HIGH_WATER) {
        this.#paused = true
        socket.pause()
      }
    })
    socket.on('pong', () => { this.awaitingPong = false })
    // A client that breaks the protocol: ws answers with a close code; that is the code disconnect() gets.
    socket.on('error', (err: Error & { code?: string }) => {
      if (this.state === 'open') {
        this.state = 'closing'
        this.#enqueueEnd(protocolErrorCloseCode(err.code))
      }
    })
    socket.on('close', (code) => {
      if (this.state === 'open') {
        this.state = 'closing'
        this.#enqueueEnd(code)
      }
    })
    this.#resolveOpened()
    const layer = this.#runtime.layer
    if (canListen(layer)) this.#listen(layer)
    else void this.#pump()
    if (this.#pendingClose !== null) {
      const { code, reason } = this.#pendingClose
      this.#pendingClose = null
      this.close(code, reason)
    }
  }

  close (code = 1000, reason = ''): void {
    if (!isSendableCloseCode(code)) {
      throw new InvalidOptionError(`close code ${String(code)} cannot be sent; use 1000-1014 or 3000-4999`)
    }
    if (this.state === 'connecting') {
      if (!this.#decided) this.#refuse(403)
      else if (this.#socket === null) this.#pendingClose = { code, reason }
      return
    }
    if (this.state !== 'open') return
    this.state = 'closing'
    this.#socket?.close(code, fitCloseReason(reason))
    this.#enqueueEnd(code)
  }

  /** Server shutdown: an open connection closes with 1001; one accepted but not yet upgraded ends with 1001. */
  shutdown (): void {
    if (this.state === 'open') {
      this.close(1001, 'server shutting down')
    } else if (this.state === 'connecting' && this.#accepted && this.#socket === null) {
      this.state = 'closing'
      this.#resolveOpened()
      this.#enqueueEnd(1001)
    }
  }

  /** Ends a peer that stopped answering: no close handshake, `disconnect(1006)`. */
  terminate (): void {
    if (this.state !== 'open') return
    this.state = 'closing'
    this.#socket?.terminate()
    this.#enqueueEnd(1006)
  }

  ping (): void {
    this.awaitingPong = true
    this.#socket?.ping()
  }

  /**
   * One heartbeat tick: terminate a peer that did not answer the last ping, else ping it. While
   * reading is paused for backpressure its pong cannot be read, so the peer is not blamed.
   */
  heartbeat (): void {
    if (this.state !== 'open') return
    if (this.#paused) {
      this.awaitingPong = false
    } else if (!this.awaitingPong) {
      this.ping()
    } else {
      // A tick can fire late, straight after this process was busy, before the event loop has read
      // a pong that is already waiting: judge only after two turns of reading (two, so that even a
      // client in this same process has had one turn to answer and we one to read it).
      setImmediate(() => setImmediate(() => {
        if (this.state !== 'open') return
        if (this.awaitingPong && !this.#paused) this.terminate()
        else this.ping()
      }))
    }
  }

  send (data: string | Uint8Array): void {
    if (this.state !== 'open' || this.#socket === null) {
      this.#log.debug({ channel: this.#channelName }, 'send() on a connection that is not open; dropped')
      return
    }
    const socket = this.#socket
    if (socket.bufferedAmount > this.#runtime.maxBufferedBytes) {
      this.#log.warn({ channel: this.#channelName, bufferedAmount: socket.bufferedAmount }, 'slow reader: outgoing buffer over the limit, closing')
      this.close(1008, 'slow reader: too much data queued')
      return
    }
    if (typeof data === 'string') {
      const sender = this.#frameSender
      if (sender === null || !writeText(socket, sender, data)) socket.send(data)
    } else {
      socket.send(data, BINARY)
    }
  }

  #pendingClose: { code: number, reason: string } | null = null

  #refuse (status: number): void {
    if (this.#decided) return
    this.#decided = true
    this.#decide?.({ accepted: false, status })
    void this.#end(1006, false)
  }

  // If the client goes away between accept() and the upgrade, the route handler never runs.
  #watchPrematureClose (): void {
    const raw = this.#request.raw.socket as Socket | undefined
    raw?.once('close', () => {
      if (this.state === 'connecting') {
        this.state = 'closing'
        this.#resolveOpened()
        this.#enqueueEnd(1006)
      }
    })
  }

  /** ChannelSink: layer messages are taken while fewer than HIGH_WATER tasks wait. */
  get accepting (): boolean {
    if (this.pendingTasks < HIGH_WATER) return true
    this.#refused = true
    return false
  }

  /** ChannelSink: a layer message, queued behind what arrived before it. */
  push (message: LayerMessage): void {
    this.enqueueTask(message)
  }

  /** ChannelSink: the layer closed under an open connection. */
  layerClosed (reason: Error): void {
    this.#layerFailed(reason)
  }

  #listen (layer: ChannelLayer & ChannelListening): void {
    try {
      this.#listener = layer.listen(this.#channelName, this)
    } catch (err) {
      this.#layerFailed(err)
    }
  }

  #layerFailed (err: unknown): void {
    this.#log.error({ err, channel: this.#channelName }, 'channel layer receive failed; closing the connection')
    this.close(1011, 'channel layer unavailable')
  }

  /** For a layer that cannot push: one `receive()` at a time, pausing while HIGH_WATER tasks wait. */
  async #pump (): Promise<void> {
    this.#abort = new AbortController()
    const signal = this.#abort.signal
    const layer = this.#runtime.layer
    while (!signal.aborted) {
      let message: LayerMessage
      try {
        message = await layer.receive(this.#channelName, { signal })
      } catch (err) {
        if (!signal.aborted) this.#layerFailed(err)
        return
      }
      this.enqueueTask(message)
      if (this.pendingTasks >= HIGH_WATER) {
        await new Promise<void>(resolve => { this.#wakePump = resolve })
      }
    }
  }

  #resumePump (): void {
    const wake = this.#wakePump
    this.#wakePump = null
    wake?.()
  }

  #enqueueEnd (code: number): void {
    if (this.#endQueued) return
    this.#endQueued = true
    this.#abort?.abort()
    this.#listener?.close()
    this.enqueueTask(new End(code))
  }

  protected afterTask (): void {
    if (this.pendingTasks >= HIGH_WATER) return
    this.#resumePump()
    if (this.#refused) {
      this.#refused = false
      this.#listener?.resume()
    }
    if (this.#paused) {
      this.#paused = false
      this.#socket?.resume()
    }
  }

  protected runTask (task: Task): PromiseLike<unknown> | undefined {
    if (task instanceof End) return this.#end(task.code, true)
    if (this.state !== 'open') return undefined
    let result: unknown
    try {
      if (task instanceof ClientFrame) {
        result = task.binary
          ? this.#consumer.receive(undefined, toBuffer(task.data))
          : this.#consumer.receive(toBuffer(task.data).toString('utf8'), undefined)
      } else {
        const handler = findHandler(this.#consumer, task.type)
        if (handler === undefined) {
          this.#log.warn({ type: task.type, channel: this.#channelName }, 'no handler for message type; dropped')
          return undefined
        }
        result = handler.call(this.#consumer, task, DIRECT)
      }
    } catch (err) {
      this.#handlerFailed(err)
      return undefined
    }
    return isThenable(result) ? result : undefined
  }

  protected taskFailed (err: unknown): void {
    this.#handlerFailed(err)
  }

  #handlerFailed (err: unknown): void {
    if (err instanceof TooManyGroupsError) {
      this.#log.warn({ err, channel: this.#channelName }, 'consumer joined too many groups; closing with 1008')
      this.close(1008, 'too many groups')
      return
    }
    this.#log.error({ err, channel: this.#channelName }, 'consumer handler failed; closing with 1011')
    this.close(1011, 'internal error')
  }

  async #end (code: number, runDisconnect: boolean): Promise<void> {
    if (this.state === 'ended') return
    this.state = 'ended'
    this.#abort?.abort()
    this.#listener?.close()
    if (runDisconnect && this.#accepted) {
      try {
        await this.#consumer.disconnect(code)
      } catch (err) {
        this.#log.error({ err, channel: this.#channelName }, 'consumer disconnect() failed')
      }
    }
    await this.#leaveLayer()
    this.#resumePump()
    this.#runtime.connections.delete(this)
    this.#resolveFinished()
  }

  async #leaveLayer (): Promise<void> {
    if (this.#channelName === '') return
    const layer = this.#runtime.layer
    // A layer that can discard a whole channel also drops memberships other code made with it, in
    // one call. Otherwise leave what is known: `groups` (maybe reassigned since) and what was joined
    // through the view, each step on its own so one bad group name does not leave the rest behind.
    const steps = canDiscardChannel(layer)
      ? [() => layer.discardChannel(this.#channelName)]
      : [...new Set([...(Array.isArray(this.#consumer.groups) ? this.#consumer.groups : []), ...this.#joined])]
          .map(group => () => layer.groupDiscard(group, this.#channelName))
    for (const step of steps) {
      try {
        await step()
      } catch (err) {
        this.#log.warn({ err, channel: this.#channelName }, 'could not remove the connection from the channel layer')
      }
    }
  }
}

const BINARY = { binary: true }

function isThenable (value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
}

export function toBuffer (data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}
