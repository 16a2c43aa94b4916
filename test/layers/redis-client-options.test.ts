import t from 'tap'
import { Redis, type RedisOptions } from 'ioredis'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import { conformance } from './conformance.js'
import { REDIS_URL, keysOf, requireRedis, uniquePrefix } from '../helpers/redis.js'

// The layer on a client an app shares with it, made with an ioredis option that rewrites commands
// or replies: every case of the conformance suite must still hold.
// - keyPrefix: ioredis prefixes keys (a script's KEYS too) but not pub/sub channel names, so
//   history and group sends must still reach their receivers.
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

  t.teardown(async () => {
    for (const client of clients) client.disconnect()
    const admin = new Redis(REDIS_URL)
    // Every key the layers wrote starts with one of the namespaces: removed afterwards.
    for (const start of namespaces) for (const key of await keysOf(admin, start)) await admin.unlink(key)
    admin.disconnect()
  })
}
