/**
 * A recovery larger than `maxBufferedBytes`: the replay is written at the pace the client reads
 * it (flow-control.ts), so a client that reads gets every missed message once, in order, and
 * stays connected; a client that stops reading during its replay is not closed for it.
 */
import t, { type Test } from 'tap'
import { InMemoryChannelLayer } from '../../lib/layers/in-memory.js'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import type { ChannelLayer, StreamPosition } from '../../lib/layers/types.js'
import { rawProtocolClient, type Frame } from '../helpers/protocol.js'
import { REDIS_URL, requireRedis, uniquePrefix } from '../helpers/redis.js'
import { roomsApp, type RoomsApp } from './rooms.js'

const MESSAGES = 1000
// 10 KB each: 10 MB to replay, ten times the connection's limit.
const TEXT = 'x'.repeat(10_000)
const MAX_BUFFERED = 1024 * 1024
const groups = { 'room.*': { history: { size: MESSAGES, ttl: 60 } } }

/** The rooms app on `layer`, and the position of a client that joined `group` and went away. */
async function clientGone (t: Test, layer: ChannelLayer, group: string): Promise<{ server: RoomsApp, position: StreamPosition }> {
  const server = await roomsApp({ layer, maxBufferedBytes: MAX_BUFFERED })
  t.teardown(() => server.app.close())
  const first = await rawProtocolClient(server.url)
  first.send({ op: 'join', group })
  const { position } = await first.next() as unknown as { position: StreamPosition }
  first.ws.terminate()
  await first.closed
  return { server, position }
}

async function replays (t: Test, layer: ChannelLayer): Promise<void> {
  const { server, position } = await clientGone(t, layer, 'room.big')
  for (let n = 1; n <= MESSAGES; n++) await server.app.channelLayer.groupSend('room.big', { type: 'line', n, text: TEXT })

  const back = await rawProtocolClient(server.url)
  t.teardown(() => { back.ws.terminate() })
  back.send({ op: 'join', group: 'room.big', since: position })
  const frames = await back.until(f => f.op === 'message' && f.offset === position.offset + MESSAGES, 10_000)
  t.match(frames[0], { op: 'joined', recovered: true }, 'recovered')
  const lines = frames.slice(1) as Array<Frame & { offset: number, data: { n: number, text: string } }>
  t.equal(lines.length, MESSAGES, `every missed message, once (${lines.length})`)
  t.ok(lines.every((f, i) => f.op === 'message' && f.offset === position.offset + i + 1 && f.data.n === i + 1 && f.data.text === TEXT), 'in order, whole')
  t.equal(back.ws.readyState, back.ws.OPEN, 'the client that reads stays connected')

  // Live messages after the replay still come.
  await server.app.channelLayer.groupSend('room.big', { type: 'line', n: MESSAGES + 1, text: 'live' })
  t.match(await back.next(), { op: 'message', offset: position.offset + MESSAGES + 1, data: { text: 'live' } }, 'then the live message')

  // A client that does not read while its replay is written is left alone by it: its part waits
  // in the layer, and what it reads later comes in order.
  const paused = await rawProtocolClient(server.url)
  t.teardown(() => { paused.ws.terminate() })
  paused.ws.pause()
  // The history holds the last MESSAGES: from the second on.
  paused.send({ op: 'join', group: 'room.big', since: { offset: position.offset + 1, epoch: position.epoch } })
  await new Promise(resolve => setTimeout(resolve, 500))
  paused.ws.resume()
  const later = await paused.until(f => f.op === 'message' && f.offset === position.offset + MESSAGES + 1, 10_000)
  t.match(later[0], { op: 'joined', recovered: true }, 'recovered')
  t.equal(later.length, MESSAGES + 1, 'joined, then every missed message, the live one last')
  t.ok(later.slice(1).every((f, i) => f.op === 'message' && f.offset === position.offset + i + 2), 'in order, once')
  t.equal(paused.ws.readyState, paused.ws.OPEN, 'not closed as a slow reader')
}

/**
 * A client that does not read its replay for longer than the channel's `expiry` (1 s here), while
 * the room goes on: the replay does not expire while it waits, and the live messages held behind
 * it come after it at the client's pace. Past the channel's capacity (`live` 300), those skipped
 * are read back, also at its pace; within it (`live` 50), those that expired behind the replay are
 * read back as well, although the room sends nothing after them. Every message once, in order,
 * and no close.
 */
async function slowReader (t: Test, layer: ChannelLayer, LIVE: number): Promise<void> {
  const { server, position } = await clientGone(t, layer, 'room.slow')
  // A replay larger than the kernel's buffers take for a client that does not read, so that it
  // waits in the layer; the live messages then wait behind it.
  const REPLAY = MESSAGES
  for (let n = 1; n <= REPLAY; n++) await server.app.channelLayer.groupSend('room.slow', { type: 'line', n, text: TEXT })
  const back = await rawProtocolClient(server.url)
  t.teardown(() => { back.ws.terminate() })
  back.ws.pause()
  back.send({ op: 'join', group: 'room.slow', since: position })
  await new Promise(resolve => setTimeout(resolve, 200))
  // Live messages while the replay waits: three times the channel's capacity (100), or half of it.
  for (let n = REPLAY + 1; n <= REPLAY + LIVE; n++) await server.app.channelLayer.groupSend('room.slow', { type: 'line', n, text: TEXT })
  await new Promise(resolve => setTimeout(resolve, 1500)) // past the channel's expiry
  back.ws.resume()
  const frames = await back.until(f => f.op === 'message' && f.offset === position.offset + REPLAY + LIVE, 20_000)
  const lines = frames.filter(f => f.op === 'message') as Array<Frame & { offset: number }>
  t.equal(lines.length, REPLAY + LIVE, `every message, the replay's and the live ones (${lines.length})`)
  t.ok(lines.every((f, i) => f.offset === position.offset + i + 1), 'in order, once')
  t.equal(back.ws.readyState, back.ws.OPEN, 'and the client was not closed')
}

t.test('in memory', async t => {
  await replays(t, new InMemoryChannelLayer({ groups }))
  await slowReader(t, new InMemoryChannelLayer({ groups, expiry: 1 }), 300)
  await slowReader(t, new InMemoryChannelLayer({ groups, expiry: 1 }), 50)
})

t.test('on Redis', async t => {
  if (!await requireRedis(t)) return
  const layer = new RedisChannelLayer({ url: REDIS_URL, prefix: uniquePrefix('fc-large-recovery'), groups })
  await replays(t, layer)
  await slowReader(t, new RedisChannelLayer({ url: REDIS_URL, prefix: uniquePrefix('fc-slow-recovery'), groups, expiry: 1 }), 300)
  await slowReader(t, new RedisChannelLayer({ url: REDIS_URL, prefix: uniquePrefix('fc-slow-recovery'), groups, expiry: 1 }), 50)
})
