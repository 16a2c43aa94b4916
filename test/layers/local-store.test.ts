import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { LocalStore } from '../../lib/layers/local-store.js'
import { SKIPPED } from '../../lib/layers/local-channels.js'
import type { ChannelSink, Delivery, LayerMessage } from '../../lib/layers/types.js'

// The process-local store on its own: where a message goes (listener, receiver, queue), capacity,
// copies per group member, expiry, and what close() tells whom.

function store (overrides: Partial<ConstructorParameters<typeof LocalStore>[0]> = {}): { store: LocalStore, skipped: string[] } {
  const skipped: string[] = []
  return {
    store: new LocalStore({ capacity: 2, expiryMs: 60_000, groupExpiryMs: 60_000, skipped: (group, channel) => skipped.push(`${group}/${channel}`), counts: { deliveries: 0, expired: 0, discarded: 0 }, ...overrides }),
    skipped
  }
}

class Sink implements ChannelSink {
  accepting = true
  readonly got: LayerMessage[] = []
  readonly infos: Delivery[] = []
  closedWith: Error | undefined
  push (message: LayerMessage, info: Delivery = {}): void {
    this.got.push(message)
    this.infos.push(info)
  }
  layerClosed (reason: Error): void { this.closedWith = reason }
}

t.test('a message goes to the listener, else the longest-waiting receiver, else the queue', async t => {
  const { store: s } = store()
  const first = s.receive('a!1', undefined)
  const second = s.receive('a!1', undefined)
  t.ok(s.hasReceivers('a!1'))
  t.ok(s.deliver('a!1', { type: 'one' }))
  t.ok(s.deliver('a!1', { type: 'two' }))
  t.same(await first, { message: { type: 'one' }, info: {} }, 'FIFO among receivers')
  t.same(await second, { message: { type: 'two' }, info: {} })
  t.notOk(s.hasReceivers('a!1'))

  t.ok(s.deliver('a!1', { type: 'queued' }))
  const sink = new Sink()
  const listener = s.listen('a!1', sink)
  t.ok(listener !== undefined)
  t.same(sink.got, [{ type: 'queued' }], 'what waited is handed over when listening starts')
  t.ok(s.deliver('a!1', { type: 'pushed' }))
  t.same(sink.got.map(m => m.type), ['queued', 'pushed'])
  t.equal(s.listen('a!1', new Sink()), undefined, 'one listener per channel')
})

t.test('a full channel refuses; a listener that does not accept leaves messages queued, in order', async t => {
  const { store: s } = store({ capacity: 3 })
  const sink = new Sink()
  const listener = s.listen('b!1', sink)
  sink.accepting = false
  t.ok(s.deliver('b!1', { type: 'one' }))
  t.ok(s.deliver('b!1', { type: 'two' }))
  sink.accepting = true
  t.ok(s.deliver('b!1', { type: 'three' }), 'queued behind the others, not pushed ahead of them')
  t.same(sink.got, [], 'nothing overtakes what waits')
  t.notOk(s.deliver('b!1', { type: 'four' }), 'capacity 3: the fourth is refused')
  listener?.resume()
  t.same(sink.got.map(m => m.type), ['one', 'two', 'three'])
})

t.test('fan-out gives each member its own copy and skips the full ones', async t => {
  const { store: s, skipped } = store({ capacity: 1 })
  for (const channel of ['g!1', 'g!2', 'g!3']) s.addMember('room', channel)
  s.deliver('g!2', { type: 'filler' })
  const message = { type: 'hello', nested: { n: 1 } }
  s.fanOut('room', message, { group: 'room' })
  t.same(skipped, ['room/g!2'], 'the full member is reported')
  const [one, three] = [(await s.receive('g!1', undefined)).message, (await s.receive('g!3', undefined)).message]
  t.same(one, message)
  t.same(three, message)
  t.not(one, three, 'two members never share an object')
  t.not(one.nested, three.nested)
  t.same(s.members('room') === undefined ? [] : [...s.members('room')!.keys()], ['g!1', 'g!2', 'g!3'])
  t.same(s.groupsOf('g!1'), ['room'])
})

t.test('group messages follow the listener whenever it starts or stops, joined before or after', async t => {
  const { store: s } = store({ capacity: 10 })
  s.addMember('g', 'early!1') // joins, then listens (a consumer's `groups`, or groupAdd in connect())
  const early = new Sink()
  const earlyListener = s.listen('early!1', early)
  const late = new Sink()
  s.listen('late!1', late)
  s.addMember('g', 'late!1') // listens, then joins (groupAdd in a handler)
  s.addMember('h', 'late!1')
  s.fanOut('g', { type: 'one' }, {})
  s.fanOut('h', { type: 'only late' }, {})
  t.same(early.got.map(m => m.type), ['one'])
  t.same(late.got.map(m => m.type), ['one', 'only late'], 'in every group it joined')

  earlyListener?.close()
  s.fanOut('g', { type: 'two' }, {})
  t.same(early.got.map(m => m.type), ['one'], 'a closed listener gets nothing more…')
  const waiting = await s.receive('early!1', undefined)
  t.same(waiting.message, { type: 'two' }, '…the message waits in the channel, still a member')
  const again = new Sink()
  s.listen('early!1', again)
  s.fanOut('g', { type: 'three' }, {})
  t.same(again.got.map(m => m.type), ['three'], 'a new listener gets what follows')
  t.same(late.got.map(m => m.type), ['one', 'only late', 'two', 'three'])
})

t.test('a channel\'s groups: one, several, back to one; discarding it leaves every group', async t => {
  const { store: s } = store({})
  t.same(s.groupsOf('c!1'), [], 'none yet')
  s.addMember('a', 'c!1')
  s.addMember('a', 'c!1')
  t.same(s.groupsOf('c!1'), ['a'], 'renewing a membership does not repeat the group')
  s.addMember('b', 'c!1')
  s.addMember('c', 'c!1')
  t.same(s.groupsOf('c!1').sort(), ['a', 'b', 'c'])
  s.removeMember('a', 'c!1')
  s.removeMember('c', 'c!1')
  t.same(s.groupsOf('c!1'), ['b'], 'back to the one group left')
  s.removeMember('a', 'c!1')
  t.same(s.groupsOf('c!1'), ['b'], 'leaving a group it is not in changes nothing')
  s.addMember('d', 'c!1')
  s.addMember('b', 'c!2')
  s.discardChannel('c!1')
  t.same(s.groupsOf('c!1'), [])
  t.equal(s.isMember('b', 'c!1'), false)
  t.equal(s.isMember('d', 'c!1'), false)
  t.equal(s.members('d'), undefined, 'a group left empty is gone')
  t.same([...s.members('b')!.keys()], ['c!2'], 'the other channel stays')
  s.removeMember('b', 'c!2')
  t.same(s.inspect(), { channels: 0, groups: 0, memberships: 0 })
})

t.test('expired messages and memberships are dropped; sweep frees what is left empty', async t => {
  const { store: s } = store({ expiryMs: 20, groupExpiryMs: 20 })
  s.deliver('e!1', { type: 'old' })
  s.addMember('room', 'e!2')
  t.same(s.inspect(), { channels: 1, groups: 1, memberships: 1 })
  await sleep(40)
  s.fanOut('room', { type: 'late' }, { group: 'room' })
  t.equal(s.members('room'), undefined, 'an expired member is dropped on the way')
  s.sweep()
  t.same(s.inspect(), { channels: 0, groups: 0, memberships: 0 })
  const controller = new AbortController()
  const pending = s.receive('e!1', controller.signal)
  controller.abort(new Error('gave up'))
  await t.rejects(pending, { message: 'gave up' }, 'the expired message is not handed out')
})

t.test('discardChannel drops its queue and memberships; flush keeps receivers; close tells everyone', async t => {
  const { store: s } = store()
  s.addMember('x', 'd!1')
  s.addMember('y', 'd!1')
  s.addMember('y', 'd!2')
  s.deliver('d!1', { type: 'queued' })
  s.discardChannel('d!1')
  t.same(s.inspect(), { channels: 0, groups: 1, memberships: 1 })
  const waiting = s.receive('d!3', undefined)
  s.flush()
  t.same(s.inspect(), { channels: 1, groups: 0, memberships: 0 }, 'the waiting receiver stays')
  const sink = new Sink()
  s.listen('d!4', sink)
  s.close()
  await t.rejects(waiting, { code: 'FST_CHANNELS_LAYER_CLOSED' })
  t.match(sink.closedWith, { code: 'FST_CHANNELS_LAYER_CLOSED' })
  t.same(s.inspect(), { channels: 0, groups: 0, memberships: 0 })
})

t.test('a listened channel that skips messages of a group with history gets one SKIPPED marker per run, in order', async t => {
  const { store: s, skipped } = store({ capacity: 1 })
  const sink = new Sink()
  const listener = s.listen('k!1', sink)
  sink.accepting = false
  s.addMember('room', 'k!1')
  for (let offset = 1; offset <= 4; offset++) s.fanOut('room', { type: 'n', offset }, { group: 'room', offset, epoch: 'e' })
  s.fanOut('plain', { type: 'plain' }, { group: 'plain' })
  t.same(skipped, ['room/k!1', 'room/k!1', 'room/k!1'], 'capacity 1: the first is queued, three are skipped')
  sink.accepting = true
  listener?.resume()
  t.same(sink.got.map(m => m === SKIPPED ? 'skipped' : m.offset), [1, 'skipped'], 'the queued message, then one marker for the run')
  const receiver = new LocalStore({ capacity: 1, expiryMs: 60_000, groupExpiryMs: 60_000, skipped: () => {}, counts: { deliveries: 0, expired: 0, discarded: 0 } })
  receiver.addMember('room', 'r!1')
  receiver.fanOut('room', { type: 'n' }, { group: 'room', offset: 1, epoch: 'e' })
  receiver.fanOut('room', { type: 'n' }, { group: 'room', offset: 2, epoch: 'e' })
  t.same((await receiver.receive('r!1', undefined)).info, { group: 'room', offset: 1, epoch: 'e' })
  t.equal(receiver.inspect().channels, 0, 'a channel read with receive() (a worker) gets no marker: nothing is left queued')
})

t.test('markers of two groups in a row count against no capacity, before or after they are handed over', async t => {
  const { store: s } = store({ capacity: 2 })
  // A listener that takes `budget` messages, then stops accepting.
  const sink = new class extends Sink {
    budget = 0
    override push (message: LayerMessage): void {
      super.push(message)
      if (--this.budget === 0) this.accepting = false
    }
  }()
  sink.accepting = false
  const listener = s.listen('m!1', sink)
  s.addMember('a', 'm!1')
  s.addMember('b', 'm!1')
  for (let offset = 1; offset <= 3; offset++) s.fanOut('a', { type: 'n', offset }, { group: 'a', offset, epoch: 'e' })
  s.fanOut('b', { type: 'n', offset: 1 }, { group: 'b', offset: 1, epoch: 'e' })
  const take = (budget: number): void => {
    sink.budget = budget
    sink.accepting = true
    listener?.resume()
  }
  take(3)
  t.same(sink.got.map(m => m === SKIPPED ? 'skipped' : m.offset), [1, 2, 'skipped'], 'two messages, then the marker of a')
  t.ok(s.deliver('m!1', { type: 'x' }), 'behind the marker of b, room for two')
  t.ok(s.deliver('m!1', { type: 'y' }))
  t.notOk(s.deliver('m!1', { type: 'z' }), 'a third is refused')
  take(1)
  t.equal(sink.got.at(-1), SKIPPED, 'the marker of b handed over')
  t.notOk(s.deliver('m!1', { type: 'z' }), 'x and y still fill the channel: the third is still refused')
  take(2)
  t.same(sink.got.slice(-2).map(m => m.type), ['x', 'y'])
})

t.test('what expires in a listened channel and can be read back leaves one marker per run, in its place; the rest is dropped', async t => {
  const counts = { deliveries: 0, expired: 0, discarded: 0 }
  const { store: s } = store({ capacity: 10, expiryMs: 20, counts })
  const sink = new Sink()
  const listener = s.listen('x!1', sink)
  sink.accepting = false
  for (const group of ['a', 'b', 'plain']) s.addMember(group, 'x!1')
  s.fanOut('a', { type: 'n' }, { group: 'a', offset: 1, epoch: 'e' })
  s.fanOut('a', { type: 'n' }, { group: 'a', offset: 2, epoch: 'e' })
  s.fanOut('plain', { type: 'plain' }, { group: 'plain' })
  s.fanOut('a', { type: 'presence.join', channel: 'y!1', info: {} }, { group: 'a' })
  s.fanOut('b', { type: 'n' }, { group: 'b', offset: 7, epoch: 'e' })
  s.deliver('x!1', { type: 'direct' })
  await sleep(40)
  s.deliver('x!1', { type: 'fresh' })
  t.equal(counts.expired, 6, 'every expired message is counted as expired')
  // Capacity 10: 'fresh' and nine more, as if the markers were not there.
  for (let n = 0; n < 9; n++) t.ok(s.deliver('x!1', { type: 'room' }), `the markers take none of the capacity (${n})`)
  t.notOk(s.deliver('x!1', { type: 'over' }), 'the eleventh is refused')
  sink.accepting = true
  listener?.resume()
  t.same(sink.got.slice(0, 4).map(m => m === SKIPPED ? 'marker' : m.type), ['marker', 'marker', 'marker', 'fresh'], 'three markers, in order, before what came after them')
  t.same(sink.infos.slice(0, 3), [{ group: 'a', offset: 2, epoch: 'e' }, { group: 'a' }, { group: 'b', offset: 7, epoch: 'e' }],
    "each with its run's last Delivery: a's offsets, a's presence, b's offsets")
  t.equal(sink.got.length, 13, 'the plain group message and the direct one are dropped')

  const { store: r } = store({ expiryMs: 20 })
  r.addMember('a', 'r!1')
  r.fanOut('a', { type: 'n' }, { group: 'a', offset: 1, epoch: 'e' })
  await sleep(40)
  r.deliver('r!1', { type: 'fresh' })
  t.same((await r.receive('r!1', undefined)).message, { type: 'fresh' }, 'a channel read with receive() gets no marker for what expired')
})
