import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { LayerTimeoutError } from '../../lib/errors.js'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import type { LayerMessage, StreamPosition } from '../../lib/layers/types.js'
import { freePort } from '../helpers/process.js'
import { REDIS_URL, adminClient, loseWritesAfter, requireRedis, stallingProxy, startRedisServer, uniquePrefix, type StallingProxy } from '../helpers/redis.js'

// Redis going away: calls settle within `timeout` with LayerTimeoutError, the layer says so with
// events, and after a restart (all data lost) subscriptions and memberships come back by themselves.

const TIMEOUT = 1000
// Timers on a loaded CI machine fire late; a call that settles within this is "within the timeout".
const MARGIN = 1500

const unhandled: unknown[] = []
process.on('unhandledRejection', reason => { unhandled.push(reason) })

async function settlesWith (t: Test, what: string, call: () => Promise<unknown>): Promise<void> {
  const started = performance.now()
  const err = await call().then(() => undefined, (e: unknown) => e)
  const took = performance.now() - started
  t.ok(err instanceof LayerTimeoutError, `${what}: rejects with LayerTimeoutError`, { found: err })
  t.match(err, { code: 'FST_CHANNELS_LAYER_TIMEOUT' })
  // An outage, not a claim that Redis was waited for the whole timeout: it may say so sooner.
  t.match(err, { message: /^Channel layer backend unavailable for \S[\s\S]* \(timeout \d+ ms\)$/ }, `${what}: the message names the call and the timeout`)
  t.ok(took <= TIMEOUT + MARGIN, `${what}: settled in ${Math.round(took)} ms (timeout ${TIMEOUT} ms)`)
}

function receiveWithin (layer: RedisChannelLayer, channel: string, ms = 3000): Promise<LayerMessage> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(`nothing on ${channel} within ${ms} ms`)), ms)
  return layer.receive(channel, { signal: controller.signal }).finally(() => clearTimeout(timer))
}

/** The `n` of every message that comes to `channel` until none has come for a second. */
async function linesUntilQuiet (layer: RedisChannelLayer, channel: string): Promise<unknown[]> {
  const lines: unknown[] = []
  for (;;) {
    const message = await receiveWithin(layer, channel, 1000).catch(() => undefined)
    if (message === undefined) return lines
    lines.push(message.n)
  }
}

/**
 * Two layers on the same Redis, with a history of `size` messages on the group `feed`: one (of
 * `capacity`) through a proxy that can
 * cut or drop what its subscriptions get, one straight to Redis that sends.
 */
async function historyBehindProxy (t: Test, base: string, size = 100, capacity?: number): Promise<{ proxy: StallingProxy, layer: RedisChannelLayer, sender: RedisChannelLayer }> {
  const proxy = await stallingProxy(t)
  const prefix = uniquePrefix(base)
  const groups = { feed: { history: { size, ttl: 60 } } }
  const layer = new RedisChannelLayer({ url: proxy.url, prefix, timeout: TIMEOUT, groups, capacity })
  const sender = new RedisChannelLayer({ url: REDIS_URL, prefix, timeout: TIMEOUT, groups })
  t.teardown(async () => { await Promise.all([layer.close(), sender.close()]) })
  return { proxy, layer, sender }
}

/**
 * Two layers on the same Redis, with no history: one through a proxy that can hold or cut what
 * Redis answers it, one straight to Redis.
 */
async function behindProxy (t: Test, base: string, timeout = TIMEOUT): Promise<{ proxy: StallingProxy, prefix: string, behind: RedisChannelLayer, direct: RedisChannelLayer }> {
  const proxy = await stallingProxy(t)
  const prefix = uniquePrefix(base)
  const behind = new RedisChannelLayer({ url: proxy.url, prefix, timeout })
  const direct = new RedisChannelLayer({ url: REDIS_URL, prefix, timeout: TIMEOUT })
  t.teardown(async () => { await Promise.all([behind.close(), direct.close()]) })
  return { proxy, prefix, behind, direct }
}

/**
 * `historyBehindProxy`, a member of `feed` in the proxied layer, and lines 1 to 3 sent and checked
 * heard by it; `heard` is line 3's position.
 */
async function threeLinesHeard (t: Test, base: string): Promise<{ proxy: StallingProxy, layer: RedisChannelLayer, sender: RedisChannelLayer, member: string, heard: StreamPosition | undefined }> {
  const { proxy, layer, sender } = await historyBehindProxy(t, base)
  const member = await feedMember(layer)
  let heard: StreamPosition | undefined
  for (const n of [1, 2, 3]) heard = await sender.groupSend('feed', { type: 'line', n })
  t.same(await linesUntilQuiet(layer, member), [1, 2, 3])
  return { proxy, layer, sender, member, heard }
}

/** Another process on `prefix`, keeping `feed`'s history as the others do. */
function anotherProcess (t: Test, prefix: string): RedisChannelLayer {
  const another = new RedisChannelLayer({ url: REDIS_URL, prefix, timeout: TIMEOUT, groups: { feed: { history: { size: 100, ttl: 60 } } } })
  t.teardown(() => another.close())
  return another
}

/** A channel of `layer`, member of `feed`. */
async function feedMember (layer: RedisChannelLayer): Promise<string> {
  const member = await layer.newChannel()
  await layer.groupAdd('feed', member)
  return member
}

/** Sends line `n` to `feed` while the proxy drops it on its way to the other layer's subscription. */
async function sendDropped (proxy: StallingProxy, sender: RedisChannelLayer, n: number): Promise<void> {
  const lost = proxy.dropNextToSubscribers()
  await sender.groupSend('feed', { type: 'line', n })
  await lost
}

/**
 * `historyBehindProxy`, and a member of `feed` in the proxied layer that heard line 1, then missed
 * line 2 (dropped on its way to that layer's subscription).
 */
async function missedLineTwo (t: Test, base: string, size?: number): Promise<{ proxy: StallingProxy, layer: RedisChannelLayer, sender: RedisChannelLayer, member: string }> {
  const { proxy, layer, sender } = await historyBehindProxy(t, base, size)
  const member = await feedMember(layer)
  await sender.groupSend('feed', { type: 'line', n: 1 })
  t.same(await linesUntilQuiet(layer, member), [1])
  await sendDropped(proxy, sender, 2)
  return { proxy, layer, sender, member }
}

/** Cuts `layer`'s subscriptions, runs `meanwhile` once it knows, and resolves once it has reconnected. */
async function cutOffWhile (proxy: StallingProxy, layer: RedisChannelLayer, meanwhile: () => Promise<void>): Promise<void> {
  const down = once(layer, 'disconnect', 5000)
  proxy.cutSubscribers()
  await down
  await meanwhile()
  const back = once(layer, 'reconnect', 10_000)
  proxy.resume()
  await back
}

function once (layer: RedisChannelLayer, event: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${ms} ms`)), ms)
    layer.once(event, () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

t.test('Redis killed and restarted mid-stream', async t => {
  const server = await startRedisServer(t)
  const prefix = uniquePrefix('fc-restart')
  const [a, b] = [new RedisChannelLayer({ url: server.url, prefix, timeout: TIMEOUT }), new RedisChannelLayer({ url: server.url, prefix, timeout: TIMEOUT })]
  t.teardown(async () => { await Promise.all([a.close(), b.close()]) })
  const events: string[] = []
  for (const [name, layer] of [['a', a], ['b', b]] as const) {
    layer.on('disconnect', () => events.push(`${name}:disconnect`))
    layer.on('reconnect', () => events.push(`${name}:reconnect`))
  }
  const [ca, cb] = [await a.newChannel(), await b.newChannel()]
  await a.groupAdd('live', ca)
  await b.groupAdd('live', cb)

  // A stream of group messages; the kill lands in the middle of it.
  let streaming = true
  let sent = 0
  let failed = 0
  const stream = (async () => {
    while (streaming) {
      await a.groupSend('live', { type: 'tick', n: sent }).then(() => { sent++ }, (err: unknown) => {
        if (err instanceof LayerTimeoutError) failed++
        else throw err
      })
      await sleep(10)
    }
  })()
  await sleep(200)
  const down = [once(a, 'disconnect', 5000), once(b, 'disconnect', 5000)]
  const waitingWorker = b.receive('jobs').then(() => 'message', (e: unknown) => e)
  await sleep(50)
  await server.kill()
  await Promise.all(down)
  t.pass('both layers emitted disconnect')

  await Promise.all([
    settlesWith(t, 'groupSend', () => a.groupSend('live', { type: 'during' })),
    settlesWith(t, 'send to a named channel', () => a.send('jobs', { type: 'during' })),
    settlesWith(t, 'send to another process\' channel', () => a.send(cb, { type: 'during' })),
    settlesWith(t, 'groupAdd', async () => a.groupAdd('another', ca)),
    settlesWith(t, 'groupDiscard', () => b.groupDiscard('live', `specific.${a.processToken}!gone`)),
    settlesWith(t, 'flush', () => b.flush())
  ])
  const worker = await waitingWorker
  t.ok(worker instanceof LayerTimeoutError, 'a receive waiting on a named channel is told Redis is gone')
  await t.resolves(a.send(ca, { type: 'local' }), 'a channel of this process needs no Redis')
  let local: LayerMessage
  do local = await receiveWithin(a, ca); while (local.type === 'tick')
  t.same(local, { type: 'local' }, 'after the ticks that arrived before the kill')
  t.equal(a.inspect().memberships, 1, 'the failed groupAdd was rolled back')

  const up = [once(a, 'reconnect', 15_000), once(b, 'reconnect', 15_000)]
  await server.start()
  await Promise.all(up)
  streaming = false
  await stream
  t.ok(sent > 0 && failed > 0, `the stream saw both sides of the outage (${sent} sent, ${failed} refused)`)
  t.same(events.filter(e => e.endsWith('disconnect')).sort(), ['a:disconnect', 'b:disconnect'])
  t.same(events.filter(e => e.endsWith('reconnect')).sort(), ['a:reconnect', 'b:reconnect'])

  // Drain what the stream delivered before the kill; from now on only new messages count.
  for (const [layer, channel] of [[a, ca], [b, cb]] as const) {
    while (await receiveWithin(layer, channel, 200).then(() => true, () => false));
  }
  const admin = new Redis(server.url)
  t.teardown(() => admin.disconnect())
  t.same((await admin.zrange(`${prefix}:gm:{live}`, '0', '-1')).sort(), [ca, cb].sort(), 'memberships re-asserted in the empty Redis')
  await a.groupSend('live', { type: 'after.restart' })
  t.same(await receiveWithin(a, ca), { type: 'after.restart' }, 'reaches the member in the sending process')
  t.same(await receiveWithin(b, cb), { type: 'after.restart' }, 'and in the other one, with no user code')
  await a.send(cb, { type: 'direct.after' })
  t.same(await receiveWithin(b, cb), { type: 'direct.after' }, 'the inbox is subscribed again')
  await a.send('jobs', { type: 'job.after' })
  t.same(await receiveWithin(b, 'jobs'), { type: 'job.after' }, 'named channels work again')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('Redis restarted without its data: presence entries come back, and are announced again', async t => {
  const server = await startRedisServer(t)
  const prefix = uniquePrefix('fc-presence-restart')
  // A short lease: renewals every 200 ms, so the last step sees several.
  const options = { url: server.url, prefix, timeout: TIMEOUT, membershipLease: 0.6, groups: { room: { presenceEvents: true } } }
  const [a, b] = [new RedisChannelLayer(options), new RedisChannelLayer(options)]
  t.teardown(async () => { await Promise.all([a.close(), b.close()]) })
  const [ada, watcher, bob] = [await a.newChannel(), await a.newChannel(), await b.newChannel()]
  await a.groupAdd('room', watcher)
  await a.groupAdd('room', ada, { presence: { name: 'Ada' } })
  await b.groupAdd('room', bob, { presence: { name: 'Bob' } })
  const present = [{ channel: ada, info: { name: 'Ada' } }, { channel: bob, info: { name: 'Bob' } }]
  const byChannel = (entries: Array<{ channel: string }>): Array<{ channel: string }> => [...entries].sort((x, y) => x.channel.localeCompare(y.channel))
  t.same(byChannel(await a.presence('room')), byChannel(present), 'both entries before the restart')
  t.same(await receiveWithin(a, watcher), { type: 'presence.join', channel: ada, info: { name: 'Ada' } })
  t.same(await receiveWithin(a, watcher), { type: 'presence.join', channel: bob, info: { name: 'Bob' } })

  const down = [once(a, 'disconnect', 5000), once(b, 'disconnect', 5000)]
  await server.kill()
  await Promise.all(down)
  const up = [once(a, 'reconnect', 15_000), once(b, 'reconnect', 15_000)]
  await server.start()
  await Promise.all(up)
  // 'reconnect' comes once the process has written its memberships again, presence with them.
  t.same(byChannel(await b.presence('room')), byChannel(present), 'each process wrote its entries again in the empty Redis')
  const heard: LayerMessage[] = []
  for (let m; (m = await receiveWithin(a, watcher, 500).catch(() => undefined)) !== undefined;) heard.push(m)
  // Bob's comes only if this process subscribed again before the other one wrote its entries.
  t.same(heard.filter(m => m.channel === ada), [{ type: 'presence.join', channel: ada, info: { name: 'Ada' } }],
    'the entry written again is announced, once, to the process that wrote it')

  await a.groupDiscard('room', ada)
  t.same(await a.presence('room'), [{ channel: bob, info: { name: 'Bob' } }], 'a member that leaves after the restart takes its entry along')
  await a.groupAdd('room', ada)
  await sleep(TIMEOUT)
  t.same(await b.presence('room'), [{ channel: bob, info: { name: 'Bob' } }], 'a join without presence does not bring the old entry back')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a layer whose Redis never answers: every call settles within the timeout', async t => {
  const port = await freePort()
  const layer = new RedisChannelLayer({ url: `redis://127.0.0.1:${port}`, prefix: uniquePrefix('fc-dead'), timeout: TIMEOUT })
  await Promise.all([
    settlesWith(t, 'newChannel', () => layer.newChannel()),
    settlesWith(t, 'send', () => layer.send('jobs', { type: 'x' })),
    settlesWith(t, 'groupSend', () => layer.groupSend('g', { type: 'x' })),
    settlesWith(t, 'groupAdd', () => layer.groupAdd('g', 'specific.abc!x')),
    settlesWith(t, 'receive from a named channel', () => layer.receive('jobs')),
    settlesWith(t, 'connect', () => layer.connect())
  ])
  const started = performance.now()
  await layer.close()
  t.ok(performance.now() - started < 1000, 'close() does not wait for Redis')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a process cut off from Redis makes new channels of its own at once: they work within the process, and for the others once it is back', async t => {
  const { proxy, behind, direct } = await behindProxy(t, 'fc-new-channel-outage')
  await behind.connect()
  await behind.newChannel() // the process' own routes are confirmed once
  const down = once(behind, 'disconnect', 5000)
  proxy.cut()
  await down
  await sleep(200) // both of its connections have seen theirs close, not only the first
  // Before, this waited for the resubscription and rejected with LayerTimeoutError: a WebSocket
  // handshake during an outage failed with 500 even for a consumer that joins nothing.
  const channel = await behind.newChannel()
  await behind.send(channel, { type: 'local' })
  t.same(await receiveWithin(behind, channel), { type: 'local' }, 'a message from its own process reaches it')
  await t.rejects(behind.groupAdd('outage', channel), LayerTimeoutError, 'a join needs Redis, and says so within the timeout')
  const back = once(behind, 'reconnect', 10_000)
  proxy.resume()
  await back
  await direct.send(channel, { type: 'from-elsewhere' })
  t.same(await receiveWithin(behind, channel), { type: 'from-elsewhere' }, 'once Redis is back, another process reaches it too')
  t.same(unhandled, [], 'no unhandled rejection')
})

// Every call that sends a message: told it timed out, a caller would send it again.
const busySends: Array<[string, (a: RedisChannelLayer, b: RedisChannelLayer) => Promise<{ send: (n: number) => Promise<unknown>, from: RedisChannelLayer, channel: string }>]> = [
  ['groupSend', async a => {
    const channel = await a.newChannel()
    await a.groupAdd('busy', channel)
    return { send: async n => await a.groupSend('busy', { type: 'busy.message', n }), from: a, channel }
  }],
  ['groupSend to a group with history', async a => {
    const channel = await a.newChannel()
    await a.groupAdd('kept-busy', channel)
    return { send: async n => await a.groupSend('kept-busy', { type: 'busy.message', n }), from: a, channel }
  }],
  ['send to a channel of another process', async (a, b) => {
    const channel = await b.newChannel()
    return { send: async n => await a.send(channel, { type: 'busy.message', n }), from: b, channel }
  }],
  ['send to a named channel', async a => {
    return { send: async n => await a.send('busy-jobs', { type: 'busy.message', n }), from: a, channel: 'busy-jobs' }
  }]
]
for (const [call, setUp] of busySends) {
  t.test(`a process busy past the timeout: an answer that has arrived meanwhile wins over the deadline (${call})`, async t => {
    if (!await requireRedis(t)) return
    const prefix = uniquePrefix('fc-busy')
    const open = (): RedisChannelLayer => {
      const layer = new RedisChannelLayer({ url: REDIS_URL, prefix, timeout: 200, groups: { 'kept-*': { history: { size: 10, ttl: 60 } } } })
      t.teardown(() => layer.close())
      return layer
    }
    const { send, from, channel } = await setUp(open(), open())
    // Connected, and the script known to Redis: a send still waiting for either is not done yet.
    await send(0)
    t.same(await receiveWithin(from, channel), { type: 'busy.message', n: 0 }, 'a first message arrives')
    for (const n of [1, 2, 3]) {
      const sent = send(n)
      // The command is written once the call's promise jobs have run (no I/O in between); Redis
      // answers within a millisecond, and the process only looks after the deadline has passed.
      for (let i = 0; i < 50; i++) await null
      const until = performance.now() + 500
      while (performance.now() < until);
      const outcome = await sent.then(() => 'resolved', (err: unknown) => err)
      t.equal(outcome, 'resolved', `${call} ${n} resolves: it was done, so it is not reported as timed out`)
      t.same(await receiveWithin(from, channel), { type: 'busy.message', n }, `and message ${n} arrives`)
    }
    await t.rejects(receiveWithin(from, channel, 300), 'and nothing more: each arrived once')
    t.same(unhandled, [], 'no unhandled rejection')
  })
}

t.test('a named channel\'s pop that Redis ends with an error as a failover does (UNBLOCKED): the waiting receive() is not failed, and gets the next message', async t => {
  if (!await requireRedis(t)) return
  const prefix = uniquePrefix('fc-unblocked')
  const layer = new RedisChannelLayer({ url: REDIS_URL, prefix, timeout: TIMEOUT })
  t.teardown(() => layer.close())
  const first = receiveWithin(layer, 'jobs')
  await layer.send('jobs', { type: 'job', n: 0 })
  t.same(await first, { type: 'job', n: 0 })
  const waiting = layer.receive('jobs').then(message => message, (err: unknown) => err)
  const admin = adminClient(t)
  let popping: string | undefined
  for (let i = 0; i < 50 && popping === undefined; i++) {
    popping = (await admin.client('LIST') as string).split('\n').find(line => line.includes(`name=${prefix}`) && / cmd=blmove /.test(line))?.match(/^id=(\d+)/)?.[1]
    if (popping === undefined) await sleep(20)
  }
  t.ok(popping !== undefined, 'the reader\'s pop waits in Redis')
  // What a master that becomes a replica does to the pops blocked on it.
  await admin.client('UNBLOCK', popping as string, 'ERROR')
  await sleep(100)
  await layer.send('jobs', { type: 'job', n: 1 })
  t.same(await waiting, { type: 'job', n: 1 }, 'the receive() gets the next message')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a named channel\'s pop that Redis answers after its deadline: the message it took is given back, not lost', async t => {
  if (!await requireRedis(t)) return
  const { proxy, behind: slow, direct } = await behindProxy(t, 'fc-late-pop', 300)

  // The slow side's reader is connected and popping.
  const first = receiveWithin(slow, 'late-jobs')
  await direct.send('late-jobs', { type: 'job', n: 0 })
  t.same(await first, { type: 'job', n: 0 }, 'a first message arrives through the proxy')
  const waiting = slow.receive('late-jobs').then(() => 'received', (err: unknown) => err)
  await sleep(100)

  // Redis pops the next message for that reader, and its answer is held past the pop's deadline
  // (its second of waiting plus `timeout`): the reader gives the pop up.
  proxy.stall()
  await direct.send('late-jobs', { type: 'job', n: 1 })
  t.match(await waiting, { code: 'FST_CHANNELS_LAYER_TIMEOUT' }, 'the waiting receive() is told Redis is too slow')
  t.equal(await direct.receive('late-jobs', { signal: AbortSignal.timeout(200) }).catch(() => 'empty'), 'empty',
    'the message is no longer in the list: the late pop took it')

  // Redis' answer arrives: the message goes back to the list, where another receiver gets it.
  proxy.resume()
  t.same(await receiveWithin(direct, 'late-jobs'), { type: 'job', n: 1 }, 'the message is given back, and received once')
  await t.rejects(receiveWithin(direct, 'late-jobs', 300), 'and nothing more')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a named channel\'s pop whose answer is lost with its connection: the message comes back to the channel, once', async t => {
  if (!await requireRedis(t)) return
  const { proxy, prefix, behind: cutOff, direct } = await behindProxy(t, 'fc-lost-pop')
  const admin = adminClient(t)

  for (const n of [1, 2, 3]) {
    const waiting = receiveWithin(cutOff, 'jobs', 5000)
    await sleep(100) // its pop waits in Redis
    // Redis takes the message for that pop; the connection fails with the answer on the way.
    const cut = proxy.cutAnswerWith(`lost-on-the-way-${n}`)
    await direct.send('jobs', { type: `lost-on-the-way-${n}` })
    await cut
    t.same(await waiting, { type: `lost-on-the-way-${n}` }, `round ${n}: the receive waiting gets it once its reader is back`)
  }
  await direct.send('jobs', { type: 'after' })
  t.same(await receiveWithin(cutOff, 'jobs'), { type: 'after' }, 'the channel goes on')
  await t.rejects(receiveWithin(direct, 'jobs', 300), 'and nothing came twice')
  await Promise.all([cutOff.close(), direct.close()])
  t.same((await admin.keys(`${prefix}:*`)).filter(key => key.includes(':qc')), [], 'closed layers leave no claim behind')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('two messages the same to the byte, the second lost on the way: it is given back, not taken for the first', async t => {
  if (!await requireRedis(t)) return
  const { proxy, behind: cutOff, direct } = await behindProxy(t, 'fc-twin-pop')

  // Both receives wait, so the reader's second pop goes out with the removal of what the first handed over.
  const both = [receiveWithin(cutOff, 'ticks', 5000), receiveWithin(cutOff, 'ticks', 5000)]
  await sleep(100)
  const cut = proxy.cutAnswerWith('twin-tick', 1) // the second answer
  // Sent in one write, both are written in the same millisecond, most likely: the same bytes.
  await Promise.all([direct.send('ticks', { type: 'twin-tick' }), direct.send('ticks', { type: 'twin-tick' })])
  await cut
  t.same(await Promise.all(both), [{ type: 'twin-tick' }, { type: 'twin-tick' }], 'both arrive')
  await t.rejects(receiveWithin(direct, 'ticks', 300), 'and neither twice')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a Redis that loses its scripts while a reader reads: what was handed over is removed all the same, never delivered again', async t => {
  if (!await requireRedis(t)) return
  const server = await startRedisServer(t) // its own, since the test flushes the scripts
  const prefix = uniquePrefix('fc-noscript')
  const reader = new RedisChannelLayer({ url: server.url, prefix, timeout: TIMEOUT })
  const other = new RedisChannelLayer({ url: server.url, prefix, timeout: TIMEOUT })
  t.teardown(async () => { await Promise.all([reader.close(), other.close()]) })
  const admin = new Redis(server.url)
  t.teardown(() => admin.disconnect())

  // Three receives wait, so one reader pops three times, each pop with the removal of the last.
  const received = [1, 2, 3].map(() => receiveWithin(reader, 'jobs', 5000))
  await sleep(100)
  await reader.send('jobs', { type: 'job', n: 1 })
  t.same(await received[0], { type: 'job', n: 1 })
  await sleep(100) // the second pop waits, its removal of the first run
  await admin.script('FLUSH') // as a restart (or a failover) would: the third pop's removal finds no script
  await reader.send('jobs', { type: 'job', n: 2 })
  t.same(await received[1], { type: 'job', n: 2 })
  await sleep(100)
  await reader.send('jobs', { type: 'job', n: 3 })
  t.same(await received[2], { type: 'job', n: 3 })
  await reader.close()
  await t.rejects(receiveWithin(other, 'jobs', 1500), 'nothing comes again')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a Redis that lost its scripts before a reader\'s pop: the pop takes the message as usual, nothing to give back', async t => {
  if (!await requireRedis(t)) return
  const server = await startRedisServer(t)
  const warnings: string[] = []
  const log = { warn: (_: unknown, message: string) => { warnings.push(message) }, debug: () => {}, error: () => {} }
  const layer = new RedisChannelLayer({ url: server.url, prefix: uniquePrefix('fc-noscript-renewal'), timeout: TIMEOUT, log })
  t.teardown(() => layer.close())
  const admin = new Redis(server.url)
  t.teardown(() => admin.disconnect())
  await layer.send('jobs', { type: 'job', n: 1 })
  t.same(await receiveWithin(layer, 'jobs'), { type: 'job', n: 1 })
  await sleep(1500) // the reader's claim is gone with its run; the next run opens one
  await admin.script('FLUSH')
  await layer.send('jobs', { type: 'job', n: 2 })
  t.same(await receiveWithin(layer, 'jobs'), { type: 'job', n: 2 })
  t.same(warnings, [], 'nothing given back, nothing logged')
})

t.test('a process cut off from Redis for good with a message its pop took: another process gets it once the claim\'s lease runs out', async t => {
  if (!await requireRedis(t)) return
  const { proxy, behind: gone, direct: other } = await behindProxy(t, 'fc-dead-pop')

  const waiting = gone.receive('jobs').catch((err: unknown) => err)
  await sleep(100) // its pop waits in Redis
  proxy.stall()
  await other.send('jobs', { type: 'job', n: 1 })
  await sleep(100) // Redis has taken it for that pop; the answer is held
  proxy.cut() // and the process is never heard of again, as if killed
  t.match(await waiting, { code: 'FST_CHANNELS_LAYER_TIMEOUT' })
  await other.send('jobs', { type: 'job', n: 2 })
  // The lease is 20 s here; a reader of the channel looks for claims past theirs every 5 s.
  const got = [await receiveWithin(other, 'jobs'), await receiveWithin(other, 'jobs', 40_000)]
  t.same(got, [{ type: 'job', n: 2 }, { type: 'job', n: 1 }], 'the message sent later first, then the one the gone process took')
  await t.rejects(receiveWithin(other, 'jobs', 300), 'each once')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('live copies that come after a join\'s catch-up are not given to it twice, also when a presence announcement comes between them', async t => {
  if (!await requireRedis(t)) return
  const proxy = await stallingProxy(t)
  const prefix = uniquePrefix('fc-floor')
  const groups = { 'room*': { history: { size: 100, ttl: 60 }, presenceEvents: true } }
  const late = new RedisChannelLayer({ url: proxy.url, prefix, groups })
  const sender = new RedisChannelLayer({ url: REDIS_URL, prefix, groups })
  t.teardown(async () => { await Promise.all([late.close(), sender.close()]) })
  // The late process is in the group already (its pub/sub subscribed) through another member.
  const { position } = await late.groupAdd('room', await late.newChannel())
  const epoch = position?.epoch as string

  // Its pub/sub falls behind: the group's messages and an announcement reach it only later.
  proxy.stall('subscribers')
  await sender.groupSend('room', { type: 'line', n: 1 })
  await sender.groupAdd('room', await sender.newChannel(), { presence: { name: 'Ada' } })
  await sender.groupSend('room', { type: 'line', n: 2 })
  // A member joins there meanwhile, recovering from the start: its catch-up reads both lines.
  const joiner = await late.newChannel()
  const join = await late.groupAdd('room', joiner, { since: { offset: 0, epoch } })
  t.match(join, { position: { offset: 2 }, recovered: true })
  proxy.resume()
  await sender.groupSend('room', { type: 'line', n: 3 })

  const lines: unknown[] = []
  for (;;) {
    const message = await receiveWithin(late, joiner, 1000).catch(() => undefined)
    if (message === undefined) break
    if (message.type === 'line') lines.push(message.n)
  }
  t.same(lines, [1, 2, 3], 'each line once, in order')
})

t.test('a plain groupAdd while a join with presence of the same channel is under way: each message once', async t => {
  if (!await requireRedis(t)) return
  const proxy = await stallingProxy(t)
  const prefix = uniquePrefix('fc-mixed-join')
  const slow = new RedisChannelLayer({ url: proxy.url, prefix })
  const sender = new RedisChannelLayer({ url: REDIS_URL, prefix })
  t.teardown(async () => { await Promise.all([slow.close(), sender.close()]) })
  await slow.groupAdd('mixed', await slow.newChannel()) // subscribed to the group already
  const channel = await slow.newChannel()

  // Both joins wait on Redis while the group's messages come in.
  proxy.stall('commands')
  const joins = Promise.all([slow.groupAdd('mixed', channel, { presence: { name: 'Ada' } }), slow.groupAdd('mixed', channel)])
  await sleep(50)
  for (const n of [1, 2, 3]) await sender.groupSend('mixed', { type: 'line', n })
  await sleep(50)
  proxy.resume()
  await joins
  await sender.groupSend('mixed', { type: 'line', n: 4 })

  const lines = await linesUntilQuiet(slow, channel)
  t.same(lines.filter((n, i) => lines.indexOf(n) !== i), [], `no message twice (got ${JSON.stringify(lines)})`)
  t.equal(lines.at(-1), 4, 'and the one sent after the joins')
})

t.test('a process cut off from its subscriptions gets, once back, what its groups with history published meanwhile', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer: cutOff, sender } = await historyBehindProxy(t, 'fc-read-back')
  const member = await feedMember(cutOff)
  const lines: unknown[] = []
  for (const n of [1, 2, 3]) await sender.groupSend('feed', { type: 'line', n })
  for (let i = 0; i < 3; i++) lines.push((await receiveWithin(cutOff, member)).n)

  await cutOffWhile(proxy, cutOff, async () => {
    for (const n of [4, 5, 6, 7, 8]) await sender.groupSend('feed', { type: 'line', n })
  })
  await sender.groupSend('feed', { type: 'line', n: 9 })
  lines.push(...await linesUntilQuiet(cutOff, member))
  t.same(lines, [1, 2, 3, 4, 5, 6, 7, 8, 9], 'the lines published while it was cut off come back, in order, each once')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('the read after an outage that fails is tried again, without waiting for the group\'s next message', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer: cutOff, sender } = await historyBehindProxy(t, 'fc-read-back-again')
  const member = await feedMember(cutOff)
  const lines: unknown[] = []
  for (const n of [1, 2]) await sender.groupSend('feed', { type: 'line', n })
  for (let i = 0; i < 2; i++) lines.push((await receiveWithin(cutOff, member)).n)

  // Its first read of what was missed gets its answer past the timeout.
  proxy.holdAnswerWith('missed-while-cut-off', TIMEOUT + 500)
  await cutOffWhile(proxy, cutOff, async () => {
    for (const n of [3, 4, 5]) await sender.groupSend('feed', { type: 'line', n, text: 'missed-while-cut-off' })
  })
  lines.push((await receiveWithin(cutOff, member, 5000)).n) // the second read comes a second after the first failed
  lines.push(...await linesUntilQuiet(cutOff, member))
  t.same(lines, [1, 2, 3, 4, 5], 'the lines come back though the group sends nothing more')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a join while the first member\'s subscription to the group is still on its way (a slow link to Redis): it does not wait out the timeout', async t => {
  if (!await requireRedis(t)) return
  // A timeout long enough to tell waiting it out from waiting for the subscription.
  const { proxy, prefix, behind, direct } = await behindProxy(t, 'fc-slow-sub', 10_000)
  const [first, second] = [await behind.newChannel(), await behind.newChannel()]
  // The group's SUBSCRIBE reaches Redis 1 s late; commands go on at once.
  proxy.holdRequestWith(`${prefix}:g:{room}`, 1000)
  const joined = behind.groupAdd('room', first)
  await sleep(100)
  const started = Date.now()
  await behind.groupAdd('room', second)
  const took = Date.now() - started
  await joined
  t.ok(took < 5000, `the second join waited for the subscription, not for the 10 s timeout (${took} ms)`)
  await direct.groupSend('room', { type: 'line', n: 1 })
  t.same(await receiveWithin(behind, first), { type: 'line', n: 1 }, 'both members get the group\'s messages')
  t.same(await receiveWithin(behind, second), { type: 'line', n: 1 })
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a group message with history that a process\'s subscription missed is read back before the next one', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer: missing, sender } = await historyBehindProxy(t, 'fc-gap')
  const [member, other] = [await missing.newChannel(), await missing.newChannel()]
  await missing.groupAdd('feed', member)
  await missing.groupAdd('feed', other)
  await sender.groupSend('feed', { type: 'line', n: 1 })
  t.same(await receiveWithin(missing, member), { type: 'line', n: 1 })
  t.same(await receiveWithin(missing, other), { type: 'line', n: 1 })

  await sendDropped(proxy, sender, 2)
  await sender.groupSend('feed', { type: 'line', n: 3 })
  for (const channel of [member, other]) {
    t.same(await linesUntilQuiet(missing, channel), [2, 3], 'the missed line first, then the next, each once')
  }
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a group whose offsets start again lower (a Redis that lost its last writes) still reaches a process that was cut off', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender, member } = await threeLinesHeard(t, 'fc-lower')

  await cutOffWhile(proxy, layer, async () => {
    // What a restart from a snapshot taken after the first line would leave: the same epoch, an
    // offset behind, and the stream without the lines after it.
    await loseWritesAfter(t, sender.prefix, 'feed', 1)
  })
  t.equal((await sender.groupSend('feed', { type: 'line', n: 4 }))?.offset, 2, 'the next line takes an offset already heard')
  await sender.groupSend('feed', { type: 'line', n: 5 })
  t.same(await linesUntilQuiet(layer, member), [4, 5], 'both lines come, each once')
})

t.test('a Redis that lost its last writes, and whose offsets other processes sent past again before a cut-off process was back: it notices, and the group gets a new epoch', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender, member, heard } = await threeLinesHeard(t, 'fc-rewritten')

  // A process that had sent nothing to the group before: it cannot tell the offsets went back.
  const another = anotherProcess(t, sender.prefix)
  await cutOffWhile(proxy, layer, async () => {
    // A restart from a snapshot taken after the first line, then another process sends on: lines
    // 4 and 5 take offsets 2 and 3 again, in the same epoch, and 6 and 7 go past what was heard.
    await loseWritesAfter(t, sender.prefix, 'feed', 1)
    const offsets: unknown[] = []
    for (const n of [4, 5, 6, 7]) offsets.push((await another.groupSend('feed', { type: 'line', n }))?.offset)
    t.same(offsets, [2, 3, 4, 5], 'the lines take offsets already given out, then new ones')
  })
  t.same(await linesUntilQuiet(layer, member), [5, 6, 7], 'the members get the group from the last offset they heard, which they see again: the offset went back')
  const next = await another.groupSend('feed', { type: 'line', n: 8 })
  t.ok(next !== undefined && heard !== undefined && next.epoch !== heard.epoch, 'the group went on in a new epoch')
  t.match(await sender.groupAdd('feed', await sender.newChannel(), { since: heard }), { recovered: false }, 'so a member that heard line 3 at offset 3 is not told it recovered')
  t.same(await linesUntilQuiet(layer, member), [8])
})

t.test('a Redis that lost its last writes of a group no process listens to: the sender notices its offsets go back, and the group gets a new epoch', async t => {
  if (!await requireRedis(t)) return
  const prefix = uniquePrefix('fc-sender-back')
  const warnings: string[] = []
  const log = { warn: (_: object, msg?: string) => { warnings.push(String(msg)) }, debug: () => {}, error: () => {} }
  const sender = new RedisChannelLayer({ url: REDIS_URL, prefix, timeout: TIMEOUT, groups: { feed: { history: { size: 100, ttl: 60 } } }, log })
  t.teardown(() => sender.close())
  let heard: StreamPosition | undefined
  for (const n of [1, 2, 3]) heard = await sender.groupSend('feed', { type: 'line', n })
  await loseWritesAfter(t, prefix, 'feed', 1)
  t.same((await sender.groupSend('feed', { type: 'line', n: 4 }))?.offset, 2, 'a send gets an offset it was given before')
  t.match(warnings, [/got an offset this process was given before/])
  const next = await sender.groupSend('feed', { type: 'line', n: 5 })
  t.ok(next !== undefined && heard !== undefined && next.epoch !== heard.epoch && next.offset === 3, 'the next goes on in a new epoch, offsets kept')
  t.match(await sender.groupAdd('feed', await sender.newChannel(), { since: heard }), { recovered: false }, 'a position from before is recovered no more')
})

t.test('a group whose offsets go back while the process hears it (a Cluster master restarted from an older snapshot, unseen) reaches its members: nothing taken for a copy', async t => {
  if (!await requireRedis(t)) return
  const { layer, sender, member, heard } = await threeLinesHeard(t, 'fc-back-live')
  const before = heard?.epoch
  // No outage this process could see: the group's data is put back to what a snapshot taken after
  // the first line holds.
  await loseWritesAfter(t, sender.prefix, 'feed', 1)
  const offsets: unknown[] = []
  for (const n of [4, 5, 6]) offsets.push((await sender.groupSend('feed', { type: 'line', n }))?.offset)
  t.same(offsets, [2, 3, 4], 'the lines take offsets already heard, then a new one')
  t.same(await linesUntilQuiet(layer, member), [4, 5, 6], 'each line comes, once, in order')
  const now = await sender.groupSend('feed', { type: 'line', n: 7 })
  t.ok(now !== undefined && now.epoch !== before && now.offset === 5, 'the group went on in a new epoch, offsets kept: a position in the old one is recovered no more')
  t.match(await sender.groupAdd('feed', await sender.newChannel(), { since: { epoch: before as string, offset: 3 } }), { recovered: false })
})

t.test('a Redis that lost the last write a process heard, whose offset the next send took again while that process missed it: the next message reveals it, and both come', async t => {
  if (!await requireRedis(t)) return
  // What a Cluster master paused past its failover does: it writes and publishes line 3 when it
  // resumes, then is made a replica and loses it; the new master gave offset 3 to line 4.
  const { proxy, layer, sender, member, heard } = await threeLinesHeard(t, 'fc-overwritten')
  await loseWritesAfter(t, sender.prefix, 'feed', 2)
  // Another process sends on: it was not told line 3's offset (its send timed out, say).
  const another = anotherProcess(t, sender.prefix)
  await sendDropped(proxy, another, 4)
  t.equal((await adminClient(t).hget(`${sender.prefix}:h:{feed}`, 't')), '3', 'line 4 took offset 3 again')
  await another.groupSend('feed', { type: 'line', n: 5 })
  t.same(await linesUntilQuiet(layer, member), [4, 5], 'the member gets line 4, which its process missed, then line 5')
  const next = await another.groupSend('feed', { type: 'line', n: 6 })
  t.ok(next !== undefined && heard !== undefined && next.epoch !== heard.epoch, 'the group went on in a new epoch')
  t.match(await sender.groupAdd('feed', await sender.newChannel(), { since: heard }), { recovered: false }, 'so a member that heard line 3 at offset 3 is not told it recovered')
})

t.test('the same, when the process that sent the lost write sends the next one: it gives the group a new epoch, and the process that missed the next write still gets it', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender, member, heard } = await threeLinesHeard(t, 'fc-overwritten-epoch')
  await loseWritesAfter(t, sender.prefix, 'feed', 2)
  await sendDropped(proxy, sender, 4)
  const next = await sender.groupSend('feed', { type: 'line', n: 5 })
  t.ok(next !== undefined && heard !== undefined && next.epoch !== heard.epoch, 'the sender noticed, and line 5 is in a new epoch')
  t.same(await linesUntilQuiet(layer, member), [4, 5], 'the member gets line 4, which its process missed, then line 5')
})

t.test('the same, when another process that noticed gave the group its new epoch before this one read what it missed: read across the renewal, nothing lost', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender, member, heard } = await threeLinesHeard(t, 'fc-overwritten-renewed')
  const admin = adminClient(t)
  const meta = `${sender.prefix}:h:{feed}`
  await loseWritesAfter(t, sender.prefix, 'feed', 2)
  const another = anotherProcess(t, sender.prefix)
  await sendDropped(proxy, another, 4)
  await sendDropped(proxy, another, 5)
  // What a process that heard line 4 after line 3 at the same offset does: a new epoch, offsets kept.
  await admin.hset(meta, 'e', 'renewed', 'p', heard?.epoch as string)
  await another.groupSend('feed', { type: 'line', n: 6 })
  t.same(await linesUntilQuiet(layer, member), [4, 5, 6], 'the member gets lines 4 and 5, which its process missed, then line 6')
})

t.test('the same, when the process missed more than that write: the read of the gap finds the message at its last offset written again, and hands it on too', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender, member } = await threeLinesHeard(t, 'fc-overwritten-gap')
  await loseWritesAfter(t, sender.prefix, 'feed', 2)
  const another = anotherProcess(t, sender.prefix)
  await sendDropped(proxy, another, 4)
  await sendDropped(proxy, another, 5)
  await another.groupSend('feed', { type: 'line', n: 6 })
  t.same(await linesUntilQuiet(layer, member), [4, 5, 6], 'the member gets lines 4 and 5, which its process missed, then line 6')
})

t.test('a missed group message the history no longer holds is lost to that process only: the next ones come', async t => {
  if (!await requireRedis(t)) return
  const { layer, sender, member } = await missedLineTwo(t, 'fc-trimmed', 1)
  // The history keeps one message: the dropped one is gone from it when the next reveals the gap.
  for (const n of [3, 4, 5]) await sender.groupSend('feed', { type: 'line', n })
  t.same(await linesUntilQuiet(layer, member), [3, 4, 5], 'every line after the lost one, in order')
})

t.test('a process cut off while Redis lost a group\'s history gets what the group published since, in its new epoch', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender } = await historyBehindProxy(t, 'fc-new-epoch')
  const member = await feedMember(layer)
  for (const n of [1, 2]) await sender.groupSend('feed', { type: 'line', n })
  t.same(await linesUntilQuiet(layer, member), [1, 2])

  const epochs = new Set<string | undefined>()
  await cutOffWhile(proxy, layer, async () => {
    await adminClient(t).del(`${sender.prefix}:h:{feed}`, `${sender.prefix}:s:{feed}`)
    for (const n of [3, 4, 5]) epochs.add((await sender.groupSend('feed', { type: 'line', n }))?.epoch)
  })
  t.equal(epochs.size, 1, 'the group has a new epoch')
  await sender.groupSend('feed', { type: 'line', n: 6 })
  t.same(await linesUntilQuiet(layer, member), [3, 4, 5, 6], 'the new epoch\'s lines, in order, each once')
})

t.test('a read back that fails (Redis too slow) is tried again: the missed message still comes, before the next', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender, member } = await missedLineTwo(t, 'fc-read-again')
  // Answers to commands held longer than the layer's timeout: the first read of the gap fails.
  proxy.stall('commands')
  await sender.groupSend('feed', { type: 'line', n: 3 })
  await sleep(TIMEOUT + 500)
  proxy.resume()
  const lines: unknown[] = [(await receiveWithin(layer, member, 10_000)).n, (await receiveWithin(layer, member, 10_000)).n]
  lines.push(...await linesUntilQuiet(layer, member))
  t.same(lines, [2, 3], 'the missed line, then the next, each once')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a read back larger than the members\' capacity is not refused for it, as a join\'s catch-up is not', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender } = await historyBehindProxy(t, 'fc-read-big', 100, 5)
  const member = await feedMember(layer)
  await cutOffWhile(proxy, layer, async () => {
    for (let n = 1; n <= 20; n++) await sender.groupSend('feed', { type: 'line', n })
  })
  t.same(await linesUntilQuiet(layer, member), Array.from({ length: 20 }, (_, i) => i + 1), 'all 20 lines, in order, with room for 5')
  t.equal(layer.stats.groupSendSkipped, 0, 'none skipped')
})

t.test('a gap whose reads fail because Redis went away is read once Redis is back, with what came during the outage', async t => {
  if (!await requireRedis(t)) return
  const { proxy, layer, sender, member } = await missedLineTwo(t, 'fc-read-later')
  // The gap shows with line 3; its reads wait on Redis, which then goes away for longer than
  // the three reads take.
  proxy.stall('commands')
  const down = once(layer, 'disconnect', 5000)
  await sender.groupSend('feed', { type: 'line', n: 3 })
  await sleep(200)
  proxy.cutSubscribers()
  await down
  await sender.groupSend('feed', { type: 'line', n: 4 })
  await sleep(3 * TIMEOUT + 3000 + 1000)
  const back = once(layer, 'reconnect', 10_000)
  proxy.resume()
  await back
  t.same(await linesUntilQuiet(layer, member), [2, 3, 4], 'the gap, the line that showed it, and the one sent during the outage')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('named channels joined to groups while the connection drops: the reverse index never keeps a key without a TTL, and the calls reject with LayerTimeoutError', async t => {
  const server = await startRedisServer(t)
  const prefix = uniquePrefix('fc-named-join-cut')
  const layer = new RedisChannelLayer({ url: server.url, prefix, timeout: 2000 })
  t.teardown(() => layer.close())
  const admin = adminClient(t, server.url)
  await admin.connect()
  await layer.groupAdd('warm', 'named.warm') // connected, scripts loaded
  let settled = 0
  const joins = Array.from({ length: 2000 }, (_, i) => layer.groupAdd(`group.${i % 50}`, `named.${i}`).then(() => { settled++ }, (err: unknown) => { settled++; return err }))
  // Cut once Redis has begun to write them (the first hundred keys): some joins are then half done.
  while (settled === 0 && await admin.dbsize() < 100);
  await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
  const failures = (await Promise.all(joins)).filter(err => err !== undefined)
  // A host that ran them all before the cut could reach Redis cannot judge this; mostly, hundreds fail.
  if (failures.length === 0) t.comment('every join was done before the cut: inconclusive')
  t.same(failures.filter(err => !(err instanceof LayerTimeoutError)).map(err => String(err)), [], `the ${failures.length} that failed say the layer timed out`)
  let persistent = 0
  for (const key of await admin.keys(`${prefix}:*`)) if (await admin.pttl(key) === -1) persistent++
  t.equal(persistent, 0, 'every key the joins wrote expires')
  t.same(unhandled, [], 'no unhandled rejection')
})
