import t from 'tap'
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import fastifyChannels, { AsyncHttpConsumer, JsonWebsocketConsumer, WebsocketConsumer, InMemoryChannelLayer, type FastifyChannelsOptions } from '../lib/index.js'
import { Registry } from 'prom-client'
import { WebsocketCommunicator } from '../lib/testing.js'
import { eventually, sleep } from './helpers/app.js'
import { listen, openClient, rawHandshake, rawSession } from './helpers/loopback.js'
import { openEventStream } from './helpers/event-stream.js'

t.test('bad options fail register with a clear error', async t => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['a layer without methods', { layer: { send () {} } }, /option "layer" must be a ChannelLayer; missing: newChannel/],
    ['a non-function getUser', { getUser: 'user' }, /option "getUser" must be a function/],
    ['a zero maxPayload', { maxPayload: 0 }, /option "maxPayload" must be a positive integer/],
    ['a negative heartbeat', { heartbeatInterval: -1 }, /option "heartbeatInterval" must be a non-negative integer/],
    // Meant as "practically never", it would ping every connection every few milliseconds.
    ['a heartbeat longer than a timer keeps', { heartbeatInterval: Number.MAX_SAFE_INTEGER }, /option "heartbeatInterval" must be a non-negative integer of at most 2147483647/],
    ['a fractional maxBufferedBytes', { maxBufferedBytes: 1.5 }, /option "maxBufferedBytes" must be a positive integer/],
    // Ignored, a misspelt `layer` would run the app on the in-memory layer: no message would cross to another process.
    ['a misspelt option', { channelLayer: {} }, /unknown option "channelLayer"; the options are layer, getUser, /],
    ['a rateLimit with a key of another shape', { rateLimit: { messages: 5, interval: 1000, burst: 10 } }, /option "rateLimit": unknown option "burst"; the options are messages, interval/]
  ]
  for (const [what, opts, message] of cases) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(fastifyChannels, opts as FastifyChannelsOptions).ready() }, { code: 'FST_CHANNELS_INVALID_OPTION', message }, what)
    await app.close()
  }
})

t.test('a consumer handler on a route without { websocket: true } fails at route time', async t => {
  const app = Fastify()
  await app.register(fastifyChannels)
  t.throws(() => app.get('/ws', WebsocketConsumer.asHandler() as never), { code: 'FST_CHANNELS_INVALID_OPTION', message: /needs \{ websocket: true \}/ })
  await app.close()
})

t.test('the layer option selects app.channelLayer; the default is an in-memory layer', async t => {
  const layer = new InMemoryChannelLayer({ capacity: 5 })
  const app = Fastify()
  await app.register(fastifyChannels, { layer })
  t.equal(app.channelLayer, layer)
  await app.close()
  await t.rejects(layer.newChannel(), { code: 'FST_CHANNELS_LAYER_CLOSED' }, 'app.close() closes the layer')
  const other = Fastify()
  await other.register(fastifyChannels)
  t.ok(other.channelLayer instanceof InMemoryChannelLayer)
  await other.close()
  // A test suite that rebuilds its app with the layer it kept: refused at register, not a 500 on every handshake.
  const rebuilt = Fastify()
  await t.rejects(async () => { await rebuilt.register(fastifyChannels, { layer }).ready() },
    { code: 'FST_CHANNELS_INVALID_OPTION', message: /option "layer" is closed/ }, 'a closed layer is refused')
  await rebuilt.close()
})

t.test('one path, two handlers: an AsyncHttpConsumer as handler, a WebSocket consumer as wsHandler', async t => {
  class RoomEvents extends AsyncHttpConsumer {
    override groups = ['room']
    override async handle () { await this.sendEvent({ data: 'events' }) }
    async roomMessage (event: { text: string }) { await this.sendEvent({ data: event.text }) }
  }
  class RoomSocket extends JsonWebsocketConsumer {
    override groups = ['room']
    async roomMessage (event: { text: string }) { await this.sendJson({ text: event.text }) }
  }
  const app = Fastify()
  await app.register(fastifyChannels)
  app.route({ method: 'GET', url: '/room', handler: RoomEvents.asHandler(), wsHandler: RoomSocket.asHandler() })
  t.teardown(() => app.close())
  const { url, port } = await listen(app)
  const { ws, closed } = await openClient(`${url}/room`)
  const frames: string[] = []
  ws.on('message', (data: Buffer) => frames.push(data.toString()))
  const stream = await openEventStream(`${url.replace('ws://', 'http://')}/room`)
  await stream.waitForEvents(1)
  await app.channelLayer.groupSend('room', { type: 'room.message', text: 'hello' })
  await eventually(() => frames.length === 1)
  t.same(frames, ['{"text":"hello"}'], 'the WebSocket consumer got the group message')
  t.same((await stream.waitForEvents(2)).map(e => e.data), ['events', 'hello'], 'so did the event stream on the same path')
  const foreign = await rawSession(port, '/room', { origin: 'https://evil.example' })
  t.equal(foreign.status, 403, 'the upgrade is origin-checked as on a { websocket: true } route')
  stream.close()
  ws.close()
  await closed

  const wrong = Fastify()
  await wrong.register(fastifyChannels)
  t.throws(() => wrong.route({ method: 'GET', url: '/wrong', handler: async () => 'x', wsHandler: RoomEvents.asHandler() as never }),
    { code: 'FST_CHANNELS_INVALID_OPTION', message: /an AsyncHttpConsumer answers plain HTTP; give it as handler, not wsHandler/ })
  await wrong.close()
})

t.test('a consumer route Fastify serves without the plugin (declared before it) answers 500 and says why', async t => {
  const app = Fastify({ logger: false })
  app.get('/ws', { websocket: true } as never, WebsocketConsumer.asHandler() as never)
  t.teardown(() => app.close())
  const reply = await app.inject({ method: 'GET', url: '/ws' })
  t.equal(reply.statusCode, 500)
  t.match(reply.json(), { message: 'fastify-channels is not registered' })
  const { port } = await listen(app)
  t.equal((await rawSession(port, '/ws', {})).status, 500, 'an upgrade request too')
})

t.test('a consumer route in a context beside the plugin\'s: the upgrade gets its 500 and its socket is closed, so app.close() completes', async t => {
  const app = Fastify({ logger: false })
  await app.register(async (withPlugin) => { await withPlugin.register(fastifyChannels) })
  await app.register(async (without) => { without.get('/ws', { websocket: true } as never, WebsocketConsumer.asHandler() as never) })
  const { port } = await listen(app)
  // Held open by the client, as a browser holds a socket until the server closes it.
  const socket = rawHandshake(port, '/ws')
  let answer = ''
  socket.on('data', (chunk: Buffer) => { answer += chunk.toString('latin1') })
  const ended = new Promise(resolve => socket.once('close', () => { resolve('closed') }))
  t.equal(await Promise.race([ended, sleep(10_000).then(() => 'still open after 10 s')]), 'closed', 'the server closed the socket')
  t.match(answer, /^HTTP\/1\.1 500 /, 'answered 500')
  t.match(answer, /fastify-channels is not registered/)
  socket.destroy()
  const closing = app.close().then(() => 'closed')
  t.equal(await Promise.race([closing, sleep(10_000).then(() => 'still closing after 10 s')]), 'closed')
})

t.test('an app-wide hook added before the plugin that answers an upgrade (401): the socket is closed, the answer counted, and app.close() completes', async t => {
  const registry = new Registry()
  const app = Fastify({ logger: false })
  // A global auth hook, or @fastify/under-pressure: added first, it runs before @fastify/websocket's own hook.
  app.addHook('onRequest', async (request, reply) => {
    if ((request.query as { token?: string }).token !== 'ok') await reply.code(401).send({ message: 'who are you' })
  })
  await app.register(fastifyChannels, { metrics: { registry } })
  app.get('/ws', { websocket: true }, WebsocketConsumer.asHandler())
  const { port } = await listen(app)
  const socket = rawHandshake(port, '/ws') // held open by the client
  let answer = ''
  socket.on('data', (chunk: Buffer) => { answer += chunk.toString('latin1') })
  const ended = new Promise(resolve => socket.once('close', () => { resolve('closed') }))
  t.equal(await Promise.race([ended, sleep(10_000).then(() => 'still open after 10 s')]), 'closed', 'the server closed the socket')
  t.match(answer, /^HTTP\/1\.1 401 /)
  const handshakes = (await registry.getSingleMetric('fastify_channels_handshakes_total')?.get())?.values ?? []
  t.equal(handshakes.find(v => v.labels.status === '401')?.value, 1, 'counted as a 401')
  const closing = app.close().then(() => 'closed')
  t.equal(await Promise.race([closing, sleep(10_000).then(() => 'still closing after 10 s')]), 'closed')
})

t.test('consumers work in encapsulated plugins and under prefixes', async t => {
  class Hello extends WebsocketConsumer { override async connect () { await this.accept(); await this.send(this.scope.path) } }
  const app = Fastify()
  await app.register(fastifyChannels)
  await app.register(async (child) => { child.get('/ws/:id', { websocket: true }, Hello.asHandler()) }, { prefix: '/api' })
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/api/ws/7?x=1')
  t.equal((await comm.connect()).connected, true)
  t.equal(await comm.receiveFrom(), '/api/ws/7')
})

t.test('with @fastify/websocket registered by the app first, the plugin uses it', async t => {
  const codes: number[] = []
  class Guarded extends WebsocketConsumer {
    override async connect () {
      if (this.scope.query.token === 'ok') await this.accept('chat')
      else await this.close()
    }
    override async receive (text?: string) { await this.send(text!) }
    override async disconnect (code: number) { codes.push(code) }
  }
  const app = Fastify()
  await app.register(fastifyWebsocket, { options: { maxPayload: 64 } })
  await app.register(fastifyChannels)
  app.get('/ws', { websocket: true }, Guarded.asHandler())
  const refused = new WebsocketCommunicator(app, '/ws')
  t.match(await refused.connect(), { connected: false, status: 403 }, 'connect() still decides the handshake')
  const comm = new WebsocketCommunicator(app, '/ws?token=ok', { subprotocols: ['chat'] })
  t.same(await comm.connect(), { connected: true, subprotocol: 'chat', status: 101 })
  await comm.sendTo('x'.repeat(64))
  t.equal(await comm.receiveFrom(), 'x'.repeat(64))
  await comm.sendTo('x'.repeat(65))
  t.same(await comm.closed, { code: 1009, reason: '' }, "the app's maxPayload applies, and ws' own close is left as it is")
  await comm.serverFinished()
  const last = new WebsocketCommunicator(app, '/ws?token=ok', { subprotocols: ['chat'] })
  await last.connect()
  await app.close()
  t.equal((await last.closed).code, 1001, 'shutdown still closes with 1001')
  t.same(codes, [1009, 1001])
})

t.test('maxPayload: a larger message closes with 1009 and others keep working', async t => {
  class Echo extends WebsocketConsumer { override async receive (text?: string) { await this.send(text!) } }
  const app = Fastify()
  await app.register(fastifyChannels, { maxPayload: 1000 })
  app.get('/ws', { websocket: true }, Echo.asHandler())
  t.teardown(() => app.close())
  const big = new WebsocketCommunicator(app, '/ws')
  const small = new WebsocketCommunicator(app, '/ws')
  await big.connect(); await small.connect()
  await big.sendTo('y'.repeat(1001))
  t.equal((await big.closed).code, 1009)
  await small.sendTo('y'.repeat(1000))
  t.equal(await small.receiveFrom(), 'y'.repeat(1000))
})

t.test('two registrations on the app\'s own @fastify/websocket: one server has one maxPayload', async t => {
  const registerTwice = async (first: number, second: number): Promise<unknown> => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(fastifyWebsocket)
    await app.register(async child => { await child.register(fastifyChannels, { maxPayload: first }) })
    await app.register(async child => { await child.register(fastifyChannels, { maxPayload: second }) })
    return await app.ready().then(() => undefined)
  }
  await t.rejects(registerTwice(1000, 2000), {
    code: 'FST_CHANNELS_INVALID_OPTION', message: /"maxPayload" \(2000\): another fastify-channels registration on the same @fastify\/websocket server set 1000/
  }, 'a different value fails register rather than replacing the first')
  t.equal(await registerTwice(1000, 1000), undefined, 'the same value is fine')
})

t.test('a consumer route the app\'s router options allow (an unsafe regexp) registers and connects', async t => {
  class Echo extends WebsocketConsumer {
    override async receive (text?: string) { await this.send(text!) }
  }
  const app = Fastify({ routerOptions: { allowUnsafeRegex: true } })
  t.teardown(() => app.close())
  await app.register(fastifyChannels)
  app.get('/ws/:id(^(a+)+$)', { websocket: true }, Echo.asHandler())
  await app.ready()
  const comm = new WebsocketCommunicator(app, '/ws/aaa')
  t.match(await comm.connect(), { connected: true, status: 101 })
  await comm.sendTo('hi')
  t.equal(await comm.receiveFrom(), 'hi')
  await comm.disconnect()
})
