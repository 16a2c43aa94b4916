/**
 * One encoding for the members a text goes to: the same result for the same text (also a copy of
 * it, as each member's JSON is), a new one when the text changes, none for a text too large to keep.
 */
import t from 'tap'
import { encodedOnce } from '../../lib/connection/shared-encoding.js'

t.test('the last text is encoded once; a change encodes again', async t => {
  let calls = 0
  const bytesOf = encodedOnce(text => { calls++; return Buffer.from(text) })
  const first = bytesOf(JSON.stringify({ a: 1 }))
  const again = bytesOf(JSON.stringify({ a: 1 }))
  t.equal(again, first, 'an equal text built anew gets the same Buffer')
  t.equal(calls, 1)
  const other = bytesOf('{"a":2}')
  t.not(other, first)
  t.same(other, Buffer.from('{"a":2}'))
  t.equal(calls, 2)
  t.not(bytesOf(JSON.stringify({ a: 1 })), first, 'only the last text is remembered')
  t.equal(calls, 3)
})

t.test('a text over 64 KiB is not kept', async t => {
  let calls = 0
  const bytesOf = encodedOnce(text => { calls++; return Buffer.from(text) })
  t.equal(bytesOf('x'.repeat(64 * 1024 + 1)), undefined)
  t.equal(calls, 0)
  t.ok(bytesOf('x'.repeat(64 * 1024)), 'up to 64 KiB is')
})
