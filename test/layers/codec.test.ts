import t from 'tap'
import { Packr } from 'msgpackr'
import { Envelope, decodeEnvelope, decodeMessage, encodeEnvelope, encodeMessage, reviveMessage } from '../../lib/layers/codec.js'

// What processes say to each other: envelopes and messages survive the trip exactly, and anything
// a layer did not write is refused, never trusted.

t.test('envelopes and messages round-trip in the in-memory layer\'s shape', async t => {
  const message = { type: 'chat.message', text: 'hé', n: 1.5, ok: true, none: null, list: [1, [2]], bytes: new Uint8Array([0, 255]) }
  const envelope = decodeEnvelope(encodeEnvelope([Envelope.direct, 'specific.abc!x', message]))
  t.equal(envelope?.[0], Envelope.direct)
  t.equal(envelope?.[1], 'specific.abc!x')
  const revived = reviveMessage(envelope?.[2])
  t.same(revived, message)
  t.equal(Object.getPrototypeOf(revived.bytes), Uint8Array.prototype, 'bytes arrive as a plain Uint8Array, not a Buffer')
  t.same(decodeMessage(encodeMessage(message)), message)
})

t.test('__proto__ keys stay data', async t => {
  const message = JSON.parse('{"type":"x","__proto__":{"polluted":true}}') as { type: string }
  const revived = decodeMessage(encodeMessage(message))
  t.equal(Object.getPrototypeOf(revived), Object.prototype)
  t.ok(Object.hasOwn(revived, '__proto__'))
  t.equal(({} as { polluted?: boolean }).polluted, undefined)
})

t.test('what a layer did not write is refused', async t => {
  t.equal(decodeEnvelope(Buffer.from('not msgpack at all \xc1')), undefined)
  t.equal(decodeEnvelope(encodeMessage({ type: 'a message, not an envelope' })), undefined)
  t.throws(() => reviveMessage('text'), { code: 'FST_CHANNELS_INVALID_MESSAGE' })
  t.throws(() => reviveMessage(new Map([['type', 1]])), { code: 'FST_CHANNELS_INVALID_MESSAGE' })
  t.throws(() => decodeMessage(new Packr().pack(new Set([1]))), { code: 'FST_CHANNELS_INVALID_MESSAGE' })
  let deep: unknown = 'leaf'
  for (let i = 0; i < 100; i++) deep = [deep]
  t.throws(() => decodeMessage(new Packr({ useRecords: false }).pack({ type: 'x', deep })), { message: /nested too deep/ })
})
