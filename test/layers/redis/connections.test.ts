import t from 'tap'
import { Redis } from 'ioredis'
import { LayerTimeoutError } from '../../../lib/errors.js'
import { RedisConnections, isUnreachable } from '../../../lib/layers/redis/connections.js'
import { freePort } from '../../helpers/process.js'
import { REDIS_URL, requireRedis, uniquePrefix } from '../../helpers/redis.js'

// Only an unreachable Redis is reported as LayerTimeoutError: an answer from Redis, or a bug in
// the code that runs a command, reaches the caller as it is.

const rejection = (promise: Promise<unknown>): Promise<unknown> => promise.then(() => undefined, (err: unknown) => err)

t.test('ioredis\' ways of saying "not reachable" are recognised, and nothing else', async t => {
  const port = await freePort()
  const offline = new Redis(port, '127.0.0.1', { lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null })
  offline.on('error', () => {})
  t.teardown(() => offline.disconnect())
  const writeless = await rejection(offline.ping())
  t.ok(isUnreachable(writeless), `recognised: ${(writeless as Error).message}`)

  const retrying = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 0, retryStrategy: () => 10 })
  retrying.on('error', () => {})
  t.teardown(() => retrying.disconnect())
  const retries = await rejection(retrying.ping())
  t.ok(isUnreachable(retries), `recognised: ${(retries as Error).name}`)

  t.ok(isUnreachable(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })))
  t.notOk(isUnreachable(new TypeError('Cannot read properties of undefined')))
  t.notOk(isUnreachable('Connection is closed.'), 'a string is not an error')
})

t.test('run(): an answer from Redis and a bug pass through; an outage is a timeout', async t => {
  if (!await requireRedis(t)) return
  const connections = new RedisConnections({ url: REDIS_URL, timeout: 500, name: uniquePrefix('fc-conn') }, () => {})
  t.teardown(() => connections.close())
  const key = `${uniquePrefix('fc-conn')}:list`
  await connections.run('setup', client => client.rpush(key, 'x'))
  t.teardown(() => connections.run('cleanup', client => client.del(key)))

  const wrongType = await rejection(connections.run('get a list', client => client.get(key)))
  t.match(wrongType, { message: /^WRONGTYPE/ }, 'Redis\' own answer')
  t.notOk(wrongType instanceof LayerTimeoutError)

  const bug = await rejection(connections.run('buggy', async () => { throw new TypeError('a bug') }))
  t.ok(bug instanceof TypeError, 'a bug stays a bug')

  const port = await freePort()
  const down = new RedisConnections({ url: `redis://127.0.0.1:${port}`, timeout: 300, name: uniquePrefix('fc-down') }, () => {})
  t.teardown(() => down.close())
  const outage = await rejection(down.run('ping', client => client.ping()))
  t.ok(outage instanceof LayerTimeoutError, 'an unreachable Redis is a timeout')
})
