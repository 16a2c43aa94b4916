/**
 * A Redis outage as a client of GroupsConsumer sees it, through a proxy between the server and
 * Redis that cuts every connection: a call whose action needs Redis is told so with the layer's own
 * code (not as the app's bug), a client that connects meanwhile gets its socket, and once Redis is
 * back its join is answered and the same call succeeds.
 */
import t from 'tap'
import WebSocket from 'ws'
import { ChannelsClient, ChannelsClientError } from '../../lib/client/index.js'
import { RedisChannelLayer, type ApiOf } from '../../lib/index.js'
import { eventually } from '../helpers/app.js'
import { requireRedis, stallingProxy, uniquePrefix } from '../helpers/redis.js'
import { Rooms, roomGroups, roomsApp } from '../groups/rooms.js'

type RoomsApi = ApiOf<typeof Rooms>

t.test('a Redis outage: calls that need it fail with FST_CHANNELS_LAYER_TIMEOUT, new clients still connect, and all is well once it is back', async t => {
  if (!await requireRedis(t)) return
  const proxy = await stallingProxy(t)
  const layer = new RedisChannelLayer({ url: proxy.url, prefix: uniquePrefix('fc-client-outage'), timeout: 1000, groups: roomGroups })
  const server = await roomsApp({ layer })
  t.teardown(() => server.app.close())
  const clients: ChannelsClient[] = []
  t.teardown(() => { for (const c of clients) c.close() })
  const connect = (): ChannelsClient<RoomsApi> => {
    const c = new ChannelsClient<RoomsApi>(server.url, { WebSocket, minDelay: 100, maxDelay: 200 })
    clients.push(c)
    return c
  }

  const first = connect()
  await first.join('room.lobby', {}).ready
  t.same(await first.call('post', { room: 'lobby', text: 'before' }), { offset: 1 }, 'a call that sends to the group, with Redis up')

  const down = new Promise(resolve => layer.once('disconnect', resolve))
  proxy.cut()
  await down
  const failed = await first.call('post', { room: 'lobby', text: 'during' }).then(() => undefined, (err: unknown) => err)
  t.ok(failed instanceof ChannelsClientError, 'the call rejects')
  t.match(failed, { code: 'FST_CHANNELS_LAYER_TIMEOUT' }, 'with the layer\'s code, so the client can tell an outage from a bug')
  t.notOk(server.logs.some(l => l.msg === 'action failed'), 'not logged as the app\'s bug')

  // A client that comes meanwhile: before, its handshake waited for Redis and was refused with 500.
  const second = connect()
  await eventually(() => second.state === 'open', 5000)
  const joined = second.join('room.lobby', {}).ready

  const back = new Promise(resolve => layer.once('reconnect', resolve))
  proxy.resume()
  await back
  await joined
  t.pass('its join is answered once Redis is back')
  t.match(await first.call('post', { room: 'lobby', text: 'after' }), { offset: Number }, 'the same call succeeds again')
  t.equal(first.state, 'open', 'the first client stayed connected throughout')
})
