/**
 * A client leaves a group and joins it again while its consumer is behind (an action runs), so
 * messages of the membership it left still wait in the consumer's channel. None of them reaches
 * the client after the new `joined`: the README says a group the client left sends nothing more,
 * also what was already queued for it, and a member gets nothing sent before it joined. With
 * history too, where an old message after the new position would look like offsets going back.
 * Over a real socket, speaking the wire protocol by hand, on both layers.
 */
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { GroupsConsumer, InMemoryChannelLayer, RedisChannelLayer, type ChannelLayer } from '../../lib/index.js'
import { buildApp } from '../helpers/app.js'
import { listen } from '../helpers/loopback.js'
import { rawProtocolClient, type Frame } from '../helpers/protocol.js'
import { REDIS_URL, cleanedPrefix, requireRedis } from '../helpers/redis.js'

const groups = { 'kept.*': { history: { size: 1000, ttl: 60 } } }

class Busy extends GroupsConsumer {
  static override actions = { slow: {} }
  override canJoin (): boolean { return true }
  async slow (): Promise<number> {
    await sleep(300)
    return 1
  }
}

async function leaveAndRejoin (t: Test, layer: ChannelLayer): Promise<void> {
  const { app, logs } = await buildApp({ layer }, app => { app.get('/ws', { websocket: true }, Busy.asHandler()) })
  t.teardown(() => app.close())
  const { url } = await listen(app)
  for (const group of ['kept.room', 'plain.room']) {
    const client = await rawProtocolClient(`${url}/ws`)
    client.send({ op: 'join', group })
    await client.until(frame => frame.op === 'joined')
    // The consumer is busy for 300 ms: the group's 40 messages wait (16 queued, the rest in the channel).
    client.send({ op: 'call', id: 1, action: 'slow' })
    await sleep(30)
    for (let n = 1; n <= 40; n++) await layer.groupSend(group, { type: 'old', n })
    client.send({ op: 'leave', group })
    client.send({ op: 'join', group })
    const frames = await client.until(frame => frame.op === 'joined', 3000)
    // Those handed out while it was still a member (before the leave frame's turn) came, in order.
    const before = frames.filter(frame => frame.op === 'message').map(frame => (frame.data as { n: number }).n)
    t.same(before, before.map((_, i) => i + 1), `${group}: before the new joined, the old membership's first ${before.length}, in order`)
    for (let n = 41; n <= 45; n++) await layer.groupSend(group, { type: 'new', n })
    const after: Frame[] = []
    while (after.filter(frame => frame.op === 'message').length < 5) after.push(await client.next(3000))
    t.same(after.filter(frame => frame.op === 'message').map(frame => (frame.data as { n: number }).n), [41, 42, 43, 44, 45],
      `${group}: after the new joined, only what was sent after it`)
    t.ok(await client.nothing(200), `${group}: and nothing more`)
    t.same(logs.filter(log => /went back/.test(String(log.msg))), [], `${group}: no offsets going back`)
    client.ws.close()
    await client.closed
  }
}

t.test('in memory: leaving and joining again while behind sends nothing of the membership left', async t => {
  await leaveAndRejoin(t, new InMemoryChannelLayer({ groups }))
})

t.test('on Redis: leaving and joining again while behind sends nothing of the membership left', async t => {
  if (!await requireRedis(t)) return
  await leaveAndRejoin(t, new RedisChannelLayer({ url: REDIS_URL, prefix: cleanedPrefix(t, 'fc-rejoin'), groups }))
})
