/**
 * The event-stream wire format on its own: what one event becomes, and what is refused because a
 * reader would parse it as something else (a forged field, a second event).
 */
import t from 'tap'
import { EVENT_STREAM_HEADERS, encodeEvent, isEventStream } from '../lib/server-sent-events.js'

t.test('an event: id, event and one data line per line; data that is not a string is JSON', async t => {
  t.equal(encodeEvent({ data: 'hello' }), 'data: hello\n\n')
  t.equal(encodeEvent({ data: 'a\nb\r\nc\rd', event: 'note', id: 'x:7' }), 'id: x:7\nevent: note\ndata: a\ndata: b\ndata: c\ndata: d\n\n')
  t.equal(encodeEvent({ data: { text: 'two\nlines', n: 1 } }), 'data: {"text":"two\\nlines","n":1}\n\n', 'JSON escapes its line breaks')
  t.equal(encodeEvent({ data: '', id: 12 }), 'id: 12\ndata: \n\n', 'a number id; empty data is one empty line')
  t.equal(encodeEvent({ data: null }), 'data: null\n\n')
  t.equal(encodeEvent({ data: 'x', id: '' }), 'id: \ndata: x\n\n', 'an empty id resets the browser\'s lastEventId')
})

t.test('what would forge fields or events is refused with InvalidEventError', async t => {
  const bad: Array<[string, unknown]> = [
    ['a line break in event', { data: 'x', event: 'a\nid: 1' }],
    ['a carriage return in event', { data: 'x', event: 'a\rb' }],
    ['a line break in id', { data: 'x', id: '1\ndata: forged' }],
    ['CRLF in id', { data: 'x', id: '1\r\n' }],
    ['NUL in id', { data: 'x', id: 'a\0b' }],
    ['an id that is not a string or finite number', { data: 'x', id: Infinity }],
    ['an event name that is not a string', { data: 'x', event: 5 }],
    ['no data', { event: 'x' }],
    ['data JSON cannot encode', { data: 10n }],
    ['data that encodes to nothing', { data: () => 1 }],
    ['not an object', 'data: x'],
    ['null', null]
  ]
  for (const [what, message] of bad) {
    let caught: unknown
    try { encodeEvent(message as never) } catch (err) { caught = err }
    t.match(caught, { code: 'FST_CHANNELS_INVALID_EVENT' }, what)
    t.ok(caught instanceof TypeError, `${what}: a TypeError`)
  }
  const cyclic: Record<string, unknown> = {}
  cyclic.self = cyclic
  t.throws(() => encodeEvent({ data: cyclic }), { code: 'FST_CHANNELS_INVALID_EVENT' }, 'a cycle')
})

t.test('isEventStream and the default head', async t => {
  t.ok(isEventStream('text/event-stream'))
  t.ok(isEventStream('Text/Event-Stream; charset=utf-8'))
  t.notOk(isEventStream('text/event-streams'))
  t.notOk(isEventStream('application/json'))
  t.notOk(isEventStream(undefined))
  t.ok(isEventStream(EVENT_STREAM_HEADERS['content-type']))
  t.equal(EVENT_STREAM_HEADERS['cache-control'], 'no-cache')
})
