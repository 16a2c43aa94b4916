import t from 'tap'
import { isJoin, isPing, readFrame } from '../../lib/groups/frames.js'

// Reading a client's frame: in turn (readFrame), or before its turn from the raw text (isPing,
// isJoin), where a frame that is not what it looks like must not pass for it.

t.test('readFrame: each op typed, a bad one refused with the error to answer it with', async t => {
  t.same(readFrame({ op: 'join', group: 'room.a' }), { op: 'join', group: 'room.a', since: undefined })
  t.same(readFrame({ op: 'ping' }), { op: 'ping' })
  t.match(readFrame({ op: 'join', group: 'room.a', since: { offset: -1, epoch: 'e' } }), { op: 'refused', error: { code: 'FST_CHANNELS_BAD_FRAME' }, group: 'room.a' })
  t.match(readFrame({ op: 'dance' }), { op: 'refused', error: { code: 'FST_CHANNELS_UNKNOWN_OP' } })
  t.match(readFrame([]), { op: 'refused', error: { code: 'FST_CHANNELS_BAD_FRAME' } })
})

t.test('isPing: a ping, however spaced; nothing else, and nothing that only mentions one', async t => {
  for (const text of ['{"op":"ping"}', '{ "op" : "ping" }']) t.ok(isPing(Buffer.from(text)), text)
  for (const text of ['{"op":"call","id":1,"action":"ping"}', '{"op":"ping"', '"ping"', '{"op":"pong"}', `{"op":"ping","pad":"${'x'.repeat(100)}"}`]) {
    t.notOk(isPing(Buffer.from(text)), text)
  }
})

t.test('isJoin: a join; not a frame that only mentions one, nor one longer than any join', async t => {
  t.ok(isJoin(Buffer.from('{"op":"join","group":"room.a","since":{"offset":3,"epoch":"abc"}}')))
  for (const text of ['{"op":"call","id":1,"action":"post","args":{"text":"join"}}', '{"op":"ping","join":1}', '{"op":"leave","group":"join"}', `{"op":"join","group":"${'a'.repeat(2000)}"}`]) {
    t.notOk(isJoin(Buffer.from(text)), text.slice(0, 60))
  }
})
