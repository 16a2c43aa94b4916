/**
 * `WebsocketConsumer`: Channels' consumer, one instance per connection, mounted as an ordinary
 * `{ websocket: true }` Fastify route with `asHandler()`.
 */
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import type { ChannelLayer } from './layers/types.js'
import type { Scope } from './scope.js'
import { connectionOf, type Connection, type ConsumerContext } from './connection/connection.js'
import type { Outbound } from './connection/outbound.js'
import { reserveNames } from './dispatch.js'

export const kConsumerClass = Symbol('fastify-channels.consumerClass')
export const kInit = Symbol('fastify-channels.init')

export type WebsocketRouteHandler = ((socket: WebSocket, request: FastifyRequest) => void) & {
  [kConsumerClass]: ConsumerClass
}

export type ConsumerClass = new () => WebsocketConsumer

const settled = Promise.resolve()

export class WebsocketConsumer {
  /** Groups joined before `connect()` and left after `disconnect()`. */
  groups: string[] = []
  scope!: Scope
  /** This connection's channel: `channelLayer.send(channelName, message)` reaches it from anywhere. */
  channelName!: string
  channelLayer!: ChannelLayer
  /** The request's logger. */
  log!: FastifyBaseLogger

  #connection!: Connection
  #outbound!: Outbound

  /** The `@fastify/websocket` handler for a `{ websocket: true }` GET route. */
  static asHandler (this: ConsumerClass): WebsocketRouteHandler {
    const handler = function consumerRoute (socket: WebSocket, request: FastifyRequest): void {
      const connection = connectionOf(request.raw)
      if (connection === undefined) {
        // The fastify-channels plugin did not run the handshake: it is not registered in this scope.
        request.log.error('a consumer route was reached without the fastify-channels plugin; closing')
        socket.close(1011, 'fastify-channels is not registered')
        return
      }
      connection.attach(socket)
    }
    return Object.assign(handler, { [kConsumerClass]: this })
  }

  [kInit] (ctx: ConsumerContext): void {
    this.scope = ctx.scope
    this.channelName = ctx.channelName
    this.channelLayer = ctx.channelLayer
    this.log = ctx.log
    this.#connection = ctx.connection
    this.#outbound = ctx.outbound
  }

  /** Called when the client asks to connect. Default: accept. */
  async connect (): Promise<void> {
    await this.accept()
  }

  /** Completes the handshake (HTTP 101), with `subprotocol` when given. */
  async accept (subprotocol?: string): Promise<void> {
    await this.#connection.accept(subprotocol)
  }

  /** Closes the connection; before `accept()` the handshake is refused with HTTP 403. */
  async close (code?: number, reason?: string): Promise<void> {
    this.#connection.close(code, reason)
  }

  /**
   * A string is sent as a text frame, bytes as a binary frame. The frame is handed to the socket
   * before this returns; the promise is already settled (not async: no promise per frame).
   */
  send (data: string | Uint8Array): Promise<void> {
    try {
      this.#outbound.send(data)
    } catch (err) {
      return Promise.reject(err)
    }
    return settled
  }

  /** One client frame: `text` for a text frame, `bytes` for a binary one. */
  async receive (text: string | undefined, bytes: Buffer | undefined): Promise<void> {}

  /** Runs exactly once for every accepted connection, whoever closed it, with the close code. */
  async disconnect (code: number): Promise<void> {}
}

reserveNames(WebsocketConsumer.prototype, ['groups', 'scope', 'channelName', 'channelLayer', 'log'])

export function consumerClassOf (handler: unknown): ConsumerClass | undefined {
  if (typeof handler !== 'function') return undefined
  return (handler as Partial<WebsocketRouteHandler>)[kConsumerClass]
}
