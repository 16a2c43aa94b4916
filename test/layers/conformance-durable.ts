import type { Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { InvalidMessageError, InvalidOptionError } from '../../lib/errors.js'
import { canReceiveDelivery, type ChannelLayer, type Delivery, type GroupPolicy, type LayerMessage, type Received, type StreamPosition } from '../../lib/layers/types.js'
import type { ConformanceLayerOptions, Harness } from './conformance.js'
import { receiveWithin } from '../helpers/layers.js'

// Part of the conformance suite: durable groups (API.md, "Group policies") — offsets and epochs,
// recovery with `since`, history reads, presence and its events, on every layer.

type Define = (title: string, fn: (t: Test) => Promise<void>) => void

const HISTORY: GroupPolicy = { history: { size: 50, ttl: 60 } }

function withPolicy (extra: ConformanceLayerOptions = {}): ConformanceLayerOptions {
  return {
    ...extra,
    groups: {
      'hist.*': HISTORY,
      // Room for a whole stream, so that how far a race runs never decides whether it is recovered.
      'whole.*': { history: { size: 1000, ttl: 60 } },
      'tiny.*': { history: { size: 3, ttl: 60 } },
      'brief.*': { history: { size: 50, ttl: 0.3 } },
      'frac.*': { history: { size: 5, ttl: 1.0005 } },
      'decade.*': { history: { size: 5, ttl: 315_360_000 } },
      'pres.*': { presenceEvents: true },
      'both.*': { ...HISTORY, presenceEvents: true }
    }
  }
}

export function conformanceDurable (test: Define, { open, unique, next, nothing, rejectsWith }: Harness, shared: boolean, latency: number): void {
  async function delivery (layer: ChannelLayer, channel: string, ms = 2000): Promise<{ message: LayerMessage, info: Delivery }> {
    if (!canReceiveDelivery(layer)) throw new Error('the layer cannot tell how a message came')
    return await receiveWithin(channel, ms, signal => layer.receiveDelivery(channel, { signal }))
  }

  async function drain (layer: ChannelLayer, channel: string, count: number): Promise<Array<{ message: LayerMessage, info: Delivery }>> {
    const out = []
    for (let i = 0; i < count; i++) out.push(await delivery(layer, channel))
    return out
  }

  /** A channel that joined `group` and left it: it misses what the group sends next, from `since`. */
  async function away (layer: ChannelLayer, group: string): Promise<{ channel: string, since: StreamPosition | undefined }> {
    const channel = await layer.newChannel()
    const { position } = await layer.groupAdd(group, channel)
    await layer.groupDiscard(group, channel)
    return { channel, since: position ?? undefined }
  }

  // A second layer on the same backend when there is one: "another process".
  const other = async (t: Test, layer: ChannelLayer, extra?: ConformanceLayerOptions): Promise<ChannelLayer> =>
    shared ? await open(t, withPolicy(extra)) : layer

  test('a group with history numbers its messages; one without resolves undefined', async t => {
    const layer = await open(t, withPolicy())
    const [group, plain] = [unique('hist.numbers'), unique('plain')]
    const channel = await layer.newChannel()
    const join = await layer.groupAdd(group, channel)
    t.equal(join.recovered, false)
    t.match(join.position, { offset: 0, epoch: String }, 'a new group starts at offset 0 in a fresh epoch')
    const positions = []
    for (let n = 1; n <= 3; n++) positions.push(await layer.groupSend(group, { type: 'n', n }))
    t.same(positions.map(p => p?.offset), [1, 2, 3])
    t.ok(positions.every(p => p?.epoch === join.position?.epoch), 'one epoch')
    const got = await drain(layer, channel, 3)
    t.same(got.map(d => d.message), [{ type: 'n', n: 1 }, { type: 'n', n: 2 }, { type: 'n', n: 3 }])
    t.same(got.map(d => d.info), positions.map(p => ({ group, offset: p?.offset, epoch: p?.epoch })), 'handlers learn group, offset and epoch')

    await layer.groupAdd(plain, channel)
    t.equal(await layer.groupSend(plain, { type: 'plain' }), undefined)
    t.same(await delivery(layer, channel), { message: { type: 'plain' }, info: { group: plain } })
    t.same(await layer.groupAdd(plain, channel), { position: null, recovered: false })
    await layer.send(channel, { type: 'direct' })
    t.same((await delivery(layer, channel)).info, {}, 'a message sent to the channel has no group')
  })

  test('offsets are one sequence across senders', async t => {
    const a = await open(t, withPolicy())
    const b = await other(t, a)
    const group = unique('hist.shared')
    const channel = await a.newChannel()
    await a.groupAdd(group, channel)
    const sends = []
    for (let n = 0; n < 40; n++) sends.push((n % 2 === 0 ? a : b).groupSend(group, { type: 'n', n }))
    const offsets = (await Promise.all(sends)).map(p => p?.offset).sort((x, y) => (x ?? 0) - (y ?? 0))
    t.same(offsets, Array.from({ length: 40 }, (_, i) => i + 1), 'every offset once, none skipped')
    const got = await drain(a, channel, 40)
    t.same(got.map(d => d.info.offset), offsets, 'members get them in offset order')
  })

  test('a returning member gets what it missed, in order, before anything newer', async t => {
    const a = await open(t, withPolicy())
    const b = await other(t, a)
    const group = unique('hist.recover')
    const first = await a.newChannel()
    const { position } = await a.groupAdd(group, first)
    await a.groupSend(group, { type: 'seen', n: 1 })
    const seen = await delivery(a, first)
    await a.groupDiscard(group, first)
    for (let n = 2; n <= 6; n++) await a.groupSend(group, { type: 'missed', n })
    // Back, on another process, with the position of the last message it saw.
    const back = await b.newChannel()
    const join = await b.groupAdd(group, back, { since: { offset: seen.info.offset as number, epoch: seen.info.epoch as string } })
    t.same(join, { position: { offset: 6, epoch: position?.epoch }, recovered: true })
    await b.groupSend(group, { type: 'newer', n: 7 })
    const got = await drain(b, back, 6)
    t.same(got.map(d => d.message.n), [2, 3, 4, 5, 6, 7])
    t.same(got.map(d => d.info.offset), [2, 3, 4, 5, 6, 7])
    await nothing(t, b, back)
  })

  test('two joins of one channel at once: what it missed comes once', async t => {
    const layer = await open(t, withPolicy())
    const group = unique('hist.twice')
    const { channel, since } = await away(layer, group)
    for (let n = 1; n <= 3; n++) await layer.groupSend(group, { type: 'missed', n })
    const joins = await Promise.all([layer.groupAdd(group, channel, { since }), layer.groupAdd(group, channel, { since })])
    t.same(joins.map(j => j.recovered), [true, true])
    await layer.groupSend(group, { type: 'newer', n: 4 })
    const got = await drain(layer, channel, 4)
    t.same(got.map(d => d.info.offset), [1, 2, 3, 4], 'each message once, in order')
    await nothing(t, layer, channel)
  })

  test('recovery is impossible: another epoch, or history that no longer reaches back', async t => {
    const layer = await open(t, withPolicy())
    const group = unique('tiny.gone')
    const channel = await layer.newChannel()
    const { position } = await layer.groupAdd(group, channel)
    const epoch = position?.epoch as string
    await layer.groupDiscard(group, channel)
    for (let n = 1; n <= 5; n++) await layer.groupSend(group, { type: 'n', n })
    const late = await layer.groupAdd(group, channel, { since: { offset: 0, epoch } })
    t.same(late, { position: { offset: 5, epoch }, recovered: false }, 'size 3 no longer holds offset 1')
    await nothing(t, layer, channel)
    await layer.groupDiscard(group, channel)
    t.same((await layer.groupAdd(group, channel, { since: { offset: 2, epoch: 'another-epoch' } })).recovered, false)
    t.same((await layer.groupAdd(group, channel, { since: { offset: 99, epoch } })).recovered, false, 'a position from the future')
    await nothing(t, layer, channel)
    const upToDate = await layer.groupAdd(group, channel, { since: { offset: 5, epoch } })
    t.same(upToDate, { position: { offset: 5, epoch }, recovered: true }, 'nothing missed is a complete recovery')
    t.same(await layer.groupAdd(group, channel, { since: { offset: 0, epoch } }), { position: { offset: 5, epoch }, recovered: false },
      'joined again while a member, from before what the history holds: not recovered either')
    t.same(await layer.groupAdd(group, channel, { since: { offset: 3, epoch } }), { position: { offset: 5, epoch }, recovered: true },
      'joined again while a member, from within the history: recovered')
    await nothing(t, layer, channel)
  })

  test('replayed messages are not refused for capacity', async t => {
    const layer = await open(t, withPolicy({ capacity: 3 }))
    const group = unique('hist.capacity')
    const channel = await layer.newChannel()
    const { position } = await layer.groupAdd(group, channel)
    await layer.groupDiscard(group, channel)
    for (let n = 1; n <= 10; n++) await layer.groupSend(group, { type: 'n', n })
    const join = await layer.groupAdd(group, channel, { since: position ?? undefined })
    t.equal(join.recovered, true)
    t.same((await drain(layer, channel, 10)).map(d => d.message.n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
  })

  test('replayed messages leave the channel\'s capacity to live ones', async t => {
    const layer = await open(t, withPolicy({ capacity: 3 }))
    const group = unique('hist.room')
    const channel = await layer.newChannel()
    const { position } = await layer.groupAdd(group, channel)
    await layer.groupDiscard(group, channel)
    for (let n = 1; n <= 10; n++) await layer.groupSend(group, { type: 'n', n })
    t.equal((await layer.groupAdd(group, channel, { since: position ?? undefined })).recovered, true)
    // Nothing read yet: ten replays wait, and three live messages still find room, the fourth not.
    for (let n = 11; n <= 14; n++) await layer.groupSend(group, { type: 'n', n })
    await sleep(latency)
    t.same((await drain(layer, channel, 13)).map(d => d.message.n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
    await nothing(t, layer, channel)
  })

  test('300 sends racing a recovering join: each message once, in order, none missing', async t => {
    const a = await open(t, withPolicy({ capacity: 1000 }))
    const b = await other(t, a, { capacity: 1000 })
    const group = unique('whole.race')
    const watcher = await a.newChannel()
    const { position } = await a.groupAdd(group, watcher)
    const epoch = position?.epoch as string
    for (let n = 1; n <= 20; n++) await a.groupSend(group, { type: 'n', n })
    const total = 300
    let sent = 20
    const sender = (async () => {
      while (sent < total) {
        sent++
        await a.groupSend(group, { type: 'n', n: sent })
        if (sent % 25 === 0) await sleep(1)
      }
    })()
    await sleep(2)
    const member = await b.newChannel()
    const join = await b.groupAdd(group, member, { since: { offset: 10, epoch } })
    await sender
    t.equal(join.recovered, true)
    const got = await drain(b, member, total - 10)
    t.same(got.map(d => d.info.offset), Array.from({ length: total - 10 }, (_, i) => i + 11), 'offsets 11..300 exactly once, in order')
    t.ok(got.every(d => d.message.n === d.info.offset))
    await nothing(t, b, member)
  })

  test('history(): the latest messages, or those after a position, oldest first', async t => {
    const layer = await open(t, withPolicy())
    const group = unique('hist.read')
    for (let n = 1; n <= 8; n++) await layer.groupSend(group, { type: 'line', n })
    const latest = await layer.history(group, { limit: 3 })
    t.same(latest.messages.map(m => [m.offset, m.message.n]), [[6, 6], [7, 7], [8, 8]])
    const epoch = latest.position?.epoch as string
    t.same(latest.position, { offset: 8, epoch })
    t.same((await layer.history(group, { since: { offset: 4, epoch }, limit: 2 })).messages.map(m => m.offset), [5, 6])
    t.same((await layer.history(group, { since: { offset: 8, epoch } })).messages, [])
    t.same((await layer.history(group, { since: { offset: 1e15, epoch } })).messages, [], 'a position far ahead: nothing after it')
    t.same((await layer.history(group)).messages.length, 8)
    t.same((await layer.history(group, { since: { offset: 4, epoch: 'old' } })).messages.map(m => m.offset), [1, 2, 3, 4, 5, 6, 7, 8],
      'a position from another epoch reads from the start')
    t.same(await layer.history(unique('plain')), { messages: [], position: null }, 'no history without a policy')
    const copy = (await layer.history(group, { limit: 1 })).messages[0].message
    copy.n = 'changed'
    t.same((await layer.history(group, { limit: 1 })).messages[0].message.n, 8, 'readers get copies')
    await rejectsWith(t, layer.history(group, { limit: 0 }), InvalidOptionError, 'FST_CHANNELS_INVALID_OPTION')
    await rejectsWith(t, layer.history(group, { since: { offset: -1, epoch } }), InvalidOptionError, 'FST_CHANNELS_INVALID_OPTION')
    // Misspelt, it would be ignored: the whole history read instead of 5.
    await t.rejects(layer.history(group, { limt: 5 } as never), { code: 'FST_CHANNELS_INVALID_OPTION', message: 'history(): unknown option "limt"; the options are since, limit' })
  })

  test('history expires after its ttl', async t => {
    const layer = await open(t, withPolicy())
    const group = unique('brief.ttl')
    const { channel, since } = await away(layer, group)
    await layer.groupSend(group, { type: 'old' })
    await sleep(450)
    t.same((await layer.history(group)).messages, [], 'an expired message is not read')
    const join = await layer.groupAdd(group, channel, { since })
    t.equal(join.recovered, false, 'nor recovered')
    await nothing(t, layer, channel)
  })

  test('an idle group\'s position lasts as long as its ttl when that is longer than groupExpiry', async t => {
    const layer = await open(t, withPolicy({ groupExpiry: 0.4 }))
    const group = unique('hist.outlives')
    const { channel, since } = await away(layer, group)
    await layer.groupSend(group, { type: 'n', n: 1 })
    await sleep(900)
    const join = await layer.groupAdd(group, channel, { since })
    t.same(join, { position: { offset: 1, epoch: since?.epoch }, recovered: true }, 'the same epoch, recovered')
    t.same((await delivery(layer, channel)).message, { type: 'n', n: 1 }, 'what was missed is replayed')
  })

  test('reading a group\'s history keeps its position, as a send or a join does', async t => {
    const layer = await open(t, withPolicy({ groupExpiry: 0.4 }))
    const [read, unread] = [unique('brief.read'), unique('brief.unread')]
    const first = await layer.groupSend(read, { type: 'n', n: 1 })
    const idle = await layer.groupSend(unread, { type: 'n', n: 1 })
    // Three times the 400 ms the position outlives its last use, read every 150 ms.
    for (let i = 0; i < 8; i++) {
      await sleep(150)
      t.same((await layer.history(read)).position, first, `read ${i + 1}: the same position`)
    }
    t.same(await layer.groupSend(read, { type: 'n', n: 2 }), { offset: 2, epoch: first?.epoch }, 'the next send follows on')
    const after = (await layer.history(unread)).position
    t.not(after?.epoch, idle?.epoch, 'a group left idle for longer reads in a new epoch')
    t.equal(after?.offset, 0)
  })

  test('a ttl that is not a whole number of milliseconds works', async t => {
    const layer = await open(t, withPolicy())
    const group = unique('frac.ttl')
    const channel = await layer.newChannel()
    await layer.groupAdd(group, channel)
    t.match(await layer.groupSend(group, { type: 'n', n: 1 }), { offset: 1 })
    t.same((await delivery(layer, channel)).message, { type: 'n', n: 1 })
    t.same((await layer.history(group)).messages.map(m => m.message), [{ type: 'n', n: 1 }])
  })

  test('flush loses the history: a new epoch', async t => {
    const layer = await open(t, withPolicy())
    const group = unique('hist.flush')
    const before = await layer.groupSend(group, { type: 'x' })
    await layer.flush()
    const after = await layer.groupSend(group, { type: 'y' })
    t.equal(after?.offset, 1)
    t.not(after?.epoch, before?.epoch)
  })

  test('since and presence are checked', async t => {
    const layer = await open(t, withPolicy())
    const channel = await layer.newChannel()
    const group = unique('hist.bad')
    for (const since of [{ offset: 1 }, { offset: 1.5, epoch: 'e' }, { offset: -1, epoch: 'e' }, { offset: 1, epoch: '' }, 'x']) {
      await rejectsWith(t, layer.groupAdd(group, channel, { since } as never), InvalidOptionError, 'FST_CHANNELS_INVALID_OPTION')
    }
    // Misspelt, it would be ignored: a member nobody lists.
    await t.rejects(layer.groupAdd(group, channel, { presense: { name: 'ada' } } as never), { code: 'FST_CHANNELS_INVALID_OPTION', message: 'groupAdd(): unknown option "presense"; the options are since, presence' })
    t.same(await layer.presence(group), [], 'the refused join recorded nothing')
    for (const presence of [{ when: new Date() }, { f: undefined }, [], 'x', { big: 'x'.repeat(1100) }]) {
      await rejectsWith(t, layer.groupAdd(group, channel, { presence } as never), InvalidMessageError, 'FST_CHANNELS_INVALID_MESSAGE')
    }
    t.same(await layer.presence(group), [], 'nothing was recorded')
  })

  test('presence across processes, gone with its membership', async t => {
    const a = await open(t, withPolicy())
    const b = await other(t, a)
    const group = unique('room')
    const [ca, cb] = [await a.newChannel(), await b.newChannel()]
    await a.groupAdd(group, ca, { presence: { name: 'Ada' } })
    await b.groupAdd(group, cb, { presence: { name: 'Bob', tags: ['x'] } })
    const sorted = async (layer: ChannelLayer): Promise<unknown> => (await layer.presence(group)).sort((x, y) => String(x.info.name).localeCompare(String(y.info.name)))
    t.same(await sorted(a), [{ channel: ca, info: { name: 'Ada' } }, { channel: cb, info: { name: 'Bob', tags: ['x'] } }])
    t.same(await sorted(b), await sorted(a), 'every process sees the same')
    await b.groupDiscard(group, cb)
    t.same(await a.presence(group), [{ channel: ca, info: { name: 'Ada' } }], 'groupDiscard takes the entry')
    await a.groupAdd(group, ca)
    t.same(await a.presence(group), [{ channel: ca, info: { name: 'Ada' } }], 'a plain renewal keeps it')
    await (a as ChannelLayer & { discardChannel: (c: string) => Promise<void> }).discardChannel(ca)
    t.same(await b.presence(group), [], 'the channel\'s end takes it')
  })

  /** The announcement of Bob's presence entry in `group`, as a watcher receives it. */
  const bob = (type: 'presence.join' | 'presence.leave', group: string, channel: string): Received =>
    ({ message: { type, channel, info: { name: 'Bob' } }, info: { group } })

  /** A watcher in `group` on one process sees Bob join it with his presence on another (one layer when not shared). */
  async function bobJoinsWatched (t: Test, base: string): Promise<{ a: ChannelLayer, b: ChannelLayer, group: string, watcher: string, member: string }> {
    const a = await open(t, withPolicy())
    const b = await other(t, a)
    const group = unique(base)
    const watcher = await a.newChannel()
    await a.groupAdd(group, watcher)
    const member = await b.newChannel()
    await b.groupAdd(group, member, { presence: { name: 'Bob' } })
    t.same(await delivery(a, watcher), bob('presence.join', group, member))
    return { a, b, group, watcher, member }
  }

  // Another process: on a layer of one process, closing it ends every member there at once.
  if (shared) {
    test('a process that closes its layer: its members\' presence entries go, announced as leaves', async t => {
      const { a, b, group, watcher, member } = await bobJoinsWatched(t, 'both.closing')
      await b.close()
      t.same(await a.presence(group), [], 'the entry is gone')
      t.same(await delivery(a, watcher), bob('presence.leave', group, member), 'and announced gone')
    })
  }

  test('presence events announce joins and leaves, without offsets, kept out of history', async t => {
    const { a, b, group, watcher, member } = await bobJoinsWatched(t, 'both.events')
    await b.groupAdd(group, member, { presence: { name: 'Bob' } })
    await nothing(t, a, watcher)
    // The same info with its keys in another order is the same info: nothing announced either.
    await b.groupAdd(group, member, { presence: { role: 'ops', name: 'Bob' } })
    t.same(await delivery(a, watcher), { message: { type: 'presence.join', channel: member, info: { role: 'ops', name: 'Bob' } }, info: { group } }, 'changed info is announced')
    await b.groupAdd(group, member, { presence: { name: 'Bob', role: 'ops' } })
    await nothing(t, a, watcher)
    await b.groupAdd(group, member, { presence: { name: 'Bob' } })
    t.same(await delivery(a, watcher), bob('presence.join', group, member))
    await b.groupDiscard(group, member)
    t.same(await delivery(a, watcher), bob('presence.leave', group, member))
    t.same((await a.history(group)).messages, [], 'announcements are not history')
    const plain = unique('room')
    await a.groupAdd(plain, watcher)
    await b.groupAdd(plain, member, { presence: { name: 'Quiet' } })
    await b.groupDiscard(plain, member)
    await sleep(latency)
    await nothing(t, a, watcher)
  })

  test('a named channel joins a group with history and presence without recovery or presence, on every layer alike', async t => {
    const layer = await open(t, withPolicy())
    const group = unique('hist.named')
    const watched = unique('pres.named')
    const queue = unique('named-queue')
    const watcher = await layer.newChannel()
    await layer.groupAdd(watched, watcher)
    t.match(await layer.groupSend(group, { type: 'before' }), { offset: 1 })
    const since = { offset: 0, epoch: (await layer.history(group)).position?.epoch as string }
    t.same(await layer.groupAdd(group, queue, { since }), { position: null, recovered: false }, 'no recovery: nothing from before the join')
    await t.rejects(layer.groupAdd(watched, queue, { presence: { name: 'Queue' } }), { code: 'FST_CHANNELS_INVALID_OPTION', message: /named channel, which has no presence/ })
    await layer.groupAdd(watched, queue)
    t.same(await layer.presence(watched), [], 'not listed in presence')
    await nothing(t, layer, watcher)
    await layer.groupSend(group, { type: 'after' })
    t.same(await next(layer, queue), { type: 'after' }, 'what comes after the join, and only that')
    await nothing(t, layer, queue)
  })

  test('a history kept for the longest ttl (ten years) works', async t => {
    const layer = await open(t, withPolicy())
    const group = unique('decade.kept')
    const member = await layer.newChannel()
    await layer.groupAdd(group, member)
    t.match(await layer.groupSend(group, { type: 'kept' }), { offset: 1 })
    t.match((await layer.history(group)).messages, [{ message: { type: 'kept' }, offset: 1 }])
  })

  test('a bad policy fails the constructor', async t => {
    const bad: unknown[] = [
      [], 'x', { 'a b': {} }, { 'x*': { history: { size: 0, ttl: 1 } } }, { g: { history: { size: 100_001, ttl: 1 } } }, { g: { history: { size: 10, ttl: 315_360_001 } } },
      { g: { history: { size: 1.5, ttl: 1 } } }, { g: { history: { size: 10, ttl: 0 } } }, { g: { history: { size: 10 } } },
      { g: { presenceEvents: 'yes' } }, { g: { retention: 1 } }, { g: null }
    ]
    for (const groups of bad) {
      const err = await Promise.resolve().then(() => open(t, { groups } as never)).then(() => undefined, (e: unknown) => e)
      t.ok(err instanceof InvalidOptionError, `refused: ${JSON.stringify(groups)}`, { found: err })
    }
  })

  test('the longest matching key applies', async t => {
    const layer = await open(t, { groups: { 'a.*': { history: { size: 5, ttl: 60 } }, 'a.b.*': { presenceEvents: true }, 'a.b.c': HISTORY } })
    t.ok(await layer.groupSend(unique('a.x'), { type: 'x' }) !== undefined, 'a.* keeps history')
    t.equal(await layer.groupSend(unique('a.b.x'), { type: 'x' }), undefined, 'a.b.* does not')
    t.ok(await layer.groupSend('a.b.c', { type: 'x' }) !== undefined, 'the exact key wins')
    t.equal(await layer.groupSend(unique('z'), { type: 'x' }), undefined)
  })
}
