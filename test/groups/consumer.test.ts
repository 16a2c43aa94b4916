/**
 * GroupsConsumer as a client that speaks the documented protocol sees it: joins answered with
 * the position and presence, messages forwarded with their offsets (reshaped or dropped by
 * `forward()`), whatever their type, presence kept current, recovery with `since`, leave, and
 * action arguments checked by the app's own validator compiler. Also what a bad `static actions`
 * does at route declaration.
 */
import t, { type Test } from 'tap'
import { GroupsConsumer, InMemoryChannelLayer, LayerTimeoutError, type Delivery, type LayerMessage } from '../../lib/index.js'
import { rawProtocolClient, type Frame, type RawProtocolClient } from '../helpers/protocol.js'
import { Rooms, called, roomGroups, roomsApp, type RoomsApp } from './rooms.js'

let server: RoomsApp
t.before(async () => { server = await roomsApp() })
t.teardown(async () => { await server.app.close() })

async function client (t: Test, name: string): Promise<RawProtocolClient> {
  const c = await rawProtocolClient(`${server.url}?name=${name}`)
  t.teardown(() => { c.ws.terminate() })
  return c
}

const withoutPresence = (frames: Frame[]): Frame[] => frames.filter(f => f.op !== 'presence')

t.test('join, messages with their positions, presence, leave', async t => {
  const ada = await client(t, 'Ada')
  ada.send({ op: 'join', group: 'room.lobby' })
  const joined = await ada.next()
  t.match(joined, { op: 'joined', group: 'room.lobby', position: { offset: 0, epoch: String }, recovered: false, presence: [{ info: { name: 'Ada' } }] },
    'joined: the position, and the presence list with Ada in it')
  t.match(await ada.next(), { op: 'presence', group: 'room.lobby', join: { info: { name: 'Ada' } } }, 'her own join is announced too')

  const grace = await client(t, 'Grace')
  grace.send({ op: 'join', group: 'room.lobby' })
  t.match(await grace.next(), { op: 'joined', presence: [{ info: { name: 'Ada' } }, { info: { name: 'Grace' } }] })
  t.match(await ada.next(), { op: 'presence', group: 'room.lobby', join: { channel: String, info: { name: 'Grace' } } }, 'Ada hears Grace join')

  called.length = 0
  const layer = server.app.channelLayer
  await layer.groupSend('room.lobby', { type: 'room.message', text: 'one' })
  await layer.groupSend('room.lobby', { type: 'post', room: 'lobby', text: 'a type that names an action' })
  await layer.groupSend('room.lobby', { type: 'close', code: 1000 })
  await layer.groupSend('room.lobby', { type: 'room.secret', text: 'dropped by forward()' })
  await layer.groupSend('room.lobby', { type: 'room.shout', text: 'reshaped' })
  const epoch = (joined.position as { epoch: string }).epoch
  t.same(withoutPresence(await ada.until(f => f.op === 'message' && f.offset === 5)), [
    { op: 'message', group: 'room.lobby', offset: 1, epoch, data: { type: 'room.message', text: 'one' } },
    { op: 'message', group: 'room.lobby', offset: 2, epoch, data: { type: 'post', room: 'lobby', text: 'a type that names an action' } },
    { op: 'message', group: 'room.lobby', offset: 3, epoch, data: { type: 'close', code: 1000 } },
    { op: 'message', group: 'room.lobby', offset: 5, epoch, data: { text: 'RESHAPED' } }
  ], 'every type is forwarded, with its offset and epoch; forward() dropped one and reshaped another')
  t.same(called, [], 'no group message reached a method of the consumer')
  t.equal(ada.ws.readyState, ada.ws.OPEN)

  await layer.groupSend('room.other', { type: 'room.message', text: 'not joined' })
  t.ok(await ada.nothing(50), 'a group the client did not join sends nothing')

  grace.ws.close()
  t.match(await ada.until(f => f.op === 'presence'), [{ op: 'presence', group: 'room.lobby', leave: { info: { name: 'Grace' } } }], 'Ada hears Grace leave')

  ada.send({ op: 'leave', group: 'room.lobby' })
  ada.send({ op: 'call', id: 1, action: 'echo', args: 'after leave' })
  t.match(await ada.next(), { op: 'reply', id: 1 })
  await layer.groupSend('room.lobby', { type: 'room.message', text: 'after leave' })
  t.ok(await ada.nothing(50), 'after a leave, nothing more from the group')
  t.same(await layer.presence('room.lobby'), [], 'and her presence entry is gone')
})

t.test('a forward() that returns what JSON cannot carry drops that message only, logged; the client goes on with the next', async t => {
  const ada = await client(t, 'Ada')
  ada.send({ op: 'join', group: 'room.unsendable' })
  await ada.until(f => f.op === 'joined')
  const layer = server.app.channelLayer
  for (const type of ['room.poison.bigint', 'room.poison.cycle', 'room.poison.function']) await layer.groupSend('room.unsendable', { type })
  await layer.groupSend('room.unsendable', { type: 'room.message', text: 'after' })
  const got = withoutPresence(await ada.until(f => f.op === 'message'))
  t.match(got, [{ op: 'message', offset: 4, data: { text: 'after' } }], 'the next message arrives, and nothing of the three before it')
  t.equal(ada.ws.readyState, ada.ws.OPEN, 'the connection stays open')
  t.equal(server.logs.filter(l => l.msg === 'forward() failed; the message is not sent to this client' && l.level === 50 && l.group === 'room.unsendable').length, 3, 'each logged at error')
})

t.test('a forward() that throws or rejects drops that message only, logged; the client goes on with the next', async t => {
  const ada = await client(t, 'Ada')
  ada.send({ op: 'join', group: 'room.poisoned' })
  await ada.until(f => f.op === 'joined')
  const layer = server.app.channelLayer
  await layer.groupSend('room.poisoned', { type: 'room.poison' })
  await layer.groupSend('room.poisoned', { type: 'room.poison.async' })
  await layer.groupSend('room.poisoned', { type: 'room.message', text: 'after' })
  const got = withoutPresence(await ada.until(f => f.op === 'message'))
  t.match(got, [{ op: 'message', offset: 3, data: { text: 'after' } }], 'the next message arrives')
  t.equal(ada.ws.readyState, ada.ws.OPEN, 'the connection stays open')
  t.equal(server.logs.filter(l => l.msg === 'forward() failed; the message is not sent to this client' && l.level === 50 && l.group === 'room.poisoned').length, 2, 'each failure logged at error')
})

t.test('a join with since recovers what was missed, before anything newer; a stale since is not recovered', async t => {
  const layer = server.app.channelLayer
  const first = await client(t, 'Ada')
  first.send({ op: 'join', group: 'room.recover' })
  const { position } = await first.next() as unknown as { position: { offset: number, epoch: string } }
  await layer.groupSend('room.recover', { type: 'line', n: 1 })
  const seen = withoutPresence(await first.until(f => f.op === 'message'))
  t.match(seen, [{ offset: 1 }])
  first.ws.terminate()
  for (let n = 2; n <= 4; n++) await layer.groupSend('room.recover', { type: 'line', n })

  const back = await client(t, 'Ada')
  back.send({ op: 'join', group: 'room.recover', since: { offset: 1, epoch: position.epoch } })
  await layer.groupSend('room.recover', { type: 'line', n: 5 })
  const frames = withoutPresence(await back.until(f => f.op === 'message' && f.offset === 5))
  t.match(frames, [
    // Position 4 or 5: the send of 5 races the join, and either way 5 comes once, after 4.
    { op: 'joined', recovered: true, position: { offset: Number } },
    { op: 'message', offset: 2, data: { n: 2 } },
    { op: 'message', offset: 3, data: { n: 3 } },
    { op: 'message', offset: 4, data: { n: 4 } },
    { op: 'message', offset: 5, data: { n: 5 } }
  ], 'joined first, then the missed messages in order, then the live one: each once')
  t.equal(frames.length, 5)

  const stale = await client(t, 'Ada')
  stale.send({ op: 'join', group: 'room.recover', since: { offset: 1, epoch: 'another-epoch' } })
  t.match(await stale.next(), { op: 'joined', recovered: false, position: { offset: 5 } }, 'another epoch: not recovered, the latest position')
  const after: Frame[] = []
  for (;;) {
    try { after.push(await stale.next(100)) } catch { break }
  }
  t.same(after.filter(f => f.op !== 'presence'), [], 'nothing replayed: only presence follows')
})

t.test('arguments are validated by the app\'s own validator compiler, compiled once per route', async t => {
  const compiled: unknown[] = []
  const strict = await roomsApp({}, app => {
    app.register(async scoped => {
      // A plugin-scoped compiler, as an app might set one: the consumer's route uses it.
      scoped.setValidatorCompiler(({ schema }) => {
        compiled.push(schema)
        return (data: unknown) => typeof data === 'object' && data !== null && typeof (data as { text?: unknown }).text === 'string'
          ? { value: { ...data, checkedBy: 'app' } }
          : { error: new Error('text must be a string (app compiler)') }
      })
      scoped.get('/ws/strict', { websocket: true }, Strict.asHandler())
    })
  })
  t.teardown(() => strict.app.close())
  for (let i = 0; i < 2; i++) {
    const c = await rawProtocolClient(strict.url.replace('/ws/rooms', '/ws/strict'))
    t.teardown(() => { c.ws.terminate() })
    c.send({ op: 'call', id: 1, action: 'say', args: { text: 7 } })
    t.match(await c.next(), { op: 'reply', id: 1, error: { code: 'FST_CHANNELS_INVALID_ARGS', message: 'Invalid arguments for "say": text must be a string (app compiler)' } })
    c.send({ op: 'call', id: 2, action: 'say', args: { text: 'hi' } })
    t.match(await c.next(), { op: 'reply', id: 2, result: { text: 'hi', checkedBy: 'app' } }, 'the method gets what the compiler returned')
  }
  t.equal(compiled.length, 1, 'one schema, compiled once for two connections')
})

class Strict extends GroupsConsumer {
  static override actions = { say: { schema: { type: 'object' } } }
  async say (args: { text: string }): Promise<unknown> { return args }
}

t.test('an $async schema (Fastify\'s default compiler): bad arguments get FST_CHANNELS_INVALID_ARGS, the method runs only on good ones', async t => {
  const ran: unknown[] = []
  class Renames extends GroupsConsumer {
    static override actions = {
      rename: { schema: { $async: true, type: 'object', required: ['name'], properties: { name: { type: 'string', maxLength: 5 } } } }
    }

    async rename (args: { name: string }): Promise<string> {
      ran.push(args)
      return `renamed to ${args.name}`
    }
  }
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.off('unhandledRejection', onUnhandled) })
  const app = await roomsApp({}, app => app.get('/ws/renames', { websocket: true }, Renames.asHandler()))
  t.teardown(() => app.app.close())
  const c = await rawProtocolClient(app.url.replace('/ws/rooms', '/ws/renames'))
  t.teardown(() => { c.ws.terminate() })
  c.send({ op: 'call', id: 1, action: 'rename', args: { name: 12345678 } })
  t.match(await c.next(), { op: 'reply', id: 1, error: { code: 'FST_CHANNELS_INVALID_ARGS', message: /args\/name must NOT have more than 5 characters/ } })
  c.send({ op: 'call', id: 2, action: 'rename', args: {} })
  t.match(await c.next(), { op: 'reply', id: 2, error: { code: 'FST_CHANNELS_INVALID_ARGS', message: /must have required property 'name'/ } })
  c.send({ op: 'call', id: 3, action: 'rename', args: { name: 'ok' } })
  t.same(await c.next(), { op: 'reply', id: 3, result: 'renamed to ok' })
  t.same(ran, [{ name: 'ok' }], 'the method ran for the good call only')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('arguments are validated as Fastify validates a body: the root value coerced, none as null, an async verdict pass or fail, an error that is no verdict hidden', async t => {
  const ran: unknown[] = []
  class Typed extends GroupsConsumer {
    static override actions = {
      kind: { schema: { type: 'integer' } },
      maybe: { schema: { type: ['object', 'null'] } }
    }

    async kind (n: number): Promise<string> { ran.push(n); return typeof n }
    async maybe (args: unknown): Promise<unknown> { ran.push(args); return args ?? 'none' }
  }
  class Looked extends GroupsConsumer {
    static override actions = { lookup: { schema: { type: 'string' } } }
    async lookup (name: string): Promise<string> { ran.push(name); return name }
  }
  // An async compiler, as a custom one may be: its verdict is pass or fail, never the args.
  const asyncCompiler = () => async (data: unknown): Promise<boolean> => {
    if (data === 'db') throw new Error('lookup store down: postgres://admin:hunter2@db')
    return data !== 'nobody'
  }
  const app = await roomsApp({}, app => {
    app.get('/ws/typed', { websocket: true }, Typed.asHandler())
    app.register(async scoped => {
      scoped.setValidatorCompiler(asyncCompiler as never)
      scoped.get('/ws/looked', { websocket: true }, Looked.asHandler())
    })
  })
  t.teardown(() => app.app.close())
  const connect = async (path: string): Promise<RawProtocolClient> => {
    const c = await rawProtocolClient(app.url.replace('/ws/rooms', path))
    t.teardown(() => { c.ws.terminate() })
    return c
  }
  const [typed, looked] = [await connect('/ws/typed'), await connect('/ws/looked')]
  const call = async (c: RawProtocolClient, id: number, action: string, args?: unknown): Promise<Frame> => {
    c.send(args === undefined ? { op: 'call', id, action } : { op: 'call', id, action, args })
    return await c.next()
  }
  t.same(await call(typed, 1, 'kind', '21'), { op: 'reply', id: 1, result: 'number' }, 'a root value coerced ("21" to 21), as a body is')
  t.same(await call(typed, 2, 'maybe'), { op: 'reply', id: 2, result: 'none' }, 'no args pass a schema that takes null, as a missing body does')
  t.same(await call(looked, 3, 'lookup', 'ada'), { op: 'reply', id: 3, result: 'ada' }, 'an async pass keeps the args')
  t.match(await call(looked, 4, 'lookup', 'nobody'), { op: 'reply', id: 4, error: { code: 'FST_CHANNELS_INVALID_ARGS' } }, 'an async fail refuses them')
  const failed = await call(looked, 5, 'lookup', 'db')
  t.match(failed, { op: 'reply', id: 5, error: { code: 'FST_CHANNELS_ACTION_FAILED' } }, 'an error that is no verdict is the app\'s')
  t.notMatch(JSON.stringify(failed), /hunter2/, 'and its message stays on the server')
  t.ok(app.logs.some(l => l.level === 50 && l.action === 'lookup'), 'logged at error')
  t.same(ran, [21, undefined, 'ada'], 'the methods ran for the calls that passed, with what validation left')
})

t.test('a bad static actions fails when the route is declared', async t => {
  class NotAMethod extends GroupsConsumer { static override actions = { missing: {} } }
  class Reserved extends GroupsConsumer { static override actions = { close: {} } }
  class Private extends GroupsConsumer {
    static override actions = { _secret: {} }
    async _secret (): Promise<void> {}
  }
  class BadSchema extends GroupsConsumer {
    static override actions = { go: { schema: 'object' } } as unknown as typeof GroupsConsumer.actions
    async go (): Promise<void> {}
  }
  class NotATable extends GroupsConsumer { static override actions = ['go'] as unknown as typeof GroupsConsumer.actions }
  t.throws(() => NotAMethod.asHandler(), { code: 'FST_CHANNELS_INVALID_OPTION', message: /"missing" is not a method of NotAMethod/ })
  t.throws(() => Reserved.asHandler(), { code: 'FST_CHANNELS_INVALID_OPTION', message: /"close" cannot be an action/ })
  t.throws(() => Private.asHandler(), { code: 'FST_CHANNELS_INVALID_OPTION', message: /"_secret" cannot be an action/ })
  t.throws(() => BadSchema.asHandler(), { code: 'FST_CHANNELS_INVALID_OPTION', message: /go must be \{ schema\?/ })
  t.throws(() => NotATable.asHandler(), { code: 'FST_CHANNELS_INVALID_OPTION', message: /must be an object/ })
})

t.test('messages skipped for a client whose channel was full are sent from the history, in order, as soon as it catches up; when gone, it is closed to recover', async t => {
  class Slow extends Rooms {
    // A client that takes a while per message: its channel (capacity 2) fills, and the layer skips it.
    override async forward (message: LayerMessage, info: Delivery): Promise<unknown> {
      await new Promise(resolve => setTimeout(resolve, 2))
      return super.forward(message, info)
    }
  }
  const layer = new InMemoryChannelLayer({ capacity: 2, groups: { 'room.*': { history: { size: 100, ttl: 60 } }, 'room.short': { history: { size: 5, ttl: 60 } } } })
  const slow = await roomsApp({ layer }, app => { app.get('/ws/slow', { websocket: true }, Slow.asHandler()) })
  t.teardown(() => slow.app.close())
  const ada = await rawProtocolClient(slow.url.replace('/ws/rooms', '/ws/slow') + '?name=Ada')
  t.teardown(() => { ada.ws.terminate() })
  ada.send({ op: 'join', group: 'room.busy' })
  await ada.until(f => f.op === 'joined')
  const skippedBefore = layer.stats.groupSendSkipped
  for (let n = 1; n <= 40; n++) await layer.groupSend('room.busy', { type: 'line', n })
  t.ok(layer.stats.groupSendSkipped > skippedBefore, `the layer skipped the full channel (${layer.stats.groupSendSkipped - skippedBefore} times)`)
  const frames = withoutPresence(await ada.until(f => f.op === 'message' && f.offset === 40, 5000))
  t.same(frames.map(f => f.offset), Array.from({ length: 40 }, (_, i) => i + 1), 'the client got 1..40, each once, in order, nothing more to wait for')
  t.same(frames.map(f => (f.data as { n: number }).n), Array.from({ length: 40 }, (_, i) => i + 1))
  t.ok(await ada.nothing(100), 'and nothing twice')

  // A history of 5 cannot fill a gap of 20: the client is closed so that it recovers (or learns of the gap).
  const grace = await rawProtocolClient(slow.url.replace('/ws/rooms', '/ws/slow') + '?name=Grace')
  grace.send({ op: 'join', group: 'room.short' })
  await grace.until(f => f.op === 'joined')
  for (let n = 1; n <= 40; n++) await layer.groupSend('room.short', { type: 'line', n })
  t.match(await grace.closed, { code: 1013, reason: 'messages were skipped: reconnect to recover' })

  // A layer that cannot answer the read-back (Redis too slow): the same 1013, logged as that, not
  // the app's failure (1011).
  const history = layer.history.bind(layer)
  layer.history = async () => { throw new LayerTimeoutError('history', 100) }
  t.teardown(() => { layer.history = history })
  const alan = await rawProtocolClient(slow.url.replace('/ws/rooms', '/ws/slow') + '?name=Alan')
  alan.send({ op: 'join', group: 'room.outage' })
  await alan.until(f => f.op === 'joined')
  for (let n = 1; n <= 40; n++) await layer.groupSend('room.outage', { type: 'line', n })
  t.match(await alan.closed, { code: 1013, reason: 'messages were skipped: reconnect to recover' })
})

t.test('a group message to many clients: each message frame is exactly the JSON of what forward() gave for that client', async t => {
  const { buildApp } = await import('../helpers/app.js')
  const { listen, openClient } = await import('../helpers/loopback.js')
  const shapes: Record<string, (message: Record<string, any>) => unknown> = {
    same: message => message,
    change: message => { message.text = 'changed'; return message },
    payload: message => message.payload,
    reorder: message => { const text = message.text; delete message.text; message.text = text; return message }
  }
  class Feed extends GroupsConsumer {
    override canJoin (): boolean { return true }
    override forward (message: LayerMessage): unknown {
      return shapes[this.scope.params.shape as string](message as Record<string, any>)
    }
  }
  const layer = new InMemoryChannelLayer({ groups: { 'kept.*': { history: { size: 10, ttl: 60 } } } })
  const { app } = await buildApp({ layer }, app => app.get('/feed/:shape', { websocket: true }, Feed.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const order = ['same', 'change', 'same', 'payload', 'same', 'reorder', 'same', 'change']
  for (const group of ['plain', 'kept.log']) {
    const clients = []
    for (const shape of order) {
      const texts: string[] = []
      const { ws } = await openClient(`${url}/feed/${shape}`, {}, ws => ws.on('message', data => { texts.push(String(data)) }))
      t.teardown(() => ws.terminate())
      ws.send(JSON.stringify({ op: 'join', group }))
      for (let i = 0; texts.length === 0 && i < 200; i++) await new Promise(resolve => setTimeout(resolve, 5))
      clients.push({ shape, texts })
    }
    const sent = { type: 'feed.item', text: 'hello', payload: { n: 1, t: 0.1 + 0.2 } }
    await app.channelLayer.groupSend(group, sent)
    const position = group === 'plain' ? {} : { offset: 1, epoch: (JSON.parse(clients[0].texts[0]) as { position: { epoch: string } }).position.epoch }
    const data: Record<string, unknown> = {
      same: sent,
      change: { ...sent, text: 'changed' },
      payload: sent.payload,
      reorder: { type: 'feed.item', payload: sent.payload, text: 'hello' }
    }
    for (const { shape, texts } of clients) {
      for (let i = 0; texts.length < 2 && i < 200; i++) await new Promise(resolve => setTimeout(resolve, 5))
      t.equal(texts[1], JSON.stringify({ op: 'message', group, ...position, data: data[shape] }), `${group}: ${shape}`)
    }
  }
})

t.test('a client joined for longer than groupExpiry still gets every message, and stays in the presence list', async t => {
  const short = await roomsApp({ layer: new InMemoryChannelLayer({ groups: roomGroups, groupExpiry: 1 }) })
  t.teardown(async () => { await short.app.close() })
  const ada = await rawProtocolClient(`${short.url}?name=Ada`)
  t.teardown(() => { ada.ws.terminate() })
  ada.send({ op: 'join', group: 'room.long' })
  await ada.until(f => f.op === 'joined')
  await new Promise(resolve => setTimeout(resolve, 1600))
  await short.app.channelLayer.groupSend('room.long', { type: 'room.message', text: 'a day later' })
  t.match(withoutPresence(await ada.until(f => f.op === 'message')), [{ op: 'message', group: 'room.long', offset: 1, data: { text: 'a day later' } }],
    'the message sent after groupExpiry arrives')
  t.match(await short.app.channelLayer.presence('room.long'), [{ info: { name: 'Ada' } }], 'her presence entry is still there')
})

t.test('a client cannot join a group the consumer is in itself: its kicks still reach the handler, and a leave cannot end the membership', async t => {
  class Controlled extends Rooms {
    override groups = ['room.control']
    override async connect () {
      await this.accept()
      await this.channelLayer.groupAdd('room.own', this.channelName)
    }

    async controlKick () { await this.close(4001, 'kicked') }
  }
  const controlled = await roomsApp({}, app => { app.get('/ws/controlled', { websocket: true }, Controlled.asHandler()) })
  t.teardown(async () => { await controlled.app.close() })
  const mallory = await rawProtocolClient(`${controlled.url.replace('/ws/rooms', '/ws/controlled')}?name=Mallory`)
  t.teardown(() => { mallory.ws.terminate() })
  for (const group of ['room.control', 'room.own']) {
    mallory.send({ op: 'join', group })
    t.match(await mallory.next(), { op: 'error', group, code: 'FST_CHANNELS_JOIN_DENIED' }, `joining ${group} is refused`)
    mallory.send({ op: 'leave', group })
  }
  mallory.send({ op: 'join', group: 'room.open' })
  t.match(await mallory.until(f => f.op === 'joined'), [{ op: 'joined', group: 'room.open' }], 'other groups can still be joined')
  t.ok(controlled.logs.some(l => l.level === 40 && l.group === 'room.control' && l.code === 'FST_CHANNELS_JOIN_DENIED'), 'the attempt is logged at warn')
  await controlled.app.channelLayer.groupSend('room.control', { type: 'control.kick' })
  t.same(await mallory.closed, { code: 4001, reason: 'kicked' }, 'the consumer\'s own handler ran')
})

t.test('a join the layer refuses for what presenceInfo() returned is the app\'s failure: JOIN_FAILED to the client, logged at error', async t => {
  const big = await client(t, 'x'.repeat(2000)) // presenceInfo() returns { name }: over the 1 KiB a presence entry may take
  big.send({ op: 'join', group: 'room.big' })
  t.match(await big.next(), { op: 'error', group: 'room.big', code: 'FST_CHANNELS_JOIN_FAILED' })
  t.ok(server.logs.some(l => l.level === 50 && l.msg === 'join failed' && l.group === 'room.big'), 'logged at error, with the layer\'s reason')
  t.same(await server.app.channelLayer.presence('room.big'), [], 'no entry')
})

t.test('a re-join is asked of canJoin() again: refused now, the client is no longer in the group', async t => {
  const allowed = new Set(['room.flip'])
  class Flipping extends Rooms {
    override canJoin (group: string): boolean { return allowed.has(group) }
  }
  const flipping = await roomsApp({}, app => { app.get('/ws/flipping', { websocket: true }, Flipping.asHandler()) })
  t.teardown(async () => { await flipping.app.close() })
  const c = await rawProtocolClient(`${flipping.url.replace('/ws/rooms', '/ws/flipping')}?name=Ada`)
  t.teardown(() => { c.ws.terminate() })
  c.send({ op: 'join', group: 'room.flip' })
  await c.until(f => f.op === 'joined')
  allowed.delete('room.flip')
  c.send({ op: 'join', group: 'room.flip' })
  t.match(withoutPresence(await c.until(f => f.op === 'error')), [{ op: 'error', group: 'room.flip', code: 'FST_CHANNELS_JOIN_DENIED' }])
  await flipping.app.channelLayer.groupSend('room.flip', { type: 'room.message', text: 'after the refusal' })
  t.ok(await c.nothing(100), 'nothing more of the group')
  t.same(await flipping.app.channelLayer.presence('room.flip'), [], 'and no presence entry')
})
