import type { Test } from 'tap'
import { InvalidChannelNameError, InvalidMessageError } from '../../lib/errors.js'
import { canDiscardChannel, type LayerMessage, type LayerValue } from '../../lib/layers/types.js'
import type { Harness } from './conformance.js'

// Part of the conformance suite: the naming rules, what a message may hold, and copy semantics.

type Define = (title: string, fn: (t: Test) => Promise<void>) => void

const NAME_CODE = 'FST_CHANNELS_INVALID_NAME'
const MESSAGE_CODE = 'FST_CHANNELS_INVALID_MESSAGE'

function nested (depth: number, wrap: (inner: LayerValue) => LayerValue): LayerValue {
  let value: LayerValue = 'bottom'
  for (let i = 0; i < depth; i++) value = wrap(value)
  return value
}

class Point { x = 1 }

export function conformanceMessages (test: Define, { open, unique, next, nothing, rejectsWith }: Harness): void {
  test('invalid channel and group names are TypeErrors with a code', async t => {
    const layer = await open(t)
    const ok = await layer.newChannel()
    const message = { type: 'named' }
    const badChannels: unknown[] = ['', 'has space', 'a'.repeat(100), `${'a'.repeat(99)}!`, 'ünicode', 'a!b!c',
      '!abc', 'a/b', 'line\n', 'x!ü', 42, null, undefined]
    for (const bad of badChannels) {
      const name = bad as string
      t.comment(`channel ${JSON.stringify(bad) ?? String(bad)}`)
      const calls = [layer.send(name, message), layer.receive(name), layer.groupAdd('g', name), layer.groupDiscard('g', name)]
      if (canDiscardChannel(layer)) calls.push(layer.discardChannel(name))
      for (const call of calls) await rejectsWith(t, call, InvalidChannelNameError, NAME_CODE)
    }
    const badGroups: unknown[] = ['', 'a!b', 'a!', 'a'.repeat(100), 'with space', 'ç', 7]
    for (const bad of badGroups) {
      const name = bad as string
      t.comment(`group ${JSON.stringify(bad)}`)
      for (const call of [layer.groupAdd(name, ok), layer.groupDiscard(name, ok), layer.groupSend(name, message)]) {
        await rejectsWith(t, call, TypeError, NAME_CODE)
      }
    }
  })

  test('names at the limits are accepted', async t => {
    const layer = await open(t)
    const channels = [unique('a').padEnd(99, 'a'), `${unique('b').padEnd(98, 'b')}!`, `${unique('c.d-e_f')}!x.y-z_9`, unique('Z0')]
    for (const channel of channels) {
      t.equal(channel.length < 100, true)
      await layer.send(channel, { type: 'edge', channel })
      t.same(await next(layer, channel), { type: 'edge', channel })
    }
    const ch = await layer.newChannel()
    for (const group of [unique('g').padEnd(99, 'g'), unique('x.y-z_w')]) {
      await layer.groupAdd(group, ch)
      await layer.groupSend(group, { type: 'edge.group' })
      t.same(await next(layer, ch), { type: 'edge.group' })
      await layer.groupDiscard(group, ch)
    }
  })

  test('invalid messages are refused with InvalidMessageError', async t => {
    const layer = await open(t)
    const channel = await layer.newChannel()
    const group = unique('strict')
    await layer.groupAdd(group, channel)
    const cycle: Record<string, unknown> = { type: 'loop', inner: { list: [] as unknown[] } }
    ;((cycle.inner as { list: unknown[] }).list).push(cycle)
    const cases: Array<[string, unknown, RegExp?]> = [
      ['null', null],
      ['a string', 'chat.message'],
      ['an array', [{ type: 'x' }]],
      ['a class instance', Object.assign(new Point(), { type: 'x' })],
      ['a Date', new Date()],
      ['no type', { text: 'hi' }],
      ['a numeric type', { type: 1 }],
      ["the layer's presence.join", { type: 'presence.join', channel: 'x', info: {} }, /reserved for the layer's presence announcements/],
      ["the layer's presence.leave", { type: 'presence.leave', channel: 'x', info: {} }, /presence\.leave/],
      ['a Date value', { type: 'x', payload: { when: new Date() } }, /message\.payload\.when.*Date/],
      ['a function', { type: 'x', fn: () => 1 }, /message\.fn/],
      ['a class instance value', { type: 'x', at: new Point() }, /message\.at.*Point/],
      ['undefined', { type: 'x', maybe: undefined }, /message\.maybe/],
      ['an array hole', { type: 'x', list: [1, , 3] }, /message\.list\[1\]/], // eslint-disable-line no-sparse-arrays
      ['NaN', { type: 'x', n: NaN }, /NaN/],
      ['Infinity', { type: 'x', n: -Infinity }, /Infinity/],
      ['a bigint', { type: 'x', n: 10n }],
      ['a symbol', { type: 'x', s: Symbol('s') }],
      ['a symbol key', { type: 'x', [Symbol('k')]: 1 }],
      ['a Map', { type: 'x', m: new Map() }, /Map/],
      ['a Set', { type: 'x', s: new Set([1]) }],
      ['an ArrayBuffer', { type: 'x', buf: new ArrayBuffer(2) }],
      ['a cycle', cycle, /message\.inner\.list\[0\]/],
      ['100,000 nested objects', { type: 'x', deep: nested(100_000, inner => ({ inner })) }],
      ['100,000 nested arrays', { type: 'x', deep: nested(100_000, inner => [inner]) }]
    ]
    for (const [label, value, text] of cases) {
      t.comment(label)
      const sent = layer.send(channel, value as LayerMessage)
      await rejectsWith(t, sent, InvalidMessageError, MESSAGE_CODE)
      const err = await sent.catch((e: unknown) => e)
      t.ok(err instanceof TypeError, `${label}: a TypeError`)
      if (text !== undefined) t.match((err as Error).message, text, `${label}: names the path`)
      await rejectsWith(t, layer.groupSend(group, value as LayerMessage), InvalidMessageError, MESSAGE_CODE)
    }
    await nothing(t, layer, channel)
  })

  test('every allowed value arrives equal', async t => {
    const layer = await open(t)
    const channel = await layer.newChannel()
    const bare = Object.create(null) as Record<string, LayerValue>
    bare.inside = 'null prototype'
    const message = {
      type: 'all.kinds', s: 'ünïcödé ✓', empty: '', int: 42, neg: -1.5, zero: 0, yes: true, no: false, nil: null,
      list: [1, 'two', [3, [4]], { five: 5 }], obj: { a: { b: { c: 'deep' } } }, bare, bytes: new Uint8Array([0, 255]),
      deep: nested(60, inner => ({ inner }))
    }
    await layer.send(channel, message)
    const received = await next(layer, channel)
    t.same(received, { ...message, bare: { inside: 'null prototype' } })
    t.same([...(received.bytes as Uint8Array)], [0, 255])
  })

  test('-0 arrives as 0 on every layer (JSON and every backend encoding know no -0)', async t => {
    const layer = await open(t)
    const channel = await layer.newChannel()
    await layer.send(channel, { type: 'zeros', z: -0, list: [-0], obj: { z: -0 } })
    const received = await next(layer, channel)
    t.ok(Object.is(received.z, 0) && Object.is((received.list as number[])[0], 0) && Object.is((received.obj as { z: number }).z, 0),
      `every -0 is 0 (${JSON.stringify([Object.is(received.z, -0), Object.is((received.list as number[])[0], -0)])})`)
  })

  test('a lone surrogate arrives as U+FFFD on every layer, in values and keys, short and long (UTF-8 carries no other)', async t => {
    const layer = await open(t)
    const channel = await layer.newChannel()
    const group = unique('surrogates')
    await layer.groupAdd(group, channel)
    const long = 'é'.repeat(200)
    const message = { type: 'cut', text: 'x\ud83dy', low: '\udc00', long: `${long}\ud800`, pair: '😀', list: ['\ud83d'], 'k\ud800': 'key', nested: { 'k\udfff': ['a\ud800b'] } }
    const wanted = { type: 'cut', text: 'x\ufffdy', low: '\ufffd', long: `${long}\ufffd`, pair: '😀', list: ['\ufffd'], 'k\ufffd': 'key', nested: { 'k\ufffd': ['a\ufffdb'] } }
    await layer.send(channel, message)
    t.same(await next(layer, channel), wanted, 'sent to a channel')
    await layer.groupSend(group, message)
    t.same(await next(layer, channel), wanted, 'sent to a group')
    t.equal(message.text, 'x\ud83dy', "the sender's object is left as it was")
    const clashes: LayerMessage[] = [{ type: 'clash', 'a\ud800': 1, 'a\udc00': 2 }, { type: 'clash', 'a\ud800': 1, 'a\ufffd': 2 }, { type: 'clash', 'a\ufffd': 1, 'a\ud800': 2 }]
    for (const clash of clashes) {
      const err = await layer.send(channel, clash).then(() => undefined, (err: unknown) => err)
      t.ok(err instanceof InvalidMessageError, `two keys that would become one are refused (${JSON.stringify(Object.keys(clash))})`, { found: err })
      t.match((err as Error).message, /lone surrogates/)
    }
  })

  test('recipients get their own copy; the sender keeps its object', async t => {
    const layer = await open(t)
    const [a, b, c] = [await layer.newChannel(), await layer.newChannel(), await layer.newChannel()]
    const group = unique('copies')
    for (const channel of [a, b, c]) await layer.groupAdd(group, channel)
    const message = { type: 'copy.test', nested: { v: 1 }, list: [1, { w: 2 }] }
    await layer.send(a, message)
    await layer.groupSend(group, message)
    t.notOk(Object.isFrozen(message) || Object.isFrozen(message.nested) || Object.isFrozen(message.list), 'not frozen')
    t.same(message, { type: 'copy.test', nested: { v: 1 }, list: [1, { w: 2 }] }, 'not mutated')
    message.nested.v = 99
    message.list.push(3)
    Object.assign(message, { extra: true })
    const direct = await next(layer, a)
    t.same(direct, { type: 'copy.test', nested: { v: 1 }, list: [1, { w: 2 }] }, 'send copied')
    const copies = [await next(layer, a), await next(layer, b), await next(layer, c)]
    for (const copy of copies) t.same(copy, { type: 'copy.test', nested: { v: 1 }, list: [1, { w: 2 }] })
    const all = [message, direct, ...copies]
    t.equal(new Set(all).size, 5, 'distinct objects')
    t.equal(new Set(all.map(m => m.nested)).size, 5, 'distinct nested objects')
    t.equal(new Set(all.map(m => (m.list as unknown[])[1])).size, 5, 'distinct objects inside arrays')
    ;(copies[0].nested as { v: number }).v = -1
    t.equal((copies[1].nested as { v: number }).v, 1, 'one recipient cannot change another one\'s copy')
  })

  test('bytes are copied as Uint8Array', async t => {
    const layer = await open(t)
    const [a, b] = [await layer.newChannel(), await layer.newChannel()]
    const group = unique('bytes')
    await layer.groupAdd(group, a)
    await layer.groupAdd(group, b)
    const bytes = Uint8Array.from([1, 2, 3])
    await layer.send(a, { type: 'bin', bytes, buffer: Buffer.from('hello') })
    await layer.groupSend(group, { type: 'bin', bytes })
    bytes[0] = 9
    const direct = await next(layer, a)
    t.ok(direct.bytes instanceof Uint8Array)
    t.not(direct.bytes, bytes)
    t.same([...(direct.bytes as Uint8Array)], [1, 2, 3])
    t.ok(direct.buffer instanceof Uint8Array)
    t.equal(Buffer.from(direct.buffer as Uint8Array).toString(), 'hello')
    const [ga, gb] = [await next(layer, a), await next(layer, b)]
    t.same([...(ga.bytes as Uint8Array)], [1, 2, 3])
    t.not(ga.bytes, gb.bytes, 'each recipient has its own bytes')
    ;(ga.bytes as Uint8Array)[1] = 7
    t.same([...(gb.bytes as Uint8Array)], [1, 2, 3])
  })

  test('a __proto__ key stays data and never changes a prototype', async t => {
    const layer = await open(t)
    const [a, b] = [await layer.newChannel(), await layer.newChannel()]
    const group = unique('proto')
    await layer.groupAdd(group, a)
    await layer.groupAdd(group, b)
    const json = '{"type":"evil","__proto__":{"polluted":true},"nested":{"__proto__":{"polluted":1}},"constructor":{"x":1}}'
    await layer.send(a, JSON.parse(json) as LayerMessage)
    await layer.groupSend(group, JSON.parse(json) as LayerMessage)
    for (const received of [await next(layer, a), await next(layer, a), await next(layer, b)]) {
      t.equal(Object.getPrototypeOf(received), Object.prototype)
      t.ok(Object.hasOwn(received, '__proto__'), 'an own property')
      t.same(Object.getOwnPropertyDescriptor(received, '__proto__')?.value, { polluted: true })
      t.equal((received as { polluted?: unknown }).polluted, undefined)
      const inner = received.nested as Record<string, unknown>
      t.equal(Object.getPrototypeOf(inner), Object.prototype)
      t.ok(Object.hasOwn(inner, '__proto__'))
      t.same(received.constructor, { x: 1 })
    }
    t.equal(({} as { polluted?: unknown }).polluted, undefined, 'Object.prototype untouched')
  })

  test('a group of many members: each gets its own exact copy, whatever the message holds', async t => {
    // Fan-outs to 8 members or more copy with code compiled for the message's structure, from the
    // second message of that structure on (message-structure.ts): every kind of key, value and
    // nesting, the same structure with other values, messages that differ from the last structure
    // by a key or by which values are objects, and more structures than are compiled.
    const layer = await open(t)
    const members: string[] = []
    for (let i = 0; i < 10; i++) members.push(await layer.newChannel())
    const group = unique('many')
    for (const channel of members) await layer.groupAdd(group, channel)
    const wide: Record<string, number> = {}
    for (let i = 0; i < 100; i++) wide[`k${i}`] = i
    const messages: LayerMessage[] = [
      '{"type":"rich","2":"two","1":{"b":true,"a":null},"quote\\"key":"q","line\\nkey":"\\u2028","ünï":{"x":[1,{"y":{"z":[]}}]},"empty":{},"deep":{"a":{"b":{"c":{"d":{"e":{"f":"bottom"}}}}}},"n":-1.5}',
      '{"type":"rich","2":"deux","1":{"b":false,"a":"now a string"},"quote\\"key":"r","line\\nkey":"","ünï":{"x":[]},"empty":{},"deep":{"a":{"b":{"c":{"d":{"e":{"f":"fond"}}}}}},"n":7}',
      '{"type":"rich","2":"drei","1":{"b":true,"a":0},"quote\\"key":"s","line\\nkey":"","ünï":{"x":{}},"empty":{},"deep":{"a":{"b":{"c":{"d":{"e":[]}}}}},"n":8}',
      '{"type":"rich","2":"one more key","1":{"b":true,"a":0},"quote\\"key":"s","line\\nkey":"","ünï":{"x":{}},"empty":{},"deep":{"a":{"b":{"c":{"d":{"e":[]}}}}},"n":8,"zz":1}',
      '{"type":"rich","2":{"now":"an object"},"1":{"b":true,"a":{"also":"one"}},"quote\\"key":"s","line\\nkey":"","ünï":{"x":{}},"empty":{"k":{}},"deep":{"a":{"b":{"c":{"d":{"e":[]}}}}},"n":8}',
      '{"type":"rich","2":"trois","1":"no longer an object"}',
      '{"type":"evil","__proto__":{"polluted":true},"nested":{"__proto__":{"x":1}}}',
      JSON.stringify({ type: 'wide', wide, after: { v: 1 } })
    ].map(json => JSON.parse(json) as LayerMessage)
    messages.push({ type: 'bytes', inner: { bytes: Uint8Array.from([1, 2, 3]), list: [Uint8Array.from([4])] } })
    // A structure is compiled the second time it is sent.
    for (let i = 0; i < 300; i++) messages.push({ type: 'structure', [`k${i}`]: { v: i } }, { type: 'structure', [`k${i}`]: { v: -i } })

    const containers = (value: unknown, out: object[] = []): object[] => {
      if (typeof value !== 'object' || value === null) return out
      out.push(value)
      for (const inner of Object.values(value)) containers(inner, out)
      return out
    }
    const seen = new Set(messages.flatMap(message => containers(message)))
    let exact = 0
    // One at a time: a channel holds 100 messages at most.
    for (const message of messages) {
      await layer.groupSend(group, message)
      for (const channel of members) {
        const copy = await next(layer, channel)
        if (JSON.stringify(copy) === JSON.stringify(message)) exact++
        else t.fail(`${channel}: ${JSON.stringify(copy)} is not ${JSON.stringify(message)}`)
        for (const object of containers(copy)) {
          if (seen.has(object)) t.fail(`${channel}: an object of ${message.type} is shared`)
          seen.add(object)
          const plain = Array.isArray(object) || object instanceof Uint8Array || Object.getPrototypeOf(object) === Object.prototype
          if (!plain) t.fail(`${channel}: an object of ${message.type} has another prototype`)
        }
        if (message.type === 'bytes') t.ok(((copy.inner as { bytes: unknown }).bytes instanceof Uint8Array), 'bytes stay bytes')
        if (message.type === 'evil') t.ok(Object.hasOwn(copy, '__proto__') && Object.getPrototypeOf(copy) === Object.prototype, '__proto__ stays data')
      }
    }
    t.equal(exact, members.length * messages.length, 'every member got every message, key order and values as sent')
    t.equal(({} as { polluted?: unknown }).polluted, undefined, 'Object.prototype untouched')
  })
}
