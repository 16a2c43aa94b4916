import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { ChannelFullError, InvalidOptionError, LayerClosedError } from '../../lib/errors.js'
import { RedisChannelLayer, type RedisChannelLayerOptions } from '../../lib/layers/redis.js'
import type { LayerMessage } from '../../lib/layers/types.js'
import { conformance } from './conformance.js'
import { REDIS_URL, adminClient, cleanedPrefix, keysOf, requireRedis, startRedisServer, uniquePrefix } from '../helpers/redis.js'
import { receiveWithin } from '../helpers/layers.js'

// The Redis layer against the shared Redis at REDIS_URL: the conformance suite with two layer
// instances standing in for two processes, then what only a shared backend has.

if (await requireRedis(t)) {
  const conformancePrefix = cleanedPrefix(t, 'fc-conf')
  conformance('RedisChannelLayer', options => new RedisChannelLayer({ url: REDIS_URL, prefix: conformancePrefix, ...options }),
    { shared: true, latency: 100 })
  tests()
}

function open (t: Test, options: RedisChannelLayerOptions = {}): RedisChannelLayer {
  const layer = new RedisChannelLayer({ url: REDIS_URL, ...options })
  t.teardown(() => layer.close())
  return layer
}

async function next (layer: RedisChannelLayer, channel: string, ms = 2000): Promise<LayerMessage> {
  return await receiveWithin(channel, ms, signal => layer.receive(channel, { signal }))
}

async function nothing (layer: RedisChannelLayer, channel: string, ms = 150): Promise<boolean> {
  return await next(layer, channel, ms).then(() => false, () => true)
}

function tests (): void {
  t.test('options are checked in the constructor', async t => {
    const bad: Array<[string, RedisChannelLayerOptions]> = [
      ['url', { url: 'http://localhost' }],
      ['url', { url: 42 as never }],
      ['prefix', { prefix: 'has:colon' }],
      ['prefix', { prefix: '' }],
      ['prefix', { prefix: 'a{b}' }],
      ['timeout', { timeout: 0 }],
      ['timeout', { timeout: Infinity }],
      // Past what a Node timer keeps: every call would time out after 1 ms.
      ['timeout', { timeout: 2 ** 31 }],
      ['membershipLease', { membershipLease: 2 ** 31 / 1000 * 3 }],
      ['client', { client: {} as never }],
      ['client', { client: new Redis({ lazyConnect: true }), url: REDIS_URL }],
      ['redisOptions', { redisOptions: 'x' as never }],
      ['capacity', { capacity: 0 }],
      // Misspelt, it would be ignored: the layer would run on the default Redis.
      ['a misspelt url', { ulr: 'redis://elsewhere:6379' } as never]
    ]
    for (const [option, options] of bad) {
      t.throws(() => new RedisChannelLayer(options), InvalidOptionError, option)
    }
    const err = (() => { try { return new RedisChannelLayer({ prefix: 'a b' }) } catch (e) { return e } })()
    t.match(err, { code: 'FST_CHANNELS_INVALID_OPTION', message: /prefix/ })
    t.equal(open(t).prefix, 'channels', 'default prefix')
    const patient = open(t, { timeout: 2 ** 31 - 1 })
    // The receive waits on an empty queue: its deadline (the timeout plus a pop's second) must not
    // overflow the timer it sets (Node would fire it after 1 ms: a pop given up at once, again and again).
    const overflows: string[] = []
    const onWarning = (warning: Error): void => { if (warning.name === 'TimeoutOverflowWarning') overflows.push(warning.message) }
    process.on('warning', onWarning)
    t.teardown(() => { process.off('warning', onWarning) })
    setTimeout(() => { void patient.send('patient-queue', { type: 'waited' }) }, 1500)
    t.same(await patient.receive('patient-queue'), { type: 'waited' }, 'the longest timeout a timer keeps is taken, and calls wait as long as they must')
    t.same(overflows, [], 'no timer overflowed')
  })

  t.test('calls made before the first connection, then close(): they reject with LayerClosedError at once, not after the timeout', async t => {
    const prefix = uniquePrefix('fc-close')
    const groups = { 'hist*': { history: { size: 10, ttl: 60 } } }
    const calls: Array<[string, (layer: RedisChannelLayer) => Promise<unknown>]> = [
      ['groupAdd', layer => layer.groupAdd('hist', 'queue')],
      ['history', layer => layer.history('hist')],
      ['presence', layer => layer.presence('hist')],
      ['flush', layer => layer.flush()]
    ]
    for (const [name, call] of calls) {
      const layer = new RedisChannelLayer({ url: REDIS_URL, prefix, timeout: 5000, groups })
      const started = performance.now()
      const outcome = call(layer).then(() => 'done', (err: unknown) => err)
      await layer.close()
      t.ok(await outcome instanceof LayerClosedError, `${name}: LayerClosedError`)
      t.ok(performance.now() - started < 2000, `${name}: at once`)
    }
  })

  t.test('connect() at startup sets up what channels need: a consumer\'s channel is made even while Redis is down afterwards', async t => {
    const server = await startRedisServer(t)
    const layer = new RedisChannelLayer({ url: server.url, timeout: 300, log: { warn: () => {}, debug: () => {}, error: () => {} } })
    t.teardown(() => layer.close())
    await layer.connect()
    await server.kill()
    const channel = await layer.newChannel()
    t.match(channel, /^specific\./, 'newChannel() answers without Redis')
  })

  t.test('every key and pub/sub channel starts with the prefix; flush deletes only its own', async t => {
    const admin = adminClient(t)
    const [mine, theirs] = [uniquePrefix('fc-own'), uniquePrefix('fc-other')]
    const a = open(t, { prefix: mine })
    const b = open(t, { prefix: theirs })
    for (const layer of [a, b]) {
      const channel = await layer.newChannel()
      await layer.groupAdd('room', channel)
      await layer.groupAdd('room', 'named-member')
      await layer.send('queue', { type: 'queued' })
    }
    const subscribed = await admin.pubsub('CHANNELS', '*') as string[]
    t.ok(subscribed.filter(c => c.includes(mine)).every(c => c.startsWith(`${mine}:`)), 'channels prefixed')
    t.ok(subscribed.some(c => c === `${mine}:g:{room}`), 'subscribed to its group')
    const before = await keysOf(admin, mine)
    t.ok(before.length >= 4, `keys written: ${before.join(', ')}`)
    await a.flush()
    t.same(await keysOf(admin, mine), [], 'flush deleted its keys')
    t.ok((await keysOf(admin, theirs)).length >= 4, 'another prefix is untouched')
  })

  t.test('messages cross instances exactly: bytes, nesting, the same shape as in memory', async t => {
    const prefix = uniquePrefix('fc-bytes')
    const [a, b] = [open(t, { prefix }), open(t, { prefix })]
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i)
    const message = {
      type: 'bin.all',
      bytes,
      buffer: Buffer.from('héllo'),
      nested: { list: [1, -2.5, 'three', null, true, { deep: [new Uint8Array([7])] }], empty: {}, none: [] },
      big: Number.MAX_SAFE_INTEGER,
      unicode: 'ü✓😀'
    }
    const expected = { ...message, buffer: new Uint8Array(Buffer.from('héllo')) }
    const direct = await b.newChannel()
    await a.send(direct, message)
    await a.send('shape-queue', message)
    const got = [await next(b, direct), await next(b, 'shape-queue')]
    for (const received of got) {
      t.same(received, expected)
      t.equal(Object.getPrototypeOf(received.bytes), Uint8Array.prototype, 'a plain Uint8Array, as in memory')
      t.equal(Object.getPrototypeOf(received.buffer), Uint8Array.prototype, 'Buffers arrive as Uint8Array')
      t.same([...(received.bytes as Uint8Array)], [...bytes])
    }
    bytes[0] = 99
    t.equal((got[0].bytes as Uint8Array)[0], 0, 'the recipient owns its bytes')
  })

  t.test('named channels: capacity, expiry, and exactly one receiver across instances', async t => {
    const prefix = uniquePrefix('fc-named')
    // An expiry long enough that the fresh messages cannot expire on a loaded machine before they are received.
    const [a, b] = [open(t, { prefix, capacity: 2, expiry: 1 }), open(t, { prefix, capacity: 2, expiry: 1 })]
    await a.send('work', { type: 'n', n: 1 })
    await b.send('work', { type: 'n', n: 2 })
    const err = await a.send('work', { type: 'n', n: 3 }).catch((e: unknown) => e)
    t.ok(err instanceof ChannelFullError, 'the third send is refused')
    t.match(err, { code: 'FST_CHANNELS_CHANNEL_FULL' })
    t.same(await next(b, 'work'), { type: 'n', n: 1 })
    t.same(await next(a, 'work'), { type: 'n', n: 2 }, 'FIFO across senders and receivers')
    await a.send('work', { type: 'stale' })
    await sleep(1300)
    await a.send('work', { type: 'fresh', n: 1 })
    await a.send('work', { type: 'fresh', n: 2 })
    t.same(await next(b, 'work'), { type: 'fresh', n: 1 }, 'the expired one is gone and freed its place')
    t.same(await next(b, 'work'), { type: 'fresh', n: 2 })
    t.ok(await nothing(a, 'work'))
    // A reader's claim outlives its run by a second, for the channel's next run.
    const admin = adminClient(t)
    for (let i = 0; i < 40 && (await keysOf(admin, prefix)).length > 0; i++) await sleep(100)
    t.same(await keysOf(admin, prefix), [], 'an empty queue leaves no key once its readers stopped')
  })

  t.test('an aborted receive on a named channel gives its message back', async t => {
    const prefix = uniquePrefix('fc-abort')
    const [a, b] = [open(t, { prefix }), open(t, { prefix })]
    for (let round = 0; round < 5; round++) {
      const controller = new AbortController()
      const pending = a.receive('handover', { signal: controller.signal }).catch(() => 'aborted')
      await sleep(20)
      controller.abort()
      t.equal(await pending, 'aborted')
      await b.send('handover', { type: 'kept', round })
      t.same(await next(b, 'handover'), { type: 'kept', round }, `round ${round}: nothing was lost to the aborted receiver`)
    }
  })

  t.test('a receive that gave up in one process does not reorder what a worker in another gets next', async t => {
    const prefix = uniquePrefix('fc-unblock')
    const [quitter, worker, sender] = [open(t, { prefix }), open(t, { prefix }), open(t, { prefix })]
    await Promise.all([quitter.connect(), worker.connect(), sender.connect()])
    for (let round = 0; round < 3; round++) {
      await t.rejects(quitter.receive('jobs', { signal: AbortSignal.timeout(100) }), { name: 'TimeoutError' })
      const got: number[] = []
      const working = (async () => { while (got.length < 2) got.push((await next(worker, 'jobs') as unknown as { n: number }).n) })()
      await sleep(50)
      await sender.send('jobs', { type: 'job', n: 1 })
      await sender.send('jobs', { type: 'job', n: 2 })
      await working
      t.same(got, [1, 2], `round ${round}: the worker got both in the order they were sent`)
    }
  })

  t.test('a layer that closes while its pop of a named channel is under way gives back what the pop took', async t => {
    const prefix = uniquePrefix('fc-close-pop')
    const b = open(t, { prefix })
    for (let round = 0; round < 8; round++) {
      const a = new RedisChannelLayer({ url: REDIS_URL, prefix })
      const controller = new AbortController()
      const pending = a.receive('jobs', { signal: controller.signal }).catch(() => 'aborted')
      await sleep(50) // its pop waits in Redis now, for up to a second
      controller.abort() // as a worker stops before app.close()
      t.equal(await pending, 'aborted')
      await b.send('jobs', { type: 'job', round }) // Redis hands it to a's pop at once
      await a.close()
      t.same(await next(b, 'jobs'), { type: 'job', round }, `round ${round}: the message is still in the channel for the other process`)
    }
  })

  t.test('the last member leaving its group from inside the group\'s fan-out (a kick): the process unsubscribes from it', async t => {
    const layer = open(t, { prefix: uniquePrefix('fc-kick') })
    const channel = await layer.newChannel()
    const before = layer.inspect().subscriptions
    await layer.groupAdd('kicks', channel)
    t.equal(layer.inspect().subscriptions, before + 1, 'subscribed to the group')
    let left: Promise<void> | undefined
    layer.listen(channel, { accepting: true, push (message) { if (message.type === 'kick') left = layer.groupDiscard('kicks', channel) }, layerClosed () {} })
    await layer.groupSend('kicks', { type: 'kick' })
    for (let i = 0; i < 100 && left === undefined; i++) await sleep(10)
    await left
    t.equal(layer.inspect().subscriptions, before, 'its subscription went with its last member')
  })

  t.test('a named channel whose key holds something else: receive() rejects with Redis\' answer, not as an outage', async t => {
    const prefix = uniquePrefix('fc-wrongtype')
    const warnings: unknown[] = []
    const log = { warn: (obj: unknown) => { warnings.push(obj) }, debug: () => {}, error: () => {} }
    const layer = open(t, { prefix, timeout: 500, log })
    const admin = adminClient(t)
    await admin.set(`${prefix}:q:{jobs}`, 'not a list')
    const err = await layer.receive('jobs').catch((e: unknown) => e)
    t.match(err, { message: /WRONGTYPE/ }, 'the receive rejects with the error Redis answered')
    t.notMatch(err, { code: 'FST_CHANNELS_LAYER_TIMEOUT' }, 'not as Redis being unreachable')
    t.match(warnings, [{ channel: 'jobs' }], 'and it is logged')
    t.equal(layer.inspect().readers, 0, 'no reader goes on popping')
    await admin.del(`${prefix}:q:{jobs}`)
    await layer.send('jobs', { type: 'job' })
    t.same(await next(layer, 'jobs'), { type: 'job' }, 'once the key is a list again, the channel works')
  })

  t.test('a channel of another instance: full there means dropped there, counted and logged', async t => {
    const prefix = uniquePrefix('fc-remote-full')
    const warnings: object[] = []
    const log = { warn: (obj: object) => { warnings.push(obj) }, debug: () => {}, error: () => {} }
    const [a, b] = [open(t, { prefix }), open(t, { prefix, capacity: 1, log })]
    const channel = await b.newChannel()
    await a.send(channel, { type: 'first' })
    await a.send(channel, { type: 'second' })
    const deadline = Date.now() + 2000
    while (b.stats.directSendDropped === 0 && Date.now() < deadline) await sleep(10)
    t.equal(b.stats.directSendDropped, 1)
    t.same(warnings, [{ channel }])
    t.same(await next(b, channel), { type: 'first' })
    t.ok(await nothing(b, channel))
  })

  t.test('groupAdd and discardChannel of another instance\'s channel take effect before they resolve', async t => {
    const prefix = uniquePrefix('fc-remote-member')
    const [a, b] = [open(t, { prefix }), open(t, { prefix })]
    const channel = await b.newChannel()
    await a.groupAdd('remote', channel)
    await a.groupSend('remote', { type: 'via.a' })
    t.same(await next(b, channel), { type: 'via.a' })
    t.equal(b.inspect().memberships, 1, 'the membership lives where the channel does')
    await a.discardChannel(channel)
    t.equal(b.inspect().memberships, 0)
    await b.groupSend('remote', { type: 'after' })
    t.ok(await nothing(b, channel))
    const gone = `specific.${'z'.repeat(12)}!x`
    await t.resolves(a.groupAdd('remote', gone), 'a channel of a process that is gone: nothing to do')
  })

  t.test('a named channel can be a group member', async t => {
    const prefix = uniquePrefix('fc-named-member')
    const [a, b] = [open(t, { prefix, capacity: 1 }), open(t, { prefix, capacity: 1 })]
    await a.groupAdd('crew', 'jobs')
    const member = await b.newChannel()
    await b.groupAdd('crew', member)
    await b.groupSend('crew', { type: 'crew.one' })
    t.same(await next(a, 'jobs'), { type: 'crew.one' })
    t.same(await next(b, member), { type: 'crew.one' })
    await a.groupSend('crew', { type: 'crew.two' })
    await a.groupSend('crew', { type: 'crew.three' })
    t.equal(a.stats.groupSendSkipped, 1, 'the full queue was skipped, not refused')
    t.same(await next(b, 'jobs'), { type: 'crew.two' })
    await a.groupDiscard('crew', 'jobs')
    await a.groupSend('crew', { type: 'crew.four' })
    t.ok(await nothing(b, 'jobs'))
    await a.groupAdd('crew', 'jobs')
    await a.send('jobs', { type: 'queued' })
    await b.discardChannel('jobs')
    t.ok(await nothing(a, 'jobs'), 'discardChannel emptied the queue')
    await a.groupSend('crew', { type: 'crew.five' })
    t.ok(await nothing(a, 'jobs'), 'and left the group')
  })

  t.test('a process whose clock runs ahead of Redis still reaches a named member with its first group send', async t => {
    const prefix = uniquePrefix('fc-skew')
    const worker = open(t, { prefix, groupExpiry: 60 })
    await worker.groupAdd('news', 'inbox')
    const realNow = Date.now
    // This host's clock is 90 s fast: past the membership's 60 s, were it compared with its own.
    Date.now = () => realNow() + 90_000
    t.teardown(() => { Date.now = realNow })
    const sender = open(t, { prefix, groupExpiry: 60 })
    await sender.connect()
    await sender.groupSend('news', { type: 'headline' })
    Date.now = realNow
    t.same(await next(worker, 'inbox'), { type: 'headline' }, 'the membership is judged by the server\'s time')
  })

  t.test('this host\'s wall clock stepped an hour ahead once the server\'s time is known moves no deadline: a worker gets what waits for it, a sender reaches named members', async t => {
    const prefix = uniquePrefix('fc-step')
    const worker = open(t, { prefix, groupExpiry: 600 })
    const sender = open(t, { prefix, groupExpiry: 600 })
    await worker.groupAdd('alerts', 'jobs')
    await sender.send('jobs', { type: 'job', n: 1 })
    t.same(await next(worker, 'jobs'), { type: 'job', n: 1 }, 'before the step')
    await sender.groupSend('alerts', { type: 'job', n: 2 })
    t.same(await next(worker, 'jobs'), { type: 'job', n: 2 })
    const realNow = Date.now
    // An NTP step, or a VM resumed after a suspend: past the queue's 60 s expiry and the 600 s membership.
    Date.now = () => realNow() + 3_600_000
    t.teardown(() => { Date.now = realNow })
    await sender.send('jobs', { type: 'job', n: 3 })
    await sender.groupSend('alerts', { type: 'job', n: 4 })
    t.same([await next(worker, 'jobs'), await next(worker, 'jobs')], [{ type: 'job', n: 3 }, { type: 'job', n: 4 }],
      'the worker takes both, in order: neither is judged expired by this host\'s clock')
    t.equal(worker.stats.expired, 0, 'nothing counted as expired')
  })

  t.test('memberships are recorded in Redis and removed with them', async t => {
    const admin = adminClient(t)
    const prefix = uniquePrefix('fc-records')
    const layer = open(t, { prefix, groupExpiry: 30 })
    const [c1, c2] = [await layer.newChannel(), await layer.newChannel()]
    await layer.groupAdd('recorded', c1)
    await layer.groupAdd('recorded', c2)
    const key = `${prefix}:gm:{recorded}`
    t.same((await admin.zrange(key, '0', '-1')).sort(), [c1, c2].sort())
    const ttl = await admin.pttl(key)
    t.ok(ttl > 0 && ttl <= 30_000, `the key expires with its members (${ttl} ms)`)
    await layer.groupDiscard('recorded', c1)
    t.same(await admin.zrange(key, '0', '-1'), [c2])
    await layer.discardChannel(c2)
    t.equal(await admin.exists(key), 0, 'no member, no key')
    t.same(layer.inspect(), { channels: 0, groups: 0, memberships: 0, subscriptions: 2, readers: 0, requests: 0 },
      'only the inbox and broadcast subscriptions are left')
  })

  t.test('a dead process\'s presence entry is removed, also in a group that does not announce presence', async t => {
    const admin = adminClient(t)
    const prefix = uniquePrefix('fc-reap')
    const layer = open(t, { prefix, membershipLease: 1 })
    const [members, presence] = [`${prefix}:gm:{room}`, `${prefix}:pi:{room}`]
    // What a process that died leaves: its presence entry, its membership record past its lease.
    await admin.zadd(members, 1, 'ghost')
    await admin.hset(presence, 'ghost', 'left behind')
    const channel = await layer.newChannel()
    await layer.groupAdd('room', channel, { presence: { name: 'Ada' } })
    t.same(await layer.presence('room'), [{ channel, info: { name: 'Ada' } }], 'presence() never showed it')
    const gone = async (): Promise<boolean> => await admin.hexists(presence, 'ghost') === 0
    for (let i = 0; i < 30 && !await gone(); i++) await sleep(100)
    t.ok(await gone(), 'the entry is removed from Redis within the reap interval')
    t.equal(await admin.hexists(presence, channel), 1, 'the live one stays')
  })

  t.test('three processes with members in a group: its presence is read once per reaping period, by one of them, not by each', async t => {
    const admin = adminClient(t)
    const prefix = uniquePrefix('fc-reap-once')
    const presence = `${prefix}:pi:{room}`
    const layers = [open(t, { prefix, membershipLease: 1 }), open(t, { prefix, membershipLease: 1 }), open(t, { prefix, membershipLease: 1 })]
    for (const [i, layer] of layers.entries()) await layer.groupAdd('room', await layer.newChannel(), { presence: { name: `member ${i}` } })
    const source = new Redis(REDIS_URL)
    const monitor = await source.monitor()
    t.teardown(() => { monitor.disconnect(); source.disconnect() })
    let reads = 0
    monitor.on('monitor', (_time: string, args: string[]) => { if (args[0]?.toLowerCase() === 'hgetall' && args[1] === presence) reads++ })
    const started = performance.now()
    await sleep(3_500)
    const periods = (performance.now() - started) / 1000
    t.ok(reads >= 2 && reads <= Math.ceil(periods) + 1, `${reads} reads of the presence in ${periods.toFixed(1)} periods of 1 s (each process reading would be about ${Math.round(3 * periods)})`)
    // What a process that died leaves is still reaped, by one of them.
    await admin.zadd(`${prefix}:gm:{room}`, 1, 'ghost')
    await admin.hset(presence, 'ghost', 'left behind')
    const gone = async (): Promise<boolean> => await admin.hexists(presence, 'ghost') === 0
    for (let i = 0; i < 30 && !await gone(); i++) await sleep(100)
    t.ok(await gone(), 'a dead process\'s entry is removed within the reap interval')
    t.equal(await admin.hlen(presence), 3, 'the live ones stay')
  })

  t.test('close() ends only what the layer opened', async t => {
    const admin = adminClient(t)
    const client = new Redis(REDIS_URL)
    t.teardown(() => client.disconnect())
    const prefix = uniquePrefix('fc-close')
    const layer = new RedisChannelLayer({ client, prefix })
    const channel = await layer.newChannel()
    await layer.groupAdd('g', channel)
    const pending = layer.receive('named-wait').catch((e: unknown) => e)
    await sleep(50)
    const name = `${prefix}:${layer.processToken}`
    const ours = async (): Promise<number> => (await admin.client('LIST') as string).split('\n').filter(l => l.includes(`name=${name}`)).length
    t.ok(await ours() >= 2, 'subscriber and blocking connections are open')
    await layer.close()
    t.ok(await pending instanceof LayerClosedError, 'the waiting receive is rejected')
    const deadline = Date.now() + 2000
    while (await ours() > 0 && Date.now() < deadline) await sleep(20)
    t.equal(await ours(), 0, 'every connection it opened is closed')
    t.equal(await client.ping(), 'PONG', 'the user\'s client is still open')
    t.equal(await admin.exists(`${prefix}:gm:{g}`), 0, 'its membership records were removed')
  })
}
