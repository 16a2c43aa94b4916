import t from 'tap'
import { Redis, type RedisOptions } from 'ioredis'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import { conformance } from './conformance.js'
import { REDIS_URL, deleteKeysOf, requireRedis, uniquePrefix } from '../helpers/redis.js'

// The layer on a client an app shares with it, made with an ioredis option that rewrites commands
// or replies: every case of the conformance suite must still hold.
// - keyPrefix: ioredis prefixes keys (a script's KEYS too) but not pub/sub channel names, which
//   the layer prefixes itself: history and group sends must still reach their receivers, and two
//   apps kept apart by their keyPrefix alone must not hear each other.
// - stringNumbers: every integer reply comes as a string ("0", not 0), a script's too; named
//   channels, history offsets and the server clock are read from such replies.

if (await requireRedis(t)) {
  const clients: Redis[] = []
  const namespaces: string[] = []
  const userClient = (options: RedisOptions): Redis => {
    const client = new Redis(REDIS_URL, options)
    clients.push(client)
    return client
  }

  const namespace = uniquePrefix('fc-kp')
  namespaces.push(namespace)
  conformance('RedisChannelLayer on a client with keyPrefix',
    options => new RedisChannelLayer({ client: userClient({ keyPrefix: `${namespace}:` }), prefix: 'app', ...options }),
    { shared: true, latency: 100 })

  const prefix = uniquePrefix('fc-sn')
  namespaces.push(prefix)
  conformance('RedisChannelLayer on a client with stringNumbers',
    options => new RedisChannelLayer({ client: userClient({ stringNumbers: true }), prefix, ...options }),
    { shared: true, latency: 100 })

  t.test('two apps on one Redis, the same layer prefix, kept apart by their keyPrefix: neither hears the other\'s groups nor its flush', async t => {
    const [first, second] = [uniquePrefix('fc-kp-a'), uniquePrefix('fc-kp-b')]
    namespaces.push(first, second)
    const a = new RedisChannelLayer({ client: userClient({ keyPrefix: `${first}:` }) })
    const b = new RedisChannelLayer({ client: userClient({ keyPrefix: `${second}:` }) })
    t.teardown(async () => { await a.close(); await b.close() })
    const [inA, inB] = [await a.newChannel(), await b.newChannel()]
    await a.groupAdd('room', inA)
    await b.groupAdd('room', inB)
    const admin = new Redis(REDIS_URL)
    t.teardown(() => admin.disconnect())
    const subscribed = await admin.pubsub('CHANNELS', `${first}:*`) as string[]
    t.ok(subscribed.some(channel => channel.startsWith(`${first}:channels:g:{room}`)), `app A's group channel starts with its keyPrefix: ${subscribed.join(', ')}`)
    await b.groupSend('room', { type: 'from.b' })
    t.same(await b.receive(inB, { signal: AbortSignal.timeout(2000) }), { type: 'from.b' })
    await t.rejects(a.receive(inA, { signal: AbortSignal.timeout(300) }), { name: 'TimeoutError' }, 'app A did not hear app B\'s group send')
    await b.flush()
    await a.groupSend('room', { type: 'from.a' })
    t.same(await a.receive(inA, { signal: AbortSignal.timeout(2000) }), { type: 'from.a' }, 'app B\'s flush left app A\'s memberships alone')
  })

  t.teardown(async () => {
    for (const client of clients) client.disconnect()
    const admin = new Redis(REDIS_URL)
    // Every key the layers wrote starts with one of the namespaces: removed afterwards.
    for (const start of namespaces) await deleteKeysOf(admin, start)
    admin.disconnect()
  })
}
