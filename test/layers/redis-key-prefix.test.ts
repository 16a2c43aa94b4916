import t from 'tap'
import { Redis } from 'ioredis'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import { conformance } from './conformance.js'
import { REDIS_URL, keysOf, requireRedis, uniquePrefix } from '../helpers/redis.js'

// A Redis client with ioredis' own `keyPrefix`, as an app that shares its client passes it: ioredis
// prefixes keys (a script's KEYS too) but not pub/sub channel names, so every case of the
// conformance suite, history and group sends among them, must still reach its receivers.

if (await requireRedis(t)) {
  const namespace = uniquePrefix('fc-kp')
  const keyPrefix = `${namespace}:`
  const clients: Redis[] = []
  const userClient = (): Redis => {
    const client = new Redis(REDIS_URL, { keyPrefix })
    clients.push(client)
    return client
  }
  conformance('RedisChannelLayer on a client with keyPrefix', options => new RedisChannelLayer({ client: userClient(), prefix: 'app', ...options }),
    { shared: true, latency: 100 })
  t.teardown(async () => {
    for (const client of clients) client.disconnect()
    const admin = new Redis(REDIS_URL)
    // Every key the layers wrote starts with ioredis' prefix: removed afterwards.
    for (const key of await keysOf(admin, namespace)) await admin.unlink(key)
    admin.disconnect()
  })
}
