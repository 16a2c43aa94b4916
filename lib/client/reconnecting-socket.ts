/**
 * The client's WebSocket, which comes back by itself: when a socket is opened, when one is given
 * up, and how long the next attempt waits. The client (client.ts) speaks the protocol over it and
 * owns the state; this tells it when a socket opened or went away.
 *
 * - One socket at a time: a new one is opened only once the previous one has fired `close`.
 * - Reconnects with exponential backoff and full jitter: attempt n waits a random time in
 *   [0, min(maxDelay, minDelay·2ⁿ⁻¹)], so clients of a restarted server spread out. The count goes
 *   back to 0 only after a socket stayed open for STABLE_MS, so a server that accepts and drops at
 *   once is not hammered.
 */
import type { ClientState, StateDetail } from './client.js'
import { host, milliseconds, type ClientOptions, type WebSocketConstructor } from './options.js'
import { ChannelsClientError, INVALID_OPTION } from './errors.js'

interface Socket {
  readonly readyState: number
  onopen: (() => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number, reason: string }) => void) | null
  onerror: ((event: unknown) => void) | null
  send (data: string): void
  close (code?: number, reason?: string): void
  /** ws' (Node): ends the connection without the closing handshake. */
  terminate?: () => void
}

/** What the socket tells the client, and asks of it. */
export interface SocketEvents {
  /** No socket is opened once the client is 'closed', and nothing is written unless it is 'open'. */
  state (): ClientState
  opened (): void
  frame (data: unknown): void
  /** The socket went away: what was on it is lost. `reconnecting` follows unless the client is closed. */
  dropped (): void
  reconnecting (detail: StateDetail): void
  report (err: unknown): void
}

const OPEN = 1
const STABLE_MS = 5000
// The constructor's third argument, which only ws' WebSocket (Node) reads (browsers and Node's own
// ignore it): one message event per turn of the event loop, as a browser dispatches them. Else ws
// hands over every frame of a TCP chunk at once, and a call's reply resumes its `await` only after
// `message()` has had what the call's action sent, which the wire has after the reply.
const ONE_MESSAGE_PER_TURN = { allowSynchronousEvents: false }
type SocketWithOptions = new (url: string, protocols: string | string[], options: object) => object
// How long a new socket waits for the `close` of one given up: on a link that is alive its closing
// handshake takes a round trip, so the server sees the old connection end first; on a dead one a
// browser holds that `close` until its own timeout, a minute in Chromium, and no longer matters.
const GIVEN_UP_CLOSE_WAIT_MS = 1000
// How long `close()` waits for the server's answer to its close frame before it ends the socket
// where it can (ws' `terminate()`): on a live link the answer takes a round trip.
const CLOSE_ANSWER_WAIT_MS = 1000

export class ReconnectingSocket {
  readonly #url: string
  readonly #WebSocket: WebSocketConstructor
  readonly #protocols: string | string[] | undefined
  readonly #minDelay: number
  readonly #maxDelay: number
  readonly #connectTimeout: number
  readonly #heartbeat: number
  readonly #events: SocketEvents
  // Whether the socket said anything since the heartbeat last looked, and whether it was asked.
  #heard = false
  #pinged = false
  #socket: Socket | null = null
  /**
   * A socket given up before its `close` came (offline, or silent past the heartbeat): no new one
   * until it has, or GIVEN_UP_CLOSE_WAIT_MS have passed.
   */
  #closing: Socket | null = null
  #due = false
  #attempt = 0
  /** Offline at the last retry due, which was skipped: the next is tried even so. */
  #skippedOffline = false
  /** Why the current socket failed before it opened, when it said (a refused handshake), or 'connect timeout'. */
  #refusedWith = ''
  #timers: { retry?: ReturnType<typeof setTimeout>, stable?: ReturnType<typeof setTimeout>, connect?: ReturnType<typeof setTimeout>, beat?: ReturnType<typeof setInterval>, check?: ReturnType<typeof setTimeout>, closing?: ReturnType<typeof setTimeout> } = {}
  /** Writes a frame; false when there is no open socket. */
  readonly send = (text: string): boolean => {
    if (this.#events.state() !== 'open' || this.#socket === null) return false
    this.#socket.send(text)
    return true
  }
  // Back online: the next attempt need not wait out the backoff, nor a socket given up offline,
  // whose `close` a browser may hold for a minute (its closing handshake on a dead connection).
  readonly #online = (): void => {
    const waiting = this.#due || this.#timers.retry !== undefined
    this.#forgetClosing()
    this.#due = false
    if (waiting) this.#retryIn(Math.random() * this.#minDelay)
  }
  // Offline, a browser keeps the socket "open" and silent, and holds its close until back online:
  // the client says so at once and re-joins from where it was once a new socket opens.
  readonly #offline = (): void => { this.#giveUp('offline') }
  // A page kept in the back/forward cache runs nothing, but a browser may keep its socket open:
  // the server would keep it present in its groups and go on sending to it. The client closes it
  // as the page is hidden, makes no attempt while it is, and opens a new one at once when the
  // page is shown again.
  #cached = false
  readonly #pageHidden = (event: Event): void => {
    if (!persisted(event)) return
    this.#cached = true
    this.#giveUp('page hidden')
  }

  readonly #pageShown = (event: Event): void => {
    if (!persisted(event) || !this.#cached) return
    this.#cached = false
    this.#online()
  }
  // Every heartbeat: a socket silent since the last beat (one to two heartbeats) is asked (ping);
  // still silent at the next, it is dead (a network that drops packets without closing anything),
  // which TCP would notice in minutes.
  readonly #beat = (): void => {
    if (this.#heard) {
      this.#heard = this.#pinged = false
    } else if (!this.#pinged) {
      this.#pinged = this.send('{"op":"ping"}')
    } else {
      // One turn more first: after a stall of this page or process itself (a long task), timers
      // run before what arrived meanwhile is read, and the pong may be waiting there.
      const socket = this.#socket
      setTimeout(() => {
        if (socket === this.#socket && !this.#heard && this.#pinged) this.#giveUp('heartbeat timeout')
      }, 0)
    }
  }

  /**
   * A call went unanswered: asks the server at once whether it hears this socket (a `ping`, which
   * it answers ahead of any action). Frames still arriving say nothing of the other way: a network
   * that loses only what the client sends leaves the heartbeat content. No `pong` within a
   * heartbeat, the socket is given up and the client reconnects.
   */
  check (): void {
    if (this.#timers.check !== undefined || !this.send('{"op":"ping"}')) return
    const socket = this.#socket
    this.#timers.check = setTimeout(() => {
      this.#timers.check = undefined
      if (socket === this.#socket) this.#giveUp('no answer to a ping')
    }, this.#heartbeat)
  }

  /** The server answered a `ping`: it hears this socket. */
  answered (): void {
    clearTimeout(this.#timers.check)
    this.#timers.check = undefined
  }

  /** Opens the first socket. `url` and `WebSocket` come checked: the client checks them before its own options. */
  constructor (url: string, WebSocket: WebSocketConstructor, options: ClientOptions, events: SocketEvents) {
    this.#url = url
    this.#WebSocket = WebSocket
    this.#protocols = options.protocols
    this.#minDelay = milliseconds(options.minDelay, 500, 'minDelay')
    this.#maxDelay = milliseconds(options.maxDelay, 30_000, 'maxDelay')
    this.#connectTimeout = milliseconds(options.connectTimeout, 10_000, 'connectTimeout')
    this.#heartbeat = milliseconds(options.heartbeat, 25_000, 'heartbeat')
    this.#events = events
    this.#connect(true)
    // A browser that is back online need not wait out the backoff.
    host.addEventListener?.('online', this.#online)
    host.addEventListener?.('offline', this.#offline)
    host.addEventListener?.('pagehide', this.#pageHidden)
    host.addEventListener?.('pageshow', this.#pageShown)
  }

  /** Attempt n's wait: a random time in [0, min(maxDelay, minDelay·2ⁿ⁻¹)] (exponential backoff, full jitter). */
  backoff (attempt: number): number {
    return Math.random() * Math.min(this.#maxDelay, this.#minDelay * 2 ** Math.min(attempt - 1, 30))
  }

  /** For good, once the client is closed. */
  close (): void {
    host.removeEventListener?.('online', this.#online)
    host.removeEventListener?.('offline', this.#offline)
    host.removeEventListener?.('pagehide', this.#pageHidden)
    host.removeEventListener?.('pageshow', this.#pageShown)
    for (const timer of Object.values(this.#timers)) clearTimeout(timer)
    this.#timers = {}
    // Forgotten at once: a frame still arriving on it is not handled.
    const socket = this.#socket
    this.#socket = null
    if (socket === null) return
    socket.close(1000)
    // ws (Node) holds the socket, and the process, until the server answers the close, for up to
    // 30 s: a server that is not reading (busy, or gone silent) gets CLOSE_ANSWER_WAIT_MS.
    if (typeof socket.terminate === 'function') {
      const ending = setTimeout(() => { socket.terminate?.() }, CLOSE_ANSWER_WAIT_MS)
      socket.onclose = () => { clearTimeout(ending) }
    }
  }

  /** `first`, from the constructor: a WebSocket constructor that throws is a bad option, thrown to the caller. */
  #connect (first = false): void {
    if (this.#socket !== null || this.#events.state() === 'closed') return
    if (this.#closing !== null || this.#cached) {
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
      // [] for none, not undefined: followed by another argument, a browser sends `undefined` as
      // the string "undefined" (Sec-WebSocket-Protocol: undefined), and the handshake fails.
      socket = new (this.#WebSocket as SocketWithOptions)(this.#url, this.#protocols ?? [], ONE_MESSAGE_PER_TURN) as Socket
    } catch (err) {
      // The same URL and protocols every time: what the first attempt refused (a malformed
      // subprotocol, a URL this page may not open) every retry would refuse too.
      if (first) throw new ChannelsClientError(INVALID_OPTION, `new WebSocket() refused ${this.#url}: ${String(err)}`)
      this.#events.report(err)
      this.#scheduleRetry({})
      return
    }
    this.#socket = socket
    socket.onopen = () => { this.#opened(socket) }
    socket.onmessage = event => {
      if (socket !== this.#socket) return
      this.#heard = true
      this.#events.frame(event.data)
    }
    socket.onclose = event => {
      if (socket === this.#closing) this.#closingOver()
      else this.#closed(socket, event.code, event.reason)
    }
    // A close follows. What a socket that never opened says of why (ws: "Unexpected server
    // response: 401"; a browser says nothing) goes into the close's reason, which has none.
    socket.onerror = event => {
      const message = (event as { message?: unknown } | undefined)?.message
      if (typeof message === 'string' && socket === this.#socket && socket.readyState !== OPEN && this.#refusedWith === '') this.#refusedWith = message
    }
    this.#refusedWith = ''
    this.#timers.connect = setTimeout(() => {
      if (socket.readyState === OPEN) return
      this.#refusedWith = 'connect timeout'
      socket.close()
    }, this.#connectTimeout)
  }

  #opened (socket: Socket): void {
    if (socket !== this.#socket) return
    clearTimeout(this.#timers.connect)
    this.#timers.stable = setTimeout(() => { this.#attempt = 0 }, STABLE_MS)
    this.#heard = this.#pinged = false
    this.#timers.beat = setInterval(this.#beat, this.#heartbeat)
    this.#events.opened()
  }

  /**
   * Gives up a socket that cannot be heard: closed now as far as the client goes (4000, `reason`),
   * and a new one is opened once it has fired `close` — at once where it can be ended without the
   * closing handshake (ws' `terminate()`) — or GIVEN_UP_CLOSE_WAIT_MS later, whichever comes first.
   */
  #giveUp (reason: string): void {
    const socket = this.#socket
    if (socket === null || this.#events.state() !== 'open') return
    this.#closed(socket, 4000, reason)
    this.#closing = socket
    this.#timers.closing = setTimeout(() => { this.#closingOver() }, GIVEN_UP_CLOSE_WAIT_MS)
    if (typeof socket.terminate === 'function') socket.terminate()
    else socket.close(4000, reason)
  }

  /** The socket given up closed, or was waited for long enough: a new one may open. */
  #closingOver (): void {
    this.#forgetClosing()
    const due = this.#due
    this.#due = false
    if (due) this.#connect()
  }

  /** Whatever the socket given up does from now on, nothing waits for it (its frames and `close` are ignored). */
  #forgetClosing (): void {
    clearTimeout(this.#timers.closing)
    this.#timers.closing = undefined
    this.#closing = null
  }

  #closed (socket: Socket, code: number, reason: string): void {
    if (socket !== this.#socket) return
    this.#socket = null
    clearTimeout(this.#timers.connect)
    clearTimeout(this.#timers.stable)
    clearInterval(this.#timers.beat)
    this.answered()
    this.#events.dropped()
    if (this.#events.state() !== 'closed') this.#scheduleRetry({ code, reason: reason === '' ? this.#refusedWith : reason })
  }

  #scheduleRetry (detail: StateDetail): void {
    // Offline, the next attempt is the one made a `maxDelay` later anyway (#connect), or at once
    // back online: the backoff does not grow, and no wait comes before that one.
    const offline = host.navigator?.onLine === false
    const attempt = offline ? Math.max(1, this.#attempt) : ++this.#attempt
    const delay = offline ? this.#maxDelay : this.backoff(attempt)
    this.#events.reconnecting({ ...detail, attempt, delay })
    // A state listener may have closed the client.
    if (this.#events.state() !== 'reconnecting') return
    this.#skippedOffline = offline
    this.#retryIn(delay)
  }

  #retryIn (delay: number): void {
    clearTimeout(this.#timers.retry)
    this.#timers.retry = setTimeout(() => {
      this.#timers.retry = undefined
      this.#connect()
    }, delay)
  }
}

/** Whether a `pagehide` or `pageshow` is the page going into, or coming back from, the back/forward cache. */
function persisted (event: Event): boolean {
  return (event as Event & { persisted?: unknown }).persisted === true
}
