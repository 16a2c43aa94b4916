/**
 * One long-lived HTTP response as the connection's socket (socket.ts), for `AsyncHttpConsumer`:
 * the same lifecycle, handler queue, flow control and send policy as a WebSocket, written as a
 * response body (server-sent events, a long poll).
 *
 * How the socket's operations map onto the response:
 * - `send(data)`: a body chunk; the head goes first (200, no headers of its own) unless
 *   `writeHead()` sent one. A text is written as bytes shared with the responses it went to just
 *   before (shared-encoding.ts): on a chunked body, the whole chunk, straight to the TCP socket
 *   where `res.write()` would write it there too (internals.ts).
 * - `close(code)`: the end of the response. Before the head: an error status instead, 503 while
 *   the server shuts down (1001), else 500. After it: the body ends — but a slow reader (1008 for
 *   that reason) has its socket destroyed, since ending would wait for it to read what is queued.
 * - `terminate()`: the socket is destroyed.
 * - `drained()`: an ended body still leaving for a reader behind (`readyState` 2, closing, meanwhile,
 *   so the closing grace drops a reader that takes too long): the server's shutdown waits for it,
 *   which would otherwise cut the body off with the idle connections it closes.
 * - `ping()`, for the heartbeat: on an event stream, a comment; its "pong" is the comment reaching
 *   the kernel, so a reader stuck more than a heartbeat interval behind is terminated, as a
 *   WebSocket peer that does not answer would be. Any other body cannot take filler: answered at
 *   once, and TCP alone notices a dead peer.
 * - 'close': the response closed before it was ended (the client went away: 1006), or after.
 * - No 'message', no 'error', and `pause()`/`resume()` do nothing: an HTTP consumer reads no frames.
 *
 * The reply is hijacked: Fastify's onSend hooks do not run (as for a WebSocket upgrade). Headers
 * that earlier hooks set on the reply (CORS, for one) are kept in the head.
 */
import { STATUS_CODES, type OutgoingHttpHeaders, type ServerResponse } from 'node:http'
import type { FastifyReply } from 'fastify'
import type { Socket } from 'node:net'
import type { ConnectionSocket } from './socket.js'
import { EVENT_STREAM_HEADERS, HEARTBEAT_COMMENT, isEventStream } from '../server-sent-events.js'
import { encodedOnce } from './shared-encoding.js'
import { chunkedBodySocket } from '../internals.js'
import { SLOW_READER_REASON } from './outbound.js'

type Listener = (...args: never[]) => unknown

/** The UTF-8 bytes of the last text sent (an event for every member of a group): encoded once. */
const sharedBytes = encodedOnce(text => Buffer.from(text))
/** The same as one chunk of a chunked body (size line, bytes, CRLF), for the socket directly. */
const sharedChunk = encodedOnce(text => {
  const length = Buffer.byteLength(text)
  const size = `${length.toString(16)}\r\n`
  const chunk = Buffer.allocUnsafe(size.length + length + 2)
  chunk.write(size, 0, 'latin1')
  chunk.write(text, size.length, 'utf8')
  chunk.write('\r\n', size.length + length, 'latin1')
  return chunk
})

export class ResponseSocket implements ConnectionSocket {
  readonly #reply: FastifyReply
  readonly #res: ServerResponse
  #started = false
  #eventStream = false
  // The response is over: ended or closed here (the code), or closed under us.
  #over = false
  #clientGone = false
  // Ended with body still queued for the client, until the response's 'finish' (true), or its
  // socket's end before it (false).
  #ending: Promise<boolean> | null = null
  #cutOff = false
  #onClose: ((code: number) => void) | null = null
  #onPong: (() => void) | null = null

  constructor (reply: FastifyReply) {
    reply.hijack()
    this.#reply = reply
    this.#res = reply.raw
    const gone = (): void => {
      if (this.#over) return
      this.#over = true
      this.#clientGone = true
      this.#onClose?.call(this, 1006)
    }
    this.#res.once('close', gone)
    this.#res.on('error', gone)
  }

  /** Whether the head has been sent. */
  get started (): boolean {
    return this.#started
  }

  get bufferedAmount (): number {
    return this.#res.writableLength
  }

  /** 2 (closing) while an ended response's body is still leaving: dropped if that takes longer than the grace. */
  get readyState (): number {
    if (!this.#over) return 1
    return this.#ending === null ? 3 : 2
  }

  /** Resolves once an ended response's body has left for the client (true), or its socket is gone first (false). */
  drained (): Promise<boolean> {
    return this.#ending ?? settled
  }

  on (event: 'message' | 'pong' | 'ping' | 'error' | 'close', listener: Listener): this {
    if (event === 'close') {
      const onClose = listener as (code: number) => void
      this.#onClose = onClose
      // Gone before the connection listened: tell it, once it has finished attaching.
      if (this.#clientGone) queueMicrotask(() => onClose.call(this, 1006))
    } else if (event === 'pong') {
      this.#onPong = listener as () => void
    }
    return this
  }

  /** Sends the head: `headers` over those earlier hooks set on the reply. */
  writeHead (status: number, headers: OutgoingHttpHeaders): void {
    const head: Record<string, OutgoingHttpHeaders[string]> = { ...this.#reply.getHeaders() }
    for (const [name, value] of Object.entries(headers)) head[name.toLowerCase()] = value
    this.#eventStream = isEventStream(head['content-type'])
    // However the stream's head was chosen, its events must reach the reader as they are written:
    // what the app left unset of the event-stream head (no cache, no nginx buffering) is added.
    if (this.#eventStream) for (const [name, value] of Object.entries(EVENT_STREAM_HEADERS)) head[name] ??= value
    this.#res.writeHead(status, head)
    // Written now, not with the first chunk: an EventSource opens (and a proxy sees an answer)
    // before the first event.
    this.#res.flushHeaders()
    this.#started = true
  }

  send (data: string | Uint8Array): void {
    if (!this.#started) this.writeHead(200, {})
    if (typeof data !== 'string') {
      this.#res.write(data)
      return
    }
    // An empty text goes to res.write(), which skips it: as a chunk of size 0 it would end the body.
    const tcp = data.length === 0 ? null : chunkedBodySocket(this.#res)
    const chunk = tcp === null ? undefined : sharedChunk(data)
    if (tcp === null || chunk === undefined) {
      this.#res.write(sharedBytes(data) ?? data)
      return
    }
    // What res.write() does, in one write: the chunks of one tick leave in one system call. A
    // burst written without a turn of the event loop (a loop of awaited sends replaying a
    // history) would not reach the tick: once a batch is large it goes at once, so a reader that
    // keeps up is not taken for a slow one while all of it waits here.
    if (!tcp.writableCorked) {
      tcp.cork()
      process.nextTick(uncork, tcp)
    }
    tcp.write(chunk)
    if (tcp.writableLength >= WRITE_BATCH_BYTES) tcp.uncork()
  }

  close (code: number, reason: string): void {
    if (this.#over) return
    if (!this.#started) {
      this.refuse(code === 1001 ? 503 : 500, reason)
      return
    }
    this.#over = true
    // Not every 1008 is a slow reader: one over maxGroupsPerConnection can read what was sent.
    if (code === 1008 && reason === SLOW_READER_REASON) this.#res.destroy()
    else this.#end(code === 1001)
  }

  /**
   * Ends the body. At shutdown (`last`) the connection goes with it: kept alive, it would carry the
   * EventSource's reconnect straight back to this closing server, whose answer (Fastify's 503
   * while it closes) ends an EventSource for good; on a new connection it reaches another process,
   * or none (refused, and the EventSource tries again).
   */
  #end (last = false): void {
    const res = this.#res
    const socket = res.socket
    if (last && socket !== null) res.once('finish', () => { socket.end() })
    res.end()
    if (res.writableFinished || res.destroyed) return
    this.#ending = new Promise(resolve => {
      const done = (left: boolean): void => {
        this.#ending = null
        resolve(left)
      }
      // Node emits 'finish' for a response destroyed with its body queued as well: a body cut
      // off here (terminate()) did not leave.
      res.once('finish', () => { done(!this.#cutOff) })
      res.once('close', () => { done(false) })
    })
  }

  /**
   * Answers with an error status and a JSON body as Fastify's would, before any head was sent,
   * with the headers the route's hooks set (CORS, for one: without it a browser hides the status).
   */
  refuse (status: number, message: string): void {
    if (this.#over || this.#started) return
    this.#over = true
    const body = JSON.stringify({ statusCode: status, error: STATUS_CODES[status] ?? 'Error', message })
    const head: Record<string, OutgoingHttpHeaders[string]> = { ...this.#reply.getHeaders(), 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) }
    this.#res.writeHead(status, head)
    this.#res.end(body)
  }

  terminate (): void {
    if (this.#ending !== null) this.#cutOff = true
    this.#over = true
    this.#res.destroy()
  }

  ping (): void {
    if (this.#eventStream && !this.#over) {
      this.#res.write(HEARTBEAT_COMMENT, (err?: Error | null) => { if (err == null) this.#onPong?.call(this) })
    } else {
      queueMicrotask(() => { this.#onPong?.call(this) })
    }
  }

  pause (): void {}
  resume (): void {}
}

const settled = Promise.resolve(true)

// The most a batch of chunks holds back before it is written.
const WRITE_BATCH_BYTES = 64 * 1024

function uncork (tcp: Socket): void {
  tcp.uncork()
}
