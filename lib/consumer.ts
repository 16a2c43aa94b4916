/**
 * `WebsocketConsumer`: Channels' consumer, one instance per connection, mounted as an ordinary
 * `{ websocket: true }` Fastify route with `asHandler()`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import type { Scope } from './scope.js'
import { connectionOf, mayReleaseUpgrade, unbindRequest } from './connection/binding.js'
import { releaseUpgradeState } from './internals.js'
import { kConnect, kDisconnect, kReceive } from './connection/tasks.js'
import { answerNotRegistered, BaseConsumer, kConnection, kConsumerClass, kOutbound } from './base-consumer.js'
import { reserveNames } from './dispatch.js'
import { InvalidOptionError } from './errors.js'
import { ACCEPT, sendFailure } from './connection/unawaited-failure.js'

export { kInit, consumerClassOf } from './base-consumer.js'

export type WebsocketRouteHandler = ((socket: WebSocket, request: FastifyRequest) => void) & {
  [kConsumerClass]: ConsumerClass
}

export type ConsumerClass = new () => WebsocketConsumer

const settled = Promise.resolve()

export class WebsocketConsumer extends BaseConsumer<Scope> {
  /** The `@fastify/websocket` handler for a `{ websocket: true }` GET route. */
  static asHandler (this: ConsumerClass): WebsocketRouteHandler {
    const handler = function consumerRoute (socket: WebSocket, request: FastifyRequest): void {
      if (typeof (socket as Partial<WebSocket>).close !== 'function') {
        // Called as a plain HTTP handler, (request, reply): neither the plugin nor @fastify/websocket
        // saw the route (declared before the plugin was registered, or outside its context).
        answerNotRegistered(socket as unknown as FastifyRequest, request as unknown as FastifyReply)
        return
      }
      const connection = connectionOf(request.raw)
      if (connection === undefined) {
        // The fastify-channels plugin did not run the handshake: it is not registered in this scope.
        request.log.error('a consumer route was reached without the fastify-channels plugin; closing')
        socket.close(1011, 'fastify-channels is not registered')
        return
      }
      if (mayReleaseUpgrade(request.raw)) releaseUpgradeState(request.raw, socket)
      unbindRequest(request.raw)
      connection.attach(socket)
    }
    return Object.assign(handler, { [kConsumerClass]: this })
  }

  /**
   * Called when the client asks to connect. Default: accept. This, `receive()` and `disconnect()`
   * may be written async or not: what they return is awaited either way.
   */
  connect (): void | Promise<void> {
    return this.accept()
  }

  /** Completes the handshake (HTTP 101), with `subprotocol` when given. */
  accept (subprotocol?: string): Promise<void> {
    try {
      return this[kConnection].accept(subprotocol)
    } catch (err) {
      return sendFailure(err, this[kConnection], ACCEPT)
    }
  }

  /**
   * Closes the connection; before `accept()` the handshake is refused with HTTP 403. A code no
   * close frame may carry throws InvalidOptionError at once (not a rejection: a call not awaited
   * still fails its handler, instead of an unhandled rejection); else the promise is settled.
   */
  close (code?: number, reason?: string): Promise<void> {
    this[kConnection].close(code, reason)
    return settled
  }

  /**
   * A string is sent as a text frame, bytes as a binary frame. The frame is handed to the socket
   * before this returns; the promise is already settled (not async: no promise per frame). Once
   * the connection has ended it rejects with ConnectionClosedError.
   */
  send (data: string | Uint8Array): Promise<void> {
    try {
      if (typeof data !== 'string' && !(data instanceof Uint8Array)) {
        // ws would send anything else as a frame of what it makes of it (undefined: an empty binary one).
        throw new InvalidOptionError(`send(data) takes a string or bytes, got ${data === null ? 'null' : typeof data}`)
      }
      this[kOutbound].send(data)
    } catch (err) {
      return sendFailure(err, this[kConnection])
    }
    return settled
  }

  /** One client frame: `text` for a text frame, `bytes` for a binary one. */
  receive (text: string | undefined, bytes: Buffer | undefined): void | Promise<void> {}

  /** Runs exactly once for every accepted connection, whoever closed it, with the close code. */
  disconnect (code: number): void | Promise<void> {}

  [kConnect] (): unknown {
    return this.connect()
  }

  override [kReceive] (text: string | undefined, bytes: Buffer | undefined): unknown {
    return this.receive(text, bytes)
  }

  [kDisconnect] (code: number): unknown {
    return this.disconnect(code)
  }
}

reserveNames(WebsocketConsumer.prototype)
