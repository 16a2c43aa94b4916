import type { Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ChannelFullError, InvalidOptionError, LayerClosedError } from '../../lib/errors.js'
import { canListen, type ChannelLayer, type ChannelListening, type ChannelSink, type LayerMessage } from '../../lib/layers/types.js'
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

  test('listen() refuses a named channel, a second listener and a closed layer', async t => {
    const layer = await listening(t)
    const channel = await layer.newChannel()
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
}
