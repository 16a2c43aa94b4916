/**
 * `ChannelsClient`: GroupsConsumer's protocol (lib/protocol.ts) over one WebSocket that comes back
 * by itself (reconnecting-socket.ts), for browsers and Node >= 20, with no runtime dependency.
 *
 * - Every group is re-joined with the last position seen: the server replays what was missed, or
 *   says it cannot and the subscription's `gap()` runs.
 * - A call waits for its reply until its timeout; one in flight when the socket drops is rejected
 *   (whether it ran is unknown). Calls made while disconnected are sent once connected.
 */
import type { ApiShape, ServerToClient } from '../protocol.js'
import { isPosition } from './position.js'
import { GroupSubscription, type Subscription, type SubscriptionHandlers } from './subscription.js'
import { Calls } from './calls.js'
import { ReconnectingSocket } from './reconnecting-socket.js'
import { milliseconds, socketUrl, webSocketClass, type CallArgs, type ClientOptions } from './options.js'
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

type Listener = (...args: never[]) => void

const GROUP_NAME = /^[a-zA-Z\d\-_.]{1,99}$/
// A join refused for one of the layer's own failures is tried again on the same socket: the server
// may recover. Any other refusal (canJoin() said no, or threw) ends the subscription.
const RETRIABLE = new Set(['FST_CHANNELS_LAYER_TIMEOUT', 'FST_CHANNELS_LAYER_CLOSED', 'FST_CHANNELS_REMOTE_FAILED'])

export class ChannelsClient<Api extends ApiShape = ApiShape> {
  readonly #callTimeout: number
  readonly #socket: ReconnectingSocket
  #state: ClientState = 'connecting'
  readonly #listeners = { state: new Set<Listener>(), error: new Set<Listener>() }
  readonly #subs = new Map<string, GroupSubscription<never>>()
  /** Answers still to come to joins that were left before they were answered. */
  readonly #stale = new Map<string, number>()
  readonly #calls = new Calls()
  /** A call sent went unanswered: the socket is checked (reconnecting-socket.ts). */
  readonly #callTimedOut = (): void => { this.#socket.check() }

  constructor (url: string, options: ClientOptions = {}) {
    // Every option is checked before the first socket opens, the URL and the class first.
    const href = socketUrl(url)
    const WebSocket = webSocketClass(options)
    this.#callTimeout = milliseconds(options.callTimeout, 10_000, 'callTimeout')
    this.#socket = new ReconnectingSocket(href, WebSocket, options, {
      state: () => this.#state,
      opened: () => { this.#opened() },
      frame: data => { this.#frame(data) },
      dropped: () => { this.#dropped() },
      reconnecting: detail => { this.#setState('reconnecting', detail) },
      report: err => { this.#report(err) }
    })
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
    if (typeof group !== 'string' || !GROUP_NAME.test(group)) throw new ChannelsClientError(INVALID_NAME, `invalid group name ${JSON.stringify(group)}`)
    if (this.#subs.has(group)) throw new ChannelsClientError(ALREADY_JOINED, `already in group "${group}": leave() it first`)
    const since = handlers.since
    if (since !== undefined && since !== null && !isPosition(since)) {
      throw new ChannelsClientError(INVALID_OPTION, '"since" must be a position { offset, epoch } (a subscription\'s `position`), or null')
    }
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
      return this.#calls.add(action, args, timeout, this.#socket.send, this.#callTimedOut) as Promise<Api[K]['result']>
    } catch (err) {
      return Promise.reject(new ChannelsClientError(INVALID_ARGS, `arguments of "${action}" are not JSON: ${String(err)}`))
    }
  }

  /** Closes the socket for good: pending calls and joins are rejected with FST_CHANNELS_CLIENT_CLOSED. */
  close (): void {
    if (this.#state === 'closed') return
    this.#setState('closed', {})
    const closed = new ChannelsClientError(CLIENT_CLOSED, 'the client was closed')
    for (const sub of this.#subs.values()) {
      clearTimeout(sub.retryTimer)
      if (!sub.everJoined) sub.fail(closed)
    }
    this.#subs.clear()
    this.#calls.reject(closed, false)
    this.#socket.close()
  }

  // --- the socket -------------------------------------------------------------------------------

  #opened (): void {
    // Joins and waiting calls go out before the listeners hear of it: a join they make is sent once.
    this.#state = 'open'
    for (const sub of this.#subs.values()) this.#sendJoin(sub)
    this.#calls.sendWaiting(this.#socket.send)
    this.#setState('open', {})
  }

  #dropped (): void {
    this.#stale.clear()
    for (const sub of this.#subs.values()) {
      sub.joined = false
      sub.awaiting = 0
      clearTimeout(sub.retryTimer)
    }
    this.#calls.reject(new ChannelsClientError(CONNECTION_LOST, 'the connection dropped before the reply'), true)
  }

  #send (frame: object): void {
    this.#socket.send(JSON.stringify(frame))
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
    if (frame.op === 'pong') {
      // It was heard: that is all a pong says.
      this.#socket.answered()
      return
    }
    const group = frame.group
    if (group === undefined) {
      if (frame.op === 'error') this.#report(new ChannelsClientError(frame.code, frame.message))
      return
    }
    const sub = this.#subs.get(group)
    if (frame.op === 'joined' && frame.refresh === true) {
      // The presence list again, unasked: no join's answer. Sent before the server read a leave
      // and a join of ours, it is the membership's before: the join's answer will bring the list.
      if (sub?.joined === true && sub.awaiting === 0 && (this.#stale.get(group) ?? 0) === 0) sub.onPresenceList(frame)
      return
    }
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
      const delay = this.#socket.backoff(++sub.retries)
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
