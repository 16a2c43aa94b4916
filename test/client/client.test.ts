/**
 * ChannelsClient in Node (with `ws`, as on Node 20) against a real server: joins, messages,
 * presence and calls; every way a call or a join can fail; a dropped socket that loses nothing and
 * repeats nothing; a restarted in-memory server whose history is gone (gap); close(); frames of
 * another protocol.
 */
import t, { type Test } from 'tap'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { ChannelsClient, ChannelsClientError, type ClientState, type PresenceEntry } from '../../lib/client/index.js'
import { InMemoryChannelLayer, type ApiOf } from '../../lib/index.js'
import { eventually } from '../helpers/app.js'
import { Rooms, roomsApp, type RoomsApp } from '../groups/rooms.js'
import { clientRejection } from '../helpers/client.js'

type RoomsApi = ApiOf<typeof Rooms>

let server: RoomsApp
t.before(async () => { server = await roomsApp() })
t.teardown(async () => { await server.app.close() })

function client (t: Test, query = '', options: { callTimeout?: number, heartbeat?: number } = {}): ChannelsClient<RoomsApi> {
  const c = new ChannelsClient<RoomsApi>(`${server.url}${query}`, { WebSocket, ...options })
  t.teardown(() => { c.close() })
  return c
}

async function opened (c: ChannelsClient<RoomsApi>): Promise<void> {
  await eventually(() => c.state === 'open', 5000)
}

t.test('join, messages with their positions, presence, calls', async t => {
  const ada = client(t, '?name=Ada')
  const states: ClientState[] = []
  ada.on('state', state => { states.push(state) })
  const got: Array<{ data: unknown, offset?: number }> = []
  let people: PresenceEntry[] = []
  const sub = ada.join('room.lobby', {
    message (data, info) { got.push({ data, offset: info.offset }) },
    presence (entries) { people = entries }
  })
  const join = await sub.ready
  t.match(join, { position: { offset: 0, epoch: String }, recovered: false }, 'ready resolves with the GroupJoin')
  t.same(states, ['open'])
  await eventually(() => people.length === 1)
  t.match(people, [{ info: { name: 'Ada' } }], 'the presence list holds Ada')

  const grace = client(t, '?name=Grace')
  await grace.join('room.lobby').ready
  await eventually(() => people.length === 2)
  t.same(people.map(p => p.info.name).sort(), ['Ada', 'Grace'], 'Grace\'s join reaches Ada\'s list')

  const reply = await grace.call('post', { room: 'lobby', text: 'hello' })
  t.same(reply, { offset: 1 }, 'call() resolves with the method\'s result')
  await eventually(() => got.length === 1)
  t.same(got, [{ data: { type: 'room.message', text: 'hello' }, offset: 1 }], 'the message, with its offset')
  t.same(sub.position, { offset: 1, epoch: join.position?.epoch }, 'the subscription remembers the last position')

  grace.close()
  await eventually(() => people.length === 1)
  t.same(people.map(p => p.info.name), ['Ada'], 'and her leave')
  t.equal(await ada.call('echo'), undefined, 'args may be left out when the action takes none')
})

t.test('calls and joins that fail reject with a stable code', async t => {
  const c = client(t)
  t.match(await clientRejection(c.call('post', { room: 'lobby', text: 'x'.repeat(30) })), { code: 'FST_CHANNELS_INVALID_ARGS', message: /args\/text/ })
  t.match(await clientRejection(c.call('refuse')), { code: 'ROOM_FULL', message: 'room is full' })
  t.match(await clientRejection(c.call('fail')), { code: 'FST_CHANNELS_ACTION_FAILED' })
  t.match(await clientRejection((c as unknown as ChannelsClient).call('missing', {})), { code: 'FST_CHANNELS_UNKNOWN_ACTION' })
  t.match(await clientRejection(c.call('wait', { ms: 300 }, { timeout: 50 })), { code: 'FST_CHANNELS_CALL_TIMEOUT', message: 'no reply to "wait" within 50 ms' })
  t.match(await clientRejection(c.call('echo', { n: 1n } as unknown as undefined)), { code: 'FST_CHANNELS_INVALID_ARGS' }, 'arguments that are not JSON never leave')
  // 2^31 ms and more: a timer would fire at once.
  for (const timeout of [0, -5, Number.NaN, Infinity, 2 ** 31]) {
    t.match(await clientRejection(c.call('echo', undefined, { timeout })), { code: 'FST_CHANNELS_INVALID_OPTION', message: /timeout must be a positive number/ },
      `a call with timeout ${timeout} rejects (it does not throw)`)
  }
  t.equal(await c.call('echo'), undefined, 'the next call works')
  t.match(await clientRejection(c.join('lobby').ready), { code: 'FST_CHANNELS_JOIN_DENIED' }, 'a refused join rejects ready')
  const errors: unknown[] = []
  const explode = c.join('room.explode', { error (err) { errors.push(err) } })
  t.match(await clientRejection(explode.ready), { code: 'FST_CHANNELS_JOIN_FAILED' }, 'a canJoin() that throws rejects ready: it is not retried')
  t.throws(() => c.join('not a group!'), { code: 'FST_CHANNELS_INVALID_NAME' }, 'an invalid name is refused before it is sent')
  // From plain JavaScript: none is turned into text that would pass ('undefined', '123').
  for (const name of [undefined, null, 123, {}, ['room.arr']]) {
    t.throws(() => c.join(name as unknown as string), { code: 'FST_CHANNELS_INVALID_NAME' }, `${JSON.stringify(name) ?? 'undefined'} is refused as a name`)
  }
  t.equal(await c.call('echo', 'still'), 'still', 'and nothing of them was sent')
  const sub = c.join('room.twice')
  t.throws(() => c.join('room.twice'), { code: 'FST_CHANNELS_ALREADY_JOINED' })
  await sub.ready
  sub.leave()
  const early = c.join('room.twice')
  early.leave()
  t.match(await clientRejection(early.ready), { code: 'FST_CHANNELS_LEFT' }, 'left before joined')
  await c.join('room.twice').ready
  t.pass('and joined again after that')
  t.same(errors, [], 'a join refused the first time rejects ready; error() is for later refusals')
  t.throws(() => new ChannelsClient('/ws/rooms', { WebSocket }), { code: 'FST_CHANNELS_INVALID_OPTION' }, 'a relative URL outside a browser')
  t.throws(() => new ChannelsClient(server.url, { WebSocket, callTimeout: -1 }), { code: 'FST_CHANNELS_INVALID_OPTION' })
  t.throws(() => new ChannelsClient(server.url, { WebSocket, connectTimeout: 2 ** 31 }), { code: 'FST_CHANNELS_INVALID_OPTION', message: /at most 2147483647/ })
  t.throws(() => new ChannelsClient(server.url, { WebSocket, protocols: ['not a token'] }), { code: 'FST_CHANNELS_INVALID_OPTION', message: /new WebSocket\(\) refused/ },
    'what the WebSocket constructor refuses is thrown to the caller, not retried')
  const global = globalThis as { WebSocket?: unknown }
  const saved = global.WebSocket
  delete global.WebSocket
  try {
    t.throws(() => new ChannelsClient(server.url), { code: 'FST_CHANNELS_INVALID_OPTION', message: /pass \{ WebSocket \}/ }, 'Node 20 has no global WebSocket')
  } finally {
    if (saved !== undefined) global.WebSocket = saved
  }
})

t.test('a dropped socket: calls in flight are rejected, the client comes back, nothing is lost or repeated', async t => {
  const c = client(t, '?name=Ada')
  const offsets: number[] = []
  let gaps = 0
  const sub = c.join('room.drop', { message (data, info) { offsets.push(info.offset as number) }, gap () { gaps++ } })
  await sub.ready
  const layer = server.app.channelLayer
  for (let i = 0; i < 3; i++) await layer.groupSend('room.drop', { type: 'line', i })
  await eventually(() => offsets.length === 3)

  const states: string[] = []
  c.on('state', (state, detail) => { states.push(`${state}${detail.code !== undefined ? ` ${detail.code}` : ''}`) })
  const inFlight = c.call('wait', { ms: 1000 })
  await new Promise(resolve => setTimeout(resolve, 50))
  for (const socket of server.app.websocketServer.clients) socket.terminate()
  t.match(await clientRejection(inFlight), { code: 'FST_CHANNELS_CONNECTION_LOST' }, 'the call in flight is rejected: whether it ran is unknown')
  for (let i = 3; i < 6; i++) await layer.groupSend('room.drop', { type: 'line', i })
  const queued = c.call('echo', 'sent once back')
  await opened(c)
  t.equal(await queued, 'sent once back', 'a call made while disconnected is sent once connected')
  for (let i = 6; i < 8; i++) await layer.groupSend('room.drop', { type: 'line', i })
  await eventually(() => offsets.length >= 8, 5000)
  t.same(offsets, [1, 2, 3, 4, 5, 6, 7, 8], 'every message once, in order, across the drop')
  t.equal(gaps, 0, 'recovered: no gap')
  t.match(states, ['reconnecting 1006', 'open'])
  t.equal(server.app.websocketServer.clients.size, 1, 'one socket at the server')
})

t.test('join(group, { since }): a new client (a page reloaded) goes on from the position an earlier one reached', async t => {
  const layer = server.app.channelLayer
  const first = client(t)
  const before: number[] = []
  const sub = first.join('room.reload', { message (data, info) { before.push(info.offset as number) } })
  await sub.ready
  for (let i = 0; i < 3; i++) await layer.groupSend('room.reload', { type: 'line', i })
  await eventually(() => before.length === 3)
  const saved = JSON.parse(JSON.stringify(sub.position)) as typeof sub.position
  first.close()
  for (let i = 3; i < 5; i++) await layer.groupSend('room.reload', { type: 'line', i })

  const second = client(t)
  const after: number[] = []
  let gaps = 0
  const resumed = second.join('room.reload', { since: saved, message (data, info) { after.push(info.offset as number) }, gap () { gaps++ } })
  t.match(await resumed.ready, { recovered: true }, 'the first join recovers from the saved position')
  await layer.groupSend('room.reload', { type: 'line', i: 5 })
  await eventually(() => after.length === 3)
  t.same(after, [4, 5, 6], 'what was sent since, then what is new: each once, none before it')
  t.equal(gaps, 0)
  t.same(resumed.position?.offset, 6)

  const third = client(t)
  const late: number[] = []
  let thirdGaps = 0
  const lost = third.join('room.reload', { since: { offset: 2, epoch: 'another-epoch' }, message (data, info) { late.push(info.offset as number) }, gap () { thirdGaps++ } })
  t.match(await lost.ready, { recovered: false, position: { offset: 6 } }, 'a position that cannot be recovered is not')
  t.equal(thirdGaps, 1, 'and gap() says so')
  await layer.groupSend('room.reload', { type: 'line', i: 6 })
  await eventually(() => late.length === 1)
  t.same(late, [7], 'then the new messages only')

  t.throws(() => third.join('room.other', { since: { offset: -1, epoch: 'e' } }), { code: 'FST_CHANNELS_INVALID_OPTION' }, 'a malformed position is refused')
  t.throws(() => third.join('room.other', { since: 'yesterday' as never }), { code: 'FST_CHANNELS_INVALID_OPTION' })
})

t.test('a group without history: every re-join runs gap(), since nothing can be recovered; the first join does not', async t => {
  const own = await roomsApp({ layer: new InMemoryChannelLayer({ groups: { 'room.kept': { history: { size: 10, ttl: 60 } } } }) })
  t.teardown(() => own.app.close())
  const c = new ChannelsClient<RoomsApi>(own.url, { WebSocket, minDelay: 20 })
  t.teardown(() => { c.close() })
  let gaps = 0
  await c.join('room.plain', { gap () { gaps++ } }).ready
  t.equal(gaps, 0, 'no gap() on the first join')
  for (let drop = 1; drop <= 2; drop++) {
    for (const socket of own.app.websocketServer.clients) socket.terminate()
    await eventually(() => gaps === drop, 5000)
  }
  t.pass('one gap() per re-join')
})

t.test('a restarted in-memory server has lost its history: gap(), then messages again', async t => {
  const own = await roomsApp()
  const url = own.url
  let current = own
  t.teardown(() => current.app.close())
  const c = new ChannelsClient<RoomsApi>(url, { WebSocket, minDelay: 50 })
  t.teardown(() => { c.close() })
  const texts: unknown[] = []
  let gaps = 0
  let readies = 0
  const sub = c.join('room.restart', { message (data) { texts.push((data as { text: string }).text) }, gap () { gaps++ } })
  sub.ready.then(() => { readies++ }, () => {})
  await sub.ready
  await c.call('post', { room: 'restart', text: 'before' })
  await eventually(() => texts.length === 1)

  await current.app.close()
  await eventually(() => c.state === 'reconnecting')
  current = await roomsApp({}, undefined, own.port)
  await eventually(() => gaps === 1, 10_000)
  t.pass('gap() once the new server says it cannot recover')
  await current.app.channelLayer.groupSend('room.restart', { type: 'room.message', text: 'after' })
  await eventually(() => texts.length === 2)
  t.same(texts, ['before', 'after'])
  t.equal(readies, 1, 'ready resolved once, for the first join')
})

t.test('close(): pending calls and joins are rejected, no reconnect', async t => {
  const c = new ChannelsClient<RoomsApi>(server.url, { WebSocket })
  await opened(c)
  const pending = c.call('wait', { ms: 500 })
  const joining = c.join('room.closing')
  c.close()
  t.equal(c.state, 'closed')
  t.match(await clientRejection(pending), { code: 'FST_CHANNELS_CLIENT_CLOSED' })
  t.match(await clientRejection(joining.ready), { code: 'FST_CHANNELS_CLIENT_CLOSED' })
  t.match(await clientRejection(c.call('echo')), { code: 'FST_CHANNELS_CLIENT_CLOSED' })
  t.throws(() => c.join('room.after'), { code: 'FST_CHANNELS_CLIENT_CLOSED' })
  await eventually(() => server.app.websocketServer.clients.size === 0, 2000)
  t.pass('the server sees the socket closed')
})

t.test('close() from a state listener: the client stays closed, and later listeners hear only that', async t => {
  const c = new ChannelsClient<RoomsApi>(server.url, { WebSocket, minDelay: 10, maxDelay: 20 })
  t.teardown(() => { c.close() })
  await opened(c)
  const heard: ClientState[] = []
  c.on('state', state => { if (state === 'reconnecting') c.close() })
  c.on('state', state => { heard.push(state) })
  for (const socket of server.app.websocketServer.clients) socket.terminate()
  await eventually(() => c.state === 'closed', 2000)
  t.same(heard, ['closed'], 'no \'reconnecting\' after \'closed\'')
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(c.state, 'closed')
  t.equal(server.app.websocketServer.clients.size, 0, 'no new socket')
})

t.test('a server frame not of the protocol is reported as FST_CHANNELS_BAD_FRAME, never thrown: the client and its calls go on', async t => {
  // Another app at the URL, or a proxy: frames that are JSON but not this protocol's.
  const joined = '{"op":"joined","group":"room.odd","position":null,"recovered":false,"presence":'
  const bad = ['null', '42', '"hello"', '[]', `${joined}5}`, `${joined}"notalist"}`, `${joined}[{"info":{}}]}`]
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(wss, 'listening')
  t.teardown(() => { wss.close() })
  wss.on('connection', socket => {
    socket.on('message', data => {
      const frame = JSON.parse(String(data)) as { op: string, id?: number }
      if (frame.op !== 'call') return
      for (const text of bad) socket.send(text)
      // A reply whose error is not an object: the call is not settled by it…
      socket.send(JSON.stringify({ op: 'reply', id: frame.id, error: null }))
      // …but by the good reply after it.
      socket.send(JSON.stringify({ op: 'reply', id: frame.id, result: 'still here' }))
    })
  })
  const c = new ChannelsClient<RoomsApi>(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`, { WebSocket })
  t.teardown(() => { c.close() })
  const errors: ChannelsClientError[] = []
  c.on('error', err => { errors.push(err as ChannelsClientError) })
  const sub = c.join('room.odd')
  t.equal(await c.call('echo', 'x'), 'still here', 'the call resolves with its good reply')
  t.equal(errors.length, bad.length + 1, 'each bad frame is reported once')
  t.ok(errors.every(err => err.code === 'FST_CHANNELS_BAD_FRAME'), 'as FST_CHANNELS_BAD_FRAME')
  t.match(errors[0].message, /not of the protocol.*: null$/, 'saying what came')
  t.equal(c.state, 'open', 'the socket stays open')
  t.same(sub.presence, [], 'a presence that is no list of entries is not taken for one')
})

t.test('an unasked presence list (refresh) is no join\'s answer: one that crosses a leave and a re-join is dropped, one for the group joined updates its list', async t => {
  const epoch = 'e1'
  const ada = { channel: 'c.ada', info: { name: 'Ada' } }
  const bob = { channel: 'c.bob', info: { name: 'Bob' } }
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(wss, 'listening')
  t.teardown(() => { wss.close() })
  let joins = 0
  wss.on('connection', socket => {
    socket.on('message', data => {
      const frame = JSON.parse(String(data)) as { op: string, group?: string }
      if (frame.op !== 'join') return
      joins++
      if (joins === 1) {
        socket.send(JSON.stringify({ op: 'joined', group: frame.group, position: { offset: 1, epoch }, recovered: false, presence: [ada] }))
        // Announcements were skipped: the whole list again, unasked.
        socket.send(JSON.stringify({ op: 'joined', group: frame.group, position: { offset: 1, epoch }, recovered: true, presence: [ada, bob], refresh: true }))
        return
      }
      // The server sent a refresh for the membership before, then read the leave and the join.
      socket.send(JSON.stringify({ op: 'joined', group: frame.group, position: { offset: 1, epoch }, recovered: true, presence: [ada], refresh: true }))
      socket.send(JSON.stringify({ op: 'joined', group: frame.group, position: { offset: 5, epoch }, recovered: false, presence: [bob] }))
    })
  })
  const c = new ChannelsClient<RoomsApi>(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`, { WebSocket })
  t.teardown(() => { c.close() })
  const first = c.join('room.refresh')
  t.match(await first.ready, { position: { offset: 1 }, recovered: false })
  await eventually(() => first.presence.length === 2, 2000)
  t.same(first.presence, [ada, bob], 'a refresh for the group joined replaces its list')
  first.leave()
  let gaps = 0
  const again = c.join('room.refresh', { gap: () => { gaps++ } })
  t.same(await again.ready, { position: { offset: 5, epoch }, recovered: false }, 'the new subscription gets its own join\'s answer, not the old membership\'s refresh')
  t.same(again.presence, [bob], 'and its list')
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(gaps, 0, 'no gap() for a brand-new subscription')
})

t.test('a client in more groups than the rate limit\'s burst joins them all at once without being closed; its other frames still count', async t => {
  // 2 frames a minute, and a consumer that allows 3 groups: the joins as the client connects are not metered.
  const limited = await roomsApp({ rateLimit: { messages: 2, interval: 60_000 } })
  t.teardown(() => limited.app.close())
  const client = new ChannelsClient(limited.url, { WebSocket, minDelay: 50, maxDelay: 100 })
  t.teardown(() => { client.close() })
  const states: Array<[ClientState, number | undefined, string | undefined]> = []
  client.on('state', (state, detail) => { states.push([state, detail.code, detail.reason]) })
  const subs = ['room.a', 'room.b', 'room.c'].map(group => client.join(group))
  await Promise.all(subs.map(async sub => await sub.ready))
  t.same(states, [['open', undefined, undefined]], 'three joins at once: all answered, the socket kept')
  t.equal(await client.call('echo', 1), 1)
  t.equal(await client.call('echo', 2), 2)
  await t.rejects(client.call('echo', 3), { code: 'FST_CHANNELS_CONNECTION_LOST' }, 'the third call is over the limit')
  t.match(states.at(-1), ['reconnecting', 1008, 'rate limit'], 'and closes the socket with 1008')
})

t.test('in Node (ws), a call resumes before message() has what its action sent, in the order the wire has them', async t => {
  const c = client(t)
  const seen: string[] = []
  const sub = c.join<{ text: string }>('room.order', { message: (data) => { seen.push(`message ${data.text}`) } })
  await sub.ready
  // Fired together: replies and messages come back in few TCP chunks, several frames each.
  await Promise.all(Array.from({ length: 50 }, async (_, i) => {
    await c.call('post', { room: 'order', text: String(i) })
    seen.push(`reply ${i}`)
  }))
  await eventually(() => seen.filter(s => s.startsWith('message')).length === 50, 5000)
  const late = Array.from({ length: 50 }, (_, i) => i).filter(i => seen.indexOf(`message ${i}`) < seen.indexOf(`reply ${i}`))
  t.same(late, [], 'no message reached message() before its call resumed')
})

t.test('a refused handshake says why in the reconnecting state (ws gives the status), and is retried', async t => {
  const refusing = await roomsApp({ getUser: () => { throw Object.assign(new Error('token expired'), { statusCode: 401 }) } })
  t.teardown(async () => { await refusing.app.close() })
  const c = new ChannelsClient<RoomsApi>(refusing.url, { WebSocket, minDelay: 20, maxDelay: 50 })
  t.teardown(() => { c.close() })
  const details: Array<{ code?: number, reason?: string, attempt?: number }> = []
  c.on('state', (state, detail) => { if (state === 'reconnecting') details.push(detail) })
  await eventually(() => details.length >= 2, 5000)
  t.match(details[0], { code: 1006, reason: 'Unexpected server response: 401', attempt: 1 })
  t.match(details[1], { code: 1006, reason: 'Unexpected server response: 401', attempt: 2 }, 'tried again, with the same answer')
})

t.test('a socket that does not open within connectTimeout is given up with the reason connect timeout', async t => {
  const { createServer } = await import('node:net')
  const sockets = new Set<import('node:net').Socket>()
  // Takes the connection, never answers the upgrade.
  const silent = createServer(socket => { sockets.add(socket) })
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => { for (const socket of sockets) socket.destroy(); silent.close() })
  const c = new ChannelsClient<RoomsApi>(`ws://127.0.0.1:${(silent.address() as AddressInfo).port}/`, { WebSocket, connectTimeout: 100, minDelay: 1000 })
  t.teardown(() => { c.close() })
  const details: Array<{ code?: number, reason?: string }> = []
  c.on('state', (state, detail) => { if (state === 'reconnecting') details.push(detail) })
  await eventually(() => details.length >= 1, 3000)
  t.match(details[0], { code: 1006, reason: 'connect timeout' })
})

t.test('a client whose own event loop stalls past its heartbeat keeps a socket the server still answers', async t => {
  const c = client(t, '', { heartbeat: 300 })
  await opened(c)
  const reasons: string[] = []
  c.on('state', (state, detail) => { if (state === 'reconnecting') reasons.push(String(detail.reason)) })
  const busy = (ms: number): void => { const end = performance.now() + ms; while (performance.now() < end); }
  // An app timer as long as the heartbeat, blocking longer than it: the pong waits while the next beat comes due.
  const stalls = setInterval(() => { busy(400) }, 300)
  await new Promise(resolve => setTimeout(resolve, 3000))
  clearInterval(stalls)
  t.same(reasons, [], 'not given up')
  t.equal(c.state, 'open')
})
