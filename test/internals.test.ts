/**
 * The reaches into Fastify, @fastify/websocket, ws and Node's http internals: each one's guard. Where the
 * product cannot do without a reach, a version or shape it was not written for fails with a clear
 * InvalidOptionError; elsewhere the reach steps aside. What the reaches achieve on the versions
 * they were written for is shown through real sockets in the concern tests (plugin.test.ts: an
 * app's own @fastify/websocket; shutdown, frames, consumer).
 */
import t from 'tap'
import { EventEmitter } from 'node:events'
import { OutgoingMessage } from 'node:http'
import { Socket } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import type { WebSocketServer } from 'ws'
import fastifyChannels, { WebsocketConsumer } from '../lib/index.js'
import {
  addOnRouteHookFirst, chunkedBodySocket, decideSubprotocols, endUpgradesWhileClosing, frameWriterOf, refusedHandshakeStatus, setMaxPayload, storageSymbolsOf, stringifyInjectedVersion, writeFrame
} from '../lib/internals.js'

/** Just enough of a Fastify instance of another major version. */
function otherFastify (version: string) {
  const hooks: string[] = []
  const server = new EventEmitter()
  const app = { version, server, addHook: (name: string) => { hooks.push(name) } } as unknown as FastifyInstance
  return { app, hooks, server }
}

t.test('hook order on another Fastify major: fails loudly only where the order matters', async t => {
  const needed = otherFastify('6.0.0')
  t.throws(() => addOnRouteHookFirst(needed.app, () => {}, true), {
    code: 'FST_CHANNELS_INVALID_OPTION', message: /Fastify version \(6\.0\.0\).*register fastify-channels before @fastify\/websocket/
  })
  const notNeeded = otherFastify('6.0.0')
  t.doesNotThrow(() => addOnRouteHookFirst(notNeeded.app, () => {}, false))
  t.same(notNeeded.hooks, ['onRoute'], 'the hook is simply added')
})

t.test('upgrades during close: the raw 503 is for Fastify 5 only; every upgrade is heard of', async t => {
  const arrived: string[] = []
  for (const version of ['6.1.0', '5.3.0']) {
    const { app, server } = otherFastify(version)
    endUpgradesWhileClosing(app, () => true, () => {}, () => { arrived.push(version) })
    const written: string[] = []
    // A net.Socket in all but its connection: what it writes is kept.
    let bytesWritten = 0
    const socket = Object.create(Socket.prototype, {
      bytesWritten: { get: () => bytesWritten },
      destroySoon: { value () {} },
      write: { value (data: string) { written.push(data); bytesWritten += data.length; return true } }
    }) as Socket
    server.emit('upgrade', { url: '/ws' }, socket)
    if (version === '5.3.0') t.match(written, [/^HTTP\/1\.1 503 /], 'Fastify 5: answered 503 at once')
    else t.same(written, [], 'another major answers through its own hooks')
  }
  t.same(arrived, ['6.1.0', '5.3.0'])
})

t.test('a ws server without the options ws 8 reads fails with a clear error', async t => {
  const bare = { options: {} } as unknown as WebSocketServer
  t.throws(() => decideSubprotocols(bare, () => undefined), { code: 'FST_CHANNELS_INVALID_OPTION', message: /subprotocol selection relies on ws 8/ })
  t.throws(() => setMaxPayload(bare, 10), { code: 'FST_CHANNELS_INVALID_OPTION', message: /maxPayload.*relies on ws 8/ })
})

t.test('subprotocols: the decision of a consumer\'s request, else the server\'s own choice, else the first offered', async t => {
  const chosenBefore = (protocols: Set<string>): string | false => protocols.has('v2') ? 'v2' : false
  const wss = { options: { handleProtocols: chosenBefore, maxPayload: 100 } } as unknown as WebSocketServer
  const consumerRequest = {}
  const decided = new Map<object, string | false>([[consumerRequest, 'v1']])
  decideSubprotocols(wss, request => decided.get(request))
  const handle = wss.options.handleProtocols as (p: Set<string>, r: object) => string | false
  t.equal(handle(new Set(['v1', 'v2']), consumerRequest), 'v1')
  decided.set(consumerRequest, 'v3')
  t.equal(handle(new Set(['v1', 'v2']), consumerRequest), false, 'never one the client did not offer')
  t.equal(handle(new Set(['v1', 'v2']), {}), 'v2', 'another route: the choice made before')
  setMaxPayload(wss, 42)
  t.equal(wss.options.maxPayload, 42)
})

t.test('frame writer: only a ws socket without extensions, and only while OPEN and idle', async t => {
  t.equal(frameWriterOf({}), null, 'not a ws socket: frames go through send()')
  const written: Buffer[][] = []
  const writer = { _state: 0, sendFrame: (list: Buffer[]) => { written.push(list) }, _socket: { cork () {}, uncork () {} } }
  t.equal(frameWriterOf({ _sender: writer, extensions: 'permessage-deflate' }), null, 'a compressed socket')
  t.equal(frameWriterOf({ _sender: { ...writer, _socket: {} }, extensions: '' }), null, 'a Sender whose socket cannot hold writes')
  t.equal(frameWriterOf({ _sender: writer, extensions: '' }), writer)
  const frame = [Buffer.from([0x81, 0])]
  t.equal(writeFrame({ readyState: 2 }, writer, frame), false, 'closing: ws.send() decides')
  t.equal(writeFrame({ readyState: 1 }, { ...writer, _state: 1 }, frame), false, 'something queued ahead in ws')
  t.equal(writeFrame({ readyState: 1 }, writer, frame), true)
  t.same(written, [frame])
})

t.test('chunked body socket: only where res.write() would write to the socket at once', async t => {
  const socket = { writable: true, _httpMessage: null as unknown }
  const write = OutgoingMessage.prototype.write
  const open = { write, headersSent: true, writableEnded: false, destroyed: false, socket, chunkedEncoding: true, strictContentLength: false, _hasBody: true, outputData: [] }
  socket._httpMessage = open
  t.equal(chunkedBodySocket(open), socket)
  t.equal(chunkedBodySocket({}), null, 'not a Node response (an HTTP/2 one has none of these)')
  const not = (change: Record<string, unknown>, why: string) => {
    const res = { ...open, ...change }
    socket._httpMessage = res
    t.equal(chunkedBodySocket(res), null, why)
  }
  not({ socket: null }, 'no socket yet')
  not({ chunkedEncoding: false }, 'not chunked (HTTP/1.0, a length)')
  not({ strictContentLength: true }, 'a length to check')
  not({ _hasBody: false }, 'no body allowed')
  not({ headersSent: false }, 'the head not sent')
  not({ writableEnded: true }, 'ended')
  not({ destroyed: true }, 'destroyed')
  not({ outputData: [{ data: 'x' }] }, 'something of it buffered ahead')
  not({ outputData: undefined }, 'no buffer where Node keeps it')
  not({ write: function wrapped () {} }, 'res.write wrapped by a middleware')
  t.equal(chunkedBodySocket({ ...open, socket: { ...socket, _httpMessage: {} } }), null, 'the socket serves another response')
  t.equal(chunkedBodySocket({ ...open, socket: { ...socket, writable: false } }), null, 'the socket cannot be written')
})

t.test('refused handshakes in the test kit: the status from injectWS, any other error passed on', async t => {
  const app = Fastify()
  await app.register(fastifyChannels)
  class Refuses extends WebsocketConsumer { override async connect () { await this.close() } }
  app.get('/ws', { websocket: true }, Refuses.asHandler())
  t.teardown(() => app.close())
  await app.ready()
  const err = await app.injectWS('/ws').then(() => undefined, (err: unknown) => err)
  t.equal(refusedHandshakeStatus(err), 403)
  t.equal(refusedHandshakeStatus(new Error('socket hang up')), undefined)
  t.equal(refusedHandshakeStatus('Unexpected server response: 500'), undefined, 'not an Error')
})

t.test('injected handshakes carry their version as a string, so ws (8.23.1 on) accepts them on every route', async t => {
  const app = Fastify()
  await app.register(fastifyChannels)
  class Echo extends WebsocketConsumer { override async receive (text?: string) { await this.send(`echo ${text ?? ''}`) } }
  app.get('/ws', { websocket: true }, Echo.asHandler())
  app.get('/plain', { websocket: true }, socket => { socket.on('message', data => { socket.send(`plain ${String(data)}`) }) })
  t.teardown(() => app.close())
  await app.ready()
  for (const [path, answer] of [['/ws', 'echo hi'], ['/plain', 'plain hi']]) {
    const ws = await app.injectWS(path)
    const reply = new Promise(resolve => ws.once('message', data => { resolve(String(data)) }))
    ws.send('hi')
    t.equal(await reply, answer, `${path}: the handshake is accepted and the socket answers`)
    ws.terminate()
  }
  const headers: Record<string, unknown> = { 'sec-websocket-version': 13 }
  stringifyInjectedVersion(headers)
  t.same(headers, { 'sec-websocket-version': '13' }, 'a number becomes the string on the wire')
  const odd: Record<string, unknown> = { 'sec-websocket-version': ['13', '8'] }
  stringifyInjectedVersion(odd)
  t.same(odd, { 'sec-websocket-version': ['13', '8'] }, 'anything else is left for ws to judge')
})

t.test('after the upgrade, what @fastify/websocket kept of it is let go; protocol errors are still logged once', async t => {
  const { listen, rawSession } = await import('./helpers/loopback.js')
  type Raw = Record<symbol, unknown> & { socket: { _httpMessage?: unknown }, rawHeaders: string[], rawTrailers: string[], trailers: unknown, headers: Record<string, string> }
  const seen: Raw[] = []
  let rawHeadersInConnect: string[] = []
  class Keep extends WebsocketConsumer {
    override async connect () {
      rawHeadersInConnect = [...this.scope.request.raw.rawHeaders]
      await this.accept()
      seen.push(this.scope.request.raw as unknown as Raw)
    }
  }
  const logs: Array<Record<string, unknown>> = []
  const app = Fastify({ logger: { level: 'debug', stream: { write: (line: string) => { logs.push(JSON.parse(line) as Record<string, unknown>) } } } })
  await app.register(fastifyChannels)
  let socketOfRoute: EventEmitter | undefined
  app.get('/ws', { websocket: true }, Keep.asHandler())
  app.addHook('onReady', async () => {
    app.websocketServer.on('connection', (socket: EventEmitter) => { socketOfRoute = socket })
  })
  t.teardown(() => app.close())
  const { url, port } = await listen(app)
  const WebSocket = (await import('ws')).default
  const ws = new WebSocket(`${url}/ws`, { headers: { 'X-Tenant': 'acme' } })
  await new Promise(resolve => ws.once('open', resolve))
  await new Promise(resolve => setTimeout(resolve, 20))
  const [raw] = seen
  const head = Object.getOwnPropertySymbols(raw).find(key => key.description === 'ws-head')
  t.ok(head !== undefined && raw[head] === undefined, 'the upgrade\'s head is let go (cleared, not deleted)')
  t.equal(raw.socket._httpMessage ?? null, null, 'the upgrade\'s ServerResponse is no longer the socket\'s')
  t.equal(socketOfRoute?.listenerCount('error'), 1, 'one error listener: the connection\'s own')
  t.ok(rawHeadersInConnect.includes('X-Tenant'), 'rawHeaders are there during connect()')
  t.same(raw.rawHeaders, [], 'and let go after the upgrade')
  t.same(raw.trailers, {}, 'no trailers, as before')
  t.equal(raw.rawTrailers, raw.rawHeaders, 'rawTrailers: one shared empty array, not one per connection')
  t.equal(raw.headers['x-tenant'], 'acme', 'headers are kept')
  ws.close()
  // A client that breaks the protocol: logged once, at warn, by the connection.
  const result = await rawSession(port, '/ws', {}, [Buffer.from([0x83, 0x80, 0, 0, 0, 0])])
  t.equal(result.close?.code, 1002)
  await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(logs.filter(l => l.msg === 'websocket protocol error').length, 1, 'the protocol error is logged once')
})

t.test('AsyncLocalStorage values are found on the async resources made while they are set, as this Node keeps them', async t => {
  const { AsyncLocalStorage, AsyncResource } = await import('node:async_hooks')
  const storage = new AsyncLocalStorage<string>()
  t.teardown(() => { storage.disable() })
  const inside = storage.run('a value', () => new AsyncResource('inside'))
  const outside = new AsyncResource('outside')
  if (Number(process.versions.node.split('.')[0]) >= 24) {
    t.equal(storageSymbolsOf(inside), undefined, 'Node 24 keeps them in frames: unknown, so every task switches')
    return
  }
  t.equal(storageSymbolsOf(inside)?.length, 1, 'one storage\'s symbol, with its value')
  t.same(storageSymbolsOf(outside), [], 'none where no value was set')
})
