/**
 * Redis lost a group's last writes (a restart from an older snapshot, a replica that was behind
 * taking over) and gives their offsets out again in the same epoch. A client that had those
 * offsets would take the new messages for ones it has: it is made to re-join instead, and its
 * `gap()` runs, so the app reloads what the group sent; later messages come as usual.
 */
import t from 'tap'
import WebSocket from 'ws'
import { ChannelsClient } from '../../lib/client/index.js'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import { eventually } from '../helpers/app.js'
import { REDIS_URL, loseWritesAfter, requireRedis, uniquePrefix } from '../helpers/redis.js'
import { roomGroups, roomsApp } from '../groups/rooms.js'

t.test('a client whose group went back in offsets is told of the gap, then gets what comes next', async t => {
  if (!await requireRedis(t)) return
  const prefix = uniquePrefix('fc-went-back')
  const server = await roomsApp({ layer: new RedisChannelLayer({ url: REDIS_URL, prefix, groups: roomGroups }) })
  t.teardown(() => server.app.close())
  const client = new ChannelsClient(server.url, { WebSocket, minDelay: 50, maxDelay: 200 })
  t.teardown(() => { client.close() })
  const lines: unknown[] = []
  let gaps = 0
  await client.join('room.rewind', {
    message (data) { lines.push((data as { n: number }).n) },
    gap () { gaps++ }
  }).ready
  const send = async (n: number): Promise<number | undefined> => (await server.app.channelLayer.groupSend('room.rewind', { type: 'line', n }))?.offset
  for (const n of [1, 2, 3]) await send(n)
  await eventually(() => lines.length === 3)

  // What a restart from a snapshot taken after the first line leaves: the same epoch, an offset
  // behind, the stream without the lines after it.
  await loseWritesAfter(t, prefix, 'room.rewind', 1)
  t.equal(await send(4), 2, 'the next line takes an offset the client has')
  await eventually(() => gaps === 1, 5000)
  t.equal(gaps, 1, 'gap() ran once: the app reloads')
  await eventually(() => client.state === 'open', 5000)
  await send(5)
  await send(6)
  await eventually(() => lines.includes(6), 5000)
  t.same(lines.slice(3), [5, 6], 'the lines after the re-join come, in order, once')
})
