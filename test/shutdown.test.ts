/**
 * Graceful shutdown under load: `app.close()` with 1,000 open sockets closes every one with 1001,
 * runs every consumer's disconnect() exactly once and waits for it, refuses new upgrades with 503
 * while it is in progress, and leaves the layer empty and closed. Then the same over real TCP, and
 * a peer that never answers the close frame: it holds `app.close()` 5 s, not ws' 30 s.
 */
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { Registry } from 'prom-client'
import WebSocket from 'ws'
import { WebsocketConsumer, type InMemoryChannelLayer } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { appWithOwnWebsocket, buildApp, eventually, sleep, waitingConsumer } from './helpers/app.js'
import { buildSessionApp, sessionCookie } from './helpers/session.js'
import { listen, openClient, rawSession } from './helpers/loopback.js'

/** A consumer whose disconnect() waits for the test, so close() can be caught half-way. */
/** `fastify_channels_handshakes_total` for a route's 503s. */
async function refusedWhileClosing (registry: Registry, route: string): Promise<number | undefined> {
  const values = (await registry.getSingleMetric('fastify_channels_handshakes_total')?.get())?.values ?? []
  return values.find(v => v.labels.route === route && v.labels.status === '503')?.value
}

function heldConsumer (gate: Promise<void>, disconnects: Map<string, number[]>, counters: { built: number, started: number }) {
  return class Held extends WebsocketConsumer {
    override groups = ['everyone']
    constructor () { super(); counters.built++ }
    override async disconnect (code: number) {
      disconnects.set(this.channelName, [...(disconnects.get(this.channelName) ?? []), code])
      counters.started++
      await gate
    }
  }
}

t.test('app.close() with 1,000 open sockets: all close with 1001, every disconnect() runs once, new upgrades get 503', async t => {
  const SOCKETS = 1000
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  const disconnects = new Map<string, number[]>()
  const counters = { built: 0, started: 0 }
  const { app } = await buildApp({ heartbeatInterval: 0 }, app => app.get('/ws', { websocket: true }, heldConsumer(gate, disconnects, counters).asHandler()))
  const layer = app.channelLayer as InMemoryChannelLayer
  app.websocketServer.setMaxListeners(200) // each connecting communicator listens for its own handshake

  const comms: WebsocketCommunicator[] = []
  for (let i = 0; i < SOCKETS; i += 50) {
    const batch = Array.from({ length: 50 }, () => new WebsocketCommunicator(app, '/ws'))
    const results = await Promise.all(batch.map(async c => await c.connect()))
    if (results.some(r => !r.connected)) throw new Error('a socket failed to connect')
    comms.push(...batch)
  }
  t.equal(layer.inspect().memberships, SOCKETS, `${SOCKETS} sockets open, each in the group`)

  let closed = false
  const closing = app.close().then(() => { closed = true })
  await eventually(() => counters.started === SOCKETS, 20_000)
  const codes = await Promise.all(comms.map(async c => (await c.closed).code))
  t.same(codes.filter(code => code !== 1001), [], 'every client saw close 1001')

  // close() is now waiting on the disconnect() calls: a new client is turned away. (Straight
  // through injectWS: the communicator's connect() first waits for app.ready(), which a closing app never is.)
  await t.rejects(app.injectWS('/ws'), /Unexpected server response: 503/, 'an upgrade during shutdown is refused with 503')
  t.equal(counters.built, SOCKETS, 'and no consumer was built for it')
  t.notOk(closed, 'close() waits for the consumers\' disconnect()')

  release()
  await closing
  t.equal(disconnects.size, SOCKETS)
  t.same([...disconnects.values()].filter(codes => codes.length !== 1 || codes[0] !== 1001), [], 'each disconnect() ran exactly once, with 1001')
  t.equal(layer.closed, true, 'the layer was closed after the consumers')
})

t.test('the same over real TCP: clients see 1001, a new handshake during shutdown gets HTTP 503, counted', async t => {
  const SOCKETS = 50
  const registry = new Registry()
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  const disconnects = new Map<string, number[]>()
  const counters = { built: 0, started: 0 }
  const { app } = await buildApp({ heartbeatInterval: 0, metrics: { registry } }, app => app.get('/ws', { websocket: true }, heldConsumer(gate, disconnects, counters).asHandler()))
  const { url, port } = await listen(app)
  const clients = await Promise.all(Array.from({ length: SOCKETS }, async () => await openClient(`${url}/ws`)))

  const closing = app.close()
  await eventually(() => counters.started === SOCKETS, 10_000)
  const closes = await Promise.all(clients.map(async c => await c.closed))
  t.same(closes.filter(c => c.code !== 1001), [], 'every client saw close 1001')
  const late = await rawSession(port, '/ws', { host: `127.0.0.1:${port}` })
  t.equal(late.status, 503, 'a handshake during shutdown is answered 503')
  const lateQuery = await rawSession(port, '/ws?token=x', { host: `127.0.0.1:${port}` })
  t.equal(lateQuery.status, 503, 'also with a query')
  t.equal(await refusedWhileClosing(registry, '/ws'), 2, 'and counted in handshakes_total under its route')
  t.equal(counters.built, SOCKETS)
  release()
  await closing
  t.same([...disconnects.values()].filter(codes => codes.length !== 1 || codes[0] !== 1001), [])
  t.equal(disconnects.size, SOCKETS)
})

t.test('with the app\'s own @fastify/websocket registered first, a handshake during shutdown still gets 503 and close() completes', async t => {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  const disconnects = new Map<string, number[]>()
  const counters = { built: 0, started: 0 }
  const registry = new Registry()
  const app = await appWithOwnWebsocket({ heartbeatInterval: 0, metrics: { registry } })
  app.get('/ws', { websocket: true }, heldConsumer(gate, disconnects, counters).asHandler())
  const { url, port } = await listen(app)
  const client = await openClient(`${url}/ws`)
  const closing = app.close()
  await eventually(() => counters.started === 1, 10_000)
  t.match(await client.closed, { code: 1001 })
  const late = await rawSession(port, '/ws', { host: `127.0.0.1:${port}` })
  t.equal(late.status, 503)
  t.equal(await refusedWhileClosing(registry, '/ws'), 1, 'counted in handshakes_total')
  release()
  await closing
  t.same([...disconnects.values()], [[1001]])
})

/**
 * A client that reads and one that stops reading, on a consumer route (and on `paths`, more
 * stalled ones): `app.close()` gives them 5 s, then drops what has not answered.
 */
async function withStalledPeers (t: Test, app: FastifyInstance, disconnects: number[], paths: string[] = []) {
  const { url } = await listen(app)
  const reading = await openClient(`${url}/ws`)
  const stalled = await Promise.all(['/ws', ...paths].map(async path => await openClient(`${url}${path}`)))
  for (const { ws } of stalled) {
    ws.pause() // the close frame will wait in its socket, unanswered
    t.teardown(() => { ws.terminate() })
  }
  const started = Date.now()
  await app.close()
  const took = Date.now() - started
  t.match(await reading.closed, { code: 1001 }, 'the client that reads saw 1001')
  t.same(disconnects, [1001, 1001], 'both disconnect()s ran once, with 1001')
  t.ok(took >= 4000 && took < 15_000, `close() gave the peers their 5 s, not ws' 30 s (${took} ms)`)
}

/** A consumer that records each disconnect() code in `disconnects`. */
function recordingConsumer (disconnects: number[]) {
  return class Recorded extends WebsocketConsumer {
    override async disconnect (code: number) { disconnects.push(code) }
  }
}

t.test('peers that never answer the close frame hold app.close() for 5 s at most, then their sockets are dropped (logged)', async t => {
  const disconnects: number[] = []
  const { app, logs } = await buildApp({ heartbeatInterval: 0 }, app => {
    app.get('/ws', { websocket: true }, recordingConsumer(disconnects).asHandler())
    app.get('/plain', { websocket: true }, () => {}) // a route of the app's own, not a consumer
  })
  await withStalledPeers(t, app, disconnects, ['/plain'])
  t.match(logs.filter(l => /did not answer the close frame/.test(String(l.msg))), [{ level: 40, sockets: 2 }], 'the drop is logged at warn, once')
})

t.test('the same with the app\'s own @fastify/websocket registered first', async t => {
  const disconnects: number[] = []
  const app = await appWithOwnWebsocket({ heartbeatInterval: 0 })
  app.get('/ws', { websocket: true }, recordingConsumer(disconnects).asHandler())
  await withStalledPeers(t, app, disconnects)
})

/** A handshake to `url` whose answer is not a 101: its HTTP status. */
function refusedWith (url: string, options: WebSocket.ClientOptions = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options)
    ws.on('unexpected-response', (_request, response) => { resolve(response.statusCode ?? 0); ws.terminate() })
    ws.on('open', () => { reject(new Error('the handshake was accepted')); ws.terminate() })
    ws.on('error', () => {})
  })
}

t.test('app.close() while a connect() waits: its signal is aborted, the client gets 503, and close() does not wait out the wait', async t => {
  const events: string[] = []
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, waitingConsumer(events).asHandler()))
  const { url } = await listen(app)
  const status = refusedWith(`${url}/ws`)
  await eventually(() => events.length === 1)
  await app.close()
  t.same(events, ['connect', 'stopped: AbortError'], 'connect() stopped waiting when the server began to close')
  t.equal(await status, 503, 'the handshake is answered 503')
  t.same(logs.filter(l => /not waiting for them/.test(String(l.msg))), [], 'close() did not have to give up on it')
})

t.test('a connect() that never returns: the client gets 503 at once, and app.close() waits for it 5 s at most, logged', async t => {
  let started = false
  class Stuck extends WebsocketConsumer {
    override async connect () {
      started = true
      await new Promise(() => {}) // deaf to its signal: a call with no timeout that never answers
    }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Stuck.asHandler()))
  const { url } = await listen(app)
  const status = refusedWith(`${url}/ws`)
  await eventually(() => started)
  const closing = app.close()
  t.equal(await status, 503, 'the handshake is answered 503 as the server begins to close')
  await closing
  t.match(logs.filter(l => /not waiting for them/.test(String(l.msg))), [{ level: 40, connections: 1, graceMs: 5000 }],
    'close() went on without it, and said so at warn')
})

t.test('a getUser that never returns: the client gets 503 at once, and app.close() waits for it 5 s at most', async t => {
  let asked = 0
  const getUser = async (): Promise<null> => {
    asked++
    return await new Promise(() => {}) // a user store that never answers
  }
  class Plain extends WebsocketConsumer {}
  const { app, logs } = await buildApp({ getUser }, app => app.get('/ws', { websocket: true }, Plain.asHandler()))
  const { url } = await listen(app)
  const status = refusedWith(`${url}/ws`)
  await eventually(() => asked === 1)
  const closing = app.close()
  t.equal(await status, 503, 'the handshake is answered 503 as the server begins to close')
  await closing
  t.match(logs.filter(l => /not waiting for them/.test(String(l.msg))), [{ level: 40, connections: 1 }], 'close() went on without it, and said so')
})

t.test('a session store that never answers holds the upgrade in @fastify/session\'s hook: after the grace the client gets 503, and app.close() completes, logged', async t => {
  const sessions = new Map<string, unknown>()
  let hang = false
  let asked = 0
  const store = {
    set (id: string, session: unknown, callback: (err?: Error) => void) { sessions.set(id, JSON.parse(JSON.stringify(session))); callback() },
    get (id: string, callback: (err: Error | null, session?: unknown) => void) {
      asked++
      if (!hang) callback(null, sessions.get(id) ?? null) // else: never answers, as a store whose backend is gone
    },
    destroy (id: string, callback: (err?: Error) => void) { sessions.delete(id); callback() }
  }
  const { app, logs } = await buildSessionApp({}, app => {
    app.get('/page', async () => 'ok')
    app.get('/ws', { websocket: true }, WebsocketConsumer.asHandler())
  }, { store: store as never })
  const cookie = sessionCookie(await app.inject({ url: '/page' }))
  const { url } = await listen(app)
  hang = true
  const status = refusedWith(`${url}/ws`, { headers: { cookie } })
  await eventually(() => asked === 1)
  const closing = app.close().then(() => 'closed')
  t.equal(await status, 503, 'the client is answered')
  t.equal(await Promise.race([closing, sleep(15_000).then(() => 'still closing after 15 s')]), 'closed', 'app.close() completes')
  t.match(logs.filter(l => /still in the app's hooks/.test(String(l.msg))), [{ level: 40, requests: 1, graceMs: 5000 }], 'said so at warn')
})
