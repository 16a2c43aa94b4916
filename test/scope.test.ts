/**
 * `scope.cookies`, `scope.session` and `scope.user` through real handshakes: with and without
 * `@fastify/cookie` / `@fastify/session`, users from the session and from `@fastify/jwt`, a custom
 * `getUser`, and auth hooks that refuse with 401 before any consumer exists.
 */
import t from 'tap'
import v8 from 'node:v8'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import fastifyJwt from '@fastify/jwt'
import fastifyChannels, { AsyncHttpConsumer, JsonWebsocketConsumer, WebsocketConsumer, type Scope } from '../lib/index.js'
import { WebsocketCommunicator, type CommunicatorOptions } from '../lib/testing.js'
import WebSocket from 'ws'
import { buildApp } from './helpers/app.js'
import { buildSessionApp, sessionCookie, sessionData } from './helpers/session.js'

/** An event stream's user, as its first event. */
class Events extends AsyncHttpConsumer {
  override async handle () {
    await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
    await this.sendEvent({ data: JSON.stringify(this.scope.user) })
    await this.sendBody('')
  }
}

/** Reports what its scope holds, at connect time and again on request (`{ ask: 'scope' }`). */
class Reporter extends JsonWebsocketConsumer {
  override async connect () {
    await this.accept()
    await this.report()
  }

  override async receiveJson (content: { ask?: string }) {
    if (content.ask === 'reload') await this.scope.session?.reload()
    await this.report()
  }

  async report () {
    const session = this.scope.session as unknown as { get (k: string): unknown, sessionId: string } | null
    await this.sendJson({
      cookies: this.scope.cookies,
      hasSession: session !== null,
      sessionId: session?.sessionId ?? null,
      visits: session?.get('visits') ?? null,
      user: this.scope.user
    })
  }
}

t.test('without @fastify/cookie and @fastify/session: cookies {}, session null, user null', async t => {
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Reporter.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws', { headers: { cookie: 'a=1' } })
  await comm.connect()
  t.same(await comm.receiveJsonFrom(), { cookies: {}, hasSession: false, sessionId: null, visits: null, user: null })
  await comm.disconnect()
})

t.test('with @fastify/cookie only: cookies parsed, session null', async t => {
  const app = Fastify()
  await app.register(fastifyCookie)
  await app.register(fastifyChannels)
  app.get('/ws', { websocket: true }, Reporter.asHandler())
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws', { headers: { cookie: 'a=1; theme=dark%20blue' } })
  await comm.connect()
  t.same(await comm.receiveJsonFrom(), { cookies: { a: '1', theme: 'dark blue' }, hasSession: false, sessionId: null, visits: null, user: null })
  await comm.disconnect()
})

t.test('with @fastify/session: the session the browser holds, and the user stored in it', async t => {
  const { app } = await buildSessionApp({}, app => {
    app.post('/visit', async (request) => {
      const session = sessionData(request)
      session.set('visits', Number(session.get('visits') ?? 0) + 1)
      session.set('user', { name: 'alice' })
      return { sessionId: session.sessionId }
    })
    app.get('/ws', { websocket: true }, Reporter.asHandler())
  })
  t.teardown(() => app.close())
  const first = await app.inject({ method: 'POST', url: '/visit' })
  const cookie = sessionCookie(first)
  await app.inject({ method: 'POST', url: '/visit', headers: { cookie } })
  const comm = new WebsocketCommunicator(app, '/ws', { headers: { cookie } })
  await comm.connect()
  const seen = await comm.receiveJsonFrom() as Record<string, unknown>
  t.match(seen, { hasSession: true, sessionId: first.json().sessionId, visits: 2, user: { name: 'alice' } })
  t.match(seen.cookies, { sessionId: cookie.slice('sessionId='.length) }, 'scope.cookies holds the session cookie too')

  // scope.session is the live one: after another HTTP visit, reload() shows it.
  await app.inject({ method: 'POST', url: '/visit', headers: { cookie } })
  await comm.sendJsonTo({ ask: 'scope' })
  t.match(await comm.receiveJsonFrom(), { visits: 2 }, 'the socket keeps the session as it was loaded')
  await comm.sendJsonTo({ ask: 'reload' })
  t.match(await comm.receiveJsonFrom(), { visits: 3, sessionId: first.json().sessionId }, 'scope.session follows reload()')
  await comm.disconnect()

  const anonymous = new WebsocketCommunicator(app, '/ws')
  await anonymous.connect()
  t.match(await anonymous.receiveJsonFrom(), { hasSession: true, visits: null, user: null }, 'no cookie: a fresh session, no user')
  await anonymous.disconnect()
})

t.test('a socket outside the session cookie\'s path has no session (the plugin leaves a bare {})', async t => {
  const { app } = await buildSessionApp({}, app => app.get('/ws', { websocket: true }, Reporter.asHandler()),
    { cookie: { secure: false, path: '/app' } })
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  t.match(await comm.receiveJsonFrom(), { hasSession: false, user: null })
  await comm.disconnect()
})

t.test('@fastify/jwt: request.user becomes scope.user; a bad or missing token is a 401 before any consumer', async t => {
  let built = 0
  class Counted extends Reporter { constructor () { super(); built++ } }
  const app = Fastify()
  await app.register(fastifyJwt, { secret: 'jwt secret' })
  await app.register(fastifyChannels)
  app.get('/ws', {
    websocket: true,
    onRequest: async (request) => { await request.jwtVerify() }
  }, Counted.asHandler())
  t.teardown(() => app.close())
  await app.ready()
  const token = app.jwt.sign({ sub: 'u1', name: 'bob' })

  const comm = new WebsocketCommunicator(app, '/ws', { headers: { authorization: `Bearer ${token}` } })
  t.match(await comm.connect(), { connected: true })
  t.match(await comm.receiveJsonFrom(), { user: { sub: 'u1', name: 'bob' }, hasSession: false })
  await comm.disconnect()

  const forged = app.jwt.sign({ sub: 'u1' }).replace(/\.[^.]+$/, '.forged')
  t.match(await new WebsocketCommunicator(app, '/ws', { headers: { authorization: `Bearer ${forged}` } }).connect(), { connected: false, status: 401 })
  t.match(await new WebsocketCommunicator(app, '/ws').connect(), { connected: false, status: 401 })
  t.equal(built, 1, 'refused handshakes never built a consumer')
})

t.test('the default getUser prefers request.user (jwt, passport, any hook) over the session\'s user', async t => {
  const { app } = await buildSessionApp({}, app => {
    app.post('/login', async (request) => { sessionData(request).set('user', { name: 'from-session' }); return 'ok' })
    app.get('/ws', {
      websocket: true,
      preHandler: async (request) => {
        if (request.headers['x-api-user'] !== undefined) (request as unknown as { user: unknown }).user = { name: String(request.headers['x-api-user']) }
      }
    }, Reporter.asHandler())
  })
  t.teardown(() => app.close())
  const cookie = sessionCookie(await app.inject({ method: 'POST', url: '/login' }))
  const both = new WebsocketCommunicator(app, '/ws', { headers: { cookie, 'x-api-user': 'from-hook' } })
  await both.connect()
  t.match(await both.receiveJsonFrom(), { user: { name: 'from-hook' } })
  await both.disconnect()
  const sessionOnly = new WebsocketCommunicator(app, '/ws', { headers: { cookie } })
  await sessionOnly.connect()
  t.match(await sessionOnly.receiveJsonFrom(), { user: { name: 'from-session' } })
  await sessionOnly.disconnect()
})

t.test('getUser: runs once, after the route\'s hooks; may be async; undefined means anonymous; a throw refuses with 500, or with its 4xx statusCode', async t => {
  let calls = 0
  const accounts = new WeakMap<FastifyRequest, { name: string }>()
  const { app, logs } = await buildApp({
    getUser: async (request) => {
      calls++
      if (request.headers['x-explode'] !== undefined) throw new Error('user store down')
      if (request.headers['x-expired'] !== undefined) throw Object.assign(new Error('token expired'), { statusCode: 401 })
      await new Promise(resolve => setImmediate(resolve))
      return accounts.get(request)
    }
  }, app => {
    app.get('/ws', {
      websocket: true,
      // The route's own auth, which getUser relies on having run.
      preHandler: async (request) => {
        const name = request.headers['x-account']
        if (typeof name === 'string') accounts.set(request, { name })
      }
    }, Reporter.asHandler())
    app.get('/events', Events.asHandler())
  })
  t.teardown(() => app.close())
  const named = new WebsocketCommunicator(app, '/ws', { headers: { 'x-account': 'carol' } })
  await named.connect()
  t.match(await named.receiveJsonFrom(), { user: { name: 'carol' } })
  await named.sendJsonTo({ ask: 'scope' })
  t.match(await named.receiveJsonFrom(), { user: { name: 'carol' } })
  t.equal(calls, 1, 'once per connection, not per frame')
  await named.disconnect()
  const anonymous = new WebsocketCommunicator(app, '/ws')
  await anonymous.connect()
  t.match(await anonymous.receiveJsonFrom(), { user: null })
  await anonymous.disconnect()
  t.match(await new WebsocketCommunicator(app, '/ws', { headers: { 'x-explode': '1' } }).connect(), { connected: false, status: 500 })
  t.ok(logs.some(l => l.level === 50 && (l.err as { message?: string } | undefined)?.message === 'user store down'), 'the failure is logged')
  // An error that says it is the client's, as a hook's would: answered with its status, at info.
  t.match(await new WebsocketCommunicator(app, '/ws', { headers: { 'x-expired': '1' } }).connect(), { connected: false, status: 401 })
  t.ok(logs.some(l => l.level === 30 && l.status === 401 && (l.err as { message?: string } | undefined)?.message === 'token expired'), 'logged at info')
  const stream = await app.inject({ url: '/events', headers: { 'x-expired': '1' } })
  t.equal(stream.statusCode, 401, 'an event stream too')
  t.match(stream.json(), { statusCode: 401, message: 'token expired' })
  t.equal((await app.inject({ url: '/events', headers: { 'x-explode': '1' } })).statusCode, 500)
})

t.test('a preValidation hook answering 401 refuses the upgrade; no consumer is built', async t => {
  let built = 0
  class Counted extends WebsocketConsumer { constructor () { super(); built++ } }
  const { app } = await buildApp({}, app => app.get('/ws', {
    websocket: true,
    preValidation: async (request, reply) => {
      if (request.headers.authorization !== 'secret') return reply.code(401).send({ message: 'who are you' })
    }
  }, Counted.asHandler()))
  t.teardown(() => app.close())
  t.match(await new WebsocketCommunicator(app, '/ws').connect(), { connected: false, status: 401 })
  t.equal(built, 0)
  const ok = new WebsocketCommunicator(app, '/ws', { headers: { authorization: 'secret' } })
  t.match(await ok.connect(), { connected: true })
  t.equal(built, 1)
  await ok.disconnect()
})

t.test('the scope\'s shape: its keys, `session` an enumerable live accessor, and fast properties (not a dictionary per scope)', async t => {
  // V8's own answer on whether an object is a dictionary (what a scope was when each had its own getter).
  v8.setFlagsFromString('--allow-natives-syntax')
  const hasFastProperties = new Function('o', 'return %HasFastProperties(o)') as (o: object) => boolean // eslint-disable-line no-new-func
  const scopes: Scope[] = []
  class Keeper extends WebsocketConsumer {
    override async connect () {
      scopes.push(this.scope)
      await this.accept(this.scope.subprotocols[0])
    }
  }
  const { app } = await buildSessionApp({}, app => app.get('/ws/:room', { websocket: true }, Keeper.asHandler()))
  t.teardown(() => app.close())
  const plain = await buildApp({}, app => app.get('/ws/:room', { websocket: true }, Keeper.asHandler()))
  t.teardown(() => plain.app.close())
  const handshakes: Array<[FastifyInstance, string, CommunicatorOptions]> = [
    [app, '/ws/a?x=1', { subprotocols: ['chat', 'json'] }],
    [app, '/ws/b%20c', {}],
    [plain.app, '/ws/d?y=2&y=3', { headers: { cookie: 'a=1' } }]
  ]
  for (const [target, path, options] of handshakes) {
    const comm = new WebsocketCommunicator(target, path, options)
    await comm.connect()
    await comm.disconnect()
  }
  t.equal(scopes.length, 3)
  for (const scope of scopes) {
    t.same(Object.keys(scope), ['type', 'path', 'rawPath', 'queryString', 'query', 'params', 'headers', 'cookies',
      'user', 'client', 'server', 'subprotocols', 'request', 'session'])
    t.ok(hasFastProperties(scope), `scope of ${scope.rawPath} has fast properties`)
    t.equal(Object.getPrototypeOf(scope), Object.prototype)
  }
  const [withSession, decoded, noSession] = scopes as [Scope, Scope, Scope]
  t.match(withSession, { path: '/ws/a', queryString: 'x=1', params: { room: 'a' }, subprotocols: ['chat', 'json'] })
  t.match(decoded, { path: '/ws/b c', rawPath: '/ws/b%20c', queryString: '', params: { room: 'b c' }, subprotocols: [] })
  t.match(noSession, { query: { y: ['2', '3'] }, session: null })
  // What the request already holds is not copied: scope and request read the same objects.
  for (const scope of scopes) {
    t.equal(scope.query, scope.request.query, `${scope.rawPath}: query is the request's`)
    t.equal(scope.params, scope.request.params, `${scope.rawPath}: params is the request's`)
  }
  // Nothing to hold: one frozen empty value for every scope, so a write throws instead of vanishing.
  t.same(noSession.cookies, {}, 'no @fastify/cookie: cookies is {}')
  t.throws(() => { (noSession.cookies as Record<string, string>).a = '1' }, TypeError, 'and a write to it throws')
  t.equal(decoded.subprotocols, noSession.subprotocols, 'no subprotocol offered: the same empty list')
  t.throws(() => { decoded.subprotocols.push('chat') }, TypeError)
  t.not(withSession.subprotocols, decoded.subprotocols, 'offered ones are a list of the scope\'s own')

  const descriptor = Object.getOwnPropertyDescriptor(withSession, 'session')
  t.match(descriptor, { enumerable: true, configurable: false })
  t.equal(typeof descriptor?.get, 'function')
  const current = withSession.session
  t.ok(current !== null && current === sessionData(withSession.request), 'the request\'s session')
  t.equal({ ...withSession }.session, current, 'a spread copy holds it too')
  const replacement = { get: () => 'replaced', save: async () => {} } as unknown as NonNullable<Scope['session']>
  ;(withSession.request as unknown as { session: unknown }).session = replacement
  t.equal(withSession.session, replacement, 'live: the request\'s current session')
  noSession.session = replacement
  t.equal((noSession.request as unknown as { session: unknown }).session, replacement, 'assigning it sets request.session')
  t.equal(noSession.session, replacement)
  t.equal(decoded.session?.sessionId, sessionData(decoded.request).sessionId, 'each scope reads its own request')
})

t.test('over real sockets: client is each connection\'s peer; server is one frozen object per address the app listens on', async t => {
  const scopes: Scope[] = []
  class Keeper extends WebsocketConsumer {
    override async connect () {
      scopes.push(this.scope)
      await this.accept()
    }
  }
  const app = Fastify()
  await app.register(fastifyChannels)
  app.get('/ws', { websocket: true }, Keeper.asHandler())
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as { port: number }).port
  const sockets = [new WebSocket(`ws://127.0.0.1:${port}/ws`), new WebSocket(`ws://127.0.0.1:${port}/ws`)]
  t.teardown(() => { for (const socket of sockets) socket.terminate() })
  const locals = await Promise.all(sockets.map(async socket => await new Promise<number>((resolve, reject) => {
    socket.once('open', () => { resolve((socket as unknown as { _socket: { localPort: number } })._socket.localPort) })
    socket.once('error', reject)
  })))
  t.equal(scopes.length, 2)
  t.same(scopes.map(s => s.client), locals.map(localPort => ({ address: '127.0.0.1', port: localPort })), 'each client\'s own address and port')
  t.same(scopes[0]!.server, { address: '127.0.0.1', port })
  t.equal(scopes[0]!.server, scopes[1]!.server, 'both scopes hold the same server object')
  t.ok(Object.isFrozen(scopes[0]!.server), 'which is frozen: no scope can change what the others read')
})
