/**
 * The test kit (`fastify-channels/testing`) as a test uses it: what `receiveNothing()` counts,
 * and what `serverFinished()` and `disconnect()` wait for after a refusal or a connect() timeout.
 */
import t from 'tap'
import Fastify from 'fastify'
import fastifyChannels, { WebsocketConsumer, type InMemoryChannelLayer } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import WebSocket from 'ws'
import { setTimeout as wait } from 'node:timers/promises'
import { buildApp, eventually, sleep, waitingConsumer } from './helpers/app.js'
import { listen } from './helpers/loopback.js'

const inspect = (app: { channelLayer: unknown }) => (app.channelLayer as InMemoryChannelLayer).inspect()

t.test('receiveNothing() is false once the consumer has closed: a close is something received', async t => {
  class Closes extends WebsocketConsumer {
    override async receive () { await this.close(4000, 'go away') }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Closes.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  t.equal(await comm.receiveNothing(50), true, 'nothing yet')
  await comm.sendTo('bye')
  t.equal(await comm.receiveNothing(200), false, 'the close came')
  t.same(await comm.closed, { code: 4000, reason: 'go away' })
})

t.test('after a refusal, serverFinished() and disconnect() wait until connect() has returned and the layer is clean', async t => {
  class RefusesThenJoins extends WebsocketConsumer {
    override groups = ['lobby']
    override async connect () {
      await this.close()
      await sleep(150)
      await this.channelLayer.groupAdd('late', this.channelName)
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, RefusesThenJoins.asHandler()))
  t.teardown(() => app.close())
  for (const end of ['serverFinished', 'disconnect'] as const) {
    const comm = new WebsocketCommunicator(app, '/ws')
    t.match(await comm.connect(), { connected: false, status: 403 })
    await comm[end]()
    t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 }, `${end}(): nothing left in the layer`)
  }
})

t.test('a connect() that times out: a consumer that accepts later is closed at once, and disconnect() waits for its disconnect()', async t => {
  const events: string[] = []
  class Slow extends WebsocketConsumer {
    override async connect () {
      await sleep(200)
      await this.accept()
      events.push('accepted')
    }

    override async disconnect (code: number) { events.push(`disconnect ${code}`) }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Slow.asHandler()))
  const comm = new WebsocketCommunicator(app, '/ws')
  await t.rejects(comm.connect(50), /timed out after 50 ms/)
  await comm.disconnect(1000, '', 2000)
  t.same(events, ['accepted', 'disconnect 1000'], 'the late consumer was closed, and disconnect() waited for it')
  await app.close()
  t.same(logs.filter(l => /did not answer the close frame/.test(String(l.msg))), [], 'its socket ended with it: app.close() has no peer to wait for')
})

t.test('a connect() that times out is told through this.signal, as Channels cancels the application', async t => {
  const events: string[] = []
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, waitingConsumer(events).asHandler()))
  const comm = new WebsocketCommunicator(app, '/ws')
  await t.rejects(comm.connect(100), /timed out after 100 ms/)
  await eventually(() => events.length === 2, 2000)
  t.same(events, ['connect', 'stopped: AbortError'], 'connect() stopped waiting')
  await app.close()
  t.pass('and app.close() completes')
})

t.test('a consumer that accepts after the communicator gave up: its socket ends, so app.close() has none to wait for', async t => {
  for (const honours of [true, false]) {
    const events: string[] = []
    class Late extends WebsocketConsumer {
      override async connect () {
        await wait(150, undefined, honours ? { signal: this.signal } : {}).catch(() => {})
        await this.accept()
      }

      override async disconnect (code: number) { events.push(`disconnect ${code}`) }
    }
    const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Late.asHandler()))
    const comm = new WebsocketCommunicator(app, '/ws')
    await t.rejects(comm.connect(50), /timed out after 50 ms/)
    await eventually(() => events.length === 1, 2000)
    await eventually(() => app.websocketServer.clients.size === 0, 2000)
    t.pass(`${honours ? 'stopping at its signal' : 'deaf to it'}: its disconnect() ran (${events.join()}), and the server holds no socket of it`)
    await app.close()
    t.same(logs.filter(l => /did not answer the close frame/.test(String(l.msg))), [], 'no peer left for app.close() to wait for')
  }
})

t.test('a consumer that accepts with none of the offered subprotocols: the communicator fails the connection, as a real client does', async t => {
  const ended: number[] = []
  class IgnoresSubprotocols extends WebsocketConsumer {
    override async disconnect (code: number) { ended.push(code) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, IgnoresSubprotocols.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const real = new WebSocket(`${url}/ws`, ['v1'])
  const failure = await new Promise<Error>(resolve => real.once('error', resolve))
  t.match(failure.message, /no subprotocol/, 'a real ws client refuses the answer')

  const comm = new WebsocketCommunicator(app, '/ws', { subprotocols: ['v1'] })
  t.same(await comm.connect(), { connected: false, subprotocol: null, status: 101 }, 'so does the communicator')
  t.match(await comm.closed, { code: 1006, reason: /no subprotocol/ })
  await comm.serverFinished()
  await eventually(() => ended.length === 2, 5000)
  t.same(ended, [1006, 1006], 'the consumer, which had accepted, sees the connection drop, both times')
  const plain = new WebsocketCommunicator(app, '/ws')
  t.match(await plain.connect(), { connected: true, subprotocol: null }, 'without an offer, no subprotocol is fine')
  await plain.disconnect()
})

t.test('a communicator is one connection: a second connect() rejects, and reads before connect() say to connect first', async t => {
  class Echo extends WebsocketConsumer {
    override async connect () { await this.accept() }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Echo.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  for (const [name, call] of [
    ['receiveFrom', () => comm.receiveFrom()],
    ['receiveNothing', () => comm.receiveNothing()],
    ['disconnect', () => comm.disconnect()],
    ['serverFinished', () => comm.serverFinished()],
    ['sendTo', () => comm.sendTo('x')]
  ] as const) {
    await t.rejects(call() as Promise<unknown>, { message: 'not connected: call connect() first' }, `${name}() before connect()`)
  }
  t.match(await comm.connect(), { connected: true })
  await t.rejects(comm.connect(), { message: /connect\(\) was called already/ }, 'a second connect() is refused, not a second connection')
  await comm.disconnect()
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 }, 'nothing left open')
})

t.test('a communicator sends a Host, as app.inject() does, so a browser-like Origin passes the default check', async t => {
  class Hosts extends WebsocketConsumer {
    override async connect () {
      await this.accept()
      await this.send(this.scope.headers.host ?? '(none)')
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Hosts.asHandler()))
  t.teardown(() => app.close())
  const same = new WebsocketCommunicator(app, '/ws', { headers: { origin: 'http://localhost' } })
  t.match(await same.connect(), { connected: true }, 'the same origin is accepted')
  t.equal(await same.receiveFrom(), 'localhost:80', 'with the default Host')
  await same.disconnect()
  const other = new WebsocketCommunicator(app, '/ws', { headers: { origin: 'http://evil.example' } })
  t.match(await other.connect(), { connected: false, status: 403 }, 'another origin is refused')
  const given = new WebsocketCommunicator(app, '/ws', { headers: { Host: 'app.example', Origin: 'http://app.example' } })
  t.match(await given.connect(), { connected: true }, 'a Host the test gives replaces the default, and header names are read in any case, as Node reads them')
  t.equal(await given.receiveFrom(), 'app.example')
  await given.disconnect()
})

t.test('disconnect(1006) drops the connection without a close frame; a code no close frame carries is refused', async t => {
  const codes: number[] = []
  class Records extends WebsocketConsumer {
    override async connect () { await this.accept() }
    override async disconnect (code: number) { codes.push(code) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Records.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await t.rejects(comm.disconnect(1005), { code: 'FST_CHANNELS_INVALID_OPTION' }, 'a code that cannot be sent')
  t.equal(await comm.receiveNothing(50), true, 'leaves the connection open')
  await comm.disconnect(1006)
  t.same(await comm.closed, { code: 1006, reason: '' }, 'the client saw the connection drop')
  t.same(codes, [1006], 'and the consumer\'s disconnect() ran with 1006, once it had finished')
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 }, 'nothing left in the layer')
})

t.test('sendJsonTo() of what JSON cannot encode rejects, and sends nothing: no empty binary frame', async t => {
  const frames: Array<string | undefined> = []
  class Records extends WebsocketConsumer {
    override async receive (text?: string, bytes?: Buffer) { frames.push(text ?? `${bytes?.length ?? 0} bytes`) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Records.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  for (const value of [undefined, () => 1, Symbol('s')]) {
    await t.rejects(comm.sendJsonTo(value), { code: 'FST_CHANNELS_INVALID_OPTION', message: /takes a value JSON can encode/ }, `${typeof value}`)
  }
  await t.rejects(comm.sendTo(undefined as never), { code: 'FST_CHANNELS_INVALID_OPTION', message: /a string .* or bytes/ })
  await comm.sendJsonTo(null)
  await eventually(() => frames.length === 1)
  t.same(frames, ['null'], 'only the frame that could be sent arrived')
})

t.test('thirty communicators connecting at once: no MaxListenersExceededWarning, and the listeners are gone after', async t => {
  const warnings: string[] = []
  const onWarning = (warning: Error): void => { warnings.push(warning.name) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, WebsocketConsumer.asHandler()))
  t.teardown(() => app.close())
  const before = { headers: app.websocketServer.listenerCount('headers'), connection: app.websocketServer.listenerCount('connection'), max: app.websocketServer.getMaxListeners() }
  const comms = Array.from({ length: 30 }, () => new WebsocketCommunicator(app, '/ws'))
  t.same((await Promise.all(comms.map(async c => await c.connect()))).map(r => r.connected), comms.map(() => true))
  await new Promise(resolve => setImmediate(resolve))
  t.same(warnings, [], 'no warning')
  t.same({ headers: app.websocketServer.listenerCount('headers'), connection: app.websocketServer.listenerCount('connection'), max: app.websocketServer.getMaxListeners() }, before, 'listeners and their limit as before')
})

t.test('connect(timeout) times the app\'s loading too; a failed load closes the communicator, and its reads say why', async t => {
  const slow = Fastify()
  await slow.register(fastifyChannels)
  slow.register(async () => { await sleep(300) })
  slow.get('/ws', { websocket: true }, WebsocketConsumer.asHandler())
  t.teardown(() => slow.close())
  await t.rejects(new WebsocketCommunicator(slow, '/ws').connect(50), /timed out after 50 ms waiting for app.ready\(\)/)

  const broken = Fastify()
  await broken.register(fastifyChannels)
  broken.register(async () => { throw new Error('a plugin failed') })
  const comm = new WebsocketCommunicator(broken, '/ws')
  await t.rejects(comm.connect(), /a plugin failed/)
  t.match(await comm.closed, { code: 1006, reason: /connect\(\) failed: a plugin failed/ })
  await t.rejects(comm.receiveFrom(5000), /connection closed \(code 1006: connect\(\) failed: a plugin failed\)/, 'at once, not at its timeout')
  await t.rejects(comm.sendTo('x'), /connection closed \(code 1006: connect\(\) failed/)
})

t.test('after a refused connect(), sendTo() says the handshake was refused, not to call connect()', async t => {
  class Refuses extends WebsocketConsumer { override async connect () { await this.close() } }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Refuses.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  t.match(await comm.connect(), { connected: false, status: 403 })
  await t.rejects(comm.sendTo('x'), /connection closed \(code 1006: handshake refused\)/)
})

t.test('disconnect() called while connect() runs closes what connect() opens, once it has', async t => {
  const events: string[] = []
  class Slow extends WebsocketConsumer {
    override async connect () { await sleep(200); await this.accept() }
    override async disconnect (code: number) { events.push(`disconnect ${code}`) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Slow.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  const connecting = comm.connect()
  await comm.disconnect()
  t.match(await connecting, { connected: true })
  t.same(await comm.closed, { code: 1000, reason: '' })
  t.same(events, ['disconnect 1000'], 'the consumer\'s disconnect() ran before disconnect() resolved')
})

t.test('the communicator\'s timeouts run on the monotonic clock: with Date frozen (a test faking it), receiveFrom(timeout) still rejects in time', async t => {
  class Silent extends WebsocketConsumer {}
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Silent.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  const realNow = Date.now
  const frozen = realNow()
  Date.now = () => frozen
  t.teardown(() => { Date.now = realNow })
  const outcome = await Promise.race([
    comm.receiveFrom(100).then(() => 'a frame', (err: Error) => err.message),
    wait(2000, 'still waiting after 2 s')
  ])
  Date.now = realNow
  t.equal(outcome, 'no frame received within 100 ms')
  await comm.disconnect()
})
