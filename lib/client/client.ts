/**
 * `ChannelsClient`: GroupsConsumer's protocol (lib/protocol.ts) over one WebSocket that comes back
 * by itself, for browsers and Node >= 20, with no runtime dependency.
 *
 * - One socket at a time: a new one is opened only once the previous one has fired `close`.
 * - Reconnects with exponential backoff and full jitter: attempt n waits a random time in
 *   [0, min(maxDelay, minDelay·2ⁿ⁻¹)], so clients of a restarted server spread out. The count goes
 *   back to 0 only after a socket stayed open for STABLE_MS, so a server that accepts and drops at
 *   once is not hammered.
 * - Every group is re-joined with the last position seen: the server replays what was missed, or
 *   says it cannot and the subscription's `gap()` runs.
 * - A call waits for its reply until its timeout; one in flight when the socket drops is rejected
 *   (whether it ran is unknown). Calls made while disconnected are sent once connected.
 */
import type { ApiShape, ServerToClient } from '../protocol.js'
import { GroupSubscription, type Subscription, type SubscriptionHandlers } from './subscription.js'
import { Calls } from './calls.js'
import { host, milliseconds, socketUrl, webSocketClass, type CallArgs, type ClientOptions, type WebSocketConstructor } from './options.js'
import {
  ChannelsClientError, ALREADY_JOINED, BAD_FRAME, CLIENT_CLOSED, CONNECTION_LOST,
  INVALID_ARGS, INVALID_NAME, INVALID_OPTION, LEFT
} from './errors.js'

export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed'

export interface StateDetail {
  /** `reconnecting`: the attempt to come (1, 2, …) and the milliseconds until it. */
  attempt?: number
  delay?: number
  /** The close code and reason of the socket that went away. */
  code?: number
  reason?: string
}

interface Socket {
  readonly readyState: number
  onopen: (() => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number, reason: string }) => void) | null
  onerror: (() => void) | null
  send (data: string): void
  close (code?: number, reason?: string): void
  /** ws' (Node): ends the connection without the closing handshake. */
  terminate?: () => void
}

type Listener = (...args: never[]) => void

const OPEN = 1
const STABLE_MS = 5000
const GROUP_NAME = /^[a-zA-Z\d\-_.]{1,99}$/
// A join refused for one of the layer's own failures is tried again on the same socket: the server
// may recover. Any other refusal (canJoin() said no, or threw) ends the subscription.
const RETRIABLE = new Set(['FST_CHANNELS_LAYER_TIMEOUT', 'FST_CHANNELS_LAYER_CLOSED', 'FST_CHANNELS_REMOTE_FAILED'])

export class ChannelsClient<Api extends ApiShape = ApiShape> {
  readonly #url: string
  readonly #WebSocket: WebSocketConstructor
  readonly #protocols: string | string[] | undefined
  readonly #callTimeout: number
  readonly #minDelay: number
  readonly #maxDelay: number
  readonly #connectTimeout: number
  readonly #heartbeat: number
  // Whether the socket said anything since the heartbeat last looked, and whether it was asked.
  #heard = false
  #pinged = false
  #state: ClientState = 'connecting'
  #socket: Socket | null = null
  /** A socket given up before its `close` came (offline, or silent past the heartbeat): no new one until it has. */
  #closing: Socket | null = null
  #due = false
  #attempt = 0
  /** Offline at the last retry due, which was skipped: the next is tried even so. */
  #skippedOffline = false
  #timers: { retry?: ReturnType<typeof setTimeout>, stable?: ReturnType<typeof setTimeout>, connect?: ReturnType<typeof setTimeout>, beat?: ReturnType<typeof setInterval> } = {}
  readonly #listeners = { state: new Set<Listener>(), error: new Set<Listener>() }
  readonly #subs = new Map<string, GroupSubscription<never>>()
  /** Answers still to come to joins that were left before they were answered. */
  readonly #stale = new Map<string, number>()
  readonly #calls = new Calls()
  readonly #write = (text: string): boolean => {
    if (this.#state !== 'open' || this.#socket === null) return false
    this.#socket.send(text)
    return true
  }
  // Back online: the next attempt need not wait out the backoff, nor a socket given up offline,
  // whose `close` a browser may hold for a minute (its closing handshake on a dead connection).
  readonly #online = (): void => {
    const waiting = this.#due || this.#timers.retry !== undefined
    this.#closing = null
    this.#due = false
    if (waiting) this.#retryIn(Math.random() * this.#minDelay)
  }
  // Offline, a browser keeps the socket "open" and silent, and holds its close until back online:
  // the client says so at once and re-joins from where it was once a new socket opens.
  readonly #offline = (): void => { this.#giveUp('offline') }
  // A socket silent for a heartbeat is asked (ping); still silent a heartbeat later, it is dead
  // (a network that drops packets without closing anything), which TCP would notice in minutes.
  readonly #beat = (): void => {
    if (this.#heard) {
      this.#heard = this.#pinged = false
    } else if (!this.#pinged) {
      this.#pinged = this.#write('{"op":"ping"}')
    } else {
      this.#giveUp('heartbeat timeout')
    }
  }

  constructor (url: string, options: ClientOptions = {}) {
    this.#url = socketUrl(url)
    this.#WebSocket = webSocketClass(options)
    this.#protocols = options.protocols
    this.#callTimeout = milliseconds(options.callTimeout, 10_000, 'callTimeout')
    this.#minDelay = milliseconds(options.minDelay, 500, 'minDelay')
    this.#maxDelay = milliseconds(options.maxDelay, 30_000, 'maxDelay')
    this.#connectTimeout = milliseconds(options.connectTimeout, 10_000, 'connectTimeout')
    this.#heartbeat = milliseconds(options.heartbeat, 25_000, 'heartbeat')
    this.#connect(true)
    // A browser that is back online need not wait out the backoff.
    host.addEventListener?.('online', this.#online)
    host.addEventListener?.('offline', this.#offline)
  }

  get state (): ClientState {
    return this.#state
  }

  /** `state`: each change (and each retry scheduled); `error`: what went wrong outside a call or a join. Returns the remover. */
  on (event: 'state', listener: (state: ClientState, detail: StateDetail) => void): () => void
  on (event: 'error', listener: (error: unknown) => void): () => void
  on (event: 'state' | 'error', listener: Listener): () => void {
    const listeners = this.#listeners[event]
    listeners.add(listener)
    return () => { listeners.delete(listener) }
  }

  /** Joins `group` now and after every reconnect, with the last position seen. */
  join<T = unknown> (group: string, handlers: SubscriptionHandlers<T> = {}): Subscription {
    this.#check()
    if (!GROUP_NAME.test(group)) throw new ChannelsClientError(INVALID_NAME, `invalid group name ${JSON.stringify(group)}`)
    if (this.#subs.has(group)) throw new ChannelsClientError(ALREADY_JOINED, `already in group "${group}": leave() it first`)
    const sub: GroupSubscription<T> = new GroupSubscription<T>(group, handlers, () => { this.#leave(sub) }, err => { this.#report(err) })
    this.#subs.set(group, sub as GroupSubscription<never>)
    if (this.#state === 'open') this.#sendJoin(sub)
    return sub
  }

  /** Calls an action of the server's consumer; resolves with its result, rejects with a ChannelsClientError. */
  call<K extends keyof Api & string> (action: K, ...[args, options]: CallArgs<Api[K]['args']>): Promise<Api[K]['result']> {
    if (this.#state === 'closed') return Promise.reject(new ChannelsClientError(CLIENT_CLOSED, 'the client is closed'))
    let timeout: number
    try {
      timeout = milliseconds(options?.timeout, this.#callTimeout, 'timeout')
    } catch (err) {
      // As every other failure of a call: the promise rejects, nothing is thrown.
      return Promise.reject(err)
    }
    try {
      return this.#calls.add(action, args, timeout, this.#write) as Promise<Api[K]['result']>
    } catch (err) {
      return Promise.reject(new ChannelsClientError(INVALID_ARGS, `arguments of "${action}" are not JSON: ${String(err)}`))
    }
  }

  /** Closes the socket for good: pending calls and joins are rejected with FST_CHANNELS_CLIENT_CLOSED. */
  close (): void {
    if (this.#state === 'closed') return
    this.#setState('closed', {})
    host.removeEventListener?.('online', this.#online)
    host.removeEventListener?.('offline', this.#offline)
    for (const timer of Object.values(this.#timers)) clearTimeout(timer)
    this.#timers = {}
    const closed = new ChannelsClientError(CLIENT_CLOSED, 'the client was closed')
    for (const sub of this.#subs.values()) {
      clearTimeout(sub.retryTimer)
      if (!sub.everJoined) sub.fail(closed)
    }
    this.#subs.clear()
    this.#calls.reject(closed, false)
    // Forgotten at once: a frame still arriving on it is not handled.
    const socket = this.#socket
    this.#socket = null
    socket?.close(1000)
  }

  // --- the socket -------------------------------------------------------------------------------

  /** `first`, from the constructor: a WebSocket constructor that throws is a bad option, thrown to the caller. */
  #connect (first = false): void {
    if (this.#socket !== null || this.#state === 'closed') return
    if (this.#closing !== null) {
      this.#due = true
      return
    }
    // Offline, an attempt can only fail (and a browser logs each one as an error): it waits for
    // 'online', which retries at once, and is made anyway a `maxDelay` later, in case the browser
    // is wrong about being offline. The backoff does not grow meanwhile.
    if (host.navigator?.onLine === false && !this.#skippedOffline) {
      this.#skippedOffline = true
      this.#retryIn(this.#maxDelay)
      return
    }
    this.#skippedOffline = false
    let socket: Socket
    try {
      socket = new this.#WebSocket(this.#url, this.#protocols) as Socket
    } catch (err) {
      // The same URL and protocols every time: what the first attempt refused (a malformed
      // subprotocol, a URL this page may not open) every retry would refuse too.
      if (first) throw new ChannelsClientError(INVALID_OPTION, `new WebSocket() refused ${this.#url}: ${String(err)}`)
      this.#report(err)
      this.#scheduleRetry({})
      return
    }
    this.#socket = socket
    socket.onopen = () => { this.#opened(socket) }
    socket.onmessage = event => {
      if (socket !== this.#socket) return
      this.#heard = true
      this.#frame(event.data)
    }
    socket.onclose = event => {
      if (socket === this.#closing) {
        this.#closing = null
        const due = this.#due
        this.#due = false
        if (due) this.#connect()
      } else this.#closed(socket, event.code, event.reason)
    }
    socket.onerror = () => {} // a close follows
    this.#timers.connect = setTimeout(() => { if (socket.readyState !== OPEN) socket.close() }, this.#connectTimeout)
  }

  #opened (socket: Socket): void {
    if (socket !== this.#socket) return
    clearTimeout(this.#timers.connect)
    this.#timers.stable = setTimeout(() => { this.#attempt = 0 }, STABLE_MS)
    this.#heard = this.#pinged = false
    this.#timers.beat = setInterval(this.#beat, this.#heartbeat)
    // Joins and waiting calls go out before the listeners hear of it: a join they make is sent once.
    this.#state = 'open'
    for (const sub of this.#subs.values()) this.#sendJoin(sub)
    this.#calls.sendWaiting(this.#write)
    this.#setState('open', {})
  }

  /**
   * Gives up a socket that cannot be heard: closed now as far as the client goes (4000, `reason`),
   * and a new one is opened once it has fired `close`: at once where it can be ended without the
   * closing handshake (ws' `terminate()`), else whenever the WebSocket gives up on it.
   */
  #giveUp (reason: string): void {
    const socket = this.#socket
    if (socket === null || this.#state !== 'open') return
    this.#closed(socket, 4000, reason)
    this.#closing = socket
    if (typeof socket.terminate === 'function') socket.terminate()
    else socket.close(4000, reason)
  }

  #closed (socket: Socket, code: number, reason: string): void {
    if (socket !== this.#socket) return
    this.#socket = null
    clearTimeout(this.#timers.connect)
    clearTimeout(this.#timers.stable)
    clearInterval(this.#timers.beat)
    this.#stale.clear()
    for (const sub of this.#subs.values()) {
      sub.joined = false
      sub.awaiting = 0
      clearTimeout(sub.retryTimer)
    }
    this.#calls.reject(new ChannelsClientError(CONNECTION_LOST, 'the connection dropped before the reply'), true)
    if (this.#state !== 'closed') this.#scheduleRetry({ code, reason })
  }

  #scheduleRetry (detail: StateDetail): void {
    const attempt = ++this.#attempt
    const delay = fullJitter(attempt, this.#minDelay, this.#maxDelay)
    this.#setState('reconnecting', { ...detail, attempt, delay })
    // A state listener may have closed the client.
    if (this.#state === 'reconnecting') this.#retryIn(delay)
  }

  #retryIn (delay: number): void {
    clearTimeout(this.#timers.retry)
    this.#timers.retry = setTimeout(() => {
      this.#timers.retry = undefined
      this.#connect()
    }, delay)
  }

  #send (frame: object): void {
    this.#write(JSON.stringify(frame))
  }

  // --- frames -----------------------------------------------------------------------------------

  #frame (data: unknown): void {
    let frame: ServerToClient | null
    try {
      frame = JSON.parse(String(data)) as ServerToClient | null
    } catch {
      this.#report(new ChannelsClientError(BAD_FRAME, 'the server sent a frame that is not JSON'))
      return
    }
    // A frame of another protocol (a proxy's, another app's at this URL) is reported to `error`
    // listeners (with none, thrown on its own, as any unhandled error), never thrown from the
    // socket's listener, where it would cut the handling of the socket's events short.
    try {
      if (typeof frame?.op !== 'string') throw new TypeError('no "op"')
      this.#dispatch(frame)
    } catch (err) {
      this.#report(new ChannelsClientError(BAD_FRAME, `the server sent a frame that is not of the protocol (${String(err)}): ${String(data).slice(0, 100)}`))
    }
  }

  #dispatch (frame: ServerToClient): void {
    if (frame.op === 'reply') {
      this.#calls.reply(frame)
      return
    }
    if (frame.op === 'pong') return // it was heard: that is all a pong says
    const group = frame.group
    if (group === undefined) {
      if (frame.op === 'error') this.#report(new ChannelsClientError(frame.code, frame.message))
      return
    }
    const sub = this.#subs.get(group)
    if (frame.op === 'joined' || frame.op === 'error') {
      const stale = this.#stale.get(group) ?? 0
      if (stale > 0) this.#stale.set(group, stale - 1)
      else if (sub !== undefined) {
        sub.awaiting = Math.max(0, sub.awaiting - 1)
        if (frame.op === 'joined') sub.onJoined(frame)
        else this.#refused(sub, new ChannelsClientError(frame.code, frame.message))
      }
    } else if (sub?.joined === true) {
      if (frame.op === 'message') sub.onMessage(frame)
      else if (frame.op === 'presence') sub.onPresence(frame)
    }
  }

  // --- groups and calls -------------------------------------------------------------------------

  #sendJoin (sub: GroupSubscription<never>): void {
    sub.awaiting++
    this.#send({ op: 'join', group: sub.group, since: sub.position ?? undefined })
  }

  #refused (sub: GroupSubscription<never>, err: ChannelsClientError): void {
    if (RETRIABLE.has(err.code)) {
      const delay = fullJitter(++sub.retries, this.#minDelay, this.#maxDelay)
      sub.retryTimer = setTimeout(() => { if (this.#subs.get(sub.group) === sub && this.#state === 'open') this.#sendJoin(sub) }, delay)
      return
    }
    this.#subs.delete(sub.group)
    sub.fail(err)
  }

  #leave (sub: GroupSubscription<never>): void {
    if (this.#subs.get(sub.group) !== sub) return
    this.#subs.delete(sub.group)
    clearTimeout(sub.retryTimer)
    if (sub.awaiting > 0) this.#stale.set(sub.group, (this.#stale.get(sub.group) ?? 0) + sub.awaiting)
    if (this.#state === 'open') this.#send({ op: 'leave', group: sub.group })
    if (!sub.everJoined) sub.fail(new ChannelsClientError(LEFT, `left "${sub.group}" before it was joined`))
  }

  // --- events -----------------------------------------------------------------------------------

  #setState (state: ClientState, detail: StateDetail): void {
    this.#state = state
    for (const listener of this.#listeners.state) {
      // A listener changed the state (close() on 'reconnecting'): the others have heard of that one.
      if (this.#state !== state) return
      this.#safely(listener, state, detail)
    }
  }

  #check (): void {
    if (this.#state === 'closed') throw new ChannelsClientError(CLIENT_CLOSED, 'the client is closed')
  }

  /** A handler's error (or the client's) goes to `error` listeners; without one it is thrown on its own. */
  #report (err: unknown): void {
    if (this.#listeners.error.size === 0) setTimeout(() => { throw err })
    for (const listener of this.#listeners.error) this.#safely(listener, err)
  }

  #safely (listener: Listener, ...args: unknown[]): void {
    try {
      (listener as (...a: unknown[]) => void)(...args)
    } catch (err) {
      setTimeout(() => { throw err })
    }
  }
}

/** Attempt n's wait: a random time in [0, min(max, min·2ⁿ⁻¹)] (exponential backoff, full jitter). */
function fullJitter (attempt: number, min: number, max: number): number {
  return Math.random() * Math.min(max, min * 2 ** Math.min(attempt - 1, 30))
}
