import t from 'tap'
import { existsSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import * as channels from '../../lib/index.js'
import { spawnNode, type NodeProcess } from '../helpers/process.js'
import { eventually } from '../helpers/app.js'
import { ensureBuilt } from '../helpers/dist.js'

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
// A possible rebuild of dist/ and two process starts: more than .taprc's 120 s on a busy machine. Every wait below is bounded.
t.setTimeout(240_000)
const fixture = fileURLToPath(new URL('./fixtures/worker-process.js', import.meta.url))
const RedisChannelLayer = (channels as Record<string, unknown>).RedisChannelLayer as
  (new (options: { url?: string, prefix?: string }) => channels.ChannelLayer) | undefined

t.test('workers in two processes share one named channel; each message is handled once', async t => {
  if (RedisChannelLayer === undefined || !existsSync(fileURLToPath(new URL('../../lib/layers/redis.ts', import.meta.url)))) {
    t.fail('RedisChannelLayer not available: lib/layers/redis.ts must exist and be exported from lib/index.ts')
    return
  }
  await ensureBuilt() // the worker processes run the built package
  const prefix = `fctest-${randomBytes(4).toString('hex')}`
  const channel = 'jobs'
  const env = { REDIS_URL, WORKER_CHANNEL: channel, LAYER_PREFIX: prefix }
  const workers: NodeProcess[] = ['a', 'b'].map(name => spawnNode([fixture], { ...env, WORKER_NAME: name }))
  t.teardown(async () => { await Promise.all(workers.map(w => w.stop())) })
  await Promise.all(workers.map(w => w.waitFor(/^worker ready$/, 30_000)))

  const layer = new RedisChannelLayer({ url: REDIS_URL, prefix })
  t.teardown(() => layer.close())
  const total = 100
  for (let n = 0; n < total; n++) await layer.send(channel, { type: 'job.run', n })

  const handled = (): Array<{ handled: number, by: string }> => workers.flatMap(w => w.lines.filter(l => l.startsWith('{"handled"')).map(l => JSON.parse(l)))
  await eventually(() => handled().length >= total, 20_000)
  // Give a duplicate, if the layer made one, time to show up before counting.
  await new Promise(resolve => setTimeout(resolve, 300))
  t.same(await Promise.all(workers.map(w => w.stop())), [0, 0], 'both processes shut down cleanly')

  const all = handled()
  const numbers = all.map(h => h.handled).sort((a, b) => a - b)
  t.same(numbers, Array.from({ length: total }, (_, n) => n), 'every message handled exactly once')
  const a = all.filter(h => h.by === 'a').length
  const b = all.filter(h => h.by === 'b').length
  t.ok(a > 0 && b > 0, `both processes took messages (a: ${a}, b: ${b})`)
})

t.test('a job handed to a worker leaves Redis before its handler runs: a handler that holds the event loop cannot see it given to another worker', async t => {
  if (RedisChannelLayer === undefined) return
  await ensureBuilt()
  const prefix = `fctest-${randomBytes(4).toString('hex')}`
  const worker = spawnNode([fixture], { REDIS_URL, WORKER_CHANNEL: 'jobs', LAYER_PREFIX: prefix, WORKER_NAME: 'a' })
  t.teardown(async () => { await worker.stop() })
  await worker.waitFor(/^worker ready$/, 30_000)
  const layer = new RedisChannelLayer({ url: REDIS_URL, prefix })
  t.teardown(() => layer.close())
  const { Redis } = await import('ioredis')
  const admin = new Redis(REDIS_URL)
  t.teardown(() => { admin.disconnect() })
  await layer.send('jobs', { type: 'job.hold', n: 1, ms: 3000 })
  await worker.waitFor(/"holding":1/, 10_000)
  // The worker's event loop is held now: what Redis keeps of the job is what it wrote before.
  await new Promise(resolve => setTimeout(resolve, 500))
  const claims = await admin.keys(`${prefix}:qc:{jobs}:*`)
  const kept = (await Promise.all(claims.map(async key => await admin.lrange(key, 0, -1)))).flat().filter(element => element.includes('job.hold'))
  t.same(kept, [], 'no claim holds the job once its handler runs (its lease, unrenewed meanwhile, would give it back to the queue)')
  t.equal(await admin.llen(`${prefix}:q:{jobs}`), 0, 'nor does the queue')
  await worker.waitFor(/"handled":1/, 10_000)
})
