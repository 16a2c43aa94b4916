/**
 * `login()` / `logout()` over a socket, seen by the next HTTP request with the same cookie: with
 * `@fastify/session`'s default store and with a slow store (300 ms per call), where frames sent
 * while the session is being saved must all be handled, in order, after it. Also the save rule for
 * other session changes, and the clear errors when there is no session or the store fails.
 */
import t, { type Test } from 'tap'
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { JsonWebsocketConsumer, login, logout } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import type { FastifyInstance, Session as StoredSession } from 'fastify'
import { buildApp } from './helpers/app.js'
import { buildSessionApp, sessionCookie, sessionData } from './helpers/session.js'
import type { FastifySessionOptions } from '@fastify/session'

type Session = { get (key: string): unknown, set (key: string, value: unknown): void, save (): Promise<void>, destroy (): Promise<void> }

class Account extends JsonWebsocketConsumer {
  override async receiveJson (content: { login?: string | null, logout?: true, set?: [string, string], save?: true, destroy?: true, echo?: number }) {
    const session = this.scope.session as unknown as Session | null
    try {
      if (content.login !== undefined) await login(this.scope, content.login === null ? null as never : { name: content.login })
      if (content.logout === true) await logout(this.scope)
      if (content.set !== undefined) session?.set(content.set[0], content.set[1])
      if (content.save === true) await session?.save()
      if (content.destroy === true) await session?.destroy()
      await this.sendJson({ ...content, user: this.scope.user, sessionUser: (this.scope.session as unknown as Session | null)?.get('user') ?? null })
    } catch (err) {
      await this.sendJson({ ...content, error: (err as { code?: string }).code ?? String(err), message: (err as Error).message })
    }
  }
}

function routes (app: FastifyInstance): void {
  app.get('/page', async (request) => ({ sessionId: sessionData(request).sessionId }))
  // What the README advises after a login over the socket, and an HTTP logout.
  app.post('/rotate', async (request) => { await request.session.regenerate(['user']); return { sessionId: sessionData(request).sessionId } })
  app.post('/logout', async (request) => { await request.session.destroy(); return {} })
  app.get('/me', async (request) => {
    const session = sessionData(request)
    return { sessionId: session.sessionId, user: session.get('user') ?? null, theme: session.get('theme') ?? null }
  })
  app.get('/ws', { websocket: true }, Account.asHandler())
}

/** A session cookie the way a browser gets one: from an earlier HTTP response. */
async function browserSession (app: FastifyInstance): Promise<{ cookie: string, sessionId: string }> {
  const page = await app.inject({ url: '/page' })
  return { cookie: sessionCookie(page), sessionId: page.json().sessionId }
}

/** An app with `session` options, a browser session, and a socket opened with its cookie. */
async function socketInSession (t: Test, session: Partial<FastifySessionOptions> = {}) {
  const { app, logs } = await buildSessionApp({}, routes, session)
  t.teardown(() => app.close())
  const { cookie, sessionId } = await browserSession(app)
  const comm = new WebsocketCommunicator(app, '/ws', { headers: { cookie } })
  await comm.connect()
  return { app, logs, cookie, sessionId, comm }
}

async function me (app: FastifyInstance, cookie: string): Promise<{ sessionId: string, user: unknown, theme: unknown }> {
  return (await app.inject({ url: '/me', headers: { cookie } })).json()
}

t.test('login over the socket is seen by the next HTTP request; logout too; the session id never changes', async t => {
  const { app } = await buildSessionApp({}, routes)
  t.teardown(() => app.close())
  const { cookie, sessionId } = await browserSession(app)
  t.match(await me(app, cookie), { sessionId, user: null })

  const comm = new WebsocketCommunicator(app, '/ws', { headers: { cookie } })
  await comm.connect()
  await comm.sendJsonTo({ login: 'alice' })
  t.same(await comm.receiveJsonFrom(), { login: 'alice', user: { name: 'alice' }, sessionUser: { name: 'alice' } }, 'scope.user and the session both updated')
  t.same(await me(app, cookie), { sessionId, user: { name: 'alice' }, theme: null }, 'HTTP with the same cookie sees the login')

  await comm.sendJsonTo({ logout: true })
  t.same(await comm.receiveJsonFrom(), { logout: true, user: null, sessionUser: null })
  t.same(await me(app, cookie), { sessionId, user: null, theme: null }, 'HTTP sees the logout')
  await comm.disconnect()

  // A new socket with the same cookie starts as whoever the session says.
  await app.inject({ url: '/me', headers: { cookie } })
  const again = new WebsocketCommunicator(app, '/ws', { headers: { cookie } })
  await again.connect()
  await again.sendJsonTo({ login: 'bob' })
  t.match(await again.receiveJsonFrom(), { user: { name: 'bob' } })
  await again.disconnect()
  const next = new WebsocketCommunicator(app, '/ws', { headers: { cookie } })
  await next.connect()
  await next.sendJsonTo({ echo: 1 })
  t.match(await next.receiveJsonFrom(), { echo: 1, user: { name: 'bob' } }, 'the next socket\'s scope.user comes from the saved session')
  await next.disconnect()
})

/** A store like a remote one: every call takes 300 ms (or `delay`) and data is stored serialized. */
class SlowStore {
  readonly data = new Map<string, string>()
  sets = 0
  failSets = false
  constructor (readonly delay = 300) {}
  set (id: string, session: unknown, callback: (err?: Error) => void): void {
    const json = JSON.stringify(session)
    setTimeout(() => {
      if (this.failSets) { callback(new Error('store is read-only')); return }
      this.sets++
      this.data.set(id, json)
      callback()
    }, this.delay)
  }

  get (id: string, callback: (err: Error | null, session?: StoredSession | null) => void): void {
    setTimeout(() => {
      const json = this.data.get(id)
      callback(null, json === undefined ? null : JSON.parse(json) as StoredSession)
    }, this.delay)
  }

  destroy (id: string, callback: (err?: Error) => void): void {
    setTimeout(() => { this.data.delete(id); callback() }, this.delay)
  }
}

t.test('a slow store (300 ms): frames sent while login() saves are all handled, in order, after it', async t => {
  const store = new SlowStore()
  const { app, cookie, sessionId, comm } = await socketInSession(t, { store })
  const setsBefore = store.sets
  // Sent back to back: the five echoes arrive while the save is still in flight.
  await comm.sendJsonTo({ login: 'alice' })
  for (let i = 1; i <= 5; i++) await comm.sendJsonTo({ echo: i })
  t.match(await comm.receiveJsonFrom(), { login: 'alice', user: { name: 'alice' } })
  t.equal(store.sets, setsBefore + 1, 'login() resolved only once the store had the session')
  for (let i = 1; i <= 5; i++) {
    t.same(await comm.receiveJsonFrom(), { echo: i, user: { name: 'alice' }, sessionUser: { name: 'alice' } }, `frame ${i} kept, in order, after the login`)
  }
  t.ok(await comm.receiveNothing(50))
  t.same(await me(app, cookie), { sessionId, user: { name: 'alice' }, theme: null }, 'HTTP sees the login through the slow store')

  await comm.sendJsonTo({ logout: true })
  await comm.sendJsonTo({ echo: 6 })
  t.match(await comm.receiveJsonFrom(), { logout: true, user: null })
  t.match(await comm.receiveJsonFrom(), { echo: 6, user: null })
  t.match(await me(app, cookie), { sessionId, user: null })

  // A store that fails: login() rejects, and neither scope.user nor the session pretends otherwise.
  store.failSets = true
  await comm.sendJsonTo({ login: 'mallory' })
  t.match(await comm.receiveJsonFrom(), { login: 'mallory', error: /read-only/ })
  await comm.sendJsonTo({ echo: 7 })
  t.same(await comm.receiveJsonFrom(), { echo: 7, user: null, sessionUser: null })
  store.failSets = false
  await comm.disconnect()
})

t.test('other session changes reach HTTP only after `await scope.session.save()`', async t => {
  const { app, cookie, comm } = await socketInSession(t)
  await comm.sendJsonTo({ set: ['theme', 'dark'] })
  await comm.receiveJsonFrom()
  t.match(await me(app, cookie), { theme: null }, 'set() alone is not saved')
  await comm.sendJsonTo({ set: ['theme', 'light'], save: true })
  await comm.receiveJsonFrom()
  t.match(await me(app, cookie), { theme: 'light' }, 'saved')
  await comm.disconnect()
})

t.test('login() without a session cookie works for this socket and warns that HTTP will not see it', async t => {
  const { app, logs } = await buildSessionApp({}, routes)
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendJsonTo({ login: 'alice' })
  t.match(await comm.receiveJsonFrom(), { user: { name: 'alice' } })
  const warning = logs.find(l => l.level === 40 && typeof l.msg === 'string' && l.msg.includes('no cookie for this session'))
  t.ok(warning, 'warned')
  t.notOk(JSON.stringify(warning).includes('sessionId'), 'without the session id: the key of a signed-in session stays out of the logs')
  await comm.disconnect()
})

t.test('a socket open longer than the cookie\'s maxAge: login() keeps the session that HTTP requests kept alive', async t => {
  const { app, cookie, sessionId, comm } = await socketInSession(t, { cookie: { secure: false, maxAge: 1000 } })
  // The page keeps the session alive (rolling) while the socket stays open past its maxAge.
  for (let i = 0; i < 4; i++) {
    await new Promise(resolve => setTimeout(resolve, 400))
    t.match(await me(app, cookie), { sessionId }, `HTTP request ${i + 1} keeps the session`)
  }
  await comm.sendJsonTo({ login: 'alice' })
  t.match(await comm.receiveJsonFrom(), { user: { name: 'alice' } })
  t.same(await me(app, cookie), { sessionId, user: { name: 'alice' }, theme: null }, 'the next HTTP request sees the login, in the same session')
  await comm.disconnect()
})

t.test('a session an HTTP request rotated or destroyed: login()/logout() reject with FST_CHANNELS_SESSION_GONE and bring nothing back', async t => {
  const { app, cookie, comm } = await socketInSession(t)
  await comm.sendJsonTo({ login: 'alice' })
  t.match(await comm.receiveJsonFrom(), { user: { name: 'alice' } })

  // The id rotated over HTTP, as the README advises after a login: the browser now holds another cookie.
  const rotated = await app.inject({ method: 'POST', url: '/rotate', headers: { cookie } })
  const newCookie = sessionCookie(rotated)
  await comm.sendJsonTo({ logout: true })
  t.match(await comm.receiveJsonFrom(), { logout: true, error: 'FST_CHANNELS_SESSION_GONE', message: /reconnect/ }, 'logout() says it could not sign the browser out')
  t.match(await me(app, cookie), { user: null }, 'the old session is not brought back')
  t.match(await me(app, newCookie), { user: { name: 'alice' } }, 'the browser\'s current session is for a new connection to change')
  await comm.disconnect()

  // A new socket with the current cookie; then an HTTP logout destroys that session.
  const again = new WebsocketCommunicator(app, '/ws', { headers: { cookie: newCookie } })
  await again.connect()
  await app.inject({ method: 'POST', url: '/logout', headers: { cookie: newCookie } })
  await again.sendJsonTo({ login: 'mallory' })
  t.match(await again.receiveJsonFrom(), { login: 'mallory', error: 'FST_CHANNELS_SESSION_GONE', user: undefined })
  t.match(await me(app, newCookie), { user: null }, 'the HTTP logout holds: the socket did not sign the cookie back in')
  await again.sendJsonTo({ echo: 1 })
  t.match(await again.receiveJsonFrom(), { echo: 1, user: { name: 'alice' } }, 'scope.user is unchanged, as after any failed login()')
  await again.disconnect()
})

t.test('a session that expired while the socket was open: login()/logout() reject with FST_CHANNELS_SESSION_GONE and do not bring it back', async t => {
  const { app, cookie, sessionId, comm } = await socketInSession(t, { cookie: { secure: false, maxAge: 300 } })
  // No HTTP request keeps the session alive: the store still holds it, expired.
  await new Promise(resolve => setTimeout(resolve, 500))
  await comm.sendJsonTo({ login: 'mallory' })
  t.match(await comm.receiveJsonFrom(), { login: 'mallory', error: 'FST_CHANNELS_SESSION_GONE', user: undefined }, 'login() says the session is gone')
  await comm.sendJsonTo({ logout: true })
  t.match(await comm.receiveJsonFrom(), { logout: true, error: 'FST_CHANNELS_SESSION_GONE' }, 'so does logout()')
  const after = await me(app, cookie)
  t.equal(after.user, null, 'the old cookie signs no one in')
  t.not(after.sessionId, sessionId, 'and gets a new session: the expired one stayed expired')
  await comm.disconnect()
})

t.test('an app\'s own cookie signer, whose signed ids change every time, and a store that keeps JSON: login() after an HTTP logout still rejects, and warns of nothing', async t => {
  const key = randomBytes(32)
  // Encrypts the id with a fresh IV each time: no `id.signature` to recognise, never the same twice.
  const signer = {
    sign (value: string): string {
      const iv = randomBytes(12)
      const cipher = createCipheriv('aes-256-gcm', key, iv)
      return Buffer.concat([iv, cipher.update(value, 'utf8'), cipher.final(), cipher.getAuthTag()]).toString('base64url')
    },
    unsign (signed: string): { valid: boolean, renew: boolean, value: string | null } {
      try {
        const bytes = Buffer.from(signed, 'base64url')
        const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, 12))
        decipher.setAuthTag(bytes.subarray(bytes.length - 16))
        return { valid: true, renew: false, value: Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]).toString('utf8') }
      } catch {
        return { valid: false, renew: false, value: null }
      }
    }
  }
  // A store that keeps sessions as JSON, as Redis stores do: what it gives back is data only.
  const stored = new Map<string, string>()
  const store = {
    set (id: string, session: unknown, done: (err?: unknown) => void) { stored.set(id, JSON.stringify(session)); done() },
    get (id: string, done: (err: unknown, session?: unknown) => void) { const json = stored.get(id); done(null, json === undefined ? null : JSON.parse(json)) },
    destroy (id: string, done: (err?: unknown) => void) { stored.delete(id); done() }
  }
  const { app, logs, cookie, comm } = await socketInSession(t, { secret: signer as unknown as string, store: store as unknown as FastifySessionOptions['store'] })
  await comm.sendJsonTo({ login: 'alice' })
  t.match(await comm.receiveJsonFrom(), { user: { name: 'alice' } })
  t.match(await me(app, cookie), { user: { name: 'alice' } }, 'HTTP sees the login')
  t.notOk(logs.some(l => /sent no cookie/.test(String(l.msg))), 'no warning that the client sent no cookie: it did')
  await app.inject({ method: 'POST', url: '/logout', headers: { cookie } })
  await comm.sendJsonTo({ login: 'mallory' })
  t.match(await comm.receiveJsonFrom(), { login: 'mallory', error: 'FST_CHANNELS_SESSION_GONE' }, 'a login after the HTTP logout is refused')
  t.match(await me(app, cookie), { user: null }, 'and the old cookie signs no one in')
  await comm.disconnect()
})

t.test('a cookie signed with a secret being rotated out: login() is seen by HTTP, and no warning says otherwise', async t => {
  const OLD = 'the old secret, at least 32 characters long'
  const NEW = 'the new secret, at least 32 characters long'
  const store = new SlowStore(0)
  const before = await buildSessionApp({}, routes, { secret: OLD, store })
  t.teardown(() => before.app.close())
  const { cookie, sessionId } = await browserSession(before.app)
  const { app, logs } = await buildSessionApp({}, routes, { secret: [NEW, OLD], store })
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws', { headers: { cookie } })
  await comm.connect()
  await comm.sendJsonTo({ login: 'alice' })
  t.match(await comm.receiveJsonFrom(), { user: { name: 'alice' } })
  t.match(await me(app, cookie), { sessionId, user: { name: 'alice' } }, 'HTTP with the old-secret cookie sees the login')
  t.notOk(logs.some(l => typeof l.msg === 'string' && l.msg.includes('no cookie for this session')), 'no false warning')
  await comm.disconnect()
})

t.test('after scope.session.destroy() on the socket, login() says this connection has no session, not that a plugin is missing', async t => {
  const { comm } = await socketInSession(t)
  await comm.sendJsonTo({ destroy: true })
  await comm.receiveJsonFrom()
  await comm.sendJsonTo({ login: 'alice' })
  const reply = await comm.receiveJsonFrom() as { error: string, message: string }
  t.equal(reply.error, 'FST_CHANNELS_SESSION_REQUIRED')
  t.match(reply.message, /this connection has none/)
  t.notMatch(reply.message, /register/)
  await comm.disconnect()
})

t.test('login()/logout() without @fastify/session, or without a user, fail with a clear error', async t => {
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Account.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendJsonTo({ login: 'alice' })
  t.match(await comm.receiveJsonFrom(), { error: 'FST_CHANNELS_SESSION_REQUIRED', message: /register @fastify\/cookie and @fastify\/session/ })
  await comm.sendJsonTo({ logout: true })
  t.match(await comm.receiveJsonFrom(), { error: 'FST_CHANNELS_SESSION_REQUIRED' })
  await comm.sendJsonTo({ login: null })
  t.match(await comm.receiveJsonFrom(), { error: 'FST_CHANNELS_INVALID_OPTION' })
  await comm.disconnect()
})
