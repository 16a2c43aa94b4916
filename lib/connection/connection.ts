/**
 * One WebSocket connection's life: handshake decided by the consumer's `connect()`, then client
 * frames and layer messages handled one at a time in arrival order, then `disconnect()` exactly
 * once and the layer freed of the connection's channel and memberships.
 */
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { Socket } from 'node:net'
import type { WebSocket, RawData } from 'ws'
import type { ChannelLayer, LayerMessage } from '../layers/types.js'
import { canDiscardChannel } from '../layers/types.js'
import { buildScope, type GetUser, type Scope } from '../scope.js'
import { findHandler } from '../dispatch.js'
import { InvalidOptionError, TooManyGroupsError } from '../errors.js'
import { connectionLayer } from './layer-view.js'
import { Outbound, type OutboundOwner } from './outbound.js'
import { heartbeatSlot, type Beating } from './heartbeat.js'
import { TaskQueue, type TaskRunner } from './task-queue.js'
import { FlowControl, type FlowOwner } from './flow-control.js'
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
  /** Where the consumer's `send()` goes. */
  outbound: Outbound
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

const byRequest = new WeakMap<object, Connection>()

/**
 * The connection an accepted handshake hands on to the upgrade: ws' subprotocol choice, the route
 * handler and the test kit see only the raw request (`request.raw`).
 */
export function bindToRequest (raw: object, connection: Connection): void {
  byRequest.set(raw, connection)
}

export function connectionOf (raw: object): Connection | undefined {
  return byRequest.get(raw)
}

export class Connection implements Beating, TaskRunner<Task>, FlowOwner, OutboundOwner {
  state: State = 'connecting'
  /** Beating: set by the heartbeat on ping, cleared by the peer's pong. */
  awaitingPong = false
  readonly heartbeatSlot = heartbeatSlot()
  /** The subprotocol `accept()` named. */
  subprotocol: string | undefined = undefined
  readonly finished: Promise<void>

  readonly #tasks: TaskQueue<Task> = new TaskQueue<Task>(this)
  readonly #flow: FlowControl<Task> = new FlowControl<Task>(this.#tasks, this)
  readonly #outbound: Outbound
  #runtime: Runtime
  #request: FastifyRequest
  #consumer: ConsumerHooks
  #log: FastifyBaseLogger
  #socket: WebSocket | null = null
  #channelName = ''
  #accepted = false
  #decided = false
  #decide: ((decision: Decision) => void) | null = null
  #opened: Promise<void>
  #resolveOpened!: () => void
  #endQueued = false
  #joined: ReadonlySet<string> = new Set()
  #resolveFinished!: () => void

  constructor (runtime: Runtime, request: FastifyRequest, consumer: ConsumerHooks) {
    this.#runtime = runtime
    this.#request = request
    this.#consumer = consumer
    this.#log = request.log
    this.#outbound = new Outbound(this, runtime.maxBufferedBytes)
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
      init({ scope, channelName: this.#channelName, channelLayer: view, log: this.#log, connection: this, outbound: this.#outbound })
      for (const group of this.#consumer.groups) await view.groupAdd(group, this.#channelName)
    } catch (err) {
      await this.#end(1011, false)
      throw err
    }
    const decision = new Promise<Decision>(resolve => { this.#decide = resolve })
    const connected = (async () => { await this.#consumer.connect() })()
    connected.then(() => {
      if (!this.#decided) this.#refuse(403)
      else this.#tasks.start()
    }, (err: unknown) => {
      if (!this.#decided) {
        this.#decided = true
        this.#decide?.({ accepted: false, status: 500 })
        this.#log.error({ err }, 'consumer connect() failed')
        void this.#end(1011, false)
      } else {
        this.#handlerFailed(err)
        this.#tasks.start()
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
    this.subprotocol = subprotocol
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
    this.#outbound.open(socket)
    this.state = 'open'
    socket.on('message', (data, binary) => { this.#flow.fromClient(new ClientFrame(data, binary)) })
    socket.on('pong', () => { this.awaitingPong = false })
    // A client that breaks the protocol: ws answers with a close code; that is the code disconnect() gets.
    socket.on('error', (err: Error & { code?: string }) => {
      if (this.state === 'open') {
        this.state = 'closing'
        this.#outbound.shut()
        this.#enqueueEnd(protocolErrorCloseCode(err.code))
      }
    })
    socket.on('close', (code) => {
      if (this.state === 'open') {
        this.state = 'closing'
        this.#outbound.shut()
        this.#enqueueEnd(code)
      }
    })
    this.#resolveOpened()
    this.#flow.start(socket, this.#runtime.layer, this.#channelName)
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
    this.#outbound.shut()
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
    this.#outbound.shut()
    this.#socket?.terminate()
    this.#enqueueEnd(1006)
  }

  /** OutboundOwner. */
  get log (): FastifyBaseLogger {
    return this.#log
  }

  /** OutboundOwner: '' until the handshake has one. */
  get channelName (): string {
    return this.#channelName
  }

  /** Beating: the heartbeat pings only an open connection. */
  get isOpen (): boolean {
    return this.state === 'open'
  }

  /** Beating: a pong cannot be read while client frames are held back. */
  get readsPaused (): boolean {
    return this.#flow.readsPaused
  }

  /** Beating. */
  sendPing (): void {
    this.#socket?.ping()
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

  /** FlowOwner: the layer failed under the connection. */
  layerFailed (err: unknown): void {
    this.#log.error({ err, channel: this.#channelName }, 'channel layer receive failed; closing the connection')
    this.close(1011, 'channel layer unavailable')
  }

  #enqueueEnd (code: number): void {
    if (this.#endQueued) return
    this.#endQueued = true
    this.#flow.stop()
    this.#tasks.push(new End(code))
  }

  /** TaskRunner: after each task, the sources held back for the queue may flow again. */
  afterTask (): void {
    this.#flow.afterTask()
  }

  /** TaskRunner: what a task means. */
  runTask (task: Task): PromiseLike<unknown> | undefined {
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
        result = handler.call(this.#consumer, task)
      }
    } catch (err) {
      this.#handlerFailed(err)
      return undefined
    }
    return isThenable(result) ? result : undefined
  }

  /** TaskRunner: an asynchronous handler rejected. */
  taskFailed (err: unknown): void {
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
    this.#flow.stop()
    if (runDisconnect && this.#accepted) {
      try {
        await this.#consumer.disconnect(code)
      } catch (err) {
        this.#log.error({ err, channel: this.#channelName }, 'consumer disconnect() failed')
      }
    }
    await this.#leaveLayer()
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

function isThenable (value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
}

export function toBuffer (data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}
