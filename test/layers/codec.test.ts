import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Packr } from 'msgpackr'
import { Envelope, WireCodec, reviveMessage, reviveObject } from '../../lib/layers/codec.js'
import { PayloadCipher } from '../../lib/layers/encryption.js'

// What processes say to each other: envelopes, deliveries and values survive the trip exactly,
// sealed or not, and anything a layer did not write is refused, never trusted.

const message = { type: 'chat.message', text: 'hé', n: 1.5, ok: true, none: null, list: [1, [2]], bytes: new Uint8Array([0, 255]) }

for (const [name, codec] of [['plain', new WireCodec()], ['sealed', new WireCodec(new PayloadCipher([randomBytes(32)]))]] as const) {
  t.test(`${name}: envelopes, deliveries and values round-trip in the in-memory layer's shape`, async t => {
    const envelope = codec.decodeEnvelope(codec.encodeEnvelope([Envelope.direct, 'specific.abc!x', message]))
    t.equal(envelope?.[0], Envelope.direct)
    t.equal(envelope?.[1], 'specific.abc!x')
    const revived = reviveMessage(envelope?.[2])
    t.same(revived, message)
    t.equal(Object.getPrototypeOf(revived.bytes), Uint8Array.prototype, 'bytes arrive as a plain Uint8Array, not a Buffer')
    t.same(codec.decodeDelivery(codec.encodeDelivery(message, {})), { message, info: {} })
    t.same(codec.decodeDelivery(codec.encodeDelivery(message, { group: 'g', offset: 3, epoch: 'e' })), { message, info: { group: 'g', offset: 3, epoch: 'e' } })
    t.same(codec.decodeDelivery(codec.encodeDelivery(message, { group: 'g' })), { message, info: { group: 'g' } })
    t.same(codec.decodeObject(codec.encodeValue({ name: 'Ada', tags: ['x'] })), { name: 'Ada', tags: ['x'] })
  })

  t.test(`${name}: a position appended by the backend decodes after the envelope`, async t => {
    const stamped = Buffer.concat([codec.encodeEnvelope([Envelope.group, message]), new Packr({ useRecords: false }).pack([7, 'epoch'])])
    const envelope = codec.decodeEnvelope(stamped)
    t.same(envelope?.slice(2), [7, 'epoch'])
    t.same(reviveMessage(envelope?.[1]), message)
  })

  t.test(`${name}: what a layer did not write is refused`, async t => {
    t.equal(codec.decodeEnvelope(Buffer.from('not msgpack at all \xc1')), undefined)
    t.equal(codec.decodeEnvelope(new Packr().pack({ type: 'a message, not an envelope' })), undefined)
    t.throws(() => codec.decodeDelivery(new Packr().pack('text')), { code: 'FST_CHANNELS_INVALID_MESSAGE' })
  })
}

t.test('__proto__ keys stay data', async t => {
  const codec = new WireCodec()
  const poisoned = JSON.parse('{"type":"x","__proto__":{"polluted":true}}') as { type: string }
  const revived = codec.decodeDelivery(codec.encodeDelivery(poisoned, {})).message
  t.equal(Object.getPrototypeOf(revived), Object.prototype)
  t.ok(Object.hasOwn(revived, '__proto__'))
  t.equal(({} as { polluted?: boolean }).polluted, undefined)
})

t.test('revived values are checked', async t => {
  t.throws(() => reviveMessage('text'), { code: 'FST_CHANNELS_INVALID_MESSAGE' })
  t.throws(() => reviveMessage(new Map([['type', 1]])), { code: 'FST_CHANNELS_INVALID_MESSAGE' })
  t.throws(() => reviveObject([1]), { code: 'FST_CHANNELS_INVALID_MESSAGE' })
  t.throws(() => reviveMessage(new Set([1])), { message: /unexpected value/ })
  let deep: unknown = 'leaf'
  for (let i = 0; i < 100; i++) deep = [deep]
  t.throws(() => reviveMessage(new Map<string, unknown>([['type', 'x'], ['deep', deep]])), { message: /nested too deep/ })
})

t.test('a payload sealed with a key this codec lacks is refused and reported', async t => {
  let reported = 0
  const [older, current] = [randomBytes(32), randomBytes(32)]
  const sender = new WireCodec(new PayloadCipher([current, older]))
  const stale = new WireCodec(new PayloadCipher([older]), () => { reported++ })
  const rotated = new WireCodec(new PayloadCipher([current, older]))
  const sealedByOld = new WireCodec(new PayloadCipher([older])).encodeEnvelope([Envelope.flush, 'x'])
  t.same(rotated.decodeEnvelope(sealedByOld), [Envelope.flush, 'x'], 'any key opens')
  t.equal(stale.decodeEnvelope(sender.encodeEnvelope([Envelope.flush, 'x'])), null, 'the first key seals: null, what no key opens (reported), not undefined, what no layer wrote')
  t.throws(() => stale.decodeDelivery(sender.encodeDelivery(message, {})), { code: 'FST_CHANNELS_INVALID_MESSAGE' })
  t.equal(reported, 2)
  t.equal(new WireCodec().decodeEnvelope(sender.encodeEnvelope([Envelope.flush, 'x'])), undefined, 'an unencrypted layer cannot read it')
})
