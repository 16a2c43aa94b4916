/**
 * Presence after Redis lost its data: the entry of a process that died without a word goes with
 * the data, so no one ever announces it gone. The surviving processes write their own entries
 * back, and their clients get the group's presence list afresh: no ghost stays in it. The same
 * after a process was cut off while announcements went out: they never reach it.
 */
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { ChannelsClient } from '../../lib/client/index.js'
import { RedisChannelLayer, type ApiOf } from '../../lib/index.js'
import { eventually } from '../helpers/app.js'
import { REDIS_URL, adminClient, cleanedPrefix, requireRedis, stallingProxy } from '../helpers/redis.js'
import { Rooms, roomGroups, roomsApp } from '../groups/rooms.js'

type RoomsApi = ApiOf<typeof Rooms>

/** A rooms app on `layer`, and Ada's client in `room.lobby` there: her subscription, joined. */
async function adaInLobby (t: Test, layer: RedisChannelLayer) {
  const server = await roomsApp({ layer })
  t.teardown(() => server.app.close())
  const ada = new ChannelsClient<RoomsApi>(`${server.url}?name=Ada`, { WebSocket })
  t.teardown(() => { ada.close() })
  const sub = ada.join('room.lobby', {})
  await sub.ready
  return sub
}

t.test('a process that died, then Redis lost its data: its entry leaves the other clients\' presence lists', async t => {
  if (!await requireRedis(t)) return
  const prefix = cleanedPrefix(t, 'fc-presence-lost')
  // Renewals every half second: the surviving process notices the loss at its next one.
  const layer = new RedisChannelLayer({ url: REDIS_URL, prefix, groups: roomGroups, membershipLease: 1.5 })
  const sub = await adaInLobby(t, layer)

  // Another process, whose member Ghost joins; then it is cut off for good, as if it had died.
  const proxy = await stallingProxy(t)
  const doomed = new RedisChannelLayer({ url: proxy.url, prefix, groups: roomGroups, membershipLease: 60, timeout: 500 })
  t.teardown(() => doomed.close().catch(() => {}))
  await doomed.groupAdd('room.lobby', await doomed.newChannel(), { presence: { name: 'Ghost' } })
  await eventually(() => sub.presence.length === 2)
  t.same(sub.presence.map(entry => entry.info.name).sort(), ['Ada', 'Ghost'], 'Ada\'s list has Ghost')
  proxy.cut()

  // Redis loses everything of the prefix (a restart without persistence, for this app).
  const admin = adminClient(t)
  const keys = await admin.keys(`${prefix}:*`)
  if (keys.length > 0) await admin.del(...keys)

  await eventually(() => sub.presence.length === 1, 5000)
  t.same(sub.presence.map(entry => entry.info.name), ['Ada'], 'Ghost is gone from Ada\'s list, which is the layer\'s truth')
  t.same((await layer.presence('room.lobby')).map(entry => entry.info.name), ['Ada'])
})

t.test('a process cut off from Redis while a member elsewhere left: once back, its clients\' lists drop that member', async t => {
  if (!await requireRedis(t)) return
  const prefix = cleanedPrefix(t, 'fc-presence-cut')
  // Ada's server reaches Redis through a proxy that can cut its subscriptions.
  const proxy = await stallingProxy(t)
  const layer = new RedisChannelLayer({ url: proxy.url, prefix, groups: roomGroups, timeout: 1000 })
  const sub = await adaInLobby(t, layer)

  const other = new RedisChannelLayer({ url: REDIS_URL, prefix, groups: roomGroups })
  t.teardown(() => other.close())
  const bob = await other.newChannel()
  await other.groupAdd('room.lobby', bob, { presence: { name: 'Bob' } })
  await eventually(() => sub.presence.length === 2)
  t.same(sub.presence.map(entry => entry.info.name).sort(), ['Ada', 'Bob'], 'Ada\'s list has Bob')

  // Bob leaves while Ada's server hears nothing from Redis: the announcement never reaches it.
  const down = new Promise(resolve => layer.once('disconnect', resolve))
  const back = new Promise(resolve => layer.once('reconnect', resolve))
  proxy.cutSubscribers()
  await down
  await other.groupDiscard('room.lobby', bob)
  t.same((await other.presence('room.lobby')).map(entry => entry.info.name), ['Ada'], 'Bob is gone from presence()')
  proxy.resume()
  await back

  await eventually(() => sub.presence.length === 1, 10_000).catch(() => {})
  t.same(sub.presence.map(entry => entry.info.name), ['Ada'], 'Bob is gone from Ada\'s list too, once her server is back')
})
