import type { Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ChannelFullError, InvalidOptionError, LayerClosedError } from '../../lib/errors.js'
import { canListen, type ChannelLayer, type ChannelListening, type ChannelSink, type GroupJoin, type LayerMessage } from '../../lib/layers/types.js'
import type { ConformanceLayerOptions, Harness } from './conformance.js'

// listen(): the push delivery a connection uses on its own channel. Optional for a layer; ours offer it.

/** A sink that records what it is given and accepts while `open` is true. */
class RecordingSink implements ChannelSink {
  readonly got: LayerMessage[] = []
  ended: Error | undefined
  open = true
  /** Stop accepting after this many more messages (Infinity: never). */
  budget = Infinity

  get accepting (): boolean {
    return this.open && this.budget > 0
  }

  push (message: LayerMessage): void {
    this.got.push(message)
    this.budget--
  }

  layerClosed (reason: Error): void {
    this.ended = reason
  }
}

async function until (t: Test, what: string, check: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check() && Date.now() < deadline) await sleep(5)
  t.ok(check(), what)
}

export function conformanceListen (
  test: (title: string, fn: (t: Test) => Promise<void>) => void,
  h: Harness,
  shared: boolean,
  latency: number
): void {
  const { unique, next, rejectsWith } = h

  async function listening (t: Test, options?: ConformanceLayerOptions): Promise<ChannelLayer & ChannelListening> {
    const layer = await h.open(t, options)
    if (!canListen(layer)) throw new Error('this layer has no listen(); the listen cases do not apply')
    return layer
  }

  test('a listener is handed direct and group messages as they are sent, each its own copy', async t => {
    const layer = await listening(t)
    const [a, b] = [await layer.newChannel(), await layer.newChannel()]
    const [sa, sb] = [new RecordingSink(), new RecordingSink()]
    layer.listen(a, sa)
    layer.listen(b, sb)
    const direct = { type: 'direct', n: 1 }
    await layer.send(a, direct)
    await until(t, 'the direct message arrived', () => sa.got.length === 1)
    t.same(sa.got[0], direct)
    t.not(sa.got[0], direct, 'a copy, not the sender\'s object')

    const group = unique('listen')
    await layer.groupAdd(group, a)
    await layer.groupAdd(group, b)
    const sent = { type: 'group.one', nested: { list: [1, 2] } }
    await layer.groupSend(group, sent)
    await until(t, 'both members got it', () => sa.got.length === 2 && sb.got.length === 1)
    t.same([sa.got[1], sb.got[0]], [sent, sent])
    t.not(sa.got[1], sb.got[0], 'members do not share an object')
    t.not((sa.got[1] as typeof sent).nested, (sb.got[0] as typeof sent).nested, 'nor a nested one')
    sent.nested.list.push(3)
    t.same((sb.got[0] as typeof sent).nested.list, [1, 2], 'changing the sent object changes no copy')
  })

  test('while a listener does not accept, messages wait under capacity and come in order on resume', async t => {
    const layer = await listening(t, { capacity: 3 })
    const channel = await layer.newChannel()
    const sink = new RecordingSink()
    sink.open = false
    const listener = layer.listen(channel, sink)
    for (let n = 0; n < 3; n++) await layer.send(channel, { type: 'wait', n })
    await rejectsWith(t, layer.send(channel, { type: 'wait', n: 3 }), ChannelFullError, 'FST_CHANNELS_CHANNEL_FULL')
    const group = unique('full')
    await layer.groupAdd(group, channel)
    await t.resolves(layer.groupSend(group, { type: 'skipped' }), 'groupSend skips the full member')
    await sleep(latency)
    t.same(sink.got, [], 'nothing pushed while not accepting')

    // Accepts one, then pushes back: the rest keeps waiting, in order.
    sink.open = true
    sink.budget = 1
    listener.resume()
    t.same(sink.got.map(m => m.n), [0])
    sink.budget = Infinity
    await layer.send(channel, { type: 'wait', n: 4 })
    t.same(sink.got.map(m => m.n), [0], 'a new message does not overtake the waiting ones')
    listener.resume()
    t.same(sink.got.map(m => m.n), [0, 1, 2, 4], 'resume hands over the rest in order')
    await layer.send(channel, { type: 'wait', n: 5 })
    await until(t, 'then messages go straight to the listener again', () => sink.got.length === 5)
  })

  test('messages that waited past expiry are not handed over', async t => {
    const layer = await listening(t, { expiry: 0.05 })
    const channel = await layer.newChannel()
    const sink = new RecordingSink()
    sink.open = false
    const listener = layer.listen(channel, sink)
    await layer.send(channel, { type: 'stale' })
    await sleep(80)
    sink.open = true
    listener.resume()
    t.same(sink.got, [])
  })

  test('a closed listener gets nothing more; later messages wait for receive()', async t => {
    const layer = await listening(t)
    const channel = await layer.newChannel()
    const sink = new RecordingSink()
    const listener = layer.listen(channel, sink)
    listener.close()
    listener.close()
    await layer.send(channel, { type: 'after.close' })
    t.same(await next(layer, channel), { type: 'after.close' })
    t.same(sink.got, [])
    layer.listen(channel, new RecordingSink())
    t.pass('the channel can be listened to again')
  })

  test('messages queued before listen() are handed over at once', async t => {
    const layer = await listening(t)
    const channel = await layer.newChannel()
    await layer.send(channel, { type: 'early', n: 1 })
    await layer.send(channel, { type: 'early', n: 2 })
    const sink = new RecordingSink()
    layer.listen(channel, sink)
    t.same(sink.got, [{ type: 'early', n: 1 }, { type: 'early', n: 2 }])
  })

  test('listen() refuses a named channel, a second listener, something that is not a sink, and a closed layer', async t => {
    const layer = await listening(t)
    const channel = await layer.newChannel()
    for (const notSink of [(): void => {}, {}, { push () {} }, null]) {
      t.throws(() => layer.listen(channel, notSink as unknown as ChannelSink), InvalidOptionError, 'a sink has push() and layerClosed()')
    }
    layer.listen(channel, new RecordingSink())
    t.throws(() => layer.listen(channel, new RecordingSink()), InvalidOptionError, 'one listener per channel')
    t.throws(() => layer.listen(unique('named'), new RecordingSink()), InvalidOptionError, 'named channels are queues')
    t.throws(() => layer.listen('bad name', new RecordingSink()), { code: 'FST_CHANNELS_INVALID_NAME' }, 'names are checked')
    const other = await layer.newChannel()
    const sink = new RecordingSink()
    layer.listen(other, sink)
    await layer.close()
    t.ok(sink.ended instanceof LayerClosedError, 'closing the layer ends its listeners')
    t.throws(() => layer.listen(other, new RecordingSink()), LayerClosedError)
  })

  // An idle consumer's handler runs inside push(): what it sends or joins there must not overtake
  // the message being handed out.
  test('a member that sends to its group from inside push(): every member gets the group\'s messages in the order they were sent', async t => {
    const group = unique('reentrant-send')
    const layer = await listening(t, { groups: { [group]: { history: { size: 10, ttl: 60 } } } })
    const names = ['bot', 'ada', 'grace']
    const channels = await Promise.all(names.map(async () => await layer.newChannel()))
    const got = new Map<string, Array<[unknown, number | undefined]>>()
    channels.forEach((channel, i) => {
      const seen: Array<[unknown, number | undefined]> = []
      got.set(names[i], seen)
      layer.listen(channel, {
        accepting: true,
        push (message, info) {
          seen.push([message.text, info.offset])
          // The bot answers at once, before push() returns.
          if (i === 0 && message.text === 'ping') void layer.groupSend(group, { type: 'chat', text: 'pong' })
        },
        layerClosed () {}
      })
    })
    for (const channel of channels) await layer.groupAdd(group, channel)
    await layer.groupSend(group, { type: 'chat', text: 'ping' })
    await until(t, 'every member got both', () => [...got.values()].every(seen => seen.length === 2))
    for (const name of names) t.same(got.get(name), [['ping', 1], ['pong', 2]], `${name}: ping, then pong, in offset order`)
  })

  test('a join made from inside push() takes effect after the message being handed out', async t => {
    const group = unique('reentrant-join')
    const layer = await listening(t, { groups: { [group]: { history: { size: 10, ttl: 60 } } } })
    const [host, plain, recovering] = [await layer.newChannel(), await layer.newChannel(), await layer.newChannel()]
    const joins: Array<Promise<unknown>> = []
    layer.listen(host, {
      accepting: true,
      push (message) {
        if (message.text !== 'first') return
        // Both join while 'first' is being handed out: a plain join comes after it, one from
        // offset 0 gets it replayed, once.
        joins.push(layer.groupAdd(group, plain), layer.groupAdd(group, recovering, { since: { offset: 0, epoch } }))
      },
      layerClosed () {}
    })
    const [toPlain, toRecovering] = [new RecordingSink(), new RecordingSink()]
    layer.listen(plain, toPlain)
    layer.listen(recovering, toRecovering)
    const { position } = await layer.groupAdd(group, host)
    const epoch = position?.epoch as string
    await layer.groupSend(group, { type: 'chat', text: 'first' })
    await until(t, 'both joins are done', () => joins.length === 2)
    const [plainJoin, recoveringJoin] = await Promise.all(joins) as GroupJoin[]
    t.match(plainJoin, { position: { offset: 1 }, recovered: false }, 'the plain join sees the message sent before it')
    t.match(recoveringJoin, { position: { offset: 1 }, recovered: true })
    await layer.groupSend(group, { type: 'chat', text: 'second' })
    await until(t, 'the second message reached both', () => toPlain.got.length >= 1 && toRecovering.got.length >= 2)
    await sleep(latency)
    t.same(toPlain.got.map(m => m.text), ['second'], 'the plain joiner gets only what was sent after its join')
    t.same(toRecovering.got.map(m => m.text), ['first', 'second'], 'the recovering joiner gets the first once, then the second')
  })

  test('messages a closed listener left behind go to receive(), without the marker of those skipped for it', async t => {
    const group = unique('left-behind')
    const layer = await listening(t, { capacity: 1, groups: { [group]: { history: { size: 10, ttl: 60 } } } })
    const channel = await layer.newChannel()
    const listener = layer.listen(channel, { accepting: false, push () {}, layerClosed () {} })
    await layer.groupAdd(group, channel)
    // The first waits in the channel (capacity 1), the second is skipped for it (on a layer that
    // spans processes, once it has come back from the backend).
    const stats = (layer as { stats?: { groupSendSkipped: number } }).stats
    await layer.groupSend(group, { type: 'kept', n: 1 })
    await layer.groupSend(group, { type: 'kept', n: 2 })
    if (stats !== undefined) await until(t, 'the second is skipped', () => stats.groupSendSkipped === 1)
    listener?.close()
    t.same(await next(layer, channel), { type: 'kept', n: 1 })
    await h.nothing(t, layer, channel)
  })

  test('a listened channel stays a member past groupExpiry; once the listener closes, the membership lapses groupExpiry later', async t => {
    // A connection open for longer than groupExpiry (a day by default) must not stop hearing its groups.
    const layer = await listening(t, { groupExpiry: 1 })
    const group = unique('outlived')
    const channel = await layer.newChannel()
    const sink = new RecordingSink()
    const listener = layer.listen(channel, sink)
    await layer.groupAdd(group, channel, { presence: { name: 'ada' } })
    await sleep(1600)
    await layer.groupSend(group, { type: 'still.member' })
    await until(t, 'a member past groupExpiry still gets the group\'s messages', () => sink.got.length === 1)
    t.same(sink.got, [{ type: 'still.member' }])
    t.same((await layer.presence(group)).map(entry => entry.channel), [channel], 'and is still in its presence')
    listener.close()
    await sleep(400)
    await layer.groupSend(group, { type: 'just.closed' })
    t.same(await next(layer, channel), { type: 'just.closed' }, 'right after the listener closed, still a member')
    await sleep(1600)
    await layer.groupSend(group, { type: 'lapsed' })
    await h.nothing(t, layer, channel)
    t.same(await layer.presence(group), [], 'the lapsed membership took its presence along')
  })

  if (!shared) return

  test('a listener is reached from another instance, directly and through a group', async t => {
    const [a, b] = [await listening(t), await listening(t)]
    const channel = await b.newChannel()
    const sink = new RecordingSink()
    b.listen(channel, sink)
    await a.send(channel, { type: 'cross.direct' })
    const group = unique('cross-listen')
    await b.groupAdd(group, channel)
    await a.groupSend(group, { type: 'cross.group' })
    await until(t, 'both arrived', () => sink.got.length === 2)
    t.same(sink.got, [{ type: 'cross.direct' }, { type: 'cross.group' }], 'in the order they were sent')
  })

  test('a listened channel past groupExpiry is reached from another instance, and in its presence there', async t => {
    const [a, b] = [await listening(t, { groupExpiry: 1 }), await listening(t, { groupExpiry: 1 })]
    const group = unique('outlived-cross')
    const channel = await b.newChannel()
    const sink = new RecordingSink()
    b.listen(channel, sink)
    await b.groupAdd(group, channel, { presence: { name: 'ada' } })
    await sleep(1600)
    await a.groupSend(group, { type: 'from.afar' })
    await until(t, 'it arrived', () => sink.got.length === 1)
    t.same((await a.presence(group)).map(entry => entry.channel), [channel], 'the other instance lists it')
  })
}
