import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { RedisChannelLayer, type RedisChannelLayerOptions } from '../../lib/layers/redis.js'
import type { LayerMessage } from '../../lib/layers/types.js'
import { conformance } from './conformance.js'
import { REDIS_URL, adminClient, cleanedPrefix, requireRedis, startRedisServer, uniquePrefix } from '../helpers/redis.js'
import { receiveWithin } from '../helpers/layers.js'

// encryptionKeys: every case of the conformance suite with every payload sealed, nothing
// readable in Redis' own view of the traffic (MONITOR), and keys that rotate without downtime.

const KEYS = [randomBytes(32)]

async function next (layer: RedisChannelLayer, channel: string, ms = 2000): Promise<LayerMessage> {
  return await receiveWithin(channel, ms, signal => layer.receive(channel, { signal }))
}

if (await requireRedis(t)) {
  const prefix = cleanedPrefix(t, 'fc-sealed')
  conformance('RedisChannelLayer with encryptionKeys', options => new RedisChannelLayer({ url: REDIS_URL, prefix, encryptionKeys: KEYS, ...options }),
    { shared: true, latency: 100 })

  t.test('Redis never sees message content or presence info; names and counts stay readable', async t => {
    const server = await startRedisServer(t)
    const admin = new Redis(server.url, { retryStrategy: () => null })
    const monitor = await admin.monitor()
    for (const client of [admin, monitor]) client.on('error', () => {})
    t.teardown(() => { monitor.disconnect(); admin.disconnect() })
    const seen: string[] = []
    monitor.on('monitor', (_time: string, args: string[]) => { seen.push(args.join(' ')) })
    const secret = 'SECRET-CONTENT'
    const options: RedisChannelLayerOptions = {
      url: server.url,
      prefix: 'sealed',
      encryptionKeys: KEYS,
      groups: { 'kept.*': { history: { size: 10, ttl: 60 }, presenceEvents: true } }
    }
    const [a, b] = [new RedisChannelLayer(options), new RedisChannelLayer(options)]
    t.teardown(async () => { await Promise.all([a.close(), b.close()]) })
    const [ca, cb] = [await a.newChannel(), await b.newChannel()]
    await a.groupAdd('kept.room', ca, { presence: { name: `${secret}-presence` } })
    await b.groupAdd('kept.room', cb)
    await b.groupAdd('plain.room', cb)
    await a.groupSend('kept.room', { type: 'x', text: `${secret}-history` })
    await a.groupSend('plain.room', { type: 'x', text: `${secret}-group` })
    await a.send(cb, { type: 'x', text: `${secret}-direct` })
    await a.send('jobs', { type: 'x', text: `${secret}-queue` })
    await b.groupAdd('kept.room', 'jobs')
    await a.groupSend('kept.room', { type: 'x', text: `${secret}-to-queue` })

    const texts = [await next(b, cb), await next(b, cb), await next(b, cb)].map(m => m.text)
    t.same(texts, [`${secret}-history`, `${secret}-group`, `${secret}-direct`], 'readable to the processes that hold the key')
    t.same([(await next(b, 'jobs')).text, (await next(b, 'jobs')).text], [`${secret}-queue`, `${secret}-to-queue`])
    t.same((await b.history('kept.room')).messages.map(m => m.message.text), [`${secret}-history`, `${secret}-to-queue`])
    t.same(await b.presence('kept.room'), [{ channel: ca, info: { name: `${secret}-presence` } }])

    await new Promise(resolve => setTimeout(resolve, 100))
    t.ok(seen.length > 20, `MONITOR saw ${seen.length} commands`)
    t.same(seen.filter(line => line.includes(secret)), [], 'no command carried readable content')
    t.ok(seen.some(line => line.includes('sealed:s:{kept.room}')) && seen.some(line => line.includes('sealed:g:{plain.room}')), 'key and group names are readable')
  })

  t.test('keys rotate without downtime; what no key opens is dropped, counted and logged', async t => {
    const [older, current] = [randomBytes(32), randomBytes(32)]
    const p = uniquePrefix('fc-rotate')
    const warnings: object[] = []
    const log = { warn: (obj: object, msg?: string) => { warnings.push({ ...obj, msg }) }, debug: () => {}, error: () => {} }
    const open = (keys: Buffer[], extra: RedisChannelLayerOptions = {}): RedisChannelLayer => {
      const layer = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: keys, ...extra })
      t.teardown(() => layer.close())
      return layer
    }
    // Step 1 of a rotation: the new key is added second everywhere, then first.
    const stale = open([older], { log })
    const rotated = open([current, older])
    const [cs, cr] = [await stale.newChannel(), await rotated.newChannel()]
    await stale.send(cr, { type: 'from.stale' })
    t.same(await next(rotated, cr), { type: 'from.stale' }, 'the rotated process opens the old key\'s payloads')
    await rotated.send(cs, { type: 'from.rotated' })
    const deadline = Date.now() + 2000
    while (stale.stats.undecryptable === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    t.equal(stale.stats.undecryptable, 1, 'a process without the new key drops what it seals, and counts it')
    t.equal(warnings.length, 1, 'and logs it, once')
    t.match(warnings[0], { msg: /^dropped a payload that no encryption key opens: .*encryptionKeys/ }, 'saying where to look')
    await rotated.send('rotation-queued', { type: 'queued.rotated', n: 1 })
    await t.rejects(next(stale, 'rotation-queued', 300), 'a queued message it cannot open is not handed out')
    t.equal(stale.stats.undecryptable, 1, 'nor counted as undecryptable: it is not dropped, but left in the queue for a process that has the key')
    // A process left with the old key drops every payload: a line a second says how many, not a line each.
    for (let i = 0; i < 50; i++) await rotated.send(cs, { type: 'from.rotated' })
    const counted = (): number => warnings.slice(1).reduce((sum: number, w) => sum + ((w as { dropped?: number }).dropped ?? 0), 0)
    const until = Date.now() + 5000
    while (counted() < 50 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 20))
    t.equal(stale.stats.undecryptable, 51, 'every one counted')
    t.equal(counted(), 50, 'every one logged, in the lines that count them')
    t.ok(warnings.length <= 3, `in ${warnings.length} lines for 51 drops`)
    // Step 2: every process has the new key; the old one can go once nothing sealed with it remains.
    await rotated.send('rotation-jobs', { type: 'queued.rotated' })
    const caughtUp = open([current])
    t.same(await next(caughtUp, 'rotation-jobs'), { type: 'queued.rotated' })
    t.same(await next(caughtUp, 'rotation-queued'), { type: 'queued.rotated', n: 1 }, 'the queued message the stale process could not open waited for one that can')
  })

  t.test('a worker that cannot open a named channel\'s messages (another key, or no keys) leaves them for the workers that can: none is lost', async t => {
    const p = uniquePrefix('fc-leave')
    const warnings: Array<{ msg?: string }> = []
    const log = { warn: (obj: object, msg?: string) => { warnings.push({ ...obj, msg }) }, debug: () => {}, error: () => {} }
    const open = (options: RedisChannelLayerOptions): RedisChannelLayer => {
      const layer = new RedisChannelLayer({ url: REDIS_URL, prefix: p, ...options })
      t.teardown(() => layer.close())
      return layer
    }
    const sender = open({ encryptionKeys: KEYS })
    for (const [what, wrong] of [['another key', open({ encryptionKeys: [randomBytes(32)], log })], ['no keys', open({ log })]] as const) {
      const channel = `jobs-${what.replace(' ', '-')}`
      // The worker that cannot open them waits first, so it is the one Redis hands the first job to.
      const stop = new AbortController()
      const wrongGot: LayerMessage[] = []
      const wrongWaits = (async () => {
        try {
          for (let i = 0; i < 10; i++) wrongGot.push(await wrong.receive(channel, { signal: stop.signal }))
        } catch {}
      })()
      await new Promise(resolve => setTimeout(resolve, 100))
      for (let n = 0; n < 5; n++) await sender.send(channel, { type: 'job', n })
      const right = open({ encryptionKeys: KEYS })
      const got: number[] = []
      for (let i = 0; i < 5; i++) got.push((await next(right, channel, 5000)).n as number)
      t.same(got, [0, 1, 2, 3, 4], `${what}: a worker with the key gets every job, in order`)
      await t.rejects(next(right, channel, 300), `${what}: each once`)
      stop.abort()
      await wrongWaits
      t.same(wrongGot, [], `${what}: the other worker is handed none`)
    }
    t.ok(warnings.some(w => /went back to its queue, for a process that can/.test(w.msg ?? '')), 'which says, in its log, what it did with them')
  })

  t.test('only workers that cannot open a named channel\'s messages: they stay queued, in order, and nothing is counted as dropped', async t => {
    const p = uniquePrefix('fc-leave-none')
    const quiet = { warn: () => {}, debug: () => {}, error: () => {} }
    const sender = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: KEYS })
    const wrong = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: [randomBytes(32)], log: quiet })
    t.teardown(async () => { await Promise.all([sender.close(), wrong.close()]) })
    for (let n = 0; n < 3; n++) await sender.send('jobs', { type: 'job', n })
    // About three pops of the first message, a second apart.
    await t.rejects(next(wrong, 'jobs', 2500), 'the worker gets nothing')
    t.equal(wrong.stats.undecryptable, 0, 'and counts nothing as undecryptable: it dropped nothing')
    const right = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: KEYS })
    t.teardown(() => right.close())
    const got: number[] = []
    for (let i = 0; i < 3; i++) got.push((await next(right, 'jobs')).n as number)
    t.same(got, [0, 1, 2], 'a worker with the key, started later, gets them all, in order')
  })

  t.test('payloads this layer did not write (a process without keys on the same prefix) are ignored, logged once a second with their number', async t => {
    const p = uniquePrefix('fc-foreign')
    const warnings: Array<{ msg?: string, ignored?: number }> = []
    const log = { warn: (obj: object, msg?: string) => { warnings.push({ ...obj, msg }) }, debug: () => {}, error: () => {} }
    const sealed = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: KEYS, log })
    const plain = new RedisChannelLayer({ url: REDIS_URL, prefix: p })
    t.teardown(async () => { await Promise.all([sealed.close(), plain.close()]) })
    const channel = await sealed.newChannel()
    for (let i = 0; i < 200; i++) await plain.send(channel, { type: 'unsealed', i })
    const ignored = (): number => warnings.filter(w => w.msg === 'ignored a payload this layer did not write').length +
      warnings.reduce((sum, w) => sum + (w.ignored ?? 0), 0)
    const until = Date.now() + 5000
    while (ignored() < 200 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 20))
    t.equal(ignored(), 200, 'every one is ignored and accounted for in the log')
    t.ok(warnings.length <= 6, `in ${warnings.length} lines for 200 payloads, not a line each`)
    t.match(warnings[1], { msg: /^ignored \d+ more payloads this layer did not write within a second$/ })
    await t.rejects(next(sealed, channel, 200), 'none is handed out')
  })

  t.test('a join whose missed messages no key of the process opens is not recovered', async t => {
    const p = uniquePrefix('fc-unopened')
    const groups = { 'kept.*': { history: { size: 10, ttl: 60 } } }
    const open = (keys: Buffer[]): RedisChannelLayer => {
      const layer = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: keys, groups, log: { warn: () => {}, debug: () => {}, error: () => {} } })
      t.teardown(() => layer.close())
      return layer
    }
    const [sender, sameKey, otherKey] = [open(KEYS), open(KEYS), open([randomBytes(32)])]
    const since = await sender.groupSend('kept.room', { type: 'x', n: 1 })
    await sender.groupSend('kept.room', { type: 'x', n: 2 })

    const cs = await sameKey.newChannel()
    t.same((await sameKey.groupAdd('kept.room', cs, { since })).recovered, true, 'a process with the key recovers')
    t.same(await next(sameKey, cs), { type: 'x', n: 2 }, 'and replays what was missed')

    const co = await otherKey.newChannel()
    const join = await otherKey.groupAdd('kept.room', co, { since })
    t.same(join.recovered, false, 'a process without it is told the join is not recovered, so its app resynchronises')
    t.same(join.position, { offset: 2, epoch: since?.epoch }, 'from the group\'s position')
    await t.rejects(next(otherKey, co, 300), 'and nothing is replayed')
    t.same((await otherKey.groupAdd('kept.room', co, { since })).recovered, false, 'a second join answers the same')
  })

  t.test('a live message the member\'s process cannot open, between two it can: read back after the gap, reported once a second as what it is, not as lost from the history', async t => {
    const [older, newer] = [randomBytes(32), randomBytes(32)]
    // A rotation made in the wrong order (a sender seals with the new key before the member's
    // process has it), and a process without keys among processes that seal.
    const cases: Array<[string, RedisChannelLayerOptions, RedisChannelLayerOptions, RedisChannelLayerOptions, RegExp, number]> = [
      ['a key it lacks', { encryptionKeys: [older] }, { encryptionKeys: [older] }, { encryptionKeys: [newer, older] }, /no encryption key opens/, 2],
      ['no keys', {}, {}, { encryptionKeys: KEYS }, /this layer did not write/, 0]
    ]
    for (const [what, memberKeys, readableKeys, unreadableKeys, reportedAs, undecryptable] of cases) {
      const p = uniquePrefix('fc-unopened-gap')
      const groups = { 'kept.*': { history: { size: 10, ttl: 60 } } }
      const warnings: Array<{ msg?: string }> = []
      const log = { warn: (obj: object, msg?: string) => { warnings.push({ ...obj, msg }) }, debug: () => {}, error: () => {} }
      const open = (options: RedisChannelLayerOptions): RedisChannelLayer => {
        const layer = new RedisChannelLayer({ url: REDIS_URL, prefix: p, groups, ...options })
        t.teardown(() => layer.close())
        return layer
      }
      const [member, readable, unreadable] = [open({ ...memberKeys, log }), open(readableKeys), open(unreadableKeys)]
      const channel = await member.newChannel()
      await member.groupAdd('kept.room', channel)
      await readable.groupSend('kept.room', { type: 'x', n: 1 })
      t.same(await next(member, channel), { type: 'x', n: 1 })
      await unreadable.groupSend('kept.room', { type: 'x', n: 2 })
      await readable.groupSend('kept.room', { type: 'x', n: 3 })
      t.same(await next(member, channel), { type: 'x', n: 3 }, `${what}: the member gets what its process can open`)
      await t.rejects(next(member, channel, 300), `${what}: and nothing else`)
      const until = Date.now() + 3000
      while (member.stats.undecryptable < undecryptable && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 20))
      t.equal(member.stats.undecryptable, undecryptable, `${what}: counted as undecryptable ${undecryptable} times (live, and read back)`)
      await new Promise(resolve => setTimeout(resolve, 1100))
      t.same(warnings.map(w => w.msg).filter(msg => !reportedAs.test(msg ?? '')), [], `${what}: logged only as that, not as lost from the history, nor once more as undecodable`)
    }
  })

  t.test('a named channel\'s message changed in Redis: dropped, and logged once as a payload no key opens', async t => {
    const p = uniquePrefix('fc-tampered-queue')
    const warnings: Array<{ msg?: string }> = []
    const log = { warn: (obj: object, msg?: string) => { warnings.push({ ...obj, msg }) }, debug: () => {}, error: () => {} }
    const sender = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: KEYS })
    const worker = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: KEYS, log })
    t.teardown(async () => { await Promise.all([sender.close(), worker.close()]) })
    await sender.send('jobs', { type: 'job', n: 1 })
    const admin = adminClient(t)
    const key = `${p}:q:{jobs}`
    const element = await admin.lindexBuffer(key, 0) as Buffer
    element[element.length - 1] ^= 1 // the GCM tag: the key id still names the worker's key
    await admin.lset(key, 0, element)
    await sender.send('jobs', { type: 'job', n: 2 })
    t.same(await next(worker, 'jobs'), { type: 'job', n: 2 }, 'the next message comes')
    t.equal(worker.stats.undecryptable, 1, 'the changed one is counted')
    t.same(warnings.map(w => w.msg), ['dropped a payload that no encryption key opens: a process shares this layer with a key this one lacks (see encryptionKeys)'], 'and logged once')
  })

  t.test('history() and presence() with entries no key of the process opens: left out, counted, and logged once a second, not once an entry', async t => {
    const p = uniquePrefix('fc-unopened-reads')
    const groups = { 'kept.*': { history: { size: 100, ttl: 60 } } }
    const warnings: Array<{ msg?: string, dropped?: number }> = []
    const log = { warn: (obj: object, msg?: string) => { warnings.push({ ...obj, msg }) }, debug: () => {}, error: () => {} }
    const sender = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: KEYS, groups })
    const otherKey = new RedisChannelLayer({ url: REDIS_URL, prefix: p, encryptionKeys: [randomBytes(32)], groups, log })
    t.teardown(async () => { await Promise.all([sender.close(), otherKey.close()]) })
    for (let n = 0; n < 50; n++) await sender.groupSend('kept.room', { type: 'x', n })
    for (let i = 0; i < 20; i++) await sender.groupAdd('kept.room', await sender.newChannel(), { presence: { i } })
    const history = await otherKey.history('kept.room')
    t.same([history.messages.length, history.position?.offset], [0, 50], 'history() leaves out the 50 messages it cannot open, and its position shows them')
    t.same(await otherKey.presence('kept.room'), [], 'presence() leaves out the 20 entries')
    t.equal(otherKey.stats.undecryptable, 70, 'each one counted')
    await new Promise(resolve => setTimeout(resolve, 1100))
    t.ok(warnings.length <= 2, `${warnings.length} warning lines for 70 entries`)
    t.equal(warnings.reduce((sum, w) => sum + (w.dropped ?? 1), 0), 70, 'which account for every one')

    // A process without keys on the same prefix: the sealed entries are another configuration's.
    warnings.length = 0
    const keyless = new RedisChannelLayer({ url: REDIS_URL, prefix: p, groups, log })
    t.teardown(() => keyless.close())
    t.same((await keyless.history('kept.room')).messages, [], 'a process without keys leaves the sealed messages out')
    t.same(await keyless.presence('kept.room'), [], 'and the sealed presence entries')
    await new Promise(resolve => setTimeout(resolve, 1100))
    t.ok(warnings.length <= 2, `${warnings.length} warning lines for 70 entries`)
    t.ok(warnings.every(w => /^ignored (\d+ more payloads|a payload) this layer did not write/.test(w.msg ?? '')), 'each line says they are another configuration\'s')
    t.equal(warnings.reduce((sum, w) => sum + ((w as { ignored?: number }).ignored ?? 1), 0), 70, 'and they account for every one')
    t.equal(keyless.stats.undecryptable, 0, 'none counted as undecryptable: the process has no keys')
  })
}
