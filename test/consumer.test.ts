import t from 'tap'
import { WebsocketConsumer, JsonWebsocketConsumer, InMemoryChannelLayer, type ChannelLayer, type Delivery, type LayerMessage } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { setTimeout as wait } from 'node:timers/promises'
import { buildApp, eventually, sleep, unhandledRejections, waitingConsumer } from './helpers/app.js'
import { listen, openClient, rawHandshake } from './helpers/loopback.js'
import { contractOnly } from './helpers/layers.js'

const inspect = (app: { channelLayer: unknown }) => (app.channelLayer as InMemoryChannelLayer).inspect()

t.test('accept() completes the handshake, with the subprotocol it names', async t => {
  class Proto extends WebsocketConsumer {
    override async connect () { await this.accept(this.scope.subprotocols.includes('v2') ? 'v2' : undefined) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Proto.asHandler()))
  t.teardown(() => app.close())
  const withProto = new WebsocketCommunicator(app, '/ws', { subprotocols: ['v1', 'v2'] })
  t.same(await withProto.connect(), { connected: true, subprotocol: 'v2', status: 101 })
  const without = new WebsocketCommunicator(app, '/ws')
  t.same(await without.connect(), { connected: true, subprotocol: null, status: 101 })
  const other = new WebsocketCommunicator(app, '/ws', { subprotocols: ['v1'] })
  t.same(await other.connect(), { connected: false, subprotocol: null, status: 101 }, 'no subprotocol unless accept() names one: with one offered, the client then fails the connection')
})

t.test('accept() with a subprotocol the client did not offer refuses the handshake with 500 and logs why', async t => {
  class Wrong extends WebsocketConsumer {
    override async connect () { await this.accept('v9') }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Wrong.asHandler()))
  t.teardown(() => app.close())
  t.match(await new WebsocketCommunicator(app, '/ws', { subprotocols: ['v1'] }).connect(), { connected: false, status: 500 },
    'a client offering v1 is refused: it would have failed the handshake itself')
  t.match(await new WebsocketCommunicator(app, '/ws').connect(), { connected: false, status: 500 }, 'so is a client offering none')
  const failures = logs.filter(l => l.msg === 'consumer connect() failed')
  t.equal(failures.length, 2, 'each logged at error')
  t.match(failures[0], { level: 50, err: { code: 'FST_CHANNELS_INVALID_OPTION', message: 'accept("v9"): the client did not offer that subprotocol (it offered "v1")' } })
  t.match(failures[1], { err: { message: 'accept("v9"): the client did not offer that subprotocol (it offered none)' } })
})

t.test('groups that are not an array refuse the handshake with 500 and say why; a string is not joined letter by letter', async t => {
  class OneString extends WebsocketConsumer { override groups = 'lobby' as unknown as string[] }
  class Nothing extends WebsocketConsumer { override groups = null as unknown as string[] }
  const { app, logs } = await buildApp({}, app => {
    app.get('/string', { websocket: true }, OneString.asHandler())
    app.get('/null', { websocket: true }, Nothing.asHandler())
  })
  t.teardown(() => app.close())
  t.match(await new WebsocketCommunicator(app, '/string').connect(), { connected: false, status: 500 })
  t.match(await new WebsocketCommunicator(app, '/null').connect(), { connected: false, status: 500 })
  t.same(logs.filter(l => l.level === 50).map(l => (l.err as { message: string }).message), [
    'OneString.groups must be an array of group names, got string',
    'Nothing.groups must be an array of group names, got null'
  ])
  t.equal((app.channelLayer as InMemoryChannelLayer).inspect().groups, 0, 'no group was joined')
})

t.test('a handler that throws a value that is not an Error: 1011, and the log says what was thrown', async t => {
  class Careless extends WebsocketConsumer {
    override async receive (text?: string) {
      throw (text === 'undefined' ? undefined : text === 'null' ? null : { reason: text }) as unknown as Error
    }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Careless.asHandler()))
  t.teardown(() => app.close())
  for (const text of ['undefined', 'null', 'object']) {
    const comm = new WebsocketCommunicator(app, '/ws')
    await comm.connect()
    await comm.sendTo(text)
    t.match(await comm.closed, { code: 1011 }, `${text}: 1011`)
  }
  t.same(logs.filter(l => l.msg === 'consumer handler failed; closing with 1011').map(l => l.thrown), [
    'a value that is not an Error: undefined',
    'a value that is not an Error: null',
    "a value that is not an Error: { reason: 'object' }"
  ])
})

t.test('connect() refuses: close() before accept and returning without accept give 403; a throw gives 500 and is logged', async t => {
  class Closes extends WebsocketConsumer { override async connect () { await this.close() } }
  class Returns extends WebsocketConsumer { override async connect () {} }
  class Throws extends WebsocketConsumer { override async connect () { throw new Error('database down') } }
  let built = 0
  class Counted extends Closes { constructor () { super(); built++ } }
  const { app, logs } = await buildApp({}, app => {
    app.get('/closes', { websocket: true }, Closes.asHandler())
    app.get('/returns', { websocket: true }, Returns.asHandler())
    app.get('/throws', { websocket: true }, Throws.asHandler())
    app.get('/counted', { websocket: true }, Counted.asHandler())
  })
  t.teardown(() => app.close())
  t.match(await new WebsocketCommunicator(app, '/closes').connect(), { connected: false, status: 403 })
  t.match(await new WebsocketCommunicator(app, '/returns').connect(), { connected: false, status: 403 })
  t.match(await new WebsocketCommunicator(app, '/throws').connect(), { connected: false, status: 500 })
  const logged = logs.find(l => l.msg === 'consumer connect() failed')
  t.ok(logged, 'connect() error logged')
  t.match(logged, { level: 50, err: { message: 'database down' } })
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 }, 'refused connections leave nothing in the layer')
  t.equal((await new WebsocketCommunicator(app, '/counted').connect()).status, 403)
  t.equal(built, 1)
  t.equal((await app.inject({ method: 'GET', url: '/closes' })).statusCode, 404, 'a plain HTTP GET on a consumer route is 404')
})

t.test('close() in connect() refuses at once; what connect() still joins is left once it returns; accept() after it rejects; a spawned task failing before accept() is a 500', async t => {
  let acceptAfterRefusal: unknown
  let release!: () => void
  const lookup = new Promise<void>(resolve => { release = resolve })
  class GoesOn extends WebsocketConsumer {
    override async connect () {
      await this.close() // refused: 403 at once
      await lookup // something connect() was already waiting for
      await this.channelLayer.groupAdd('after-refusal', this.channelName)
      acceptAfterRefusal = await this.accept().then(() => 'resolved', (err: unknown) => err)
    }
  }
  class SpawnFails extends WebsocketConsumer {
    override async connect () {
      this.spawn(async () => { throw new Error('task bug') })
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
  const { app } = await buildApp({}, app => {
    app.get('/goes-on', { websocket: true }, GoesOn.asHandler())
    app.get('/spawn-fails', { websocket: true }, SpawnFails.asHandler())
  })
  t.teardown(() => app.close())
  t.match(await new WebsocketCommunicator(app, '/goes-on').connect(), { connected: false, status: 403 }, 'the client is refused without waiting for connect()')
  release()
  await eventually(() => acceptAfterRefusal !== undefined)
  t.match(acceptAfterRefusal, { code: 'FST_CHANNELS_CONNECTION_CLOSED' }, 'accept() after the refusal rejects instead of waiting for ever')
  await eventually(() => inspect(app).memberships === 0 && inspect(app).channels === 0)
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 }, 'the group joined after the refusal is left too')
  t.match(await new WebsocketCommunicator(app, '/spawn-fails').connect(), { connected: false, status: 500 }, 'the app\'s bug before accept() is a 500, as a throw in connect() is')
})

t.test('frames a client sent before it closed still reach receive() (behind a slow connect() or a busy handler), then disconnect() with its code', async t => {
  const events: string[] = []
  class Slow extends WebsocketConsumer {
    override async connect () {
      await this.accept()
      await sleep(200)
    }
    override async receive (text?: string) {
      events.push(`receive ${text ?? ''}`)
      if (text === 'slow') await sleep(200)
      // What the frame asked for is done; only the answer to the client cannot go any more.
      await this.channelLayer.groupSend('audit', { type: 'audit', text: text ?? '' })
      await this.send('done').catch((err: { code?: string }) => { events.push(`send ${err.code ?? ''}`) })
    }
    override async disconnect (code: number) { events.push(`disconnect ${code}`) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Slow.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const audit = await app.channelLayer.newChannel()
  await app.channelLayer.groupAdd('audit', audit)
  const { ws, closed } = await openClient(`${url}/ws`)
  ws.send('slow')
  ws.send('hello')
  ws.send('bye')
  await sleep(50)
  ws.close(4000, 'tab closed')
  await closed
  await eventually(() => events.includes('disconnect 4000'), 5000)
  const received = events.filter(e => e.startsWith('receive'))
  t.same(received, ['receive slow', 'receive hello', 'receive bye'], 'every frame, in order')
  t.equal(events.at(-1), 'disconnect 4000', 'disconnect() after them, with the client\'s code')
  const audited: unknown[] = []
  for (let i = 0; i < 3; i++) audited.push((await app.channelLayer.receive(audit, { signal: AbortSignal.timeout(2000) })).text)
  t.same(audited, ['slow', 'hello', 'bye'], 'what each frame asked for was done')
})

t.test('text and binary frames reach receive() as text or bytes', async t => {
  const seen: Array<[string | undefined, number[] | undefined]> = []
  class Record extends WebsocketConsumer {
    override async receive (text?: string, bytes?: Buffer) {
      seen.push([text, bytes === undefined ? undefined : [...bytes]])
      if (text !== undefined) await this.send(text.toUpperCase())
      else await this.send(new Uint8Array([...bytes!].reverse()))
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Record.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendTo('héllo')
  t.equal(await comm.receiveFrom(), 'HÉLLO')
  await comm.sendTo(new Uint8Array([1, 2, 3]))
  t.same(await comm.receiveFrom(), Buffer.from([3, 2, 1]), 'a Uint8Array goes out as a binary frame')
  t.same(seen, [['héllo', undefined], [undefined, [1, 2, 3]]])
})

t.test('what connect() sends after an accept() it did not await waits for the socket, and goes out first, in order', async t => {
  class Eager extends WebsocketConsumer {
    override async connect () {
      void this.accept() // as a Channels user writes self.accept(): not awaited
      await this.send('welcome')
      await this.send(new Uint8Array([1, 2]))
    }

    override async receive (text?: string) { await this.send(`echo ${text ?? ''}`) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Eager.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const frames: unknown[] = []
  const client = await openClient(`${url}/ws`, {}, ws => {
    ws.on('message', (data, binary) => { frames.push(binary ? [...(data as Buffer)] : String(data)) })
  })
  client.ws.send('hi')
  await eventually(() => frames.length >= 3)
  t.same(frames, ['welcome', [1, 2], 'echo hi'], 'nothing dropped, in the order it was sent')
  client.ws.close()
  await client.closed
})

t.test('send() of anything but a string or bytes rejects with InvalidOptionError; nothing is sent and the connection stays open', async t => {
  class Careless extends WebsocketConsumer {
    override async receive (text?: string) {
      const value = text === 'undefined' ? undefined : text === 'object' ? { a: 1 } : 42
      const outcome = await this.send(value as never).then(() => 'sent', (err: { code?: string, message?: string }) => `${err.code ?? ''}: ${err.message ?? ''}`)
      await this.send(outcome)
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Careless.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  for (const [what, type] of [['undefined', 'undefined'], ['object', 'object'], ['number', 'number']]) {
    await comm.sendTo(what)
    t.equal(await comm.receiveFrom(), `FST_CHANNELS_INVALID_OPTION: send(data) takes a string or bytes, got ${type}`, `${what}: refused, and the next frame is the refusal`)
  }
  t.ok(await comm.receiveNothing(), 'nothing else was sent')
  await comm.disconnect()
})

t.test('frames sent while connect() is still running are queued in order, none dropped', async t => {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  class Slow extends WebsocketConsumer {
    override async connect () { await this.accept(); await gate; await this.send('ready') }
    override async receive (text?: string) { await this.send(`got ${text}`) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Slow.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  for (let i = 0; i < 5; i++) await comm.sendTo(String(i))
  t.ok(await comm.receiveNothing(50), 'nothing is handled before connect() finishes')
  release()
  t.equal(await comm.receiveFrom(), 'ready')
  for (let i = 0; i < 5; i++) t.equal(await comm.receiveFrom(), `got ${i}`)
})

t.test('client frames and layer messages are handled one at a time, in arrival order', async t => {
  const events: string[] = []
  class Serial extends WebsocketConsumer {
    override async receive (text?: string) {
      events.push(`start ${text}`)
      await this.channelLayer.send(this.channelName, { type: 'note', text: `after ${text}` })
      await sleep(10)
      events.push(`end ${text}`)
    }
    async note (m: { text: string }) { events.push(m.text); await this.send(m.text) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Serial.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendTo('a')
  await comm.sendTo('b')
  t.equal(await comm.receiveFrom(), 'after a')
  t.equal(await comm.receiveFrom(), 'after b')
  t.same([...events].sort(), ['after a', 'after b', 'end a', 'end b', 'start a', 'start b'], 'every event ran once')
  t.ok(events.indexOf('end a') < events.indexOf('start b'), 'b starts only after a finished')
  t.ok(events.indexOf('end a') < events.indexOf('after a'), 'a message is not handled while a frame handler runs')
  t.ok(events.indexOf('end b') < events.indexOf('after b'), 'nor while the next one runs')
  for (const e of events) {
    if (e.startsWith('start')) t.equal(events[events.indexOf(e) + 1], e.replace('start', 'end'), `${e} is not interleaved`)
  }
})

t.test('groups are joined before connect() and left after disconnect(); disconnect runs once with the code', async t => {
  const codes: number[] = []
  const membershipsInDisconnect: number[] = []
  class Grouped extends WebsocketConsumer {
    override groups = ['lobby', 'news']
    override async connect () {
      // A group message sent before accepting is delivered once the connection is open.
      await this.channelLayer.groupSend('lobby', { type: 'hello', to: this.channelName })
      await this.accept()
    }
    async hello (m: { to: string }) { if (m.to === this.channelName) await this.send('hello') }
    async news (m: { text: string }) { await this.send(m.text) }
    override async receive (text?: string) { if (text === 'bye') await this.close(4001, 'bye now') }
    override async disconnect (code: number) {
      codes.push(code)
      membershipsInDisconnect.push(inspect(app).memberships)
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Grouped.asHandler()))
  t.teardown(() => app.close())
  const a = new WebsocketCommunicator(app, '/ws')
  await a.connect()
  t.equal(await a.receiveFrom(), 'hello')
  t.same(inspect(app), { channels: 1, groups: 2, memberships: 2 })
  await app.channelLayer.groupSend('news', { type: 'news', text: 'extra' })
  t.equal(await a.receiveFrom(), 'extra')
  await a.disconnect(4000)
  t.same(codes, [4000], 'client close code')
  t.same(membershipsInDisconnect, [2], 'still a member while disconnect() runs')
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 })

  const b = new WebsocketCommunicator(app, '/ws')
  await b.connect()
  await b.receiveFrom()
  await b.sendTo('bye')
  t.match(await b.closed, { code: 4001, reason: 'bye now' })
  await b.serverFinished()
  t.same(codes, [4000, 4001], 'server close code, once')
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 })
})

t.test('while a slow disconnect() runs, group messages to the ended connection are dropped, not counted as a full channel\'s skips', async t => {
  let release: () => void = () => {}
  const released = new Promise<void>(resolve => { release = resolve })
  class Slow extends WebsocketConsumer {
    override groups = ['room']
    override async connect () { await this.accept() }
    async line (m: { n: number }) { await this.send(String(m.n)) }
    override async disconnect () { await released }
  }
  const layer = new InMemoryChannelLayer({ capacity: 10 })
  const { app, logs } = await buildApp({ layer }, app => app.get('/ws', { websocket: true }, Slow.asHandler()))
  t.teardown(() => app.close())
  const [leaving, staying] = [new WebsocketCommunicator(app, '/ws'), new WebsocketCommunicator(app, '/ws')]
  await leaving.connect()
  await staying.connect()
  const ending = leaving.disconnect(1000, '', 5000)
  await eventually(() => app.websocketServer.clients.size === 1)
  t.equal(inspect(app).memberships, 2, 'the ended connection is still a member while its disconnect() runs')
  for (let n = 1; n <= 30; n++) await app.channelLayer.groupSend('room', { type: 'line', n })
  const got: string[] = []
  for (let n = 1; n <= 30; n++) got.push(await staying.receiveFrom() as string)
  t.same(got.map(Number), Array.from({ length: 30 }, (_, i) => i + 1), 'the member that stays gets every message')
  t.equal(layer.stats.groupSendSkipped, 0, 'none is counted as skipped for a full channel')
  t.same(logs.filter(l => String(l.msg).includes('skipped a full channel')), [], 'nor logged as one')
  release()
  await ending
  t.same(inspect(app), { channels: 1, groups: 1, memberships: 1 }, 'then the ended connection leaves the layer')
  await staying.disconnect()
})

t.test('a close reason longer than a close frame holds is cut on a character boundary, never inside an emoji', async t => {
  class Closer extends WebsocketConsumer {
    override async receive (text?: string) { await this.close(4002, text) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Closer.asHandler()))
  t.teardown(() => app.close())
  for (const [reason, expected] of [
    ['a' + '😀'.repeat(40), 'a' + '😀'.repeat(29) + '...'], // 117 bytes, then half an emoji would still fit
    ['😀'.repeat(40), '😀'.repeat(30) + '...'],
    ['é'.repeat(100), 'é'.repeat(60) + '...'],
    ['x'.repeat(123), 'x'.repeat(123)]
  ]) {
    const comm = new WebsocketCommunicator(app, '/ws')
    await comm.connect()
    await comm.sendTo(reason)
    const closed = await comm.closed
    t.same(closed, { code: 4002, reason: expected }, `${Buffer.byteLength(reason)} bytes → ${Buffer.byteLength(expected)}`)
  }
})

t.test('a client gone while connect() ran: its accept() ends the connection, disconnect(1006) runs once, groups are left', async t => {
  let started = false
  let release = (): void => {}
  const gate = new Promise<void>(resolve => { release = resolve })
  const codes: number[] = []
  class Slow extends WebsocketConsumer {
    override groups = ['lobby']
    override async connect () {
      started = true
      await gate // a slow lookup, during which the client goes away
      await this.accept()
    }

    override async disconnect (code: number) { codes.push(code) }
  }
  const { app } = await buildApp({}, app => app.get('/slow', { websocket: true }, Slow.asHandler()))
  t.teardown(() => app.close())
  const { port } = await listen(app)
  // A raw handshake, so that the client can reset the connection: the server's socket is then
  // closed and destroyed before accept() (a plain FIN would leave it half open until the upgrade).
  const socket = rawHandshake(port, '/slow')
  await eventually(() => started, 2000)
  socket.resetAndDestroy()
  await sleep(100)
  release()
  await eventually(() => codes.length === 1, 2000)
  t.same(codes, [1006], 'disconnect() with 1006, once')
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 }, 'the channel and its membership are gone')
})

for (const how of ['resets the connection', 'ends its side (FIN)']) {
  t.test(`a client that ${how} while connect() waits: connect() is told through this.signal, and the connection ends`, async t => {
    const events: string[] = []
    const { app } = await buildApp({}, app => app.get('/waits', { websocket: true }, waitingConsumer(events, ['lobby']).asHandler()))
    t.teardown(() => app.close())
    const { port } = await listen(app)
    const socket = rawHandshake(port, '/waits')
    await eventually(() => events.length === 1, 2000)
    if (how.startsWith('resets')) socket.resetAndDestroy()
    else socket.end()
    await eventually(() => events.length === 2, 3000)
    t.same(events, ['connect', 'stopped: AbortError'], 'connect() stopped waiting when the client went away')
    await eventually(() => inspect(app).memberships === 0, 2000)
    t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 }, 'the channel and its membership are gone')
    socket.destroy()
  })
}

t.test('a connect() whose wait the signal aborted when the client went away is no failure: logged at debug, not as the app\'s error', async t => {
  let stopped = false
  class Lookup extends WebsocketConsumer {
    override async connect (): Promise<void> {
      try {
        await wait(60_000, undefined, { signal: this.signal }) // a slow lookup, as the README suggests
      } finally {
        stopped = true
      }
      await this.accept()
    }
  }
  const { app, logs } = await buildApp({}, app => app.get('/lookup', { websocket: true }, Lookup.asHandler()))
  t.teardown(() => app.close())
  const { port } = await listen(app)
  const socket = rawHandshake(port, '/lookup')
  await eventually(() => logs.some(l => l.msg === 'incoming request'), 2000)
  await sleep(50)
  socket.resetAndDestroy()
  await eventually(() => stopped, 3000)
  await eventually(() => logs.some(l => l.msg === 'consumer connect() stopped: the client went away'), 2000)
  t.same(logs.filter(l => (l.level as number) >= 40).map(l => l.msg), [], 'nothing logged at warn or error')
  await eventually(() => inspect(app).channels === 0, 2000)
  t.pass('the channel is gone')
})

t.test('layer messages are dispatched by type; unknown and reserved types are dropped and logged', async t => {
  // 'signal' names a getter of the base class that needs a connection: reading it to look for a
  // handler threw, and closed every member of the group with 1011.
  class Dispatch extends WebsocketConsumer {
    override groups = ['all']
    async chatMessage (m: { text: string }) { await this.send(`camel ${m.text}`) }
    async user_joined (m: { name: string }) { await this.send(`snake ${m.name}`) } // eslint-disable-line camelcase
    async _secret () { await this.send('secret ran') }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Dispatch.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  const send = async (m: LayerMessage) => app.channelLayer.groupSend('all', m)
  await send({ type: 'chat.message', text: 'hi' })
  t.equal(await comm.receiveFrom(), 'camel hi')
  await send({ type: 'user.joined', name: 'ann' })
  t.equal(await comm.receiveFrom(), 'snake ann', "falls back to Django's name")
  for (const type of ['no.such', 'close', 'send', 'accept', 'disconnect', 'constructor', 'to.string', 'has_own_property', '_secret', '.secret', '__proto__', 'receive', 'channel.layer', 'signal', 'spawn', 'scope', '']) {
    await send({ type })
  }
  await send({ type: 'chat.message', text: 'still open' })
  t.equal(await comm.receiveFrom(), 'camel still open', 'the connection survived every dropped type')
  t.ok(await comm.receiveNothing(30))
  const dropped = logs.filter(l => l.msg === 'no handler for message type; dropped').map(l => l.type)
  t.same(dropped, ['no.such', 'close', 'send', 'accept', 'disconnect', 'constructor', 'to.string', 'has_own_property', '_secret', '.secret', '__proto__', 'receive', 'channel.layer', 'signal', 'spawn', 'scope', ''])
  const hint = (type: string): unknown => logs.find(l => l.msg === 'no handler for message type; dropped' && l.type === type)?.hint
  t.equal(hint('no.such'), 'define noSuch() or no_such()', 'the warning names the methods that would handle it')
  t.equal(hint('send'), 'send is a name the consumer\'s base class reserves: it is never a handler')
  t.equal(hint('_secret'), 'a type that is empty or starts with _ is never dispatched')
})

t.test('one fan-out to four classes: each member runs its own class\'s handler, an override, a snake_case name or an arrow-function field', async t => {
  class Base extends WebsocketConsumer {
    override groups = ['all']
    async chatMessage (m: { text: string }) { await this.send(`base ${m.text}`) }
  }
  class Override extends Base {
    override async chatMessage (m: { text: string }) { await this.send(`override ${m.text}`) }
  }
  class Snake extends WebsocketConsumer {
    override groups = ['all']
    async chat_message (m: { text: string }) { await this.send(`snake ${m.text}`) } // eslint-disable-line camelcase
  }
  class Field extends WebsocketConsumer {
    override groups = ['all']
    chatMessage = async (m: { text: string }) => { await this.send(`field ${m.text}`) }
  }
  const { app } = await buildApp({}, app => {
    app.get('/base', { websocket: true }, Base.asHandler())
    app.get('/override', { websocket: true }, Override.asHandler())
    app.get('/snake', { websocket: true }, Snake.asHandler())
    app.get('/field', { websocket: true }, Field.asHandler())
  })
  t.teardown(() => app.close())
  const { url } = await listen(app)
  // Members of one class in a row and of others between them: a lookup remembered for one class
  // must not answer for the next.
  const paths = ['/base', '/base', '/override', '/snake', '/field', '/override', '/snake', '/base', '/field', '/field']
  const texts = paths.map(() => [] as string[])
  for (const [i, path] of paths.entries()) {
    const { ws } = await openClient(`${url}${path}`, {}, ws => ws.on('message', data => { texts[i].push(data.toString()) }))
    t.teardown(() => ws.terminate())
  }
  await eventually(() => inspect(app).memberships === paths.length)
  for (const text of ['one', 'two']) await app.channelLayer.groupSend('all', { type: 'chat.message', text })
  await eventually(() => texts.every(received => received.length === 2))
  t.same(texts, paths.map(path => [`${path.slice(1)} one`, `${path.slice(1)} two`]))
})

t.test('a handler that throws closes with 1011, runs disconnect and leaves the groups', async t => {
  const codes: number[] = []
  class Fails extends WebsocketConsumer {
    override groups = ['g']
    override async receive (text?: string) { if (text === 'boom') throw new Error('handler bug'); await this.send(text!) }
    async explode () { throw new Error('message handler bug') }
    override async disconnect (code: number) { codes.push(code) }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Fails.asHandler()))
  t.teardown(() => app.close())
  const a = new WebsocketCommunicator(app, '/ws')
  const b = new WebsocketCommunicator(app, '/ws')
  await a.connect(); await b.connect()
  await a.sendTo('boom')
  t.match(await a.closed, { code: 1011 })
  await a.serverFinished()
  t.same(codes, [1011])
  t.match(logs.find(l => l.msg === 'consumer handler failed; closing with 1011'), { err: { message: 'handler bug' } })
  await b.sendTo('other client still works')
  t.equal(await b.receiveFrom(), 'other client still works')
  t.same(inspect(app), { channels: 1, groups: 1, memberships: 1 }, 'only b remains')
  await app.channelLayer.groupSend('g', { type: 'explode' })
  t.match(await b.closed, { code: 1011 })
  await b.serverFinished()
  t.same(codes, [1011, 1011])
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 })
})

t.test('connect() that throws after accept closes with 1011 and still runs disconnect', async t => {
  const codes: number[] = []
  class Late extends WebsocketConsumer {
    override async connect () { await this.accept(); throw new Error('late failure') }
    override async disconnect (code: number) { codes.push(code) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Late.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  t.equal((await comm.connect()).connected, true)
  t.match(await comm.closed, { code: 1011 })
  await comm.serverFinished()
  t.same(codes, [1011])
})

// 1005 may not be sent; '4000' is a string, not a code, and is told so.
for (const [code, message] of [[1005, /close code 1005 cannot be sent/], ['4000', 'close(code): the code must be a number, got string']] as const) {
  for (const awaited of [true, false]) {
    t.test(`an invalid close code (${JSON.stringify(code)}) is a clear error, not a crash (close() ${awaited ? 'awaited' : 'not awaited'})`, async t => {
      const rejections = unhandledRejections(t)
      class BadClose extends WebsocketConsumer {
        override async receive () {
          if (awaited) await this.close(code as number)
          else void this.close(code as number) // as a Channels user may write it: the call still throws
        }
      }
      const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, BadClose.asHandler()))
      t.teardown(() => app.close())
      const comm = new WebsocketCommunicator(app, '/ws')
      await comm.connect()
      await comm.sendTo('x')
      t.match(await comm.closed, { code: 1011 })
      t.match(logs.find(l => l.msg === 'consumer handler failed; closing with 1011'), { err: { code: 'FST_CHANNELS_INVALID_OPTION', message } })
      await sleep(20)
      t.same(rejections, [], 'no unhandled rejection')
    })
  }
}

t.test('channelName reaches the consumer through channelLayer.send from an HTTP route', async t => {
  const names: string[] = []
  class Named extends WebsocketConsumer {
    override async connect () { names.push(this.channelName); await this.accept() }
    async serverPush (m: { text: string }) { await this.send(m.text) }
  }
  const { app } = await buildApp({}, app => {
    app.get('/ws', { websocket: true }, Named.asHandler())
    app.post('/push', async (request) => {
      const { channel, text } = request.body as { channel: string, text: string }
      await app.channelLayer.send(channel, { type: 'server.push', text })
      return { ok: true }
    })
  })
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  t.match(names[0], /^[a-zA-Z\d\-_.]+![\d\w\-_.]*$/, 'a process-specific channel name')
  const res = await app.inject({ method: 'POST', url: '/push', payload: { channel: names[0], text: 'from http' } })
  t.equal(res.statusCode, 200)
  t.equal(await comm.receiveFrom(), 'from http')
})

t.test('1,000 connect/disconnect cycles leave no channel or membership behind', async t => {
  class Member extends WebsocketConsumer {
    override groups = ['everyone']
    override async connect () {
      await this.channelLayer.groupAdd(`room-${this.scope.query.n as string}`, this.channelName)
      await this.accept()
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Member.asHandler()))
  t.teardown(() => app.close())
  for (let i = 0; i < 1000; i++) {
    const comm = new WebsocketCommunicator(app, `/ws?n=${i % 7}`)
    await comm.connect()
    await comm.disconnect()
  }
  t.same(inspect(app), { channels: 0, groups: 0, memberships: 0 })
})

t.test('app.close() closes every consumer with 1001, runs each disconnect once, then closes the layer', async t => {
  const codes: number[] = []
  class Stay extends WebsocketConsumer {
    override groups = ['g']
    override async disconnect (code: number) { codes.push(code) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Stay.asHandler()))
  const comms = Array.from({ length: 20 }, () => new WebsocketCommunicator(app, '/ws'))
  for (const c of comms) await c.connect()
  await app.close()
  const closes = await Promise.all(comms.map(c => c.closed))
  t.same(new Set(closes.map(c => c.code)), new Set([1001]))
  t.equal(codes.length, 20)
  t.same(new Set(codes), new Set([1001]))
  await t.rejects(app.channelLayer.send('x', { type: 'y' }), { code: 'FST_CHANNELS_LAYER_CLOSED' })
})

t.test('the heartbeat terminates nothing that answers pings', async t => {
  class Echo extends WebsocketConsumer { override async receive (text?: string) { await this.send(text!) } }
  const { app } = await buildApp({ heartbeatInterval: 20 }, app => app.get('/ws', { websocket: true }, Echo.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await sleep(120)
  await comm.sendTo('alive')
  t.equal(await comm.receiveFrom(), 'alive')
})

t.test('on a layer without discardChannel, the groups the connection joined are still left', async t => {
  const inner = new InMemoryChannelLayer()
  const layer = contractOnly(inner)
  class Joins extends WebsocketConsumer {
    override groups = ['a']
    override async connect () { await this.channelLayer.groupAdd('b', this.channelName); await this.accept() }
  }
  const { app } = await buildApp({ layer }, app => app.get('/ws', { websocket: true }, Joins.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  t.same(inner.inspect().memberships, 2)
  await comm.disconnect()
  t.same(inner.inspect().memberships, 0)
})

for (const [kind, makeLayer] of [
  ['a layer that pushes (listen)', (inner: InMemoryChannelLayer): ChannelLayer => inner],
  ['a layer that can only be polled (receive)', contractOnly]
] as const) {
  t.test(`on ${kind}: messages arrive in order past the queue limit, and a layer failure closes with 1011`, async t => {
    const inner = new InMemoryChannelLayer()
    class Slow extends WebsocketConsumer {
      override groups = ['feed']
      async item (m: { n: number }) {
        await sleep(1)
        await this.send(String(m.n))
      }
    }
    const { app, logs } = await buildApp({ layer: makeLayer(inner) }, app => app.get('/ws', { websocket: true }, Slow.asHandler()))
    t.teardown(() => app.close())
    const comm = new WebsocketCommunicator(app, '/ws')
    await comm.connect()
    // More than the connection queues at once (16): the rest waits in the layer, under its capacity.
    for (let n = 0; n < 60; n++) await app.channelLayer.groupSend('feed', { type: 'item', n })
    const got: string[] = []
    for (let n = 0; n < 60; n++) got.push(String(await comm.receiveFrom()))
    t.same(got, Array.from({ length: 60 }, (_, n) => String(n)), 'all 60, in order')
    await inner.close()
    t.same(await comm.closed, { code: 1011, reason: 'channel layer unavailable' })
    t.ok(logs.some(l => l.msg === 'channel layer receive failed; closing the connection' && l.level === 50), 'logged as an error')
  })
}

t.test('handlers need not be async: plain functions run in order, and a throw closes with 1011', async t => {
  const ran: string[] = []
  class Plain extends WebsocketConsumer {
    override groups = ['plain']
    // Not async and not awaited: the frame is handed to the socket before send() returns.
    note (m: { text: string }) {
      ran.push(m.text)
      void this.send(m.text)
    }

    explode () { throw new Error('plain handler bug') }
    override async disconnect (code: number) { ran.push(`disconnect ${code}`) }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Plain.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  for (const text of ['a', 'b', 'c']) await app.channelLayer.groupSend('plain', { type: 'note', text })
  t.same([await comm.receiveFrom(), await comm.receiveFrom(), await comm.receiveFrom()], ['a', 'b', 'c'])
  await app.channelLayer.groupSend('plain', { type: 'explode' })
  await app.channelLayer.groupSend('plain', { type: 'note', text: 'after' })
  t.same(await comm.closed, { code: 1011, reason: 'internal error' })
  await comm.serverFinished()
  t.same(ran, ['a', 'b', 'c', 'disconnect 1011'], 'nothing ran after the failure but disconnect()')
  t.ok(logs.some(l => l.msg === 'consumer handler failed; closing with 1011' && (l.err as { message?: string }).message === 'plain handler bug'))
})

t.test('send() and sendJson() report bad calls as rejections, not throws', async t => {
  class Bad extends JsonWebsocketConsumer {
    override async receiveJson () {
      const circular: Record<string, unknown> = {}
      circular.self = circular
      const outcomes = await Promise.all([
        this.sendJson(circular).then(() => 'sent', (err: Error) => err.constructor.name),
        this.sendJson(10n).then(() => 'sent', (err: Error) => err.constructor.name),
        this.sendJson({ ok: true }).then(() => 'sent')
      ])
      await this.send(outcomes.join(','))
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Bad.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendTo('{}')
  t.same(await comm.receiveFrom(), '{"ok":true}')
  t.same(await comm.receiveFrom(), 'TypeError,TypeError,sent')
})

t.test('a handler returning a broken thenable fails only its own connection, never the sender', async t => {
  class Odd extends WebsocketConsumer {
    override groups = ['odd']
    weird () { return { then () { throw new Error('broken thenable') } } }
  }
  class Fine extends WebsocketConsumer {
    override groups = ['odd']
    weird () { void this.send('fine') }
  }
  const { app, logs } = await buildApp({}, app => {
    app.get('/odd', { websocket: true }, Odd.asHandler())
    app.get('/fine', { websocket: true }, Fine.asHandler())
  })
  t.teardown(() => app.close())
  const odd = new WebsocketCommunicator(app, '/odd')
  const fine = new WebsocketCommunicator(app, '/fine')
  await odd.connect()
  await fine.connect()
  await t.resolves(app.channelLayer.groupSend('odd', { type: 'weird' }), 'groupSend resolves for the sender')
  t.same(await odd.closed, { code: 1011, reason: 'internal error' })
  t.equal(await fine.receiveFrom(), 'fine', 'the other member got its message')
  t.ok(logs.some(l => l.msg === 'consumer handler failed; closing with 1011' && (l.err as { message?: string }).message === 'broken thenable'))
})

t.test('handlers get how a message came; presence events reach presenceJoin/presenceLeave, or nobody, silently', async t => {
  const layer = new InMemoryChannelLayer({ groups: { 'room.*': { history: { size: 10, ttl: 60 }, presenceEvents: true } } })
  class Room extends JsonWebsocketConsumer {
    override groups = ['room.lobby']
    async chatMessage (event: LayerMessage, info: Delivery) { await this.sendJson({ text: event.text, info }) }
    async presenceJoin (event: LayerMessage) { await this.sendJson({ joined: event.info }) }
    async presenceLeave (event: LayerMessage) { await this.sendJson({ left: event.info }) }
  }
  class Quiet extends JsonWebsocketConsumer {
    override groups = ['room.lobby']
  }
  const { app, logs } = await buildApp({ layer }, app => {
    app.get('/room', { websocket: true }, Room.asHandler())
    app.get('/quiet', { websocket: true }, Quiet.asHandler())
  })
  t.teardown(() => app.close())
  const [room, quiet] = [new WebsocketCommunicator(app, '/room'), new WebsocketCommunicator(app, '/quiet')]
  await room.connect()
  await quiet.connect()
  const position = await layer.groupSend('room.lobby', { type: 'chat.message', text: 'hi' })
  t.same(await room.receiveJsonFrom(), { text: 'hi', info: { group: 'room.lobby', offset: 1, epoch: position?.epoch } })
  const visitor = await layer.newChannel()
  await layer.groupAdd('room.lobby', visitor, { presence: { name: 'Ada' } })
  t.same(await room.receiveJsonFrom(), { joined: { name: 'Ada' } })
  await layer.groupDiscard('room.lobby', visitor)
  t.same(await room.receiveJsonFrom(), { left: { name: 'Ada' } })
  t.ok(await quiet.receiveNothing(50))
  t.notOk(logs.some(l => l.msg === 'no handler for message type; dropped' && String(l.type).startsWith('presence.')), 'a consumer without presence handlers is not told off')
  t.ok(logs.some(l => l.msg === 'no handler for message type; dropped' && l.type === 'chat.message'), 'unlike any other type')
})

t.test('static sharedMessages: one deep-frozen message for every member that opts in, encoded once; others keep their copies', async t => {
  const seen: object[] = []
  let encoded = 0
  class Shared extends JsonWebsocketConsumer {
    static override sharedMessages = true
    static override encodeJson (value: unknown): string { encoded++; return JSON.stringify(value) }
    override groups = ['news']
    async newsItem (event: LayerMessage) {
      seen.push(event)
      if (event.edit === true) event.title = 'changed'
      await this.sendJson(event.payload)
    }
  }
  class Own extends JsonWebsocketConsumer {
    override groups = ['news']
    async newsItem (event: LayerMessage) {
      seen.push(event)
      event.title = 'mine to change'
      await this.sendJson(event.payload)
    }
  }
  const { app, logs } = await buildApp({}, app => {
    app.get('/shared', { websocket: true }, Shared.asHandler())
    app.get('/own', { websocket: true }, Own.asHandler())
  })
  t.teardown(() => app.close())
  const sharing = [new WebsocketCommunicator(app, '/shared'), new WebsocketCommunicator(app, '/shared'), new WebsocketCommunicator(app, '/shared')]
  const own = new WebsocketCommunicator(app, '/own')
  for (const c of [...sharing, own]) await c.connect()
  const sent = { type: 'news.item', title: 'hello', payload: { n: 1, tags: ['a'] } }
  await app.channelLayer.groupSend('news', sent)
  for (const c of [...sharing, own]) t.same(await c.receiveJsonFrom(), { n: 1, tags: ['a'] })
  const sharedOnes = seen.filter(m => Object.isFrozen(m))
  t.equal(sharedOnes.length, 3, 'the three that opted in got a frozen message')
  t.ok(sharedOnes.every(m => m === sharedOnes[0]), '— the same one')
  t.ok(Object.isFrozen((sharedOnes[0] as { payload: { tags: object } }).payload.tags), 'frozen all the way down')
  t.equal(encoded, 1, 'its payload was encoded once for the three')
  t.equal(seen.filter(m => !Object.isFrozen(m)).length, 1, 'the one that did not opt in got a copy it may change')
  t.equal(sent.title, 'hello', 'the sender\'s object is untouched')

  // Writing to a shared message is a handler error: a TypeError, 1011, logged; the others go on.
  await app.channelLayer.groupSend('news', { type: 'news.item', edit: true, payload: { n: 2 } })
  for (const c of sharing) t.match(await c.closed, { code: 1011 })
  t.same(await own.receiveJsonFrom(), { n: 2 })
  const failure = logs.find(l => l.msg === 'consumer handler failed; closing with 1011')
  t.match(failure?.err, { type: 'TypeError', message: /read only|not extensible/ }, 'a TypeError says the message cannot be changed', { found: failure })
})
