import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import type { LayerMessage } from '../../lib/layers/types.js'
import { sleep } from '../helpers/app.js'
import { REDIS_URL, adminClient, commandStats, keysOf, requireRedis, startRedisServer, uniquePrefix } from '../helpers/redis.js'

// What the Redis layer costs: Redis commands per groupSend (on a private redis-server, so that
// INFO commandstats counts only this test), and what 10,000 join/leave cycles leave behind.

function receiveWithin (layer: RedisChannelLayer, channel: string, ms = 3000): Promise<LayerMessage> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(`nothing on ${channel} within ${ms} ms`)), ms)
  return layer.receive(channel, { signal: controller.signal }).finally(() => clearTimeout(timer))
}

function layerOn (t: Test, url: string, prefix: string): RedisChannelLayer {
  const layer = new RedisChannelLayer({ url, prefix, groups: { 'kept-*': { history: { size: 100, ttl: 60 } } } })
  t.teardown(() => layer.close())
  return layer
}

t.test('one groupSend costs the same Redis commands for 2 and for 40 members in two processes', async t => {
  const server = await startRedisServer(t)
  const admin = new Redis(server.url)
  t.teardown(() => admin.disconnect())
  const prefix = uniquePrefix('fc-cost')
  // Two layer instances stand for two processes; a third has no members and must hear nothing.
  const [a, b, bystander] = [layerOn(t, server.url, prefix), layerOn(t, server.url, prefix), layerOn(t, server.url, prefix)]
  await bystander.newChannel()

  const measure = async (size: number, kind = 'cost'): Promise<Record<string, number>> => {
    const group = `${kind}-${size}`
    const members: Array<[RedisChannelLayer, string]> = []
    for (let i = 0; i < size; i++) {
      const layer = i % 2 === 0 ? a : b
      const channel = await layer.newChannel()
      await layer.groupAdd(group, channel)
      members.push([layer, channel])
    }
    t.equal(Number((await admin.pubsub('NUMSUB', `${prefix}:g:{${group}}`) as unknown[])[1]), 2,
      `${size} members: only the two processes with members subscribe`)
    await admin.config('RESETSTAT')
    await a.groupSend(group, { type: 'cost.probe', size })
    const received = await Promise.all(members.map(([layer, channel]) => receiveWithin(layer, channel)))
    const stats = await commandStats(admin)
    t.equal(received.filter(m => m.type === 'cost.probe').length, size, `all ${size} members received it`)
    for (const name of Object.keys(stats)) if (name.startsWith('info') || name.startsWith('config')) delete stats[name]
    t.comment(`${size} members: ${JSON.stringify(stats)}`)
    return stats
  }
  const two = await measure(2)
  const forty = await measure(40)
  t.same(forty, two, 'the same commands, however many members')
  t.equal(two.publish, 1, 'one PUBLISH per groupSend')
  const total = Object.values(two).reduce((sum, n) => sum + n, 0)
  t.ok(total <= 2, `at most 2 commands per groupSend (${total}): PUBLISH, and ZRANGE for named-channel members`)

  // A group with history: one script call, whatever the members, which numbers, keeps and publishes.
  await a.groupSend('kept-warm-up', { type: 'loads the script into Redis' })
  const keptTwo = await measure(2, 'kept')
  const keptForty = await measure(40, 'kept')
  t.same(keptForty, keptTwo, 'history: the same commands, however many members')
  t.equal(keptTwo.evalsha, 1, 'history: one script call per groupSend')
  t.same(Object.keys(keptTwo).filter(name => !['evalsha', 'time', 'publish', 'hget', 'hincrby', 'xrevrange', 'pexpire', 'xadd', 'zrangebyscore'].includes(name)), [],
    'history: the script\'s own commands only (TIME, HGET, HINCRBY, XREVRANGE, XADD, PEXPIRE, PUBLISH, ZRANGEBYSCORE)')
})

t.test('10,000 join/leave cycles leave no keys, subscriptions or local state behind', async t => {
  if (!await requireRedis(t)) return
  const admin = adminClient(t)
  const prefix = uniquePrefix('fc-cycles')
  const [a, b] = [layerOn(t, REDIS_URL, prefix), layerOn(t, REDIS_URL, prefix)]
  const lanes = 40
  const perLane = 250
  let delivered = 0
  const lane = async (layer: RedisChannelLayer, n: number): Promise<void> => {
    for (let i = 0; i < perLane; i++) {
      // 50 rooms shared by 20 lanes per process: rooms empty out and fill up again all the time.
      const group = `room-${(n * 7 + i) % 50}`
      const channel = await layer.newChannel()
      await layer.groupAdd(group, channel)
      if (i % 100 === 0) {
        await layer.send(channel, { type: 'welcome', i })
        if ((await receiveWithin(layer, channel)).type === 'welcome') delivered++
      }
      if (i % 2 === 0) await layer.discardChannel(channel)
      else await layer.groupDiscard(group, channel)
    }
  }
  await Promise.all(Array.from({ length: lanes }, (_, n) => lane(n % 2 === 0 ? a : b, n)))
  t.equal(delivered, lanes * Math.ceil(perLane / 100))
  const keys = await keysOf(admin, prefix)
  const channels = await admin.pubsub('CHANNELS', `${prefix}:*`) as string[]
  t.comment(`after ${lanes * perLane} cycles: ${keys.length} keys, ${channels.length} subscribed channels, ` +
    `a: ${JSON.stringify(a.inspect())}, b: ${JSON.stringify(b.inspect())}`)
  t.same(keys, [], 'no keys')
  t.same(channels.sort(), [`${prefix}:p:{${a.processToken}}`, `${prefix}:p:{${b.processToken}}`, `${prefix}:x`].sort(),
    'only the two inboxes and the broadcast channel are subscribed')
  for (const layer of [a, b]) {
    t.same(layer.inspect(), { channels: 0, groups: 0, memberships: 0, subscriptions: 2, readers: 0, requests: 0 })
  }
})

t.test('a renewal keeps 1,201 members of one group past their lease, in one script call of three ZADDs', async t => {
  const server = await startRedisServer(t)
  const admin = new Redis(server.url)
  t.teardown(() => admin.disconnect())
  const prefix = uniquePrefix('fc-renew')
  // A one-second lease is renewed every third of a second: only renewals keep the records.
  const layer = new RedisChannelLayer({ url: server.url, prefix, membershipLease: 1 })
  t.teardown(() => layer.close())
  const group = 'crowd'
  const size = 1201
  for (let i = 0; i < size; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, size - i) }, async () => await layer.groupAdd(group, await layer.newChannel())))
  }
  await admin.config('RESETSTAT')
  await sleep(1500)
  const stats = await commandStats(admin)
  const key = `${prefix}:gm:{${group}}`
  t.equal(await admin.zcard(key), size, 'every member is still recorded, half a second past its lease')
  const [seconds, micros] = await admin.time()
  const lowest = Number((await admin.zrange(key, '0', '0', 'WITHSCORES'))[1])
  t.ok(lowest > Number(seconds) * 1000 + Number(micros) / 1000, 'and none of the records has expired')
  t.comment(`renewals in 1.5 s: ${JSON.stringify(stats)}`)
  t.ok(stats.evalsha >= 1, 'renewed at least once')
  t.equal(stats.zadd, 3 * stats.evalsha, 'each renewal: one EVALSHA, one ZADD per 500 members')
})
