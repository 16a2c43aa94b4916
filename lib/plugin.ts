/**
 * The Fastify plugin: validates options, makes sure `@fastify/websocket` is there, turns every
 * route whose handler comes from `Consumer.asHandler()` into a consumer route (the consumer's
 * `connect()` decides the handshake in a last `preHandler`, after the route's own auth hooks),
 * decorates `app.channelLayer`, and shuts everything down in order on `app.close()`.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions, preHandlerAsyncHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import fastifyWebsocket from '@fastify/websocket'
import type { WebSocket } from 'ws'
import type { Socket } from 'node:net'
import { InMemoryChannelLayer } from './layers/in-memory.js'
import { canAttachLogger, type ChannelLayer } from './layers/types.js'
import { Connection, type Runtime } from './connection.js'
import { consumerClassOf, kConnection, kInit, type ConsumerClass } from './consumer.js'
import { defaultGetUser, type GetUser } from './scope.js'
import { InvalidOptionError } from './errors.js'
import { checkOriginOptions, createUpgradeGuard } from './origin.js'
import { checkWorker, runWorker, type ChannelConsumerClass, type RunningWorker } from './worker.js'
import { startHeartbeat } from './heartbeat.js'

export interface FastifyChannelsOptions {
  /** Default: a new `InMemoryChannelLayer()`. */
  layer?: ChannelLayer
  /** Resolves `scope.user` once per connection, after the route's hooks. */
  getUser?: GetUser
  /** Largest message a client may send, in bytes (default 1 MiB); a larger one closes with 1009. */
  maxPayload?: number
  /** Ping interval in ms (default 30000); a peer silent until the next ping is terminated. 0 disables. */
  heartbeatInterval?: number
  /** Bytes that may wait in a connection's outgoing buffer (default 4 MiB); past it, close with 1008. */
  maxBufferedBytes?: number
  /**
   * Channels' OriginValidator patterns: `'*'`, `'example.com'`, `'.example.com'` (and subdomains),
   * `'https://example.com:8443'`. Unset: the Origin must match the request's Host. Refused: HTTP 403.
   */
  allowedOrigins?: readonly string[]
  /** Refuse upgrades without an Origin header (non-browser clients) with 403. Default false. */
  rejectMissingOrigin?: boolean
  /** Groups one connection may join through its consumer (default 100); past it, close with 1008. */
  maxGroupsPerConnection?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The selected channel layer: reach any consumer or group from routes, jobs and timers. */
    channelLayer: ChannelLayer
    /** Channels' `runworker`: serves the named `channel` with one `Worker` instance from `onReady` until `close()`. */
    channelWorker (channel: string, Worker: ChannelConsumerClass): void
  }
}

const kSubprotocol = Symbol('fastify-channels.subprotocol')
const kConsumerRoute = Symbol('fastify-channels.consumerRoute')
const LAYER_METHODS = ['newChannel', 'send', 'receive', 'groupAdd', 'groupDiscard', 'groupSend', 'flush', 'close'] as const

function checkOptions (opts: FastifyChannelsOptions): void {
  if (opts === null || typeof opts !== 'object') throw new InvalidOptionError('fastify-channels options must be an object')
  const { layer, getUser, maxPayload, heartbeatInterval, maxBufferedBytes, maxGroupsPerConnection } = opts
  if (layer !== undefined) {
    const missing = LAYER_METHODS.filter(m => typeof (layer as unknown as Record<string, unknown>)?.[m] !== 'function')
    if (missing.length > 0) throw new InvalidOptionError(`option "layer" must be a ChannelLayer; missing: ${missing.join(', ')}`)
  }
  if (getUser !== undefined && typeof getUser !== 'function') throw new InvalidOptionError('option "getUser" must be a function')
  const positive = (name: string, value: unknown, allowZero: boolean): void => {
    if (value === undefined) return
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || (!allowZero && value === 0)) {
      throw new InvalidOptionError(`option "${name}" must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${String(value)}`)
    }
  }
  positive('maxPayload', maxPayload, false)
  positive('heartbeatInterval', heartbeatInterval, true)
  positive('maxBufferedBytes', maxBufferedBytes, false)
  positive('maxGroupsPerConnection', maxGroupsPerConnection, false)
  checkOriginOptions(opts)
}

/**
 * `@fastify/websocket` replaces a websocket route's handler in its own onRoute hook; when the app
 * registered it before us, ours must still run first to see which consumer a route mounts.
 */
function addOnRouteHookFirst (fastify: FastifyInstance, hook: (route: RouteOptions) => void): void {
  fastify.addHook('onRoute', hook)
  const kHooks = Object.getOwnPropertySymbols(fastify).find(s => s.description === 'fastify.hooks')
  const hooks = kHooks === undefined ? undefined : (fastify as unknown as Record<symbol, { onRoute?: unknown[] }>)[kHooks]
  const list = hooks?.onRoute
  if (!Array.isArray(list) || list.indexOf(hook) === -1) {
    throw new InvalidOptionError('cannot order hooks with this Fastify version: register fastify-channels before @fastify/websocket')
  }
  list.splice(list.indexOf(hook), 1)
  list.unshift(hook)
}

async function refuseWhileClosing (reply: FastifyReply): Promise<void> {
  await reply.code(503).send({ error: 'Service Unavailable', message: 'server shutting down', statusCode: 503 })
}

const plugin: FastifyPluginAsync<FastifyChannelsOptions> = async (fastify, opts) => {
  checkOptions(opts)
  const layer = opts.layer ?? new InMemoryChannelLayer()
  const runtime: Runtime = {
    layer,
    getUser: opts.getUser ?? defaultGetUser,
    connections: new Set(),
    maxBufferedBytes: opts.maxBufferedBytes ?? 4 * 1024 * 1024,
    maxGroupsPerConnection: opts.maxGroupsPerConnection ?? 100
  }
  const maxPayload = opts.maxPayload ?? 1024 * 1024
  let closing = false

  if (canAttachLogger(layer)) layer.attachLogger(fastify.log.child({ component: 'channel-layer' }))

  const handshake = (Consumer: ConsumerClass): preHandlerAsyncHookHandler => async function channelsHandshake (request: FastifyRequest, reply: FastifyReply) {
    if (!request.ws) return
    if (closing) {
      await refuseWhileClosing(reply)
      return
    }
    const consumer = new Consumer()
    const connection = new Connection(runtime, request, consumer)
    let decision
    try {
      decision = await connection.handshake(ctx => consumer[kInit](ctx))
    } catch (err) {
      request.log.error({ err }, 'websocket handshake failed before connect() decided')
      await reply.code(500).send({ error: 'Internal Server Error', message: 'websocket handshake failed', statusCode: 500 })
      return
    }
    if (!decision.accepted) {
      request.log.info({ status: decision.status, url: request.url }, 'websocket handshake refused')
      await reply.code(decision.status).send()
      return
    }
    if (closing) {
      connection.shutdown()
      await refuseWhileClosing(reply)
      return
    }
    const raw = request.raw as unknown as Record<symbol, unknown>
    raw[kSubprotocol] = connection.subprotocol.value ?? false
    raw[kConnection] = connection;
    (request as unknown as Record<symbol, Connection>)[kConnection] = connection
  }

  addOnRouteHookFirst(fastify, (route) => {
    const Consumer = consumerClassOf(route.handler)
    if (Consumer === undefined) return
    if (route.websocket !== true) {
      throw new InvalidOptionError(`route ${route.url}: a consumer handler needs { websocket: true }`)
    }
    const own = route.preHandler
    route.preHandler = [...(own === undefined ? [] : Array.isArray(own) ? own : [own]), handshake(Consumer)]
    // Marks the route for the upgrade guard, an app-level onRequest hook that therefore runs
    // before the route's own hooks and those of the plugins around it.
    route.config = { ...route.config, [kConsumerRoute]: true }
  })

  const foreignWebsocket = fastify.hasDecorator('websocketServer')
  if (!foreignWebsocket) {
    await fastify.register(fastifyWebsocket, {
      options: { maxPayload, perMessageDeflate: false },
      // A client that breaks the protocol (oversized or malformed frames) is its own problem:
      // ws has already answered with the right close code; log it without alarm.
      errorHandler (error: Error, socket: WebSocket, request: FastifyRequest) {
        request.log.warn({ err: error }, 'websocket protocol error')
        if (socket.readyState !== socket.CLOSED && socket.readyState !== socket.CLOSING) socket.terminate()
      },
      preClose: async function (this: FastifyInstance) {
        await shutdownConsumers()
        for (const client of this.websocketServer.clients) client.close(1001, 'server shutting down')
        await new Promise<void>(resolve => this.websocketServer.close(() => resolve()))
      }
    })
  } else {
    if (opts.maxPayload !== undefined) fastify.websocketServer.options.maxPayload = maxPayload
    fastify.addHook('preClose', shutdownConsumers)
  }

  // Added once @fastify/websocket's own onRequest hook (which sets request.ws) is in place.
  fastify.addHook('onRequest', createUpgradeGuard(opts, request =>
    (request.routeOptions.config as unknown as Record<symbol, unknown> | undefined)?.[kConsumerRoute] === true))

  // During close() Fastify answers an upgrade with a bare 503 and skips every hook, including the
  // one that destroys the socket (and an app's own @fastify/websocket stops listening at all): the
  // socket is ended here, or close() would wait for a client that keeps it open.
  const server = fastify.server
  server.on('upgrade', (_request: unknown, socket: Partial<Pick<Socket, 'bytesWritten' | 'destroySoon' | 'write'>>) => {
    if (!closing) return
    if ((socket.bytesWritten ?? 0) === 0 && server.listenerCount('upgrade') === 1) {
      socket.write?.('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
    }
    if ((socket.bytesWritten ?? 0) > 0) socket.destroySoon?.()
  })

  const wss = fastify.websocketServer
  const previousHandleProtocols = wss.options.handleProtocols
  wss.options.handleProtocols = (protocols: Set<string>, request: unknown) => {
    const chosen = (request as Record<symbol, string | false | undefined>)[kSubprotocol]
    if (chosen !== undefined) return chosen !== false && protocols.has(chosen) ? chosen : false
    if (typeof previousHandleProtocols === 'function') return previousHandleProtocols(protocols, request as never)
    return protocols.values().next().value ?? false
  }
  if (foreignWebsocket) {
    // That app's own preClose closes every client without a code before ours runs: make it 1001.
    wss.on('connection', (socket: WebSocket) => {
      const close = socket.close.bind(socket)
      socket.close = (code?: number, reason?: string | Buffer) => close(code ?? 1001, reason ?? 'server shutting down')
    })
  }

  const heartbeatInterval = opts.heartbeatInterval ?? 30_000
  const stopHeartbeat = heartbeatInterval > 0 ? startHeartbeat(runtime.connections, heartbeatInterval) : () => {}

  async function shutdownConsumers (): Promise<void> {
    closing = true
    stopHeartbeat()
    const open = [...runtime.connections]
    for (const connection of open) connection.shutdown()
    await Promise.all(open.map(c => c.finished))
  }

  fastify.decorate('channelLayer', layer)

  // Workers are declared before the app is ready and run from onReady until close.
  const workers: Array<{ channel: string, Worker: ChannelConsumerClass }> = []
  const running: RunningWorker[] = []
  let workersStarted = false
  fastify.decorate('channelWorker', function channelWorker (channel: string, Worker: ChannelConsumerClass): void {
    checkWorker(channel, Worker)
    if (workersStarted) {
      throw new InvalidOptionError(`channelWorker("${channel}") was called after the app became ready: declare workers before app.ready() / listen()`)
    }
    workers.push({ channel, Worker })
  })
  fastify.addHook('onReady', async () => {
    workersStarted = true
    for (const { channel, Worker } of workers) {
      running.push(runWorker(new Worker(), { channelLayer: layer, channelName: channel, log: fastify.log.child({ worker: channel }) }))
    }
  })
  async function stopWorkers (): Promise<void> {
    await Promise.all(running.splice(0).map(worker => worker.stop()))
  }

  fastify.addHook('onClose', async () => {
    await Promise.all([shutdownConsumers(), stopWorkers()])
    await layer.close()
  })
}

export const fastifyChannels = fp(plugin, { fastify: '5.x', name: 'fastify-channels' })
export default fastifyChannels
