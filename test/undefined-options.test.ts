/**
 * Every option an app may leave out may also be given as `undefined` (a value read from the
 * environment, a spread of a partial config), and means the same: the default. The types say so
 * too, for apps compiled with `exactOptionalPropertyTypes` (test/types.test.ts).
 */
import t from 'tap'
import WebSocket from 'ws'
import { AsyncHttpConsumer, GroupsConsumer, InMemoryChannelLayer, RedisChannelLayer } from '../lib/index.js'
import { ChannelsClient } from '../lib/client/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { buildApp } from './helpers/app.js'
import { listen } from './helpers/loopback.js'
import { openEventStream } from './helpers/event-stream.js'
import { REDIS_URL, requireRedis } from './helpers/redis.js'

t.test('the plugin, a layer, its calls, an event stream, the client and the test kit take undefined as the default', async t => {
  class Echo extends GroupsConsumer {
    static override actions = { echo: {} }
    async echo (args: unknown): Promise<unknown> { return args }
  }
  class Events extends AsyncHttpConsumer {
    override async handle () {
      await this.sendHeaders({ status: undefined, headers: undefined })
      await this.sendEvent({ data: 'one', event: undefined, id: undefined })
      await this.sendBody('data: two\n\n', { more: undefined })
    }
  }
  const layer = new InMemoryChannelLayer({ capacity: undefined, expiry: undefined, groupExpiry: undefined, log: undefined, groups: { 'kept.*': { history: { size: 10, ttl: 60 }, presenceEvents: undefined } } })
  const { app } = await buildApp({
    layer,
    getUser: undefined,
    maxPayload: undefined,
    heartbeatInterval: undefined,
    maxBufferedBytes: undefined,
    allowedOrigins: undefined,
    rejectMissingOrigin: undefined,
    maxGroupsPerConnection: undefined,
    metrics: undefined,
    rateLimit: undefined
  }, app => {
    app.get('/ws', { websocket: true }, Echo.asHandler())
    app.get('/events', Events.asHandler())
  })
  t.teardown(() => app.close())
  const { url } = await listen(app)

  const channel = await layer.newChannel()
  const joined = await layer.groupAdd('kept.a', channel, { since: undefined, presence: undefined })
  t.equal(joined.recovered, false)
  await layer.groupSend('kept.a', { type: 'note' })
  t.same(await layer.receive(channel, { signal: undefined }), { type: 'note' })
  t.same((await layer.history('kept.a', { since: undefined, limit: undefined })).messages.map(m => m.message), [{ type: 'note' }])

  const client = new ChannelsClient(`${url}/ws`, {
    WebSocket, protocols: undefined, callTimeout: undefined, minDelay: undefined, maxDelay: undefined, connectTimeout: undefined, heartbeat: undefined
  })
  t.teardown(() => { client.close() })
  t.same(await client.call('echo', { n: 1 }, { timeout: undefined }), { n: 1 }, 'the client calls')

  const stream = await openEventStream(`${url.replace('ws://', 'http://')}/events`)
  t.same((await stream.waitForEvents(2)).map(e => e.data), ['one', 'two'], 'the event stream')

  const comm = new WebsocketCommunicator(app, '/ws', { headers: undefined, subprotocols: undefined })
  t.match(await comm.connect(), { connected: true }, 'the test kit connects')
  await comm.disconnect()
})

t.test('the Redis layer takes undefined as the default', async t => {
  if (!await requireRedis(t)) return
  const layer = new RedisChannelLayer({
    url: REDIS_URL, redisOptions: undefined, client: undefined, prefix: undefined, timeout: undefined, membershipLease: undefined, encryptionKeys: undefined, capacity: undefined
  })
  t.teardown(() => layer.close())
  const channel = await layer.newChannel()
  await layer.send(channel, { type: 'hello' })
  t.same(await layer.receive(channel), { type: 'hello' })
})
