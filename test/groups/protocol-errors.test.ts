/**
 * Every error path of GroupsConsumer's protocol, through a real socket with frames written by hand:
 * each bad frame is answered with an `error` frame or an error reply carrying a stable code, and
 * logged; nothing reaches a handler unchecked; the connection (and every other) keeps working; only a
 * client that keeps breaking the protocol is closed, with 1008.
 */
import t, { type Test } from 'tap'
import { rawProtocolClient, type RawProtocolClient } from '../helpers/protocol.js'
import { called, roomsApp, type RoomsApp } from './rooms.js'

let server: RoomsApp
t.before(async () => { server = await roomsApp() })
t.teardown(async () => { await server.app.close() })

async function client (t: Test): Promise<RawProtocolClient> {
  const c = await rawProtocolClient(server.url)
  t.teardown(() => { c.ws.terminate() })
  return c
}

/**
 * Sends `frame`; resolves with the answer (presence frames of joined groups aside), after checking
 * that the connection still works.
 */
async function answer (c: RawProtocolClient, frame: unknown): Promise<Record<string, unknown>> {
  c.send(frame)
  const reply = (await c.until(f => f.op !== 'presence')).pop() as Record<string, unknown>
  c.send({ op: 'call', id: 'still-open', action: 'echo', args: 1 })
  const ok = (await c.until(f => f.op !== 'presence')).pop() as Record<string, unknown>
  if (ok.op !== 'reply' || ok.id !== 'still-open' || ok.result !== 1) throw new Error(`connection no longer answers: ${JSON.stringify(ok)}`)
  return reply
}

const badFrames: Array<[string, unknown, Record<string, unknown>]> = [
  ['malformed JSON', '{"op": "join", ', { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /^invalid JSON: / }],
  ['JSON nested deeper than 32', '['.repeat(33) + ']'.repeat(33), { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /nested deeper than 32/ }],
  // A call the safe decoder refuses is still answered by a reply, which its client waits for.
  ['a call with a __proto__ key', '{"op":"call","id":1,"action":"echo","args":{"__proto__":{"admin":true}}}', { op: 'reply', id: 1, error: { code: 'FST_CHANNELS_BAD_FRAME', message: /prototype/ } }],
  ['a call with arguments nested deeper than 32', `{"op":"call","id":"deep","action":"echo","args":${'['.repeat(40)}${']'.repeat(40)}}`, { op: 'reply', id: 'deep', error: { code: 'FST_CHANNELS_BAD_FRAME', message: /nested deeper than 32/ } }],
  ['a join with a __proto__ key', '{"op":"join","group":"room.a","__proto__":{"admin":true}}', { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /prototype/ }],
  ['an array', [{ op: 'join', group: 'room.a' }], { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /JSON object/ }],
  ['a string', '"join"', { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['null', 'null', { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['no op', { group: 'room.a' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /needs an "op"/ }],
  ['an unknown op', { op: 'subscribe', group: 'room.a' }, { op: 'error', code: 'FST_CHANNELS_UNKNOWN_OP', message: /"subscribe"/ }],
  ['an op that is not a string', { op: 7 }, { op: 'error', code: 'FST_CHANNELS_UNKNOWN_OP' }],
  ['a join without a group', { op: 'join' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /"group" string/ }],
  ['a join with a numeric group', { op: 'join', group: 12 }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['a join with a bad since', { op: 'join', group: 'room.a', since: { offset: -1, epoch: 'x' } }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', group: 'room.a', message: /since/ }],
  ['a join with since missing its epoch', { op: 'join', group: 'room.a', since: { offset: 3 } }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', group: 'room.a' }],
  ['a leave without a group', { op: 'leave' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['a call without an id', { op: 'call', action: 'echo' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /"id"/ }],
  ['a call with a fractional id', { op: 'call', id: 1.5, action: 'echo' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['a call with a negative id', { op: 'call', id: -1, action: 'echo' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['a call with an empty id', { op: 'call', id: '', action: 'echo' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['a call with an id of 65 characters', { op: 'call', id: 'x'.repeat(65), action: 'echo' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['a call with an object id', { op: 'call', id: { a: 1 }, action: 'echo' }, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME' }],
  ['a call without an action', { op: 'call', id: 9 }, { op: 'reply', id: 9, error: { code: 'FST_CHANNELS_BAD_FRAME', message: /"action"/ } }]
]

t.test('unreadable frames get an error frame with a stable code, and the connection goes on', async t => {
  for (const [what, frame, expected] of badFrames) {
    // One connection each: a client sending them all at once would be closed, as the last test shows.
    const c = await client(t)
    const reply = await answer(c, frame)
    t.match(reply, expected, what)
    if (reply.op === 'error') t.notOk('id' in reply, `${what}: an error frame, not a reply`)
  }
  // A binary frame cannot be a protocol frame either.
  const c = await client(t)
  c.ws.send(Buffer.from([1, 2, 3]))
  t.match(await c.next(), { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /binary frames/ }, 'a binary frame')
  t.ok(server.logs.some(l => l.level === 40 && /^protocol error: /.test(String(l.msg))), 'protocol errors are logged at warn')
})

t.test('a malformed frame is answered without quoting it: a password in it is neither logged nor sent back', async t => {
  const c = await client(t)
  const reply = await answer(c, '{"op":"call","id":1,"action":"login","args":{"password":hunter2-S3cr3t}}')
  t.match(reply, { op: 'error', code: 'FST_CHANNELS_BAD_FRAME', message: /^invalid JSON: Unexpected token 'h'$/ })
  t.notOk(JSON.stringify(server.logs).includes('hunter2'), 'no log line at any level quotes the frame')
})

t.test('joins that cannot be granted are answered with the group and a code; nothing else', async t => {
  const c = await client(t)
  t.match(await answer(c, { op: 'join', group: 'not a group!' }), { op: 'error', code: 'FST_CHANNELS_INVALID_NAME', group: 'not a group!' }, 'an invalid group name')
  const long = 'room.' + 'x'.repeat(200)
  const reply = await answer(c, { op: 'join', group: long })
  t.match(reply, { op: 'error', code: 'FST_CHANNELS_INVALID_NAME' }, 'a name of 205 characters')
  t.equal(reply.group, undefined, 'a name too long to be valid is not echoed back')
  t.match(await answer(c, { op: 'join', group: 'lobby' }), { op: 'error', code: 'FST_CHANNELS_JOIN_DENIED', group: 'lobby', message: 'Joining group "lobby" was refused' }, 'canJoin() says no')
  t.match(await answer(c, { op: 'join', group: 'room.explode' }), { op: 'error', code: 'FST_CHANNELS_JOIN_FAILED', group: 'room.explode' }, 'canJoin() throws')
  t.ok(server.logs.some(l => l.level === 50 && (l.err as { message?: string } | undefined)?.message === 'permission store down'), 'the failure is logged at error')
  t.match(await answer(c, { op: 'join', group: 'room.yes' }), { op: 'error', code: 'FST_CHANNELS_JOIN_DENIED', group: 'room.yes' }, 'canJoin() returns "yes": refused')
  const mistakes = server.logs.filter(l => l.msg === 'canJoin() returned something other than true or false; join refused')
  t.match(mistakes, [{ level: 40, group: 'room.yes', returned: 'string' }], 'and the mistake is named at warn (a plain false is not)')
  t.ok(await c.nothing(), 'a refused join sends nothing more')

  for (const group of ['room.a', 'room.b', 'room.slow']) t.match(await answer(c, { op: 'join', group }), { op: 'joined', group })
  t.match(await answer(c, { op: 'join', group: 'room.d' }), { op: 'error', code: 'FST_CHANNELS_TOO_MANY_GROUPS', group: 'room.d' }, 'maxJoins (3) reached')
  t.match(await answer(c, { op: 'join', group: 'room.a' }), { op: 'joined', group: 'room.a' }, 'joining a group again is not one more')
  t.equal(await c.nothing(50) && undefined, undefined)
  c.send({ op: 'leave', group: 'room.b' })
  c.send({ op: 'leave', group: 'room.never-joined' })
  t.match(await answer(c, { op: 'join', group: 'room.d' }), { op: 'joined', group: 'room.d' }, 'after a leave there is room again; leaving a group never joined is a no-op')
})

t.test('calls that cannot run get an error reply with their id; the action never runs', async t => {
  const c = await client(t)
  called.length = 0
  for (const action of ['nope', 'constructor', '__proto__', 'close', 'canJoin', 'roomMessage', 'toString']) {
    t.match(await answer(c, { op: 'call', id: action, action, args: {} }), { op: 'reply', id: action, error: { code: 'FST_CHANNELS_UNKNOWN_ACTION' } }, `"${action}" is not an action`)
  }
  t.match(await answer(c, { op: 'call', id: 1, action: 'post', args: { room: 'a' } }),
    { op: 'reply', id: 1, error: { code: 'FST_CHANNELS_INVALID_ARGS', message: /must have required property 'text'/ } }, 'a missing argument')
  t.match(await answer(c, { op: 'call', id: 2, action: 'post', args: { room: 'a', text: 'x'.repeat(21) } }),
    { op: 'reply', id: 2, error: { code: 'FST_CHANNELS_INVALID_ARGS', message: /args\/text must NOT have more than 20 characters/ } }, 'too long a text')
  t.match(await answer(c, { op: 'call', id: 3, action: 'post' }), { op: 'reply', id: 3, error: { code: 'FST_CHANNELS_INVALID_ARGS' } }, 'no arguments at all')
  t.match(await answer(c, { op: 'call', id: 4, action: 'echo', args: 'y'.repeat(70_000) }),
    { op: 'reply', id: 4, error: { code: 'FST_CHANNELS_ARGS_TOO_LARGE', message: /at most 65536/ } }, 'arguments over maxArgsBytes')
  t.same(called.filter(name => name !== 'echo'), [], 'no refused call reached a method')

  t.match(await answer(c, { op: 'call', id: 5, action: 'fail' }), { op: 'reply', id: 5, error: { code: 'FST_CHANNELS_ACTION_FAILED', message: 'Action "fail" failed' } },
    'an action that throws: a generic error, its message kept from the client')
  t.ok(server.logs.some(l => l.level === 50 && l.msg === 'action failed' && (l.err as { message?: string }).message === 'database down'), 'and logged at error with the cause')
  t.match(await answer(c, { op: 'call', id: 6, action: 'refuse' }), { op: 'reply', id: 6, error: { code: 'ROOM_FULL', message: 'room is full' } },
    'an error meant for the client (4xx statusCode and a code) is sent as it is')
  t.match(await answer(c, { op: 'call', id: 7, action: 'bigint' }), { op: 'reply', id: 7, error: { code: 'FST_CHANNELS_ACTION_FAILED' } }, 'a result that is not JSON')
  t.match(await answer(c, { op: 'call', id: 8, action: 'post', args: { room: 'a', text: 'hi' } }), { op: 'reply', id: 8, result: { offset: 1 } }, 'a good call after all that')
})

t.test('a client that keeps breaking the protocol is closed with 1008; the others are not touched', async t => {
  const bystander = await client(t)
  bystander.send({ op: 'join', group: 'room.watch' })
  t.match(await bystander.next(), { op: 'joined' })
  const c = await client(t)
  for (let i = 0; i < 11; i++) c.send('not json')
  const { code, reason } = await c.closed
  t.equal(code, 1008)
  t.equal(reason, 'too many protocol errors')
  t.ok(server.logs.some(l => l.msg === 'client keeps breaking the protocol; closing with 1008'), 'logged')

  const once = await client(t)
  for (let i = 0; i < 5; i++) once.send({ op: 'nope' })
  for (let i = 0; i < 5; i++) t.match(await once.next(), { op: 'error', code: 'FST_CHANNELS_UNKNOWN_OP' })
  t.equal(once.ws.readyState, once.ws.OPEN, 'a few errors are answered, not punished')

  bystander.send({ op: 'call', id: 1, action: 'post', args: { room: 'watch', text: 'still here' } })
  // The reply goes first: the message is queued behind the call that sent it.
  const frames = (await bystander.until(f => f.op === 'message')).filter(f => f.op !== 'presence')
  t.match(frames, [{ op: 'reply', id: 1, result: { offset: 1 } }, { op: 'message', group: 'room.watch', data: { text: 'still here' } }], 'the bystander goes on')
})

t.test('the protocol-error count drains by the monotonic clock: a wall clock stepped back an hour does not close a client for its second error', async t => {
  const c = await client(t)
  c.send({ op: 'nope' })
  t.match(await c.next(), { op: 'error', code: 'FST_CHANNELS_UNKNOWN_OP' })
  const realNow = Date.now
  Date.now = () => realNow() - 3_600_000
  t.teardown(() => { Date.now = realNow })
  const reply = await answer(c, { op: 'nope' })
  Date.now = realNow
  t.match(reply, { op: 'error', code: 'FST_CHANNELS_UNKNOWN_OP' }, 'answered, and the connection still works')
})
