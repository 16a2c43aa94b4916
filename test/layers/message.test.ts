import t from 'tap'
import { cloneMessage, copyMessage, MAX_MESSAGE_DEPTH } from '../../lib/layers/message.js'

// The message rules: what may travel, the errors that name the bad value, and copies that share
// nothing with the caller's object.

function refusal (value: unknown): string {
  try {
    copyMessage(value)
  } catch (err) {
    return `${(err as { code: string }).code}: ${(err as Error).message}`
  }
  return 'accepted'
}

t.test('only plain objects with a string type are messages', async t => {
  t.match(refusal(null), /^FST_CHANNELS_INVALID_MESSAGE: message must be a plain object/)
  t.match(refusal([]), /not an array/)
  t.match(refusal(new Map()), /not Map/)
  t.match(refusal({}), /message.type must be a string/)
  t.match(refusal({ type: 1 }), /message.type must be a string/)
  t.equal(refusal(Object.assign(Object.create(null) as object, { type: 'x' })), 'accepted', 'a null-prototype object is plain')
})

t.test('a bad value is refused with its path', async t => {
  t.match(refusal({ type: 'x', when: new Date() }), /message\.when: Date is not allowed/)
  t.match(refusal({ type: 'x', list: [1, undefined] }), /message\.list\[1\]: undefined is not allowed/)
  t.match(refusal({ type: 'x', 'odd key': { f () {} } }), /message\["odd key"\]\.f: function is not allowed/)
  t.match(refusal({ type: 'x', n: NaN }), /message\.n: NaN is not allowed/)
  t.match(refusal({ type: 'x', big: 1n }), /bigint is not allowed/)
  t.match(refusal({ type: 'x', [Symbol('s')]: 1 }), /symbol keys are not allowed/)
  t.match(refusal({ type: 'x', inst: new (class Point {})() }), /message\.inst: Point is not allowed/)
  const cycle: Record<string, unknown> = { type: 'x' }
  cycle.self = { back: cycle }
  t.match(refusal(cycle), /message\.self\.back: circular reference/)
})

t.test(`nesting is limited to ${MAX_MESSAGE_DEPTH} containers below the message`, async t => {
  const nest = (depth: number): unknown => { let v: unknown = 'leaf'; for (let i = 0; i < depth; i++) v = [v]; return v }
  t.equal(refusal({ type: 'x', v: nest(MAX_MESSAGE_DEPTH) }), 'accepted')
  t.match(refusal({ type: 'x', v: nest(MAX_MESSAGE_DEPTH + 1) }), /nested deeper than 64/)
  t.match(refusal({ type: 'x', v: nest(100_000) }), /nested deeper than 64/, 'hostile depth is an error, not a stack overflow')
})

t.test('a copy shares nothing and leaves the original as it was', async t => {
  const bytes = Buffer.from('abc')
  const original = { type: 'x', nested: { list: [1, { deep: true }] }, bytes }
  Object.defineProperty(original, '__proto__', { value: { polluted: true }, enumerable: true, writable: true, configurable: true })
  const copy = copyMessage(original) as unknown as typeof original
  t.same(copy, original)
  t.not(copy.nested, original.nested)
  t.not(copy.nested.list[1], original.nested.list[1])
  t.equal(Object.getPrototypeOf(copy.bytes), Uint8Array.prototype, 'a Buffer arrives as a plain Uint8Array')
  t.not(copy.bytes.buffer, bytes.buffer, 'with its own bytes')
  t.equal(Object.getPrototypeOf(copy), Object.prototype, '__proto__ stays data, the prototype is untouched')
  t.ok(Object.hasOwn(copy, '__proto__'))
  t.notOk(Object.isFrozen(original), 'the caller\'s object is never frozen')
  const clone = cloneMessage(copyMessage(original))
  t.same(clone, copy)
  t.not(clone.nested as unknown, copy.nested)
})
