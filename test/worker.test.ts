import t from 'tap'
import Fastify from 'fastify'
import fastifyChannels, {
  ChannelConsumer, JsonWebsocketConsumer, WebsocketConsumer, InMemoryChannelLayer, InvalidChannelNameError, InvalidOptionError,
  type Delivery, type LayerMessage
} from '../lib/index.js'
import type { Received } from '../lib/layers/types.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { buildApp, eventually } from './helpers/app.js'

/** A promise with its resolver, to hold a handler until the test lets it go. */
function gate (): { promise: Promise<void>, open: () => void } {
  let open!: () => void
  const promise = new Promise<void>(resolve => { open = resolve })
  return { promise, open }
}

t.test('messages are dispatched by type, camelCase first, then the Django name', async t => {
  const seen: unknown[] = []
  class Jobs extends ChannelConsumer {
    async jobStart (message: LayerMessage) { seen.push(['jobStart', message.id, this.channelName]) }
    async job_done (message: LayerMessage) { seen.push(['job_done', message.id]) }
  }
  const { app } = await buildApp({}, app => app.channelWorker('jobs', Jobs))
  t.teardown(() => app.close())

  await app.channelLayer.send('jobs', { type: 'job.start', id: 1 })
  await app.channelLayer.send('jobs', { type: 'job.done', id: 2 })
  await eventually(() => seen.length === 2)
  t.same(seen, [['jobStart', 1, 'jobs'], ['job_done', 2]])
})

t.test('a worker may name its handlers after methods of the consumer classes (send, handle, forward): they are not its base class\'s', async t => {
  const seen: string[] = []
  class Mailer extends ChannelConsumer {
    async send (message: { type: string, to: string }) { seen.push(`send ${message.to}`) }
    async handle (message: { type: string, id: number }) { seen.push(`handle ${message.id}`) }
    async forward (message: { type: string, to: string }) { seen.push(`forward ${message.to}`) }
  }
  const { app, logs } = await buildApp({}, app => app.channelWorker('mail', Mailer))
  t.teardown(() => app.close())
  await app.channelLayer.send('mail', { type: 'send', to: 'ada' })
  await app.channelLayer.send('mail', { type: 'handle', id: 7 })
  await app.channelLayer.send('mail', { type: 'forward', to: 'bob' })
  // Its own base class' names and Object.prototype's stay out of reach.
  await app.channelLayer.send('mail', { type: 'constructor' })
  await app.channelLayer.send('mail', { type: 'channel.layer' })
  await app.channelLayer.send('mail', { type: 'to.string' })
  await app.channelLayer.send('mail', { type: 'send', to: 'last' })
  await eventually(() => seen.length === 4)
  t.same(seen, ['send ada', 'handle 7', 'forward bob', 'send last'])
  t.same(logs.filter(l => l.msg === 'no worker handler for message type; dropped').map(l => l.type), ['constructor', 'channel.layer', 'to.string'])
})

t.test('one message at a time, in the order they were sent', async t => {
  const events: string[] = []
  const first = gate()
  class Ordered extends ChannelConsumer {
    async step (message: { type: string, n: number }) {
      events.push(`start ${message.n}`)
      if (message.n === 1) await first.promise
      events.push(`end ${message.n}`)
    }
  }
  const { app } = await buildApp({}, app => app.channelWorker('ordered', Ordered))
  t.teardown(() => app.close())

  for (let n = 1; n <= 4; n++) await app.channelLayer.send('ordered', { type: 'step', n })
  await eventually(() => events.length === 1)
  t.same(events, ['start 1'], 'the next message waits while the first is being handled')
  first.open()
  await eventually(() => events.length === 8)
  t.same(events, ['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3', 'start 4', 'end 4'])
})

t.test('a handler that throws is logged and the worker goes on with the next message', async t => {
  const handled: number[] = []
  class Flaky extends ChannelConsumer {
    async work (message: { type: string, n: number }) {
      if (message.n === 1) throw new Error('boom on 1')
      handled.push(message.n)
    }
  }
  const { app, logs } = await buildApp({}, app => app.channelWorker('flaky', Flaky))
  t.teardown(() => app.close())

  await app.channelLayer.send('flaky', { type: 'work', n: 1 })
  await app.channelLayer.send('flaky', { type: 'work', n: 2 })
  await eventually(() => handled.length === 1)
  t.same(handled, [2])
  const failure = logs.find(l => l.level === 50 && (l.err as { message?: string } | undefined)?.message === 'boom on 1')
  t.ok(failure, 'the error is logged')
  t.match(failure, { worker: 'flaky', type: 'work', channel: 'flaky' })
})

t.test('an unknown type, or one naming a base class member, is logged at warn and dropped', async t => {
  const handled: string[] = []
  class Picky extends ChannelConsumer {
    async known (message: LayerMessage) { handled.push(message.type) }
  }
  const { app, logs } = await buildApp({}, app => app.channelWorker('picky', Picky))
  t.teardown(() => app.close())

  for (const type of ['nope.never', 'log', 'channel.layer', 'constructor', 'to.string', '_private', 'known']) {
    await app.channelLayer.send('picky', { type })
  }
  await eventually(() => handled.length === 1)
  t.same(handled, ['known'])
  const dropped = logs.filter(l => l.level === 40 && l.msg === 'no worker handler for message type; dropped').map(l => l.type)
  t.same(dropped, ['nope.never', 'log', 'channel.layer', 'constructor', 'to.string', '_private'])
})

t.test('close() stops the worker after the message in hand, before the layer closes', async t => {
  const held = gate()
  const events: string[] = []
  class Slow extends ChannelConsumer {
    async work (message: { type: string, n: number }) {
      events.push(`start ${message.n}`)
      await held.promise
      // The layer is still open while the in-flight handler finishes.
      await this.channelLayer.groupSend('audit', { type: 'audit', n: message.n })
      events.push(`end ${message.n}`)
    }
  }
  const { app, logs } = await buildApp({}, app => app.channelWorker('slow', Slow))
  await app.channelLayer.send('slow', { type: 'work', n: 1 })
  await app.channelLayer.send('slow', { type: 'work', n: 2 })
  await eventually(() => events.length === 1)

  let closed = false
  const closing = app.close().then(() => { closed = true })
  await new Promise(resolve => setImmediate(resolve))
  t.equal(closed, false, 'close() waits for the handler in progress')
  held.open()
  await closing
  t.same(events, ['start 1', 'end 1'], 'the message in hand is finished; the next one is not started')
  t.notOk(logs.some(l => (l.level as number) >= 50), 'nothing failed on the way down')
})

t.test('a handler that never returns does not hold close() for ever: it is waited for 5 s, as a consumer\'s connect() is, and logged', async t => {
  const started: number[] = []
  class Stuck extends ChannelConsumer {
    async work (message: { n: number }) {
      started.push(message.n)
      await new Promise(() => {})
    }
  }
  const { app, logs } = await buildApp({}, app => app.channelWorker('stuck', Stuck))
  await app.channelLayer.send('stuck', { type: 'work', n: 1 })
  await eventually(() => started.length === 1)
  await app.close()
  t.pass('close() resolved')
  t.ok(logs.some(l => l.level === 40 && l.msg === 'shutdown: a worker handler still running after the grace; not waiting for it'), 'with a warning that says why it took the grace')
  t.same(started, [1])
})

t.test('a failing receive() is logged and retried; a layer closed underneath stops the worker', async t => {
  const layer = new InMemoryChannelLayer()
  const receive = layer.receiveDelivery.bind(layer)
  let failures = 0
  layer.receiveDelivery = async (channel, options) => {
    if (failures++ === 0) throw new Error('backend unreachable')
    return await receive(channel, options)
  }
  const handled: unknown[] = []
  class Patient extends ChannelConsumer {
    async work (message: LayerMessage) { handled.push(message.n) }
  }
  const { app, logs } = await buildApp({ layer }, app => app.channelWorker('patient', Patient))
  t.teardown(() => app.close())

  await layer.send('patient', { type: 'work', n: 1 })
  await eventually(() => handled.length === 1)
  t.match(logs.find(l => l.msg === 'worker receive failed; retrying'), { level: 50, channel: 'patient', err: { message: 'backend unreachable' } })

  await layer.close()
  await eventually(() => logs.some(l => l.msg === 'channel layer closed under a running worker; worker stopped'))
  t.pass('the worker reports the closed layer once and stops')
})

t.test('a worker streams progress to a group that a WebSocket client receives', async t => {
  class Progress extends JsonWebsocketConsumer {
    override groups = ['deploys']
    override async receiveJson (content: { servers: number }) {
      await this.channelLayer.send('deploy-jobs', { type: 'deploy.start', servers: content.servers, replyGroup: 'deploys' })
    }
    async deployProgress (event: { pct: number }) { await this.sendJson({ pct: event.pct }) }
  }
  class DeployWorker extends ChannelConsumer {
    async deployStart (message: { servers: number, replyGroup: string }) {
      for (let done = 1; done <= message.servers; done++) {
        await this.channelLayer.groupSend(message.replyGroup, { type: 'deploy.progress', pct: Math.round(100 * done / message.servers) })
      }
    }
  }
  const { app } = await buildApp({}, app => {
    app.get('/ws/deploy', { websocket: true }, Progress.asHandler())
    app.channelWorker('deploy-jobs', DeployWorker)
  })
  t.teardown(() => app.close())

  const comm = new WebsocketCommunicator(app, '/ws/deploy')
  t.match(await comm.connect(), { connected: true })
  await comm.sendJsonTo({ servers: 4 })
  const seen = []
  for (let i = 0; i < 4; i++) seen.push(await comm.receiveJsonFrom())
  t.same(seen, [{ pct: 25 }, { pct: 50 }, { pct: 75 }, { pct: 100 }])
  await comm.disconnect()
})

t.test('two workers on one channel share its messages, each handled once', async t => {
  const handledBy = new Map<number, string[]>()
  const bothBusy = gate()
  let busy = 0
  class Shared extends ChannelConsumer {
    id = ''
    async work (message: { type: string, n: number }) {
      if (this.id === '') this.id = String(Math.random())
      handledBy.set(message.n, [...(handledBy.get(message.n) ?? []), this.id])
      if (++busy === 2) bothBusy.open()
      await bothBusy.promise
    }
  }
  const { app } = await buildApp({}, app => {
    app.channelWorker('shared', Shared)
    app.channelWorker('shared', Shared)
  })
  t.teardown(() => app.close())

  for (let n = 0; n < 20; n++) await app.channelLayer.send('shared', { type: 'work', n })
  await eventually(() => handledBy.size === 20)
  t.ok([...handledBy.values()].every(ids => ids.length === 1), 'no message is handled twice')
  t.equal(new Set([...handledBy.values()].flat()).size, 2, 'both workers took messages')
})

t.test('a process that only runs workers calls ready() and never listens', async t => {
  const app = Fastify()
  await app.register(fastifyChannels)
  const got: unknown[] = []
  app.channelWorker('thumbnails', class extends ChannelConsumer {
    async thumbnailMake (message: LayerMessage) { got.push(message.file) }
  })
  await app.ready()
  t.teardown(() => app.close())
  await app.channelLayer.send('thumbnails', { type: 'thumbnail.make', file: 'a.png' })
  await eventually(() => got.length === 1)
  t.same(got, ['a.png'])
})

t.test('channelWorker() checks its arguments', async t => {
  const app = Fastify()
  await app.register(fastifyChannels)
  t.teardown(() => app.close())
  class Good extends ChannelConsumer {}

  for (const name of ['', 'has space', 'x'.repeat(100), 'specific.abc!def', 42]) {
    t.throws(() => app.channelWorker(name as string, Good), InvalidChannelNameError, `channel ${JSON.stringify(name)}`)
  }
  t.throws(() => app.channelWorker('jobs', class NotAWorker {} as never),
    { code: 'FST_CHANNELS_INVALID_OPTION', message: /subclass of ChannelConsumer/ })
  t.throws(() => app.channelWorker('jobs', class extends WebsocketConsumer {} as never), InvalidOptionError)
  t.throws(() => app.channelWorker('jobs', ChannelConsumer), InvalidOptionError, 'the base class itself handles nothing')
  t.throws(() => app.channelWorker('jobs', (() => {}) as never), InvalidOptionError)

  await app.ready()
  t.throws(() => app.channelWorker('jobs', Good), { code: 'FST_CHANNELS_INVALID_OPTION', message: /after the app became ready/ })
})

t.test('handlers get how a message came: its group and position, or nothing for a direct send', async t => {
  const layer = new InMemoryChannelLayer({ groups: { 'audit.*': { history: { size: 10, ttl: 60 }, presenceEvents: true } } })
  const seen: Array<[unknown, Delivery]> = []
  class Auditor extends ChannelConsumer {
    async record (message: LayerMessage, info: Delivery) { seen.push([message.n, info]) }
  }
  const { app, logs } = await buildApp({ layer }, app => app.channelWorker('auditor', Auditor))
  t.teardown(() => app.close())
  await layer.groupAdd('audit.log', 'auditor')
  const position = await layer.groupSend('audit.log', { type: 'record', n: 1 })
  await layer.send('auditor', { type: 'record', n: 2 })
  const member = await layer.newChannel()
  await layer.groupAdd('audit.log', member, { presence: { name: 'Ada' } })
  await eventually(() => seen.length === 2)
  t.same(seen, [[1, { group: 'audit.log', offset: 1, epoch: position?.epoch }], [2, {}]])
  await layer.groupDiscard('audit.log', member)
  await layer.send('auditor', { type: 'record', n: 3 })
  await eventually(() => seen.length === 3)
  t.notOk(logs.some(l => l.msg === 'no worker handler for message type; dropped'), 'presence events are ignored silently by a worker without their handlers')
})

t.test('a layer whose receive() ignores the abort signal does not hold up close(): the worker stops without it, and a message it brings later is dropped and logged', async t => {
  const layer = new InMemoryChannelLayer()
  let deliver: ((received: Received) => void) | undefined
  // An app's own layer that never looks at the signal it is given.
  layer.receiveDelivery = async () => await new Promise<Received>(resolve => { deliver = resolve })
  const handled: unknown[] = []
  class Deaf extends ChannelConsumer {
    async work (message: LayerMessage) { handled.push(message.n) }
  }
  const { app, logs } = await buildApp({ layer }, app => app.channelWorker('deaf', Deaf))
  await eventually(() => deliver !== undefined)
  let timer: ReturnType<typeof setTimeout> | undefined
  const outcome = await Promise.race([
    app.close().then(() => 'closed'),
    new Promise(resolve => { timer = setTimeout(resolve, 5000, 'still closing after 5 s') })
  ])
  clearTimeout(timer)
  t.equal(outcome, 'closed', 'app.close() goes on')
  t.match(logs.find(l => l.msg === 'the channel layer did not end receive() on its abort signal; worker stopped without it'), { level: 40, channel: 'deaf' })

  deliver?.({ message: { type: 'work', n: 1 }, info: {} })
  await eventually(() => logs.some(l => l.msg === 'a message arrived after the worker stopped without its receive(); dropped'))
  t.same(handled, [], 'the stopped worker does not handle it')
})
