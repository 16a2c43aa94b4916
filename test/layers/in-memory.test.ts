import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { InvalidMessageError, InvalidOptionError } from '../../lib/errors.js'
import { InMemoryChannelLayer } from '../../lib/layers/in-memory.js'
import type { GroupJoin, LayerMessage, LayerValue, StreamPosition } from '../../lib/layers/types.js'
import { conformance } from './conformance.js'

conformance('InMemoryChannelLayer', options => new InMemoryChannelLayer(options))

function layer (t: Test, options?: ConstructorParameters<typeof InMemoryChannelLayer>[0]): InMemoryChannelLayer {
  const created = new InMemoryChannelLayer(options)
  t.teardown(() => created.close())
  return created
}

t.test('options are validated in the constructor', async t => {
  const bad: unknown[] = [0, -1, NaN, Infinity, '10', null, true]
  for (const value of bad) {
    for (const option of ['capacity', 'expiry', 'groupExpiry']) {
      t.throws(() => new InMemoryChannelLayer({ [option]: value }), InvalidOptionError, `${option}: ${String(value)}`)
    }
  }
  const err = (() => { try { new InMemoryChannelLayer({ capacity: 1.5 }) } catch (e) { return e } })()
  t.ok(err instanceof TypeError)
  t.equal((err as { code?: string }).code, 'FST_CHANNELS_INVALID_OPTION')
  t.match((err as Error).message, /capacity/)
  t.throws(() => new InMemoryChannelLayer(null as never), InvalidOptionError)
  t.throws(() => new InMemoryChannelLayer({ capcity: 5 } as never), { code: 'FST_CHANNELS_INVALID_OPTION', message: 'InMemoryChannelLayer: unknown option "capcity"; the options are capacity, expiry, groupExpiry, log, groups' }, 'a misspelt option')
  const ok = layer(t, { capacity: 1, expiry: 0.5, groupExpiry: 3600 })
  t.ok(ok instanceof InMemoryChannelLayer)
  t.ok(layer(t))
})

t.test('1,000 connect/disconnect cycles leave nothing behind', async t => {
  const memory = layer(t)
  const controller = new AbortController()
  let delivered = 0
  let aborted = 0
  for (let i = 0; i < 1000; i++) {
    const channel = await memory.newChannel()
    await memory.groupAdd('lobby', channel)
    await memory.groupAdd(`room-${i % 7}`, channel)
    await memory.groupSend('lobby', { type: 'welcome' })
    if ((await memory.receive(channel, { signal: controller.signal })).type === 'welcome') delivered++
    const idle = new AbortController()
    const pending = memory.receive(channel, { signal: idle.signal }).catch(() => 'aborted')
    idle.abort()
    if (await pending === 'aborted') aborted++
    await memory.discardChannel(channel)
  }
  t.equal(delivered, 1000)
  t.equal(aborted, 1000)
  t.same(memory.inspect(), { channels: 0, groups: 0, memberships: 0 })
})

t.test('a long-lived signal does not collect listeners', async t => {
  const memory = layer(t)
  const controller = new AbortController()
  const channel = await memory.newChannel()
  for (let i = 0; i < 100; i++) {
    const pending = memory.receive(channel, { signal: controller.signal })
    await memory.send(channel, { type: 'tick', i })
    await pending
  }
  t.equal(EventEmitter.getEventListeners(controller.signal, 'abort').length, 0)
})

t.test('groups named like Object.prototype members are just names', async t => {
  const memory = layer(t)
  const channel = await memory.newChannel()
  for (const group of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
    await memory.groupSend(group, { type: 'before.join' })
    await memory.groupAdd(group, channel)
    await memory.groupSend(group, { type: 'joined', group })
    t.same(await memory.receive(channel), { type: 'joined', group })
  }
  t.same(memory.inspect(), { channels: 0, groups: 4, memberships: 4 })
  for (const group of ['__proto__', 'constructor']) await memory.groupDiscard(group, channel)
  await memory.discardChannel(channel)
  t.same(memory.inspect(), { channels: 0, groups: 0, memberships: 0 })
  t.equal(Object.getPrototypeOf({}), Object.prototype)
})

t.test('a skipped group member is logged with group and channel', async t => {
  const warnings: object[] = []
  const memory = layer(t, { capacity: 1, log: { warn: obj => { warnings.push(obj) }, debug: () => {}, error: () => {} } })
  const channel = await memory.newChannel()
  await memory.groupAdd('busy', channel)
  await memory.groupSend('busy', { type: 'one' })
  await memory.groupSend('busy', { type: 'two' })
  t.same(warnings, [{ group: 'busy', channel }])
  t.equal(memory.stats.groupSendSkipped, 1)
})

t.test('a member skipped at every message: one warning, then one line a second with the number, every skip counted', async t => {
  const warnings: object[] = []
  const memory = layer(t, { capacity: 1, log: { warn: obj => { warnings.push(obj) }, debug: () => {}, error: () => {} } })
  const [slow, other] = [await memory.newChannel(), await memory.newChannel()]
  await memory.groupAdd('busy', slow)
  await memory.groupAdd('busy', other)
  for (let n = 0; n < 100; n++) {
    await memory.groupSend('busy', { type: 'line', n })
    await memory.receive(other) // a member that keeps up
  }
  t.equal(memory.stats.groupSendSkipped, 99)
  t.same(warnings, [{ group: 'busy', channel: slow }], 'the first skip is logged at once')
  await memory.close() // ends the second under way
  t.same(warnings, [{ group: 'busy', channel: slow }, { group: 'busy', channel: slow, skipped: 98 }], 'the rest in one line')
})

t.test('newChannel embeds the per-instance process token', async t => {
  const [a, b] = [layer(t), layer(t)]
  t.match(a.processToken, /^[a-z\d]{12}$/)
  t.not(a.processToken, b.processToken)
  t.match(await a.newChannel(), new RegExp(`^specific\\.${a.processToken}!`))
})

t.test('Django aliases are bound', async t => {
  const memory = layer(t)
  const { new_channel: newChannel, group_add: groupAdd, group_send: groupSend, group_discard: groupDiscard } = memory
  const channel = await newChannel()
  await groupAdd('django', channel)
  await groupSend('django', { type: 'from.django' })
  t.same(await memory.receive(channel), { type: 'from.django' })
  await groupDiscard('django', channel)
  t.same(memory.inspect().groups, 0)
})

t.test('the sweep frees idle channels and groups', async t => {
  const memory = layer(t, { expiry: 0.1, groupExpiry: 0.1 })
  const channel = await memory.newChannel()
  const start = performance.now()
  await memory.send(channel, { type: 'forgotten' })
  await memory.groupAdd('idle', channel)
  const counts = memory.inspect()
  if (performance.now() - start < 80) t.same(counts, { channels: 1, groups: 1, memberships: 1 })
  // Nothing touches the layer from here on: only the timer can empty it. Polling tolerates stalls.
  const deadline = performance.now() + 2000
  while (memory.inspect().channels + memory.inspect().groups > 0 && performance.now() < deadline) await sleep(50)
  t.same(memory.inspect(), { channels: 0, groups: 0, memberships: 0 })
})

t.test('nesting is limited to 64 levels below the message', async t => {
  const memory = layer(t)
  const channel = await memory.newChannel()
  const deep = (levels: number): LayerMessage => {
    let value: LayerValue = {}
    for (let i = 1; i < levels; i++) value = { d: value }
    return { type: 'deep', d: value }
  }
  await memory.send(channel, deep(64))
  t.ok(await memory.receive(channel))
  await t.rejects(memory.send(channel, deep(65)), { code: 'FST_CHANNELS_INVALID_MESSAGE', message: /nested deeper than 64/ })
  await t.rejects(memory.send(channel, deep(65)), InvalidMessageError)
})

t.test('close is idempotent and empties the layer', async t => {
  const memory = new InMemoryChannelLayer()
  const channel = await memory.newChannel()
  await memory.send(channel, { type: 'left.behind' })
  await memory.groupAdd('g', channel)
  await memory.close()
  await memory.close()
  t.ok(memory.closed)
  t.same(memory.inspect(), { channels: 0, groups: 0, memberships: 0 })
})

t.test('each member\'s copy holds the message\'s own keys only, even with Object.prototype polluted', async t => {
  const layer = new InMemoryChannelLayer()
  t.teardown(() => layer.close())
  const [a, b, c] = [await layer.newChannel(), await layer.newChannel(), await layer.newChannel()]
  for (const channel of [a, b, c]) await layer.groupAdd('g', channel)
  // The fan-out (and every copy) happens inside groupSend's synchronous part.
  Object.defineProperty(Object.prototype, 'injected', { value: 'x', enumerable: true, configurable: true })
  let sent: Promise<unknown>
  try {
    sent = layer.groupSend('g', { type: 'm', nested: { v: 1 }, list: [{ w: 2 }, 3] })
  } finally {
    delete (Object.prototype as { injected?: unknown }).injected
  }
  await sent
  const received = [await layer.receive(a), await layer.receive(b), await layer.receive(c)]
  for (const message of received) {
    t.same(message, { type: 'm', nested: { v: 1 }, list: [{ w: 2 }, 3] })
    t.notOk(Object.hasOwn(message, 'injected') || Object.hasOwn(message.nested as object, 'injected') ||
      Object.hasOwn((message.list as object[])[0], 'injected'), 'no key from the prototype became the message\'s own')
  }
  t.equal(new Set(received.map(m => (m.list as object[])[0])).size, 3, 'objects inside arrays are each member\'s own')
})

t.test('a plain re-join after the membership expired does not bring back its presence: the old entry leaves', async t => {
  // Sweeps run every 0.3 s from the layer's start; the membership expires between two of them,
  // and the re-join comes before the next one finds it.
  const layer = new InMemoryChannelLayer({ groupExpiry: 0.3, groups: { room: { presenceEvents: true } } })
  t.teardown(() => layer.close())
  const events: string[] = []
  const watcher = await layer.newChannel()
  layer.listen(watcher, { accepting: true, push (message) { events.push(`${message.type} ${String((message.info as { name?: string } | undefined)?.name)}`) }, layerClosed () {} })
  const ada = await layer.newChannel()
  await sleep(50)
  await layer.groupAdd('room', ada, { presence: { name: 'Ada' } })
  await sleep(370)
  await layer.groupAdd('room', watcher)
  await layer.groupAdd('room', ada)
  t.same(await layer.presence('room'), [], 'the new membership recorded no presence')
  t.same(events, ['presence.leave Ada'], 'and the expired one\'s entry is announced gone')
})

t.test('from inside a fan-out, a join and a send to a group with history run in call order, each message once', async t => {
  const layer = new InMemoryChannelLayer({ groups: { room: { history: { size: 10, ttl: 60 } } } })
  t.teardown(() => layer.close())
  const got: string[] = []
  const sink = (name: string, onPush?: (message: LayerMessage) => void) => ({
    accepting: true,
    push (message: LayerMessage, info: { group?: string, offset?: number }) {
      if (info.group === 'room') got.push(`${name} ${String(message.text)}@${String(info.offset)}`)
      onPush?.(message)
    },
    layerClosed () {}
  })
  const [x, y, z] = [await layer.newChannel(), await layer.newChannel(), await layer.newChannel()]
  const first = await layer.groupSend('room', { type: 'chat', text: 'first' }) as StreamPosition
  const results: Array<Promise<unknown>> = []
  // Both react to the same lobby message: X joins the room from its last position, and Z plainly;
  // then Y posts to the room.
  layer.listen(x, sink('X', m => { if (m.type === 'enter') results.push(layer.groupAdd('room', x, { since: first }), layer.groupAdd('room', z)) }))
  layer.listen(y, sink('Y', m => { if (m.type === 'enter') results.push(layer.groupSend('room', { type: 'chat', text: 'welcome' })) }))
  layer.listen(z, sink('Z'))
  await layer.groupAdd('lobby', x)
  await layer.groupAdd('lobby', y)
  await layer.groupSend('lobby', { type: 'enter' })
  const [xJoin, zJoin, sent] = await Promise.all(results) as [GroupJoin, GroupJoin, StreamPosition]
  t.match(xJoin, { position: { offset: 1 }, recovered: true })
  t.match(zJoin, { position: { offset: 1 }, recovered: false }, 'the plain join\'s position is before the welcome')
  t.equal(sent.offset, 2)
  t.same(got.sort(), ['X welcome@2', 'Z welcome@2'], 'each joiner gets the welcome once')
})

t.test('from inside a fan-out, a send to a group then to a channel: the channel gets them in that order', async t => {
  const layer = new InMemoryChannelLayer()
  t.teardown(() => layer.close())
  const [a, b] = [await layer.newChannel(), await layer.newChannel()]
  const got: unknown[] = []
  layer.listen(a, {
    accepting: true,
    push (message) {
      if (message.type !== 'ping') return
      void layer.groupSend('room', { type: 'first' })
      void layer.send(b, { type: 'second' })
    },
    layerClosed () {}
  })
  layer.listen(b, { accepting: true, push (message) { got.push(message.type) }, layerClosed () {} })
  await layer.groupAdd('lobby', a)
  await layer.groupAdd('room', b)
  await layer.groupSend('lobby', { type: 'ping' })
  await sleep(20)
  t.same(got, ['first', 'second'], 'FIFO per sender')
})
