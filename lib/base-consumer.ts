/**
 * What every consumer of a connection has, WebSocket or HTTP (Channels' `AsyncConsumer`, the base
 * of both): its scope, its channel and the layer, the request's logger, `groups`, and the work
 * that lives as long as the connection (`signal`, `spawn()`). The connection it belongs to drives
 * it through the hooks in connection/tasks.ts; each subclass maps them onto its own methods.
 */
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type { ChannelLayer } from './layers/types.js'
import type { Connection, ConsumerContext } from './connection/connection.js'
import type { Outbound } from './connection/outbound.js'
import { closeAnsweredUpgrade } from './connection/unanswered-upgrades.js'
import type { SpawnedTask } from './connection/scoped-tasks.js'
import { kConnect, kDisconnect, kReceive, type ConsumerHooks } from './connection/tasks.js'
import { reserveNames } from './dispatch.js'

export const kInit = Symbol('fastify-channels.init')
export const kConnection = Symbol('fastify-channels.connection')
export const kOutbound = Symbol('fastify-channels.outbound')
export const kConsumerClass = Symbol('fastify-channels.consumerClass')

export abstract class BaseConsumer<S> implements ConsumerHooks {
  /**
   * Opt in to shared, read-only group messages: every member of a group in this process that opts
   * in gets the same deep-frozen message instead of a copy of its own (writing to it throws a
   * TypeError), and `sendJson()` of it, or of a part of it, encodes it once for all of them.
   */
  static sharedMessages = false

  /** Groups joined before `connect()` / `handle()` and left after `disconnect()`. */
  groups: string[] = []
  scope!: S
  /** This connection's channel: `channelLayer.send(channelName, message)` reaches it from anywhere. */
  channelName!: string
  channelLayer!: ChannelLayer
  /** The request's logger. */
  log!: FastifyBaseLogger

  // Symbol-keyed rather than private, so that subclasses reach them; the package does not export the keys.
  [kConnection]!: Connection;
  [kOutbound]!: Outbound;

  [kInit] (ctx: ConsumerContext): void {
    this.scope = ctx.scope as S
    this.channelName = ctx.channelName
    this.channelLayer = ctx.channelLayer
    this.log = ctx.log
    this[kConnection] = ctx.connection
    this[kOutbound] = ctx.outbound
  }

  /**
   * Aborted as soon as the connection starts to end, before `disconnect()` runs (its reason is a
   * ConnectionClosedError). Pass it to whatever waits: timers, fetch, streams.
   */
  get signal (): AbortSignal {
    return this[kConnection].signal
  }

  /**
   * Runs `fn(signal)` beside the ordered handlers, for as long as the connection lives: a clock,
   * a poll, a stream to relay. When the connection ends its signal is aborted, and `disconnect()`
   * waits for it to settle. If it throws while the connection is open, that is logged and the
   * connection closes as after a failing handler (1011).
   */
  spawn (fn: SpawnedTask): void {
    this[kConnection].spawn(fn)
  }

  abstract [kConnect] (): unknown
  abstract [kDisconnect] (code: number): unknown

  /** Client frames: only a WebSocket consumer gets any. */
  [kReceive] (text: string | undefined, bytes: Buffer | undefined): unknown {
    return undefined
  }
}

reserveNames(BaseConsumer.prototype, ['groups', 'scope', 'channelName', 'channelLayer', 'log'])

export type AnyConsumerClass = abstract new () => BaseConsumer<unknown>

/** The consumer class a route handler made by `asHandler()` mounts. */
export function consumerClassOf (handler: unknown): AnyConsumerClass | undefined {
  if (typeof handler !== 'function') return undefined
  return (handler as { [kConsumerClass]?: AnyConsumerClass })[kConsumerClass]
}

/**
 * A consumer route Fastify serves as plain HTTP because the plugin never saw it (declared before
 * the plugin was registered, or outside its context): 500, saying why. Returns the reply, for an
 * async route handler to return.
 */
export function answerNotRegistered (request: FastifyRequest, reply: FastifyReply): FastifyReply {
  request.log.error('a consumer route was reached without the fastify-channels plugin: register it (awaited) before the route, in the same context')
  if (request.headers.upgrade !== undefined) reply.raw.once('finish', () => { closeAnsweredUpgrade(request.raw) })
  return reply.code(500).send({ statusCode: 500, error: 'Internal Server Error', message: 'fastify-channels is not registered' })
}
