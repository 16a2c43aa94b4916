import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ChannelFullError, LayerClosedError } from '../../lib/errors.js'
import { canDiscardChannel, type ChannelLayer, type GroupPolicy, type LayerMessage } from '../../lib/layers/types.js'
import { conformanceMessages } from './conformance-messages.js'
import { conformanceListen } from './conformance-listen.js'
import { conformanceDurable } from './conformance-durable.js'
import { conformanceTurns } from './conformance-turns.js'

// The channel layer contract (API.md, "Channel layers") as tests any backend must pass.

export interface ConformanceLayerOptions {
  capacity?: number
  expiry?: number
  groupExpiry?: number
  groups?: Record<string, GroupPolicy>
}

/** Must pass `options` through to the layer; with `shared`, every call joins the same backend. */
export type LayerFactory = (options?: ConformanceLayerOptions) => Promise<ChannelLayer> | ChannelLayer

export interface ConformanceOptions {
  /** Two `factory()` calls give two "processes" on one backend: runs the cross-instance cases. */
  shared?: boolean
  /** How long (ms) a message may take to arrive before its absence counts. Default 30. */
  latency?: number
  /** Subtest titles to skip, for a backend still under construction. */
  skip?: readonly string[]
}

export interface Harness {
  /** A layer closed when the test ends. */
  open: (t: Test, options?: ConformanceLayerOptions) => Promise<ChannelLayer>
  /** A name no other test (or earlier run on a shared backend) uses. */
  unique: (base: string) => string
  /** The next message, or a TimeoutError rejection instead of a hung test. */
  next: (layer: ChannelLayer, channel: string, ms?: number) => Promise<LayerMessage>
  /** Asserts that nothing arrives on the channel within the latency. */
  nothing: (t: Test, layer: ChannelLayer, channel: string) => Promise<void>
  /** Asserts that `promise` rejects with an instance of `type` carrying `code`. */
  rejectsWith: (t: Test, promise: Promise<unknown>, type: abstract new (...args: never[]) => Error, code: string) => Promise<void>
}

let counter = 0

// AbortSignal.timeout() does not keep the process alive, so a test waiting on it would just end.
async function within<T> (ms: number, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new DOMException(`nothing within ${ms} ms`, 'TimeoutError')), ms)
  try {
    return await run(controller.signal)
  } finally {
    clearTimeout(timer)
  }
}

function rejection (promise: Promise<unknown>): Promise<unknown> {
  return promise.then(() => new Error('resolved instead of rejecting'), (err: unknown) => err)
}

export function conformance (name: string, factory: LayerFactory, opts: ConformanceOptions = {}): void {
  const latency = opts.latency ?? 30
  const skip = new Set(opts.skip ?? [])
  const run = `${process.pid.toString(36)}${Date.now().toString(36)}`

  const h: Harness = {
    async open (t, options) {
      const layer = await factory(options)
      t.teardown(() => layer.close().catch(() => {}))
      return layer
    },
    unique: base => `${base}-${run}-${(counter++).toString(36)}`,
    next: (layer, channel, ms = 2000) => within(ms, signal => layer.receive(channel, { signal })),
    async nothing (t, layer, channel) {
      const err = await rejection(within(latency, signal => layer.receive(channel, { signal })))
      t.match(err, { name: 'TimeoutError' }, `nothing arrives on ${channel}`)
    },
    async rejectsWith (t, promise, type, code) {
      const err = await rejection(promise)
      t.ok(err instanceof type, `rejects with ${type.name}`, { found: err })
      t.equal((err as { code?: unknown } | undefined)?.code, code)
    }
  }
  const { open, unique, next, nothing, rejectsWith } = h

  t.test(`${name} conformance`, async t => {
    const test = (title: string, fn: (t: Test) => Promise<void>): void => {
      t.test(title, { skip: skip.has(title) }, fn)
    }

    test('advertises the groups and flush extensions', async t => {
      const layer = await open(t)
      t.ok(layer.extensions.includes('groups'))
      t.ok(layer.extensions.includes('flush'))
    })

    test('newChannel returns unique process-specific names', async t => {
      const layer = await open(t)
      const names = new Set<string>()
      for (let i = 0; i < 1000; i++) names.add(await layer.newChannel())
      t.equal(names.size, 1000)
      // One assertion for the lot: a thousand tap assertions would cost more than the layer calls.
      const malformed = [...names].filter(name => !/^specific\.[a-zA-Z\d\-_.]*![\d\w\-_.]+$/.test(name) || name.length >= 100)
      t.same(malformed, [], 'every name is specific.<…>!<…> and shorter than 100')
      t.match(await layer.newChannel('worker.jobs'), /^worker\.jobs\.[^!]*!/)
      t.match(await layer.new_channel('django'), /^django\./)
      // A prefix that would break the naming rules is refused, not silently mangled.
      for (const prefix of ['a!b', 'has space', 'ü', 'p'.repeat(90)]) {
        await rejectsWith(t, layer.newChannel(prefix), TypeError, 'FST_CHANNELS_INVALID_NAME')
      }
    })

    test('send then receive is FIFO and delivers equal data', async t => {
      const layer = await open(t)
      const channel = await layer.newChannel()
      for (let n = 0; n < 5; n++) await layer.send(channel, { type: 'test.n', n, text: `m${n}`, list: [n, null, true] })
      for (let n = 0; n < 5; n++) t.same(await next(layer, channel), { type: 'test.n', n, text: `m${n}`, list: [n, null, true] })
      await nothing(t, layer, channel)
    })

    test('receive waits for a later send', async t => {
      const layer = await open(t)
      const channel = await layer.newChannel()
      let settled = false
      const pending = next(layer, channel).finally(() => { settled = true })
      await sleep(latency)
      t.notOk(settled, 'still waiting')
      await layer.send(channel, { type: 'test.late' })
      t.same(await pending, { type: 'test.late' })
    })

    test('an aborted receive consumes nothing', async t => {
      const layer = await open(t)
      const channel = await layer.newChannel()
      await layer.send(channel, { type: 'test.kept' })
      const before = new AbortController()
      const reason = new Error('gone before')
      before.abort(reason)
      t.equal(await rejection(layer.receive(channel, { signal: before.signal })), reason, 'rejects with the reason')
      t.same(await next(layer, channel), { type: 'test.kept' }, 'abort before: message still queued')

      const during = new AbortController()
      const pending = layer.receive(channel, { signal: during.signal })
      await sleep(latency)
      const why = new Error('gone during')
      during.abort(why)
      t.equal(await rejection(pending), why, 'rejects with the reason')
      await layer.send(channel, { type: 'test.after-abort' })
      t.same(await next(layer, channel), { type: 'test.after-abort' }, 'the next receive gets it')

      const plain = new AbortController()
      const waiting = layer.receive(channel, { signal: plain.signal })
      plain.abort()
      await t.rejects(waiting, { name: 'AbortError' }, 'default reason')
    })

    test('a named channel is a queue: each message reaches one receiver', async t => {
      const layers = opts.shared === true ? [await open(t), await open(t)] : [await open(t)]
      const channel = unique('jobs')
      const total = 20
      const seen: number[] = []
      const stop = new AbortController()
      const worker = async (layer: ChannelLayer): Promise<void> => {
        while (seen.length < total) {
          const message = await layer.receive(channel, { signal: stop.signal }).catch(() => undefined)
          if (message === undefined) return
          seen.push(message.n as number)
          if (seen.length === total) stop.abort()
        }
      }
      const workers = [...layers, ...layers].map(worker)
      await sleep(latency)
      for (let n = 0; n < total; n++) await layers[n % layers.length].send(channel, { type: 'job', n })
      const timer = setTimeout(() => stop.abort(), 3000)
      await Promise.all(workers)
      clearTimeout(timer)
      t.same(seen.slice().sort((a, b) => a - b), Array.from({ length: total }, (_, n) => n), 'every job exactly once')
      await nothing(t, layers[0], channel)
    })

    test('groupSend reaches every member once; groupDiscard is idempotent', async t => {
      const layer = await open(t)
      const group = unique('room')
      const [a, b] = [await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd(group, a)
      await layer.groupAdd(group, a)
      await layer.group_add(group, b)
      await layer.groupSend(group, { type: 'chat.message', text: 'hi' })
      t.same(await next(layer, a), { type: 'chat.message', text: 'hi' })
      t.same(await next(layer, b), { type: 'chat.message', text: 'hi' })
      await nothing(t, layer, a)

      await layer.groupDiscard(group, a)
      await layer.groupDiscard(group, a)
      await layer.group_discard(unique('never'), a)
      await layer.group_send(group, { type: 'chat.message', text: 'second' })
      t.same(await next(layer, b), { type: 'chat.message', text: 'second' })
      await nothing(t, layer, a)

      await layer.groupSend(unique('empty'), { type: 'nobody.listens' })
      await layer.groupDiscard(group, b)
      await layer.groupSend(group, { type: 'nobody.left' })
      await nothing(t, layer, b)
    })

    test('a full channel rejects send and is skipped by groupSend', async t => {
      const layer = await open(t, { capacity: 3 })
      const [full, free] = [await layer.newChannel(), await layer.newChannel()]
      for (let n = 0; n < 3; n++) await layer.send(full, { type: 'fill', n })
      const err = await layer.send(full, { type: 'fill', n: 3 }).catch((e: unknown) => e)
      t.ok(err instanceof ChannelFullError)
      t.equal((err as { code?: string }).code, 'FST_CHANNELS_CHANNEL_FULL')

      const group = unique('crowd')
      await layer.groupAdd(group, full)
      await layer.groupAdd(group, free)
      const stats = (layer as { stats?: { groupSendSkipped: number } }).stats
      const skipped = stats?.groupSendSkipped ?? 0
      await t.resolves(layer.groupSend(group, { type: 'crowd.news' }), 'groupSend does not reject')
      t.same(await next(layer, free), { type: 'crowd.news' }, 'the other member still gets it')
      if (stats !== undefined) t.equal(stats.groupSendSkipped, skipped + 1, 'the skip is counted')
      for (let n = 0; n < 3; n++) t.same(await next(layer, full), { type: 'fill', n })
      await nothing(t, layer, full)
      await layer.send(full, { type: 'room.again' })
      t.same(await next(layer, full), { type: 'room.again' }, 'receiving frees capacity')
    })

    test('calls under way when close() is called finish (or say the layer closed), never time out', async t => {
      const layer = await open(t)
      const channel = await layer.newChannel()
      const group = unique('closing')
      await layer.groupAdd(group, channel)
      const started = performance.now()
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['groupAdd', () => layer.groupAdd(unique('closing'), channel)],
        ['groupSend', () => layer.groupSend(group, { type: 'last' })],
        ['send to a named channel', () => layer.send(unique('closing-queue'), { type: 'last' })],
        ['history', () => layer.history(group)],
        ['presence', () => layer.presence(group)],
        ['groupDiscard', () => layer.groupDiscard(group, channel)],
        ['groupAdd of a named channel', () => layer.groupAdd(group, unique('closing-member'))],
        ['flush', () => layer.flush()]
      ]
      const outcomes = calls.map(async ([name, call]) => await call().then(() => `${name}: done`, (err: { code?: string }) => `${name}: ${err.code ?? String(err)}`))
      await layer.close()
      for (const outcome of await Promise.all(outcomes)) t.match(outcome, /: (done|FST_CHANNELS_LAYER_CLOSED)$/, outcome)
      t.ok(performance.now() - started < 3000, 'and close() did not wait for a timeout')
    })

    test('a leave or a join right after a send takes effect after it: the member that leaves gets it, the one that joins does not', async t => {
      const layer = await open(t)
      const group = unique('fence')
      const [stays, leaves, joins] = [await layer.newChannel(), await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd(group, stays)
      await layer.groupAdd(group, leaves)
      await layer.groupSend(group, { type: 'before.leave' })
      await layer.groupDiscard(group, leaves)
      await layer.groupSend(group, { type: 'before.join' })
      await layer.groupAdd(group, joins)
      await layer.groupSend(group, { type: 'after.join' })
      t.same(await next(layer, leaves), { type: 'before.leave' }, 'sent while it was a member: it gets it')
      await nothing(t, layer, leaves)
      t.same(await next(layer, joins), { type: 'after.join' }, 'sent before it joined: it does not get it, only what came after')
      await nothing(t, layer, joins)
      for (const type of ['before.leave', 'before.join', 'after.join']) t.same(await next(layer, stays), { type })
    })

    test('a join while the group\'s last other member here ends completes at once, and hears the group', async t => {
      const layer = await open(t)
      if (!canDiscardChannel(layer)) return
      const group = unique('fence-last')
      const [ends, joins] = [await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd(group, ends)
      // The join waits for this process' own sends to the group (a marker on its route); the
      // channel that ends meanwhile was the group's last member here.
      const join = layer.groupAdd(group, joins)
      await layer.discardChannel(ends)
      const outcome = await Promise.race([join.then(() => 'joined'), sleep(2500).then(() => 'still waiting')])
      t.equal(outcome, 'joined', 'the join did not wait out the layer\'s timeout (5 s on Redis)')
      await join
      await layer.groupSend(group, { type: 'after' })
      t.same(await next(layer, joins), { type: 'after' }, 'the new member hears the group')
    })

    test('joins and leaves of one membership not awaited take effect in call order', async t => {
      const layer = await open(t)
      const group = unique('in-turn')
      const [rejoins, leaves, ends] = [await layer.newChannel(), await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd(group, rejoins)
      // A leave, then a join: a member at the end.
      const leaving = layer.groupDiscard(group, rejoins)
      await layer.groupAdd(group, rejoins)
      await leaving
      // A join, then a leave: not a member at the end.
      const joining = layer.groupAdd(group, leaves)
      await layer.groupDiscard(group, leaves)
      await joining
      await layer.groupSend(group, { type: 'after' })
      t.same(await next(layer, rejoins), { type: 'after' }, 'left, then joined again: it gets the group\'s messages')
      await nothing(t, layer, leaves)
      // A join with presence, then the channel's end: no member, no presence entry left behind.
      if (!canDiscardChannel(layer)) return
      const entered = layer.groupAdd(group, ends, { presence: { name: 'gone' } })
      await layer.discardChannel(ends)
      await entered
      t.same((await layer.presence(group)).map(entry => entry.channel), [], 'the ended channel is not listed')
    })

    test('the longest expiry and groupExpiry (ten years) work; longer is refused in the constructor', async t => {
      const layer = await open(t, { expiry: 315_360_000, groupExpiry: 315_360_000 })
      const mine = await layer.newChannel()
      await layer.groupAdd('decade', mine)
      await layer.groupAdd('decade', 'decade-queue')
      await layer.groupSend('decade', { type: 'kept' })
      t.same(await next(layer, mine), { type: 'kept' }, 'a member\'s channel gets it')
      t.same(await next(layer, 'decade-queue'), { type: 'kept' }, 'so does a named channel')
      await layer.send('decade-queue', { type: 'direct' })
      t.same(await next(layer, 'decade-queue'), { type: 'direct' })
      for (const option of ['expiry', 'groupExpiry']) {
        const err = await Promise.resolve().then(() => open(t, { [option]: 315_360_001 })).then(() => undefined, (e: unknown) => e)
        t.match(err, { code: 'FST_CHANNELS_INVALID_OPTION', message: new RegExp(`"${option}" must be a positive number of at most 315360000`) }, `${option} over ten years`)
      }
    })

    // Expiry cases assert an upper bound only when the clock shows the process was not stalled
    // (loaded CI machines pause for a second at times): a stall is inconclusive, never a failure.
    test('undelivered messages expire', async t => {
      const layer = await open(t, { expiry: 0.2, capacity: 1 })
      const channel = await layer.newChannel()
      await layer.send(channel, { type: 'stale' })
      await sleep(350)
      const sentAt = performance.now()
      await t.resolves(layer.send(channel, { type: 'fresh' }), 'an expired message frees its capacity')
      const askedAt = performance.now()
      const received = await next(layer, channel, 1000).catch(() => undefined)
      if (received !== undefined || askedAt - sentAt < 150) t.same(received, { type: 'fresh' }, 'the stale one is gone')
      else t.comment('process stalled past the expiry: cannot judge delivery of the fresh message')
      await nothing(t, layer, channel)
    })

    test('a named channel\'s message that expired unreceived is dropped and counted', async t => {
      const layer = await open(t, { expiry: 1 })
      const stats = (layer as { stats?: { expired: number } }).stats
      const expired = stats?.expired ?? 0
      // The stale message of `popped` is found by a receive, that of `pushed` by a send.
      const [popped, pushed] = [unique('jobs'), unique('jobs')]
      const start = performance.now()
      for (const channel of [popped, pushed]) await layer.send(channel, { type: 'stale' })
      await sleep(600)
      for (const channel of [popped, pushed]) await layer.send(channel, { type: 'kept' }) // lives to about 1.6 s
      await sleep(600) // the stale ones are past their 1 s now
      const first = await next(layer, popped, 1000).catch(() => undefined)
      await layer.send(pushed, { type: 'fresh' })
      const then = [await next(layer, pushed, 1000).catch(() => undefined), await next(layer, pushed, 1000).catch(() => undefined)]
      if (performance.now() - start > 1500) {
        t.comment('process stalled past the kept messages\' expiry: cannot judge')
        return
      }
      t.same(first, { type: 'kept' }, 'a receive gets the live message, not the stale one')
      t.same(then, [{ type: 'kept' }, { type: 'fresh' }], 'and after a send, the live messages in order')
      if (stats !== undefined) t.equal(stats.expired, expired + 2, 'each stale one is counted as expired, once')
    })

    test('memberships expire unless renewed', async t => {
      // Wide margins: on a Redis Cluster the message crosses a shard before the member's expiry is checked.
      const layer = await open(t, { groupExpiry: 1.5 })
      const group = unique('brief')
      const [lapsed, renewed] = [await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd(group, lapsed)
      await layer.groupAdd(group, renewed)
      await sleep(900)
      const renewedAt = performance.now()
      await layer.groupAdd(group, renewed)
      await sleep(900)
      await layer.groupSend(group, { type: 'late.news' })
      const sentAt = performance.now()
      const received = await next(layer, renewed, 1000).catch(() => undefined)
      if (sentAt - renewedAt < 1200 || received !== undefined) t.same(received, { type: 'late.news' }, 'renewed')
      else t.comment('process stalled past the renewed expiry: cannot judge renewal')
      await nothing(t, layer, lapsed)
    })

    test('discardChannel drops queued messages and every membership', async t => {
      const layer = await open(t)
      if (!canDiscardChannel(layer)) {
        t.pass('layer has no discardChannel')
        return
      }
      const [gone, kept] = [await layer.newChannel(), await layer.newChannel()]
      const groups = [unique('g1'), unique('g2')]
      for (const group of groups) {
        await layer.groupAdd(group, gone)
        await layer.groupAdd(group, kept)
      }
      await layer.send(gone, { type: 'queued' })
      await layer.discardChannel(gone)
      await layer.discardChannel(gone)
      await nothing(t, layer, gone)
      for (const group of groups) {
        await layer.groupSend(group, { type: 'after.discard', group })
        t.same(await next(layer, kept), { type: 'after.discard', group })
      }
      await nothing(t, layer, gone)
      await layer.groupAdd(groups[0], gone)
      await layer.groupSend(groups[0], { type: 'rejoined' })
      t.same(await next(layer, gone), { type: 'rejoined' }, 'the channel can be used again')
    })

    test('flush empties channels and groups', async t => {
      const layer = await open(t)
      const channel = await layer.newChannel()
      const group = unique('flushed')
      await layer.send(channel, { type: 'old' })
      await layer.groupAdd(group, channel)
      await layer.flush()
      await nothing(t, layer, channel)
      await layer.groupSend(group, { type: 'to.nobody' })
      await nothing(t, layer, channel)
      await layer.send(channel, { type: 'new' })
      t.same(await next(layer, channel), { type: 'new' }, 'still usable')
    })

    test('close rejects waiting receivers and every later call', async t => {
      const layer = await factory()
      const channel = await layer.newChannel()
      const pending = layer.receive(channel)
      await sleep(latency)
      await layer.close()
      await rejectsWith(t, pending, LayerClosedError, 'FST_CHANNELS_LAYER_CLOSED')
      const message = { type: 'late' }
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['newChannel', () => layer.newChannel()],
        ['send', () => layer.send(channel, message)],
        ['receive', () => layer.receive(channel)],
        ['groupAdd', () => layer.groupAdd('g', channel)],
        ['groupDiscard', () => layer.groupDiscard('g', channel)],
        ['groupSend', () => layer.groupSend('g', message)],
        ['flush', () => layer.flush()],
        ['group_send', () => layer.group_send('g', message)]
      ]
      if (canDiscardChannel(layer)) calls.push(['discardChannel', () => layer.discardChannel(channel)])
      for (const [method, call] of calls) {
        t.comment(method)
        await rejectsWith(t, call(), LayerClosedError, 'FST_CHANNELS_LAYER_CLOSED')
      }
    })

    conformanceMessages(test, h)
    conformanceListen(test, h, opts.shared === true, latency)
    conformanceDurable(test, h, opts.shared === true, latency)
    conformanceTurns(test, h, latency)

    if (opts.shared !== true) return

    test('two instances share named channels', async t => {
      const [a, b] = [await open(t), await open(t)]
      const channel = unique('shared')
      await a.send(channel, { type: 'cross', n: 1 })
      t.same(await next(b, channel), { type: 'cross', n: 1 })
      const pending = next(a, channel)
      await sleep(latency)
      await b.send(channel, { type: 'cross', n: 2 })
      t.same(await pending, { type: 'cross', n: 2 })
    })

    test('a process-specific channel is reachable from another instance', async t => {
      const [a, b] = [await open(t), await open(t)]
      const channel = await b.newChannel()
      await a.send(channel, { type: 'direct' })
      t.same(await next(b, channel), { type: 'direct' })
      const pending = next(b, channel)
      await sleep(latency)
      await a.send(channel, { type: 'direct.waiting' })
      t.same(await pending, { type: 'direct.waiting' })
    })

    test('joins and leaves not awaited that one instance asks of another\'s channel take effect in call order', async t => {
      const [a, b] = [await open(t), await open(t)]
      const group = unique('remote-turn')
      const [leaves, rejoins] = [await b.newChannel(), await b.newChannel()]
      await a.groupAdd(group, rejoins)
      // Asked by a, of channels that live in b: a join then a leave, a leave then a join.
      await Promise.all([a.groupAdd(group, leaves, { presence: { name: 'leaves' } }), a.groupDiscard(group, leaves)])
      await Promise.all([a.groupDiscard(group, rejoins), a.groupAdd(group, rejoins)])
      await a.groupSend(group, { type: 'after' })
      t.same(await next(b, rejoins), { type: 'after' }, 'left, then joined again: a member')
      await nothing(t, b, leaves)
      t.same((await a.presence(group)).map(entry => entry.channel), [], 'the channel that joined and left is not listed')
    })

    test('groups span instances as soon as groupAdd resolves', async t => {
      const [a, b] = [await open(t), await open(t)]
      const group = unique('span')
      const [ca, cb] = [await a.newChannel(), await b.newChannel()]
      await a.groupAdd(group, ca)
      await b.groupAdd(group, cb)
      await a.groupSend(group, { type: 'span.one' })
      t.same(await next(a, ca), { type: 'span.one' })
      t.same(await next(b, cb), { type: 'span.one' })
      await a.groupDiscard(group, cb)
      await b.groupSend(group, { type: 'span.two' })
      t.same(await next(a, ca), { type: 'span.two' })
      await nothing(t, b, cb)
    })
  })
}
