import t from 'tap'
import { Redis } from 'ioredis'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import { conformance } from './conformance.js'
import { REDIS_URL, keysOf, requireRedis, uniquePrefix } from '../helpers/redis.js'

// A Redis client with ioredis' `stringNumbers`, as an app that needs integers beyond 2^53 makes
// it: every integer reply comes as a string ("0", not 0), a script's too. Named channels, history
// offsets and the server clock are read from such replies: every case of the conformance suite
// must still hold on it.

if (await requireRedis(t)) {
  const prefix = uniquePrefix('fc-sn')
  const clients: Redis[] = []
  const userClient = (): Redis => {
    const client = new Redis(REDIS_URL, { stringNumbers: true })
    clients.push(client)
    return client
  }
  conformance('RedisChannelLayer on a client with stringNumbers', options => new RedisChannelLayer({ client: userClient(), prefix, ...options }),
    { shared: true, latency: 100 })
  t.teardown(async () => {
    for (const client of clients) client.disconnect()
    const admin = new Redis(REDIS_URL)
    for (const key of await keysOf(admin, prefix)) await admin.unlink(key)
    admin.disconnect()
  })
}
