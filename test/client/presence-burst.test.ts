/**
 * A burst of presence changes larger than a client's channel can hold (a reconnect storm, many
 * tabs closed at once): the announcements the channel had no room for are skipped, and
 * `GroupsConsumer` then sends the client the whole list again, so its presence list ends as the
 * layer's, on every layer.
 */
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { ChannelsClient, type PresenceEntry } from '../../lib/client/index.js'
import { InMemoryChannelLayer } from '../../lib/layers/in-memory.js'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import type { ChannelLayer } from '../../lib/layers/types.js'
import { eventually } from '../helpers/app.js'
import { REDIS_URL, requireRedis, uniquePrefix } from '../helpers/redis.js'
import { roomGroups, roomsApp } from '../groups/rooms.js'

// Room for a few announcements only, so a burst of 40 overflows it on any host.
const CAPACITY = 2
const OTHERS = 40

async function burst (t: Test, layer: ChannelLayer): Promise<void> {
  const server = await roomsApp({ layer })
  t.teardown(() => server.app.close())
  const ada = new ChannelsClient(`${server.url}?name=Ada`, { WebSocket })
  t.teardown(() => { ada.close() })
  let seen: PresenceEntry[] = []
  await ada.join('room.burst', { presence (entries) { seen = entries } }).ready
  await eventually(() => seen.length === 1)

  const names = (entries: PresenceEntry[]): string[] => entries.map(e => String((e.info as { name: string }).name)).sort()
  const channels = await Promise.all(Array.from({ length: OTHERS }, async () => await layer.newChannel()))
  // Joins, then leaves, each burst at once.
  await Promise.all(channels.map(async (channel, i) => await layer.groupAdd('room.burst', channel, { presence: { name: `p${i}` } })))
  await eventually(async () => names(seen).join() === names(await layer.presence('room.burst')).join(), 5000)
  t.equal(seen.length, OTHERS + 1, 'after the joins, the client lists everyone')
  await Promise.all(channels.slice(10).map(async channel => { await layer.groupDiscard('room.burst', channel) }))
  const truth = names(await layer.presence('room.burst'))
  t.equal(truth.length, 11, 'the layer lists Ada and the ten that stayed')
  await eventually(() => names(seen).join() === truth.join(), 5000)
  t.same(names(seen), truth, 'after the leaves, the client lists who is there, no one else')
}

t.test('in memory', async t => {
  await burst(t, new InMemoryChannelLayer({ capacity: CAPACITY, groups: roomGroups }))
})

t.test('on Redis', async t => {
  if (!await requireRedis(t)) return
  await burst(t, new RedisChannelLayer({ url: REDIS_URL, prefix: uniquePrefix('fc-presence-burst'), capacity: CAPACITY, groups: roomGroups }))
})
