/**
 * One master of a Redis Cluster crashes and comes back empty while the Cluster client stays
 * 'ready' (the other masters answer): what the master lost of this process' memberships and
 * presence is written back within seconds of its return, not at the next renewal due, and its
 * groups' messages reach the members again.
 */
import t from 'tap'
import { Cluster, Redis } from 'ioredis'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import type { LayerMessage } from '../../lib/layers/types.js'
import { startRedisCluster, uniquePrefix } from '../helpers/redis.js'
import { receiveWithin } from '../helpers/layers.js'

t.test('a master that restarts empty: presence is back within seconds, and messages come again', async t => {
  const cluster = await startRedisCluster(t)
  const client = new Cluster(cluster.nodes)
  t.teardown(() => { client.disconnect() })
  // The renewal due every lease / 3 would come only 20 s after the last.
  const layer = new RedisChannelLayer({ client, prefix: uniquePrefix('fc-master-outage'), membershipLease: 60 })
  t.teardown(() => layer.close())
  const member = await layer.newChannel()
  await layer.groupAdd('room.a', member, { presence: { name: 'Ada' } })
  // The master that holds the group's keys: the one serving its hash tag's slot.
  const any = new Redis(cluster.nodes[0].port, '127.0.0.1')
  t.teardown(() => { any.disconnect() })
  const slot = await any.cluster('KEYSLOT', '{room.a}') as number
  const port = (await any.cluster('SLOTS')).find(([from, to]) => slot >= from && slot <= to)?.[2]?.[1] as number
  const receive = async (): Promise<LayerMessage> => await receiveWithin(member, 5000, signal => layer.receive(member, { signal }))
  await layer.groupSend('room.a', { type: 'line', n: 1 })
  t.match(await receive(), { n: 1 })

  await cluster.kill(port)
  await new Promise(resolve => setTimeout(resolve, 1000))
  await cluster.start(port)
  const back = Date.now()
  let presence = await layer.presence('room.a').catch(() => [])
  while (presence.length === 0 && Date.now() - back < 15_000) {
    await new Promise(resolve => setTimeout(resolve, 200))
    presence = await layer.presence('room.a').catch(() => [])
  }
  const took = Date.now() - back
  t.same(presence, [{ channel: member, info: { name: 'Ada' } }], 'the presence the empty master lost is written back')
  t.ok(took < 8000, `within seconds of its return (${took} ms), not at the next renewal due`)
  let got: LayerMessage | undefined
  for (let n = 2; got === undefined && n < 12; n++) {
    // The shard's subscriber may take a moment to be back: a message sent before that is missed.
    await layer.groupSend('room.a', { type: 'line', n }).catch(() => {})
    got = await receiveWithin(member, 1000, signal => layer.receive(member, { signal })).catch(() => undefined)
  }
  t.ok(got !== undefined, 'the member gets the group\'s messages again')
})
