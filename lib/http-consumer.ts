/**
 * `AsyncHttpConsumer`: Channels' generic HTTP consumer, for responses that stay open — server-sent
 * events, a long poll — and take part in the channel layer as a WebSocket consumer does. It runs
 * on the same connection (connection.ts), with the HTTP response as its socket
 * (response-socket.ts): the same scope, `groups`, dispatch by `type`, ordering, limits, heartbeat,
 * shutdown and clean-up.
 *
 * Its life: the scope is built and `groups` joined after the route's hooks; `handle()` runs, and
 * layer messages that arrive meanwhile wait for it; after it returns, handlers get layer messages
 * until the response ends (`sendBody()` without `more`, the client going away, a failure, the
 * server shutting down); `disconnect()` runs once.
 *
 * Where this differs from Channels, on purpose: Channels runs `disconnect()` as soon as `handle()`
 * returns, so its consumer can never relay a layer message to a response that stays open (the
 * long poll in its own documentation does not work). Here a response that `handle()` started
 * stays open. One that `handle()` returns without starting is answered 500, as an ASGI server
 * answers an application that returned without a response.
 */
import type { OutgoingHttpHeaders } from 'node:http'
import { validateHeaderName, validateHeaderValue } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { HttpScope } from './scope.js'
import type { ResponseSocket } from './connection/response-socket.js'
import { kConnect, kDisconnect } from './connection/tasks.js'
import { sendFailure } from './connection/unawaited-failure.js'
import { answerNotRegistered, BaseConsumer, kConnection, kConsumerClass, kOutbound } from './base-consumer.js'
import { reserveNames } from './dispatch.js'
import { ConnectionClosedError, HttpResponseError, InvalidOptionError } from './errors.js'
import { EVENT_STREAM_HEADERS, encodeEvent, type ServerSentEvent } from './server-sent-events.js'

export type { ServerSentEvent } from './server-sent-events.js'

export const kRespondWith = Symbol('fastify-channels.respondWith')

export type HttpConsumerClass = new () => AsyncHttpConsumer

export type HttpRouteHandler = ((request: FastifyRequest, reply: FastifyReply) => Promise<void>) & {
  [kConsumerClass]: HttpConsumerClass
}

export interface SendHeadersOptions {
  /** Default 200. */
  status?: number | undefined
  /** Added to (and over) the headers the route's hooks set on the reply. */
  headers?: OutgoingHttpHeaders | undefined
}

export interface SendBodyOptions {
  /** `true`: more body follows and the response stays open. Default `false`: the response ends. */
  more?: boolean | undefined
}

const settled = Promise.resolve()

export class AsyncHttpConsumer extends BaseConsumer<HttpScope> {
  #response!: ResponseSocket

  /** The handler for an ordinary (GET) route: `app.get('/events/:room', Consumer.asHandler())`. */
  static asHandler (this: HttpConsumerClass): HttpRouteHandler {
    const handler = async function httpConsumerRoute (request: FastifyRequest, reply: FastifyReply): Promise<void> {
      // The fastify-channels plugin replaces this handler where it is registered.
      await answerNotRegistered(request, reply)
    }
    return Object.assign(handler, { [kConsumerClass]: this })
  }

  /**
   * Called once the scope is built and `groups` joined, with the request body Fastify parsed
   * (`undefined` for a GET). Start the response here (`sendHeaders()`, `sendEvent()` or
   * `sendBody()`); it may end here or stay open for the handlers of layer messages.
   */
  handle (body: unknown): void | Promise<void> {
    throw new HttpResponseError(`${this.constructor.name} must implement handle()`)
  }

  /**
   * Sends the status and headers at once. Optional: `sendBody()` sends a bare 200 first, and
   * `sendEvent()` an event stream's head. Rejects after the response has started.
   */
  sendHeaders (options: SendHeadersOptions = {}): Promise<void> {
    try {
      const { status = 200, headers = {} } = optionsObject('sendHeaders(options)', options)
      checkHead(status, headers)
      this.#live('sendHeaders()')
      if (this.#response.started) throw new HttpResponseError('sendHeaders() was called after the response had started')
      this.#response.writeHead(status, headers)
      // A status that has no body (204, the way to tell an EventSource to stop; 304): the response is whole.
      if (status === 204 || status === 304) this[kConnection].close(1000, '')
    } catch (err) {
      return sendFailure(err, this[kConnection])
    }
    return settled
  }

  /**
   * Writes `chunk` (a string or bytes); without `more: true` the response then ends, as in
   * Channels. Handed to the socket before this returns (no promise per chunk); rejects with
   * ConnectionClosedError once the response is over.
   */
  sendBody (chunk: string | Uint8Array, options: SendBodyOptions = {}): Promise<void> {
    try {
      const { more = false } = optionsObject('sendBody(chunk, options)', options)
      if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) {
        throw new InvalidOptionError(`sendBody(chunk) takes a string or bytes, got ${chunk === null ? 'null' : typeof chunk}`)
      }
      if (typeof more !== 'boolean') throw new InvalidOptionError('sendBody(chunk, { more }): more must be a boolean')
      this.#live('sendBody()')
      if (!this.#response.started) this.#response.writeHead(200, {})
      if (chunk.length > 0) this[kOutbound].send(chunk)
      if (!more) this[kConnection].close(1000, '')
    } catch (err) {
      return sendFailure(err, this[kConnection])
    }
    return settled
  }

  /**
   * Writes one server-sent event: `data` (a string, or anything else as JSON), with an optional
   * `event` name and `id` (the browser sends the last one back as `Last-Event-ID`). Starts the
   * response as an event stream if nothing was sent yet. A line break in `event` or `id` rejects
   * with InvalidEventError.
   */
  sendEvent (message: ServerSentEvent): Promise<void> {
    try {
      const text = encodeEvent(message)
      this.#live('sendEvent()')
      if (!this.#response.started) this.#response.writeHead(200, EVENT_STREAM_HEADERS)
      // An encoded event is never empty, and the response stays open: sendBody()'s checks are done.
      this[kOutbound].send(text)
    } catch (err) {
      return sendFailure(err, this[kConnection])
    }
    return settled
  }

  /** Runs exactly once when the response is over: ended, the client gone, a failure, shutdown. */
  disconnect (): void | Promise<void> {}

  /** The plugin's route hands over the response before the connection starts. */
  [kRespondWith] (response: ResponseSocket): void {
    this.#response = response
  }

  async [kConnect] (): Promise<void> {
    const connection = this[kConnection]
    // An HTTP consumer is accepted at once: the plugin's route attaches the response.
    await connection.accept()
    if (!connection.isOpen) return // the client left, or the server began shutting down, first
    await this.handle(this.scope.request.body)
    if (connection.isOpen && !this.#response.started) {
      throw new HttpResponseError(`${this.constructor.name}.handle() returned without sending a response`)
    }
  }

  [kDisconnect] (): unknown {
    return this.disconnect()
  }

  #live (what: string): void {
    if (!this[kConnection].isOpen) throw new ConnectionClosedError(this.channelName, `${what} after the response ended`)
  }
}

reserveNames(AsyncHttpConsumer.prototype)

/** Options given as something else than an object (null, a string) are refused as such, not as a TypeError. */
function optionsObject<T extends object> (what: string, options: T): T {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError(`${what}: options must be an object, got ${options === null ? 'null' : typeof options}`)
  return options
}

function checkHead (status: unknown, headers: unknown): asserts headers is OutgoingHttpHeaders {
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) {
    throw new InvalidOptionError(`sendHeaders(): status must be an integer from 200 to 599, got ${String(status)}`)
  }
  if (headers === null || typeof headers !== 'object' || Array.isArray(headers)) {
    throw new InvalidOptionError('sendHeaders(): headers must be an object of header names and values')
  }
  // Node checks these too, but only while it writes the head: checked first, so nothing is half sent.
  for (const [name, value] of Object.entries(headers)) {
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch (err) {
      throw new InvalidOptionError(`sendHeaders(): header "${name}": ${(err as Error).message}`)
    }
  }
}
