/**
 * One WebSocket connection's life, as one state machine:
 *
 *   handshake ─accept()─▶ accepted ─upgraded─▶ open ─closed (either side, a failure)─▶ closing ─End─▶ ended
 *       │                    └─client gone before the upgrade, or shutdown─────────▶ closing
 *       └─refused: 403 (close() before accept(), or connect() returned), 500 (it threw)─▶ ended
 *
 * - handshake: the scope is built, `groups` joined and `connect()` runs; the HTTP request waits for
 *   its decision (handshake.ts holds what only this part of the life needs).
 * - accepted: the 101 is on its way and the route handler will bring the socket. Carries a close
 *   that `connect()` asked for meanwhile.
 * - open: client frames and layer messages run one at a time, in arrival order (task-queue.ts),
 *   held back while the consumer is behind (flow-control.ts); `send()` writes (outbound.ts).
 * - closing: nothing more is read or written (a send throws ConnectionClosedError), `signal` is
 *   aborted; what was queued before is skipped, then the End task waits for the spawned tasks and
 *   runs `disconnect(code)` exactly once.
 * - ended: the layer is freed of the channel and its memberships; `finished` resolves.
 *
 * `transition()` is the only place the state changes, and `Transitions` the only moves it allows.
 *
 * The socket is anything that fits socket.ts: ws' WebSocket for a WebSocket consumer, the HTTP
 * response (response-socket.ts) for an HTTP consumer, whose `handle()` accepts before it runs.
 */
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { ChannelLayer, Delivery, LayerMessage } from '../layers/types.js'
import { buildScope, checkSubprotocol } from '../scope.js'
import { ConnectionClosedError } from '../errors.js'
import { layerView, leaveLayer } from './layer-view.js'
import { Outbound, type OutboundOwner } from './outbound.js'
import { heartbeatSlot, type Beating } from './heartbeat.js'
import { contextFor, requestContext, storesValues } from './async-context.js'
import { TaskQueue, type TaskRunner } from './task-queue.js'
import { FlowControl, type FlowOwner } from './flow-control.js'
import { listenTo, toBuffer, type ConnectionSocket, type SocketEvents } from './socket.js'
import type { RawData } from 'ws'
import { ClientFrame, End, callConsumer, failureClose, groupsOf, kAtOnce, kConnect, kDisconnect, kStillHere, kUnmetered, type ConsumerHooks, type Task } from './tasks.js'
import { ScopedTasks, stoppedWithConnection, type ScopedTasksOwner, type SpawnedTask } from './scoped-tasks.js'
import { checkSendableCloseCode, dropIfStillClosing, fitCloseReason, protocolErrorCloseCode } from './close-codes.js'
import type { RouteCounts } from '../metrics.js'
import { Occurrence } from './occurrence.js'
import { Handshake, type HandshakeOwner } from './handshake.js'
import { ACCEPT, sendFailure, type UnawaitedFailureOwner } from './unawaited-failure.js'
import type { ConsumerContext, Decision, Runtime } from './runtime.js'

export type State = 'handshake' | 'accepted' | 'open' | 'closing' | 'ended'

/** Every move the lifecycle may make: from a state (key) to one of its successors. */
interface Transitions {
  handshake: 'accepted' | 'ended'
  accepted: 'open' | 'closing'
  open: 'closing'
  closing: 'ended'
  ended: never
}

export type { ConsumerContext, Decision, Runtime } from './runtime.js'

export class Connection implements TaskRunner<Task, Delivery>, FlowOwner, OutboundOwner, Beating, ScopedTasksOwner, SocketEvents, HandshakeOwner, UnawaitedFailureOwner {
  /** The subprotocol `accept()` named. */
  subprotocol: string | undefined = undefined
  /** Beating: set by the heartbeat on ping, cleared by the peer's pong. */
  awaitingPong = false
  readonly heartbeatSlot = heartbeatSlot()

  #state: State = 'handshake'
  readonly #tasks: TaskQueue<Task, Delivery> = new TaskQueue<Task, Delivery>(this)
  readonly #flow: FlowControl<Task> = new FlowControl<Task>(this.#tasks, this)
  readonly #outbound: Outbound
  readonly #runtime: Runtime
  readonly #request: FastifyRequest
  readonly #consumer: ConsumerHooks
  readonly #counts: RouteCounts
  // From handshake() until the socket comes (or the connection ends without one).
  #handshake: Handshake | null = null
  #socket: ConnectionSocket | null = null
  #channelName = ''
  #view: ChannelLayer | null = null // the consumer's channelLayer: what was joined through it is left at the end
  // `signal` and `spawn()`: made on first use.
  #scoped: ScopedTasks | null = null
  // accept()'s promise: the socket came (or never will); and the end, once the layer is freed.
  #opened: Occurrence | null = null
  #finished: Occurrence | null = null
  // Closed by the peer, or for its rate: the frames it sent before (within the limit) are still
  // handed to receive().
  #queuedFramesRun = false
  // The server is stopping: nothing more is read, and the connection closes once the handler in
  // hand has finished (shutdown()).
  #stopping = false
  // An HTTP consumer's: its socket is the response, and a failure's log says so.
  #http = false
  // The async context of the request that opened the connection, which every task runs in (null:
  // one without values will do; async-context.ts).
  readonly #context = requestContext()

  constructor (runtime: Runtime, request: FastifyRequest, consumer: ConsumerHooks) {
    this.#runtime = runtime
    this.#request = request
    this.#consumer = consumer
    this.#flow.sharesMessages = (consumer.constructor as { sharedMessages?: unknown }).sharedMessages === true
    this.#counts = runtime.counts.of(request.routeOptions.url ?? request.url)
    this.#outbound = new Outbound(this, runtime.maxBufferedBytes, this.#counts)
    runtime.connections.add(this)
  }

  /** Resolves once the connection has ended and the layer is freed of it. */
  get finished (): Promise<void> {
    return (this.#finished = Occurrence.of(this.#finished)).promise
  }

  get state (): State {
    return this.#state
  }

  /** The only place the state changes: `from` → `to` when the connection is in `from`. */
  #transition<From extends State> (from: From, to: Transitions[From]): boolean {
    if (this.#state !== from) return false
    this.#state = to
    return true
  }

  // --- events ----------------------------------------------------------------------------------

  /**
   * Runs before the upgrade: builds the scope, joins `groups`, and runs `connect()` until it
   * accepts, refuses, returns or throws. Resolves with the decision; rejects when the set-up
   * before `connect()` failed.
   */
  async handshake (init: (ctx: ConsumerContext) => void, type: 'websocket' | 'http' = 'websocket'): Promise<Decision> {
    // If the client goes away before the upgrade, connect() is told through `signal`; an accepted
    // handshake then ends (disconnect(1006)).
    const handshake = this.#handshake = new Handshake(this.#request.raw.socket, type === 'websocket', this)
    this.#http = type === 'http'
    if (handshake.socketGone) this.clientGone()
    const setUp = handshake.settingUp = this.#setUp(init, type)
    try {
      // Refused meanwhile (shutdown), the client is answered at once, not once the set-up is done
      // (a getUser that hangs would hold it, and the server's close, for ever).
      await Promise.race([setUp, handshake.decision])
    } catch (err) {
      if (this.#state !== 'handshake') return await handshake.decision
      await this.#refuse(500)
      throw err
    }
    if (this.#state !== 'handshake') return await handshake.decision
    const connected = (async () => { await this.#consumer[kConnect]() })()
    handshake.connecting = connected
    connected.then(() => {
      // Returning without accept() refuses; after it, the queued frames may run.
      if (this.#state === 'handshake') void this.#refuse(403)
      else this.#tasks.start()
    }, (err: unknown) => {
      if (this.#state === 'handshake') {
        // A wait the signal aborted because the client went away: connect() ended without accepting.
        if (stoppedWithConnection(err, handshake.abandoned, this, 'consumer connect() stopped: the client went away')) {
          void this.#refuse(403)
          return
        }
        this.log.error({ err }, 'consumer connect() failed')
        this.#counts.handlerErrors++
        void this.#refuse(500)
      } else {
        this.taskFailed(err)
        this.#tasks.start()
      }
    })
    return await handshake.decision
  }

  /**
   * The set-up before `connect()`: the scope (`getUser` among it), the channel, `groups` joined.
   * A handshake refused meanwhile (shutdown) stops at the step under way: the refusal waits for it,
   * then frees what it made.
   */
  async #setUp (init: (ctx: ConsumerContext) => void, type: 'websocket' | 'http'): Promise<void> {
    const layer = this.#runtime.layer
    const scope = await buildScope(this.#request, this.#runtime.getUser, type)
    if (this.#state !== 'handshake') return
    this.#channelName = await layer.newChannel()
    if (this.#state !== 'handshake') return
    const view = this.#view = layerView(layer, this.#channelName, this.#runtime.maxGroupsPerConnection, this)
    init({ scope, channelName: this.#channelName, channelLayer: view, log: this.log, connection: this, outbound: this.#outbound })
    for (const group of groupsOf(this.#consumer)) {
      if (this.#state !== 'handshake') return
      await view.groupAdd(group, this.#channelName)
    }
  }

  /** `accept()`: the handshake completes once the route handler has the socket. */
  accept (subprotocol?: string): Promise<void> {
    if (subprotocol !== undefined) checkSubprotocol(this.#request, subprotocol)
    // Refused already (close() came first): this connection will never open.
    if (this.#state === 'ended' && this.#opened === null) {
      return sendFailure(new ConnectionClosedError(this.#channelName, 'accept() after the handshake was refused'), this, ACCEPT)
    }
    if (this.#transition('handshake', 'accepted')) {
      this.subprotocol = subprotocol
      this.#outbound.expect()
      this.#handshake?.decide({ accepted: true })
      // Gone already: the route handler will never bring the socket.
      if (this.#handshake?.socketGone === true) this.clientGone()
    }
    return (this.#opened = Occurrence.of(this.#opened)).promise
  }

  /** Called by the route handler with the upgraded socket. */
  attach (socket: ConnectionSocket): void {
    const handshake = this.#forgetHandshake()
    if (!this.#transition('accepted', 'open')) {
      socket.terminate()
      return
    }
    this.#socket = socket
    this.#outbound.open(socket)
    if (handshake?.upgrade !== false) this.#counts.handshake(101)
    this.#counts.open++
    const limit = this.#runtime.rateLimit
    if (limit !== undefined) this.#flow.limitTo(limit.messages, limit.interval)
    listenTo(socket, this, limit !== undefined)
    this.#opened = Occurrence.happen(this.#opened)
    this.#flow.start(socket, this.#runtime.layer, this.#channelName)
    const pending = handshake?.pendingClose
    if (pending != null) this.close(pending.code, pending.reason)
  }

  /** Before accept() this refuses the handshake (403); once accepted, the socket closes as soon as it is there. */
  close (code = 1000, reason = ''): void {
    checkSendableCloseCode(code)
    if (this.#state === 'handshake') {
      void this.#refuse(403)
    } else if (this.#state === 'accepted') {
      if (this.#handshake !== null) this.#handshake.pendingClose = { code, reason }
    } else {
      this.#beginClosing('open', code, socket => { socket.close(code, fitCloseReason(reason)) })
    }
  }

  /**
   * SocketEvents: a client frame, queued behind what came before it (unless over the rate limit,
   * or one the consumer answers at once). Once closing, nothing more is read: a frame still
   * coming is neither handled nor counted.
   */
  frame (data: RawData, binary: boolean): void {
    if (this.#state !== 'open' || this.#stopping) return
    this.#counts.framesReceived++
    const consumer = this.#consumer
    // A consumer that looks at text frames first (GroupsConsumer: its pings and its joins).
    const text = binary || (consumer[kAtOnce] === undefined && consumer[kUnmetered] === undefined) ? undefined : toBuffer(data)
    const unmetered = text !== undefined && consumer[kUnmetered]?.(text) === true
    if (!unmetered && !this.#flow.admit()) return
    if (text !== undefined && consumer[kAtOnce]?.(text) === true) return
    this.#flow.fromClient(new ClientFrame(data, binary))
  }

  /**
   * SocketEvents: a pong (the answer to the heartbeat's ping, or one unasked). Control frames take
   * the rate limit as others do: a flood of them costs the server what a flood of messages does.
   */
  pong (): void {
    this.awaitingPong = false
    if (this.#state === 'open' && !this.#stopping) this.#flow.admit()
  }

  /** SocketEvents: a ping from the peer, which ws has answered; counted only with a rate limit. */
  ping (): void {
    if (this.#state === 'open' && !this.#stopping) this.#flow.admit()
  }

  /** SocketEvents: a client that broke the protocol (ws answers with a close code: disconnect() gets it), or a lost socket. */
  failed (err: Error & { code?: string }): void {
    const code = protocolErrorCloseCode(err.code)
    if (code === 1006) this.log.debug({ err }, 'websocket connection lost')
    else this.log.warn({ err }, 'websocket protocol error')
    this.#beginClosing('open', code)
  }

  /** SocketEvents: the peer closed, or its connection is gone: the frames it sent before still run. */
  closed (code: number): void {
    // Not while the server stops: what waited behind the handler in hand is not run.
    if (this.#state === 'open' && !this.#stopping) this.#queuedFramesRun = true
    this.#beginClosing('open', code)
  }

  /**
   * The client went away before the upgrade (or, for the test kit, stopped waiting for it): while
   * connect() runs, its `signal` is aborted; once accepted, the connection ends with 1006.
   */
  clientGone (): void {
    if (this.#state === 'handshake') this.#abandon()
    else this.#beginClosing('accepted', 1006)
  }

  /** HandshakeOwner: the client ended its side of the request's TCP socket before the upgrade. */
  clientEnded (): void {
    if (this.#state === 'handshake') this.#abandon()
  }

  /** Ends a peer that stopped answering: no close handshake, `disconnect(1006)`. */
  terminate (): void {
    // Logged as every other close the server decides is: on a dashboard of 1006s, these are the peers that went silent.
    this.log.info({ channel: this.#channelName }, 'peer did not answer the last ping; terminated (1006)')
    this.#beginClosing('open', 1006, socket => { socket.terminate() })
  }

  /**
   * Server shutdown: an open connection closes with 1001 once the handler it has in hand, if any,
   * has finished, so that what it sends (a call's reply) leaves first; meanwhile nothing more is
   * read, nothing queued behind it runs, and `signal` is aborted. One accepted but not yet
   * upgraded ends with 1001. One still in its handshake, in the set-up before connect() (a
   * `getUser` that hangs) or in connect(), is refused with 503 at once and its `signal` aborted:
   * the layer is left once what runs has returned.
   */
  shutdown (): void {
    if (this.#state === 'open') {
      if (this.#stopping) return
      this.#stopping = true
      // A handler that waits on `signal` (a loop that lives as long as the connection) stops now.
      this.#scoped?.abort()
      if (!this.#tasks.afterTaskInHand(() => { this.stopWaiting() })) this.stopWaiting()
    } else if (this.#state === 'handshake') {
      void this.#refuse(503)
    } else {
      this.#beginClosing('accepted', 1001)
    }
  }

  /** The shutdown grace is over: a connection still finishing its handler in hand closes now (1001). */
  stopWaiting (): void {
    if (this.#state === 'open') this.close(1001, 'server shutting down')
  }

  /** `this.signal`: aborted as soon as the connection starts to end. */
  get signal (): AbortSignal {
    return this.#scopedTasks().signal
  }

  /** `this.spawn(fn)`: a task beside the handler queue, awaited before `disconnect()`. */
  spawn (fn: SpawnedTask): void {
    this.#scopedTasks().spawn(fn)
  }

  /** ScopedTasksOwner: a spawned task failed while the connection was live. */
  spawnFailed (err: unknown): void {
    this.#failed(failureClose(err, this.log, this.#channelName, 'spawned task', this.#http))
  }

  /** FlowOwner: a layer message that will never be handled. */
  droppedAfterEnd (): void {
    this.#counts.unhandled++
  }

  /** Reporter: a layer message of a type the consumer has no handler for. */
  noHandler (): void {
    this.#counts.noHandler++
  }

  /** FlowOwner: the layer failed under the connection. */
  layerFailed (err: unknown): void {
    this.log.error({ err, channel: this.#channelName }, 'channel layer receive failed; closing the connection')
    this.close(1011, 'channel layer unavailable')
  }

  // --- the moves behind the events -------------------------------------------------------------

  /**
   * handshake → ended: a refusal, answered at once. What the set-up and connect() joined is left
   * once connect() has returned too (close() in it refuses while it still runs, and it may join a
   * group after), and a task that only sends stops at its next send().
   */
  async #refuse (status: number): Promise<void> {
    if (!this.#transition('handshake', 'ended')) return
    this.#outbound.shut()
    this.#scoped?.abort()
    this.#handshake?.decide({ accepted: false, status, clientGone: this.#handshake.abandoned })
    await this.#scoped?.settled()
    await this.#handshake?.returned()
    await this.#finish()
  }

  /** The handshake will come to nothing: connect() is told through `signal`, and decides as it will. */
  #abandon (): void {
    if (this.#handshake !== null) this.#handshake.abandoned = true
    this.#scoped?.abort()
  }

  /**
   * open or accepted → closing: nothing more is read or written, the socket (if any) is ended as
   * `endSocket` says and dropped if its peer has not completed the closing handshake within the
   * grace (close-codes.ts), and End runs after what is queued.
   */
  #beginClosing (from: 'open' | 'accepted', code: number, endSocket?: (socket: ConnectionSocket) => void): void {
    if (!this.#transition(from, 'closing')) return
    if (from === 'open') this.#counts.open--
    this.#outbound.shut()
    this.#scoped?.abort()
    this.#flow.stop()
    this.#opened = Occurrence.happen(this.#opened)
    if (this.#socket !== null) {
      endSocket?.(this.#socket)
      dropIfStillClosing(this.#socket, this.log, this.#channelName)
    }
    this.#tasks.push(new End(code))
  }

  /** closing → ended, when the End task runs: the spawned tasks settle first. */
  async #end (code: number): Promise<void> {
    if (!this.#transition('closing', 'ended')) return
    await this.#scoped?.settled()
    try {
      await this.#consumer[kDisconnect](code)
    } catch (err) {
      this.log.error({ err, channel: this.#channelName }, 'consumer disconnect() failed')
    }
    await this.#finish()
  }

  /** In `ended`: free the layer, then tell whoever waits. */
  async #finish (): Promise<void> {
    this.#forgetHandshake()
    if (this.#channelName !== '') {
      await leaveLayer(this.#runtime.layer, this.#channelName, this.#consumer.groups, this.#view, this.log)
      this.#flow.release()
    }
    this.#runtime.connections.delete(this)
    this.#finished = Occurrence.happen(this.#finished)
  }

  // --- tasks -----------------------------------------------------------------------------------

  /** TaskRunner: once closing, End runs, and the client's frames if it closed (or went over the rate limit). */
  runTask (task: Task, info: Delivery | undefined): PromiseLike<unknown> | undefined {
    if (task instanceof End) {
      const context = contextFor(this.#context)
      return context === null ? this.#end(task.code) : context.runInAsyncScope(this.#end, this, task.code)
    }
    // Once closing, only what the client sent before it closed (or went over the rate limit) runs,
    // as in Channels, where its frames come before its disconnect: its send() rejects, a layer
    // message waits no more.
    if (this.#state !== 'open' && !(this.#queuedFramesRun && this.#state === 'closing' && task instanceof ClientFrame)) {
      if (!(task instanceof ClientFrame)) this.droppedAfterEnd()
      return undefined
    }
    try {
      // The common case first, kept small: V8 then inlines the handler's call into the queue's loop.
      if (this.#context === null && !storesValues()) return callConsumer(this.#consumer, task, info, this)
      return this.#callInContext(task, info)
    } catch (err) {
      this.taskFailed(err)
      return undefined
    }
  }

  #callInContext (task: ClientFrame | LayerMessage, info: Delivery | undefined): PromiseLike<unknown> | undefined {
    const context = contextFor(this.#context)
    return context === null ? callConsumer(this.#consumer, task, info, this) : context.runInAsyncScope(callConsumer, null, this.#consumer, task, info, this)
  }

  /**
   * TaskRunner: a handler threw or rejected (UnawaitedFailureOwner: or a send, join or leave that
   * nothing awaited failed, `what`). One that only lost the race with the connection's end (its
   * send came too late, its wait was aborted) is no failure: debug, and nothing more to close.
   */
  taskFailed (err: unknown, what = 'consumer handler'): void {
    const ended = this.#state === 'closing' || this.#state === 'ended'
    // While the server stops, the signal is aborted already: a wait it ended is no failure either.
    if (stoppedWithConnection(err, ended || this.#stopping, this, `${what} stopped: the connection had ended`)) return
    this.#failed(failureClose(err, this.log, this.#channelName, what, this.#http, ended))
  }

  /** A handler or task failed: 1011 is the app's bug (counted), 1008 the client's doing. */
  #failed ([code, reason]: [number, string]): void {
    if (code === 1011) this.#counts.handlerErrors++
    // Before accept() (a spawned task that failed in connect()): the app's bug is a 500, as a throw in connect() is.
    if (this.#state === 'handshake') void this.#refuse(code === 1011 ? 500 : 403)
    else this.close(code, reason)
  }

  /**
   * FlowOwner: a client sending faster than `rateLimit`: closed, counted, logged; the frame over the
   * limit is not handled, those it sent before are.
   */
  overLimit (): void {
    if (this.#state !== 'open' || this.#stopping) return
    this.#counts.rateLimited++
    this.log.warn({ channel: this.#channelName }, 'client over the rate limit; closing with 1008')
    this.#queuedFramesRun = true
    this.close(1008, 'rate limit')
  }

  /** FlowOwner: the client's frames are not read meanwhile; a consumer that can say it is still there does. */
  stillHere (): void {
    if (this.#state === 'open') this.#consumer[kStillHere]?.()
  }

  /** FlowOwner: what waits in the channel waits while the client has not read what it was sent. */
  whenUncongested (): Promise<void> | undefined {
    return this.#outbound.whenUncongested()
  }

  /** TaskRunner: after each task, the sources held back for the queue may flow again. */
  afterTask (): void {
    this.#flow.afterTask()
  }

  #scopedTasks (): ScopedTasks {
    if (this.#scoped === null) {
      this.#scoped = new ScopedTasks(this)
      if (this.#handshake?.abandoned === true || this.#stopping || this.#state === 'closing' || this.#state === 'ended') this.#scoped.abort()
    }
    return this.#scoped
  }

  /** The socket came, or never will: what only the handshake needed goes; returns it, if it was still held. */
  #forgetHandshake (): Handshake | null {
    const handshake = this.#handshake
    if (handshake === null) return null
    handshake.forget()
    // A client that left while connect() ran: a `signal` asked for from now on is aborted as well.
    if (handshake.abandoned) this.#scopedTasks()
    this.#handshake = null
    return handshake
  }

  // --- what the parts beside it read -----------------------------------------------------------

  /** The request's logger. */
  get log (): FastifyBaseLogger {
    return this.#request.log
  }

  /** '' until the handshake has one. */
  get channelName (): string {
    return this.#channelName
  }

  /**
   * Resolves once what the socket was last given has left for the peer, where the socket can tell
   * (an HTTP response): false when the socket went first, with some of it.
   */
  get drained (): Promise<boolean> {
    return this.#socket?.drained?.() ?? Promise.resolve(true)
  }

  /** The socket, once the route handler brought it. */
  get socket (): ConnectionSocket | null {
    return this.#socket
  }

  /** Beating: the heartbeat pings only an open connection. */
  get isOpen (): boolean {
    return this.#state === 'open'
  }

  /** Beating: a pong cannot be read while client frames are held back. */
  get readsPaused (): boolean {
    return this.#flow.readsPaused
  }

  sendPing (): void {
    this.#socket?.ping()
  }
}
