import t from 'tap'
import { Registry } from 'prom-client'
import fastifyChannels, { ChannelConsumer, JsonWebsocketConsumer, InMemoryChannelLayer, WebsocketConsumer, type LayerMessage } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { buildApp, eventually } from './helpers/app.js'
import { listen, openClient, rawHandshake } from './helpers/loopback.js'

// The metrics (prom-client, in the app's registry) count what happened: each figure below is
// checked against what the test itself did through real sockets.

class Room extends JsonWebsocketConsumer {
  override groups = ['room']
  override async connect () {
    if (this.scope.query.refuse !== undefined) return await this.close()
    await this.accept()
  }

  override async receiveJson (content: { say?: string, boom?: boolean }) {
    if (content.boom === true) throw new Error('handler bug')
    await this.channelLayer.groupSend('room', { type: 'chat.message', text: content.say ?? '' })
  }

  async chatMessage (event: LayerMessage) { await this.sendJson({ text: event.text }) }
}

class Plain extends WebsocketConsumer {}

/** The value of one series, `labels` matching exactly. */
async function value (registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = registry.getSingleMetric(name)
  if (metric === undefined) throw new Error(`no metric ${name}`)
  const { values } = await metric.get()
  const found = values.find(v => Object.keys(labels).every(k => String(v.labels[k]) === labels[k]) &&
    Object.keys(v.labels).filter(k => k !== 'le').length === Object.keys(labels).length)
  return found?.value ?? 0
}

t.test('every metric counts what happened', async t => {
  const registry = new Registry()
  const layer = new InMemoryChannelLayer({ capacity: 1 })
  const { app } = await buildApp({ layer, metrics: { registry }, rateLimit: { messages: 5, interval: 60_000 } }, app => {
    app.get('/ws/room', { websocket: true }, Room.asHandler())
    app.get('/ws/plain', { websocket: true }, Plain.asHandler())
  })
  t.teardown(() => app.close())

  const [a, b] = [new WebsocketCommunicator(app, '/ws/room'), new WebsocketCommunicator(app, '/ws/room')]
  t.equal((await a.connect()).status, 101)
  t.equal((await b.connect()).status, 101)
  t.equal((await new WebsocketCommunicator(app, '/ws/room?refuse').connect()).status, 403)
  const plain = new WebsocketCommunicator(app, '/ws/plain')
  await plain.connect()
  t.equal(await value(registry, 'fastify_channels_connections', { route: '/ws/room' }), 2)
  t.equal(await value(registry, 'fastify_channels_connections', { route: '/ws/plain' }), 1)
  t.equal(await value(registry, 'fastify_channels_handshakes_total', { route: '/ws/room', status: '101' }), 2)
  t.equal(await value(registry, 'fastify_channels_handshakes_total', { route: '/ws/room', status: '403' }), 1)

  // Three lines said by a: each a group send, delivered to a and b, sent out twice.
  for (const say of ['one', 'two', 'three']) {
    await a.sendJsonTo({ say })
    t.same(await a.receiveJsonFrom(), { text: say })
    t.same(await b.receiveJsonFrom(), { text: say })
  }
  t.equal(await value(registry, 'fastify_channels_frames_received_total', { route: '/ws/room' }), 3)
  t.equal(await value(registry, 'fastify_channels_frames_sent_total', { route: '/ws/room' }), 6)
  t.equal(await value(registry, 'fastify_channels_group_sends_total'), 3)
  t.equal(await value(registry, 'fastify_channels_deliveries_total'), 6)

  // A full channel: capacity 1, nobody receiving on it; the second group message skips it.
  const idle = await layer.newChannel()
  await layer.groupAdd('crowd', idle)
  await layer.groupSend('crowd', { type: 'x' })
  await layer.groupSend('crowd', { type: 'x' })
  t.equal(await value(registry, 'fastify_channels_dropped_total', { reason: 'full' }), 1)
  t.equal(await value(registry, 'fastify_channels_group_sends_total'), 5)

  // A handler that throws: 1011, counted once.
  await b.sendJsonTo({ boom: true })
  t.equal((await b.closed).code, 1011)
  await b.serverFinished()
  t.equal(await value(registry, 'fastify_channels_handler_errors_total', { route: '/ws/room' }), 1)
  t.equal(await value(registry, 'fastify_channels_connections', { route: '/ws/room' }), 1)

  // Over the rate limit (5 frames a minute): the sixth frame closes the connection with 1008.
  for (let i = 0; i < 2; i++) await a.sendJsonTo({ say: 'more' })
  const closed = a.closed
  for (let i = 0; i < 3; i++) await a.sendJsonTo({ say: 'too much' }).catch(() => {})
  t.match(await closed, { code: 1008, reason: 'rate limit' })
  await eventually(async () => await value(registry, 'fastify_channels_dropped_total', { reason: 'rate_limited' }) === 1)
  t.equal(await value(registry, 'fastify_channels_frames_received_total', { route: '/ws/room' }), 6 + 1,
    'every frame read is counted, the one over the limit too')

  const ops = registry.getSingleMetric('fastify_channels_layer_op_seconds')
  const counted = (await ops?.get())?.values.find(v => (v as { metricName?: string }).metricName === 'fastify_channels_layer_op_seconds_count' && v.labels.op === 'groupSend')
  t.equal(await value(registry, 'fastify_channels_group_sends_total'), 7, 'the two frames under the limit were handled: two more group sends')
  t.equal(counted?.value, 7, 'each groupSend timed once')
  await layer.history('crowd')
  await layer.history('crowd', { limit: 5 })
  const histories = (await ops?.get())?.values.find(v => (v as { metricName?: string }).metricName === 'fastify_channels_layer_op_seconds_count' && v.labels.op === 'history')
  t.equal(histories?.value, 2, 'each history() timed once, also for a group without a history policy')
  t.equal(await value(registry, 'fastify_channels_dropped_total', { reason: 'expired' }), 0)
  t.equal(await value(registry, 'fastify_channels_layer_reconnects_total'), 0)
  t.match(await registry.metrics(), /# HELP fastify_channels_dropped_total/, 'exposed in the text format')
})

t.test('handshakes count what clients saw: a client gone before the answer is no 403; a connect() that threw is a 500 and a handler error', async t => {
  const registry = new Registry()
  class Deciding extends WebsocketConsumer {
    override async connect () {
      if (this.scope.query.wait !== undefined) {
        await new Promise<void>((resolve, reject) => { this.signal.addEventListener('abort', () => { reject(this.signal.reason) }) })
      }
      if (this.scope.query.boom !== undefined) throw new Error('connect() bug')
      await this.accept()
    }
  }
  const { app, logs } = await buildApp({ metrics: { registry } }, app => { app.get('/ws', { websocket: true }, Deciding.asHandler()) })
  t.teardown(() => app.close())
  const { port } = await listen(app)
  const socket = rawHandshake(port, '/ws?wait')
  await eventually(() => logs.some(l => l.msg === 'incoming request'))
  socket.destroy()
  await eventually(() => logs.some(l => typeof l.msg === 'string' && l.msg.includes('the client went away before the answer')))
  t.equal(await value(registry, 'fastify_channels_handshakes_total', { route: '/ws', status: '403' }), 0, 'no 403: nobody was refused')
  t.notOk(logs.some(l => l.msg === 'websocket handshake refused'), 'not logged as a refusal')

  t.equal((await new WebsocketCommunicator(app, '/ws?boom').connect()).status, 500)
  await eventually(async () => await value(registry, 'fastify_channels_handshakes_total', { route: '/ws', status: '500' }) === 1)
  t.equal(await value(registry, 'fastify_channels_handler_errors_total', { route: '/ws' }), 1, 'connect() is a handler: its throw is counted')
  t.equal((await new WebsocketCommunicator(app, '/ws').connect()).status, 101)
  t.equal(await value(registry, 'fastify_channels_handshakes_total', { route: '/ws', status: '101' }), 1)
})

t.test('layer messages a connection never handled because it ended are dropped_total{reason="closed"}, not lost from the count', async t => {
  const registry = new Registry()
  let handled = 0
  class Slow extends WebsocketConsumer {
    override groups = ['slow']
    async slowMessage () { handled++; await new Promise(resolve => setTimeout(resolve, 300)) }
  }
  const { app } = await buildApp({ metrics: { registry } }, app => { app.get('/ws', { websocket: true }, Slow.asHandler()) })
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  // 40: more than the 16 a connection takes before the rest wait in its channel.
  for (let i = 0; i < 40; i++) await app.channelLayer.groupSend('slow', { type: 'slow.message', i })
  await comm.disconnect()
  await comm.serverFinished()
  const closed = await value(registry, 'fastify_channels_dropped_total', { reason: 'closed' })
  t.ok(handled >= 1 && handled < 40, `${handled} handled before the client left`)
  t.equal(handled + closed, 40, `the other ${closed} counted as dropped`)
})

t.test('a bad metrics option, or a registry that has them already, fails register', async t => {
  const registry = new Registry()
  for (const metrics of [{}, { registry: {} }, 'x']) {
    const app = (await import('fastify')).default()
    await t.rejects(async () => { await app.register(fastifyChannels, { metrics } as never) }, { code: 'FST_CHANNELS_INVALID_OPTION' })
  }
  const { app } = await buildApp({ metrics: { registry } })
  t.teardown(() => app.close())
  const again = (await import('fastify')).default()
  await t.rejects(async () => { await again.register(fastifyChannels, { metrics: { registry } }) }, { code: 'FST_CHANNELS_INVALID_OPTION', message: /already has/ })
  for (const rateLimit of [{ messages: 0, interval: 1000 }, { messages: 5 }, 'fast']) {
    const app = (await import('fastify')).default()
    await t.rejects(async () => { await app.register(fastifyChannels, { rateLimit } as never) }, { code: 'FST_CHANNELS_INVALID_OPTION' })
  }
})

t.test('a registry where the app has a metric of one of the plugin\'s names: register fails with InvalidOptionError and leaves the registry as it was', async t => {
  const { Counter } = await import('prom-client')
  const registry = new Registry()
  const own = new Counter({ name: 'fastify_channels_deliveries_total', help: 'the app\'s own', registers: [registry] })
  const app = (await import('fastify')).default()
  await t.rejects(async () => { await app.register(fastifyChannels, { metrics: { registry } }) },
    { code: 'FST_CHANNELS_INVALID_OPTION', message: /fastify_channels_deliveries_total/ })
  t.same((await registry.getMetricsAsJSON()).map(m => m.name), ['fastify_channels_deliveries_total'], 'only the app\'s own metric is there')
  t.equal(registry.getSingleMetric('fastify_channels_deliveries_total'), own, 'and it is the app\'s')
  registry.removeSingleMetric('fastify_channels_deliveries_total')
  const { app: next } = await buildApp({ metrics: { registry } })
  t.teardown(() => next.close())
  t.equal(await value(registry, 'fastify_channels_connections'), 0, 'once the name is free, the plugin registers there')
})

t.test('app.close() takes its metrics out of the registry: the next app in the process registers there again', async t => {
  const registry = new Registry()
  registry.registerMetric(new (await import('prom-client')).Counter({ name: 'app_own_total', help: 'the app\'s own', registers: [] }))
  const { app: first } = await buildApp({ metrics: { registry } })
  t.ok(registry.getSingleMetric('fastify_channels_connections') !== undefined)
  await first.close()
  t.same((await registry.getMetricsAsJSON()).map(m => m.name), ['app_own_total'], 'only the app\'s own metric is left')
  const { app: second } = await buildApp({ metrics: { registry } })
  t.teardown(() => second.close())
  t.equal(await value(registry, 'fastify_channels_connections'), 0, 'the next app\'s metrics are there')
})

t.test('counters have their series from the first scrape, at 0: a first drop is an increase', async t => {
  const registry = new Registry()
  const { app } = await buildApp({ metrics: { registry } }, app => { app.get('/ws/quiet', { websocket: true }, Plain.asHandler()) })
  t.teardown(() => app.close())
  for (const reason of ['full', 'expired', 'decrypt', 'slow_reader', 'rate_limited']) {
    t.equal(await value(registry, 'fastify_channels_dropped_total', { reason }), 0, `dropped_total{reason="${reason}"} is 0`)
  }
  const text = await registry.metrics()
  t.match(text, /fastify_channels_dropped_total\{reason="full"\} 0/)
  // A consumer route nobody has connected to yet, as after a restart.
  for (const series of ['connections{route="/ws/quiet"} 0', 'frames_received_total{route="/ws/quiet"} 0', 'frames_sent_total{route="/ws/quiet"} 0',
    'handler_errors_total{route="/ws/quiet"} 0', 'handshakes_total{route="/ws/quiet",status="101"} 0']) {
    t.ok(text.includes(`fastify_channels_${series}\n`), `${series.split('{')[0]} of a route not used yet is there, at 0`)
  }
})

t.test('frames a client sends after going over the rate limit are not read: neither handled nor counted', async t => {
  const registry = new Registry()
  const handled: string[] = []
  class Recorder extends WebsocketConsumer {
    override async receive (text?: string) { handled.push(String(text)) }
  }
  const { app } = await buildApp({ metrics: { registry }, rateLimit: { messages: 5, interval: 60_000 } }, app => {
    app.get('/ws/limited', { websocket: true }, Recorder.asHandler())
  })
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const client = await openClient(`${url}/ws/limited`)
  // Sent together: the server reads all 30 in one go, the sixth over the limit.
  for (let i = 1; i <= 30; i++) client.ws.send(`frame ${i}`)
  t.match(await client.closed, { code: 1008, reason: 'rate limit' })
  await eventually(async () => await value(registry, 'fastify_channels_dropped_total', { reason: 'rate_limited' }) === 1)
  t.same(handled, ['frame 1', 'frame 2', 'frame 3', 'frame 4', 'frame 5'], 'the five within the limit were handled')
  t.equal(await value(registry, 'fastify_channels_frames_received_total', { route: '/ws/limited' }), 6,
    'counted: the five and the one over the limit, not the 24 after it')
})

t.test('a worker handler that throws is counted in worker_errors_total{channel}, whose series is there at 0 from the start', async t => {
  const registry = new Registry()
  let handled = 0
  class Jobs extends ChannelConsumer {
    async jobRun (message: LayerMessage) {
      handled++
      if (message.fail === true) throw new Error('job failed')
    }
  }
  const { app } = await buildApp({ metrics: { registry } }, app => { app.channelWorker('jobs', Jobs) })
  t.teardown(() => app.close())
  await app.ready()
  t.equal(await value(registry, 'fastify_channels_worker_errors_total', { channel: 'jobs' }), 0, 'at 0 before any failure')
  for (const fail of [true, false, true]) await app.channelLayer.send('jobs', { type: 'job.run', fail })
  await eventually(() => handled === 3)
  t.equal(await value(registry, 'fastify_channels_worker_errors_total', { channel: 'jobs' }), 2, 'the two that threw')
})

t.test('a layer message of a type no handler takes, to a consumer or a worker, is dropped_total{reason="no_handler"}', async t => {
  const registry = new Registry()
  let handled = 0
  class Jobs extends ChannelConsumer {
    async jobRun () { handled++ }
  }
  class Listening extends WebsocketConsumer {
    override groups = ['news']
    async newsItem () { handled++ }
  }
  const { app } = await buildApp({ metrics: { registry } }, app => {
    app.channelWorker('jobs', Jobs)
    app.get('/ws/news', { websocket: true }, Listening.asHandler())
  })
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws/news')
  await comm.connect()
  t.equal(await value(registry, 'fastify_channels_dropped_total', { reason: 'no_handler' }), 0)
  await app.channelLayer.groupSend('news', { type: 'news.typo' })
  await app.channelLayer.send('jobs', { type: 'job.typo' })
  await app.channelLayer.groupSend('news', { type: 'news.item' })
  await app.channelLayer.send('jobs', { type: 'job.run' })
  await eventually(() => handled === 2)
  t.equal(await value(registry, 'fastify_channels_dropped_total', { reason: 'no_handler' }), 2, 'one for the consumer, one for the worker')
  await comm.disconnect()
})
