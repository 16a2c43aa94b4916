/**
 * `fastify-channels/testing`: Channels' `WebsocketCommunicator`, over `app.injectWS`, so a test
 * talks to a consumer through a real WebSocket without opening a network port.
 */
import type { FastifyInstance } from 'fastify'
import type { WebSocket, RawData } from 'ws'
import type { Connection } from './connection/connection.js'
import { connectionOfInjection } from './connection/binding.js'
import { toBuffer } from './connection/socket.js'
import { injectionMarker, markedUpgradeContext, refusedHandshakeStatus } from './internals.js'
import { checkSendableCloseCode } from './connection/close-codes.js'
import { InvalidOptionError } from './errors.js'

/**
 * Any Fastify app: with its own logger (`loggerInstance: pino()`), a type provider or an HTTPS
 * server, an app's FastifyInstance has other type arguments than the defaults.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyFastifyInstance = FastifyInstance<any, any, any, any, any>

export interface CommunicatorOptions {
  headers?: Record<string, string> | undefined
  subprotocols?: string[] | undefined
}

export interface ConnectResult {
  connected: boolean
  /** The subprotocol the consumer accepted with; null when none. */
  subprotocol: string | null
  /**
   * 101 when connected, else the HTTP status of the refusal; 101 with `connected: false` when the
   * consumer accepted with none of the subprotocols offered, which a browser refuses.
   */
  status: number
}

export interface CloseEvent { code: number; reason: string }

const DEFAULT_TIMEOUT = 1000
// What disconnect() takes for a connection that drops without a close frame.
const ABRUPT = 1006
const NOT_CONNECTED = 'not connected: call connect() first'

export class WebsocketCommunicator {
  readonly app: AnyFastifyInstance
  readonly path: string
  readonly options: CommunicatorOptions
  /** Resolves when the connection has closed, with the close code and reason the client saw. */
  readonly closed: Promise<CloseEvent>

  #ws: WebSocket | null = null
  #serverSocket: WebSocket | null = null
  #connection: Connection | undefined
  #inbox: Array<string | Buffer> = []
  #waiters: Array<() => void> = []
  #closeEvent: CloseEvent | null = null
  // connect() since it was called (null before): disconnect() waits for it, then closes what it opened.
  #connecting: Promise<unknown> | null = null
  #resolveClosed!: (event: CloseEvent) => void

  constructor (app: AnyFastifyInstance, path: string, options: CommunicatorOptions = {}) {
    this.app = app
    this.path = path
    this.options = options
    this.closed = new Promise(resolve => { this.#resolveClosed = resolve })
  }

  async connect (timeout = DEFAULT_TIMEOUT): Promise<ConnectResult> {
    // One communicator is one connection, as in Channels: a second would be left open unseen.
    if (this.#connecting !== null) throw new Error('connect() was called already: make another communicator for another connection')
    const connecting = this.#connect(timeout)
    this.#connecting = connecting.then(() => {}, () => {})
    return await connecting
  }

  async #connect (timeout: number): Promise<ConnectResult> {
    // The whole call is timed, the app's loading too, as Channels' connect(timeout) is.
    const deadline = performance.now() + timeout
    try {
      await withTimeout(new Promise<void>((resolve, reject) => { this.app.ready(err => { if (err != null) reject(err); else resolve() }) }), timeout, 'app.ready()')
    } catch (err) {
      // An app that failed to load, or took longer: this communicator is done, its reads say so.
      this.#onClose(1006, `connect() failed: ${err instanceof Error ? err.message : String(err)}`)
      throw err
    }
    const tag = {}
    let subprotocol: string | null = null
    const onHeaders = (headers: string[], req: object): void => {
      if (injectionMarker(req) !== tag) return
      const line = headers.find(h => h.toLowerCase().startsWith('sec-websocket-protocol:'))
      if (line !== undefined) subprotocol = line.slice(line.indexOf(':') + 1).trim()
    }
    // injectWS's in-memory duplex never emits 'close' as a TCP socket does once both sides have
    // ended, so the server would wait for ws' close timeout: end the server side as TCP would.
    const onConnection = (socket: WebSocket, req: object): void => {
      if (injectionMarker(req) === tag) this.#serverSocket = socket
    }
    const wss = this.app.websocketServer
    // Two listeners per connect() under way: a test that opens dozens at once is no leak.
    const limit = wss.getMaxListeners()
    if (limit !== 0) wss.setMaxListeners(limit + 1)
    wss.on('headers', onHeaders)
    wss.on('connection', onConnection)
    // Named in lower case, as Node names a real request's (`Cookie` is `cookie`), and with a Host
    // unless the test gives one, as app.inject() does: origin checks compare with it.
    const headers: Record<string, string> = { host: 'localhost:80' }
    for (const [name, value] of Object.entries(this.options.headers ?? {})) headers[name.toLowerCase()] = value
    if (this.options.subprotocols !== undefined && this.options.subprotocols.length > 0) {
      headers['sec-websocket-protocol'] = this.options.subprotocols.join(', ')
    }
    let late: Promise<void> = Promise.resolve()
    const injected = this.app.injectWS(this.path, markedUpgradeContext(headers, tag), {
      onInit: (ws) => {
        // injectWS builds its client without ws' defaults, so it would not answer pings as every browser does.
        ws.on('ping', (data: Buffer) => ws.pong(data))
        ws.on('message', (data: RawData, binary: boolean) => this.#push(binary ? toBuffer(data) : toBuffer(data).toString('utf8')))
        ws.on('close', (code: number, reason: Buffer) => this.#onClose(code, reason.toString('utf8')))
      }
    })
    try {
      const ws = await withTimeout(injected, Math.max(0, deadline - performance.now()), `connect to ${this.path}`, timeout)
      this.#ws = ws
      if (subprotocol === null && (this.options.subprotocols?.length ?? 0) > 0) {
        // As a browser or ws' client does: an answer with none of the offered subprotocols fails
        // the connection (the consumer had accepted: its disconnect() runs with 1006).
        ws.terminate()
        this.#onClose(1006, 'Server sent no subprotocol')
        return { connected: false, subprotocol: null, status: 101 }
      }
      return { connected: true, subprotocol, status: 101 }
    } catch (err) {
      const status = refusedHandshakeStatus(err)
      if (status !== undefined) {
        this.#onClose(1006, 'handshake refused')
        return { connected: false, subprotocol: null, status }
      }
      if (err instanceof ConnectTimeoutError) {
        // As Channels cancels the application: this communicator is done, and a consumer that
        // accepts after all is closed at once, so that disconnect() can wait for its end.
        this.#onClose(1006, 'connect() timed out')
        // connect() still running is told through its `signal`, as if the client had gone.
        connectionOfInjection(tag)?.clientGone()
        late = injected.then(ws => {
          // Once the closing handshake is done, the server's side ends too, as after any close.
          ws.once('close', () => { this.#serverSocket?.terminate() })
          ws.close(1000, 'the communicator gave up waiting')
        }, () => {})
      }
      throw err
    } finally {
      // The connection the handshake made, accepted or refused: disconnect() waits for its end.
      this.#connection = connectionOfInjection(tag)
      wss.off('headers', onHeaders)
      // A consumer that accepts after a timeout brings its server socket later.
      void late.then(() => {
        wss.off('connection', onConnection)
        const now = wss.getMaxListeners()
        if (limit !== 0 && now > 0) wss.setMaxListeners(now - 1)
      })
    }
  }

  async sendTo (data: string | Uint8Array): Promise<void> {
    if (typeof data !== 'string' && !(data instanceof Uint8Array)) {
      throw new InvalidOptionError(`sendTo(data) takes a string (a text frame) or bytes (a binary frame), got ${data === null ? 'null' : typeof data}`)
    }
    const ws = this.#open()
    await new Promise<void>((resolve, reject) => ws.send(data, { binary: typeof data !== 'string' }, err => err ? reject(err) : resolve()))
  }

  async sendJsonTo (content: unknown): Promise<void> {
    const text = JSON.stringify(content) as string | undefined
    // JSON.stringify(undefined), or of a function: no text at all, which must not go as a frame.
    if (typeof text !== 'string') throw new InvalidOptionError(`sendJsonTo(content) takes a value JSON can encode, got ${typeof content}`)
    await this.sendTo(text)
  }

  /**
   * The next frame: a string for text, a Buffer for binary. Rejects on timeout or when closed.
   * `receiveFrom<string>()` states which kind the test expects; it is not checked.
   */
  async receiveFrom<T extends string | Buffer = string | Buffer> (timeout = DEFAULT_TIMEOUT): Promise<T> {
    this.#connectedFirst()
    const deadline = performance.now() + timeout
    while (this.#inbox.length === 0) {
      if (this.#closeEvent !== null) {
        throw new Error(`${closedMessage(this.#closeEvent)} before a frame arrived`)
      }
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`no frame received within ${timeout} ms`)
      await this.#wait(left)
    }
    return this.#inbox.shift() as T
  }

  /**
   * The next frame, a text frame decoded as JSON. `receiveJsonFrom<{ message: string }>()` states
   * the shape the test expects, as `JSON.parse` would; it is not checked.
   */
  async receiveJsonFrom<T = unknown> (timeout = DEFAULT_TIMEOUT): Promise<T> {
    const frame = await this.receiveFrom(timeout)
    if (typeof frame !== 'string') throw new Error('expected a text frame with JSON, got a binary frame')
    return JSON.parse(frame) as T
  }

  /**
   * True when nothing arrives within `timeout` ms: no frame, and no close (as in Channels, where
   * the close is in the output queue too). Frames and a close already received count.
   */
  async receiveNothing (timeout = 100): Promise<boolean> {
    this.#connectedFirst()
    if (this.#inbox.length > 0 || this.#closeEvent !== null) return false
    await new Promise(resolve => setTimeout(resolve, timeout))
    return this.#inbox.length === 0 && this.#closeEvent === null
  }

  /**
   * Closes from the client side and waits until the consumer's `disconnect()` has finished. Code
   * 1006 drops the connection without a close frame, as a lost network does.
   */
  async disconnect (code = 1000, reason = '', timeout = DEFAULT_TIMEOUT): Promise<void> {
    this.#connectedFirst()
    if (code !== ABRUPT) checkSendableCloseCode(code)
    // Called while connect() runs (not awaited): what it opens is what this closes.
    await this.#connecting
    if (this.#ws !== null && this.#closeEvent === null) {
      if (code === ABRUPT) this.#ws.terminate()
      else this.#ws.close(code, reason)
    }
    await withTimeout(this.closed, timeout, 'close handshake')
    if (this.#connection !== undefined) await withTimeout(this.#connection.finished, timeout, 'consumer disconnect()')
  }

  /** Resolves when the server side has finished with this connection (disconnect and clean-up done). */
  async serverFinished (timeout = DEFAULT_TIMEOUT): Promise<void> {
    this.#connectedFirst()
    if (this.#connection !== undefined) await withTimeout(this.#connection.finished, timeout, 'consumer disconnect()')
  }

  /** What reads the connection needs connect() first (refused or timed out counts: it closed). */
  #connectedFirst (): void {
    if (this.#connecting === null) throw new Error(NOT_CONNECTED)
  }

  #open (): WebSocket {
    // A refused or failed connect() closed the communicator: its reason says why.
    if (this.#closeEvent !== null) throw new Error(closedMessage(this.#closeEvent))
    if (this.#ws === null) throw new Error(NOT_CONNECTED)
    return this.#ws
  }

  #push (frame: string | Buffer): void {
    this.#inbox.push(frame)
    for (const wake of this.#waiters.splice(0)) wake()
  }

  #onClose (code: number, reason: string): void {
    if (this.#closeEvent !== null) return
    this.#closeEvent = { code, reason }
    this.#serverSocket?.terminate()
    this.#resolveClosed(this.#closeEvent)
    for (const wake of this.#waiters.splice(0)) wake()
  }

  #wait (ms: number): Promise<void> {
    return new Promise(resolve => {
      const timer = setTimeout(done, ms)
      function done (): void { clearTimeout(timer); resolve() }
      this.#waiters.push(done)
    })
  }
}

class ConnectTimeoutError extends Error {}

/** How a read or a send says the connection has closed: `connection closed (code 1006: handshake refused)`. */
function closedMessage ({ code, reason }: CloseEvent): string {
  return `connection closed (code ${code}${reason === '' ? '' : ': ' + reason})`
}

/** `promise`, or a rejection after `ms`; the message names the caller's `timeout` (what is left of it may be less). */
async function withTimeout<T> (promise: Promise<T>, ms: number, what: string, timeout = ms): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new ConnectTimeoutError(`timed out after ${timeout} ms waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

