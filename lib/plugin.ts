/**
 * The Fastify plugin, in the order it sets things up: check the options; mount consumer routes
 * (the consumer's `connect()` decides the handshake in a last `preHandler`, after the route's own
 * auth hooks; an HTTP consumer's route handler runs its `handle()` on the response); register
 * `@fastify/websocket` or adopt the app's own; guard upgrades; start the heartbeat; decorate
 * `app.channelLayer`; serve workers; and on `app.close()` shut everything down in order:
 * connections (1001, each `disconnect()` once), workers, then the layer.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, RouteHandlerMethod, RouteOptions, preHandlerAsyncHookHandler } from 'fastify'
import { STATUS_CODES, type IncomingMessage } from 'node:http'
import fp from 'fastify-plugin'
import Router from 'find-my-way'
import fastifyWebsocket from '@fastify/websocket'
import type { WebSocket } from 'ws'
import { InMemoryChannelLayer } from './layers/in-memory.js'
import { canAttachLogger, type ChannelLayer } from './layers/types.js'
import { Connection, type Runtime } from './connection/connection.js'
import { bindToRequest, connectionOf, noteHandshake } from './connection/binding.js'
import { ResponseSocket } from './connection/response-socket.js'
import { startHeartbeat } from './connection/heartbeat.js'
import { ConnectionSet } from './connection/connection-set.js'
import { closeAnsweredUpgrade, UnansweredUpgrades } from './connection/unanswered-upgrades.js'
import { consumerClassOf, kInit, type ConsumerClass } from './consumer.js'
import { AsyncHttpConsumer, kRespondWith, type HttpConsumerClass } from './http-consumer.js'
import { defaultGetUser } from './scope.js'
import { InvalidOptionError } from './errors.js'
import { checkOptions, DEFAULTS, type FastifyChannelsOptions } from './options.js'
import { Counts, registerMetrics, type RouteCounts } from './metrics.js'
import { createUpgradeGuard } from './origin.js'
import { checkWorker, runWorker, type ChannelConsumerClass, type RunningWorker } from './worker.js'
import { closeAppSockets, consumerShutdown, dropUnansweredCloses, shutdownConnections, SHUTDOWN_GRACE_MS, withinGrace, type ShutdownState } from './shutdown.js'
import { addOnRouteHookFirst, closeClientsAsGoingAway, decideSubprotocols, endUpgradesWhileClosing, injectionMarker, setMaxPayload } from './internals.js'

export type { FastifyChannelsOptions } from './options.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The selected channel layer: reach any consumer or group from routes, jobs and timers. */
    channelLayer: ChannelLayer
    /** Channels' `runworker`: serves the named `channel` with one `Worker` instance from `onReady` until `close()`. */
    channelWorker (channel: string, Worker: ChannelConsumerClass): void
  }
}

/** What the plugin keeps for one app: what its connections share, and its shutdown state. */
interface Channels extends Runtime, ShutdownState {
  /** The WebSocket consumer routes, to name the route of an upgrade no hook sees (while closing). */
  routes: Router.Instance<Router.HTTPVersion.V1>
}

const kConsumerRoute = Symbol('fastify-channels.consumerRoute')

function noop (): void {}

/** A router of the consumer routes that matches paths as the app's own router does. */
function consumerRouter (fastify: FastifyInstance): Router.Instance<Router.HTTPVersion.V1> {
  const config = fastify.initialConfig as Record<string, unknown> & { routerOptions?: Record<string, unknown> }
  const names = ['ignoreTrailingSlash', 'ignoreDuplicateSlashes', 'caseSensitive', 'allowUnsafeRegex', 'maxParamLength']
  return Router(Object.fromEntries(names.map(name => [name, config.routerOptions?.[name] ?? config[name]])) as Router.Config<Router.HTTPVersion.V1>)
}

const plugin: FastifyPluginAsync<FastifyChannelsOptions> = async (fastify, opts) => {
  checkOptions(opts)
  const layer = opts.layer ?? new InMemoryChannelLayer()
  const channels: Channels = {
    layer,
    getUser: opts.getUser ?? defaultGetUser,
    connections: new ConnectionSet(),
    maxBufferedBytes: opts.maxBufferedBytes ?? DEFAULTS.maxBufferedBytes,
    maxGroupsPerConnection: opts.maxGroupsPerConnection ?? DEFAULTS.maxGroupsPerConnection,
    counts: new Counts(),
    rateLimit: opts.rateLimit,
    closing: false,
    stopHeartbeat: () => {},
    routes: consumerRouter(fastify)
  }

  if (canAttachLogger(layer)) layer.attachLogger(fastify.log.child({ component: 'channel-layer' }))

  const foreignWebsocket = fastify.hasDecorator('websocketServer')
  mountConsumerRoutes(fastify, channels, foreignWebsocket)
  if (foreignWebsocket) adoptWebsocket(fastify, opts, channels)
  else await registerWebsocket(fastify, opts, channels)
  guardUpgrades(fastify, opts, channels)
  const heartbeatInterval = opts.heartbeatInterval ?? DEFAULTS.heartbeatInterval
  if (heartbeatInterval > 0) channels.stopHeartbeat = startHeartbeat(channels.connections, heartbeatInterval)

  fastify.decorate('channelLayer', layer)
  const workers = serveWorkers(fastify, layer, channels.counts)
  const stopMetrics = opts.metrics === undefined ? () => {} : await registerMetrics(opts.metrics, channels.counts, layer)
  fastify.addHook('onClose', async () => {
    await Promise.all([shutdownConnections(channels, fastify.log), workers.stop()])
    stopMetrics()
    await layer.close()
  })
}

/**
 * Every route whose handler comes from `Consumer.asHandler()`: a WebSocket consumer's gets the
 * handshake as its last preHandler; an HTTP consumer's handler is replaced by one that runs it.
 * One path may serve both, as @fastify/websocket allows: an HTTP consumer (or any handler) as
 * `handler`, a WebSocket consumer as `wsHandler`.
 */
function mountConsumerRoutes (fastify: FastifyInstance, channels: Channels, foreignWebsocket: boolean): void {
  addOnRouteHookFirst(fastify, (route) => {
    const Class = consumerClassOf(route.handler)
    const WsClass = consumerClassOf(route.wsHandler)
    if (Class === undefined && WsClass === undefined) return
    // The route's series are there from the first scrape, at 0: dashboards see a quiet route, not none.
    const counts = channels.counts.of(route.url)
    if (WsClass !== undefined) {
      if (WsClass.prototype instanceof AsyncHttpConsumer) {
        throw new InvalidOptionError(`route ${route.url}: an AsyncHttpConsumer answers plain HTTP; give it as handler, not wsHandler`)
      }
      mountWebsocketConsumer(fastify, channels, route, WsClass as ConsumerClass, counts, foreignWebsocket)
    }
    if (Class === undefined) return
    if (Class.prototype instanceof AsyncHttpConsumer) {
      if (route.websocket === true) {
        throw new InvalidOptionError(`route ${route.url}: an AsyncHttpConsumer answers plain HTTP; remove { websocket: true }`)
      }
      route.handler = httpConsumerRoute(channels, Class as HttpConsumerClass)
      return
    }
    if (route.websocket !== true) {
      throw new InvalidOptionError(`route ${route.url}: a consumer handler needs { websocket: true } (or give it as wsHandler)`)
    }
    mountWebsocketConsumer(fastify, channels, route, Class as ConsumerClass, counts, foreignWebsocket)
  }, foreignWebsocket)
}

/** A WebSocket consumer's route: the handshake as its last preHandler, and the upgrade guard's mark. */
function mountWebsocketConsumer (fastify: FastifyInstance, channels: Channels, route: RouteOptions, Consumer: ConsumerClass,
  counts: RouteCounts, foreignWebsocket: boolean): void {
  if (!counts.handshakes.has(101)) counts.handshakes.set(101, 0)
  const own = route.preHandler
  route.preHandler = [...(own === undefined ? [] : Array.isArray(own) ? own : [own]), handshakeHook(channels, Consumer, !foreignWebsocket)]
  // Marks the route for the upgrade guard, an app-level onRequest hook that therefore runs
  // before the route's own hooks and those of the plugins around it.
  route.config = Object.assign({}, route.config, { [kConsumerRoute]: true })
  // Once per path: Fastify also calls this for the HEAD route it adds to a GET.
  try {
    if (!channels.routes.hasRoute('GET', route.url)) channels.routes.on('GET', route.url, noop, route.url)
  } catch (err) {
    // Fastify took it: only its 503s while the app closes go uncounted.
    fastify.log.debug({ err, url: route.url }, 'fastify-channels cannot match this route\'s path itself: its 503s while the app closes are not counted')
  }
}

// Handshakes whose client left before connect() decided: answered for Fastify's sake, counted as nothing.
const leftBeforeAnswer = new WeakSet<IncomingMessage>()

/** The consumer's `connect()` decides: the upgrade goes on, or the request is answered with a status. */
function handshakeHook (channels: Channels, Consumer: ConsumerClass, ownsWebsocket: boolean): preHandlerAsyncHookHandler {
  return async function channelsHandshake (request: FastifyRequest, reply: FastifyReply) {
    if (!request.ws) return
    if (channels.closing) {
      await refuseWhileClosing(reply)
      return
    }
    const consumer = new Consumer()
    const connection = new Connection(channels, request, consumer)
    noteHandshake(injectionMarker(request.raw), connection)
    let decision
    try {
      decision = await connection.handshake(ctx => consumer[kInit](ctx))
    } catch (err) {
      const { status, message } = setUpFailed(request, err, 'websocket handshake', 'connect() decided')
      await reply.code(status).send({ error: STATUS_CODES[status], message, statusCode: status })
      return
    }
    if (!decision.accepted) {
      // A client that left before the answer (connect() saw `signal` abort) was refused by nobody.
      if (decision.clientGone) {
        request.log.debug({ url: request.url }, 'websocket handshake ended: the client went away before the answer')
        leftBeforeAnswer.add(request.raw)
      } else {
        request.log.info({ status: decision.status, url: request.url }, 'websocket handshake refused')
      }
      await reply.code(decision.status).send()
      return
    }
    if (channels.closing) {
      connection.shutdown()
      await refuseWhileClosing(reply)
      return
    }
    bindToRequest(request.raw, connection, ownsWebsocket)
  }
}

/**
 * A connection's set-up (the scope, `getUser` among it; the joins of `groups`) failed. An error
 * with a 4xx `statusCode` (a `getUser` that throws 401, as a route's hook may) is the client's:
 * answered with it and its message, at info, as Fastify answers a hook's. Anything else is the
 * app's or the layer's: 500, at error, with nothing of it sent.
 */
function setUpFailed (request: FastifyRequest, err: unknown, what: string, before: string): { status: number, message: string } {
  const status = (err as { statusCode?: unknown } | null)?.statusCode
  if (typeof status === 'number' && Number.isInteger(status) && status >= 400 && status <= 499) {
    request.log.info({ err, status }, `${what} refused before ${before}`)
    return { status, message: err instanceof Error ? err.message : String(status) }
  }
  request.log.error({ err }, `${what} failed before ${before}`)
  return { status: 500, message: `${what} failed` }
}

/**
 * An HTTP consumer's route: the response becomes the connection's socket, and the consumer's
 * `handle()` runs once the scope is built and `groups` joined (after the route's own hooks).
 */
function httpConsumerRoute (channels: Channels, Consumer: HttpConsumerClass): RouteHandlerMethod {
  return async function channelsHttpConsumer (request: FastifyRequest, reply: FastifyReply) {
    if (request.method === 'HEAD') {
      // Fastify mounts HEAD beside GET; a response that may never end has no head to offer alone.
      await reply.code(405).header('allow', 'GET').send()
      return
    }
    if (channels.closing) {
      await refuseWhileClosing(reply)
      return
    }
    const consumer = new Consumer()
    const response = new ResponseSocket(reply)
    consumer[kRespondWith](response)
    const connection = new Connection(channels, request, consumer)
    let decision
    try {
      decision = await connection.handshake(ctx => consumer[kInit](ctx), 'http')
    } catch (err) {
      const { status, message } = setUpFailed(request, err, 'HTTP consumer', 'handle() ran')
      response.refuse(status, message)
      return
    }
    if (!decision.accepted) {
      response.refuse(decision.status, 'refused')
      return
    }
    if (channels.closing) {
      connection.shutdown()
      response.refuse(503, 'server shutting down')
      return
    }
    connection.attach(response)
  }
}

async function refuseWhileClosing (reply: FastifyReply): Promise<void> {
  await reply.code(503).send({ error: 'Service Unavailable', message: 'server shutting down', statusCode: 503 })
}

async function registerWebsocket (fastify: FastifyInstance, opts: FastifyChannelsOptions, channels: Channels): Promise<void> {
  await fastify.register(fastifyWebsocket, {
    options: { maxPayload: opts.maxPayload ?? DEFAULTS.maxPayload, perMessageDeflate: false },
    // A client that breaks the protocol (oversized or malformed frames) is its own problem:
    // ws has already answered with the right close code; log it without alarm.
    errorHandler (error: Error, socket: WebSocket, request: FastifyRequest) {
      request.log.warn({ err: error }, 'websocket protocol error')
      if (socket.readyState !== socket.CLOSED && socket.readyState !== socket.CLOSING) socket.terminate()
    },
    preClose: async function (this: FastifyInstance) {
      dropUnansweredCloses(this.websocketServer, this.log)
      // Consumers' sockets are sent 1001 once their handler in hand has finished (at once for
      // most); the app's other sockets at once, without waiting for the consumers' disconnect().
      const consumersEnded = shutdownConnections(channels, this.log)
      closeAppSockets(this.websocketServer, channels.connections)
      await consumersEnded
      await new Promise<void>(resolve => this.websocketServer.close(() => resolve()))
    }
  })
}

/** The app registered `@fastify/websocket` itself: its options stand, but for `maxPayload` when given. */
function adoptWebsocket (fastify: FastifyInstance, opts: FastifyChannelsOptions, channels: Channels): void {
  if (opts.maxPayload !== undefined) setMaxPayload(fastify.websocketServer, opts.maxPayload)
  fastify.addHook('preClose', async () => {
    dropUnansweredCloses(fastify.websocketServer, fastify.log)
    await shutdownConnections(channels, fastify.log)
  })
  closeClientsAsGoingAway(fastify.websocketServer, consumerShutdown(channels.connections))
}

/** Origin and handshake checks first, 503 while closing, and the subprotocol `accept()` named. */
function guardUpgrades (fastify: FastifyInstance, opts: FastifyChannelsOptions, channels: Channels): void {
  const isConsumerRoute = (request: FastifyRequest): boolean =>
    (request.routeOptions.config as unknown as Record<symbol, unknown> | undefined)?.[kConsumerRoute] === true
  // Added once @fastify/websocket's own onRequest hook (which sets request.ws) is in place.
  fastify.addHook('onRequest', createUpgradeGuard(opts, isConsumerRoute))
  // A handshake answered with a status, by any hook or by connect(): counted (an upgrade, 101, is
  // counted when the socket comes). One whose client left before the answer was written is not:
  // no client saw that status.
  fastify.addHook('onResponse', async (request, reply) => {
    if (request.ws !== true) {
      if (request.headers.upgrade === undefined) return
      // Answered by an app-wide hook added before the plugin, before @fastify/websocket's own ran.
      closeAnsweredUpgrade(request.raw)
    }
    if (isConsumerRoute(request) && reply.raw.writableFinished && !leftBeforeAnswer.has(request.raw)) {
      channels.counts.of(request.routeOptions.url ?? request.url).handshake(reply.statusCode)
    }
  })
  // Answered 503 outside every hook: counted by the route its path is.
  const upgrades = channels.upgrades = new UnansweredUpgrades(fastify.websocketServer)
  endUpgradesWhileClosing(fastify, () => channels.closing, url => {
    const route = channels.routes.find('GET', url.split('?')[0])?.store
    if (typeof route === 'string') channels.counts.of(route).handshake(503)
  }, (request, socket) => { upgrades.watch(request, socket) })
  decideSubprotocols(fastify.websocketServer, request => {
    const connection = connectionOf(request)
    return connection === undefined ? undefined : connection.subprotocol ?? false
  })
}

/** `app.channelWorker()`: workers are declared before the app is ready and run from onReady until close. */
function serveWorkers (fastify: FastifyInstance, layer: ChannelLayer, counts: Counts): { stop: () => Promise<void> } {
  const declared: Array<{ channel: string, Worker: ChannelConsumerClass }> = []
  const running: RunningWorker[] = []
  let started = false
  fastify.decorate('channelWorker', function channelWorker (channel: string, Worker: ChannelConsumerClass): void {
    checkWorker(channel, Worker)
    if (started) {
      throw new InvalidOptionError(`channelWorker("${channel}") was called after the app became ready: declare workers before app.ready() / listen()`)
    }
    declared.push({ channel, Worker })
  })
  fastify.addHook('onReady', async () => {
    started = true
    for (const { channel, Worker } of declared) {
      counts.workerStarted(channel)
      running.push(runWorker(new Worker(), { channelLayer: layer, channelName: channel, log: fastify.log.child({ worker: channel }), failed: () => { counts.workerFailed(channel) }, noHandler: () => { counts.workerNoHandler++ } }))
    }
  })
  return {
    // The message in hand is waited for, as long as a consumer's connect() is: a handler that
    // never returns must not hold the process' stop forever.
    async stop () {
      const stopping = running.splice(0).map(async worker => { await worker.stop() })
      if (!await withinGrace(Promise.all(stopping))) {
        fastify.log.warn({ graceMs: SHUTDOWN_GRACE_MS }, 'shutdown: a worker handler still running after the grace; not waiting for it')
      }
    }
  }
}

export const fastifyChannels = fp(plugin, { fastify: '5.x', name: 'fastify-channels' })
export default fastifyChannels
