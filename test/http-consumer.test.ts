/**
 * AsyncHttpConsumer through real HTTP on loopback, read as a browser's EventSource reads it: the
 * scope and the route's hooks, groups and dispatch by type, ordering behind handle(), how the
 * response starts and ends, disconnect() once, shutdown, and what bad calls cost (their own
 * response, nothing else).
 */
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyReply, FastifyRequest } from 'fastify'
import Fastify from 'fastify'
import fastifyChannels, { AsyncHttpConsumer, InMemoryChannelLayer, type Delivery } from '../lib/index.js'
import { buildApp, eventually, unhandledRejections } from './helpers/app.js'
import { listen, openClient } from './helpers/loopback.js'
import { openEventStream } from './helpers/event-stream.js'
import { buildSessionApp, sessionCookie, sessionData } from './helpers/session.js'

const inspect = (app: { channelLayer: unknown }) => (app.channelLayer as InMemoryChannelLayer).inspect()
const empty = { channels: 0, groups: 0, memberships: 0 }

async function serve (routes: Parameters<typeof buildApp>[1], opts: Parameters<typeof buildApp>[0] = {}) {
  const built = await buildApp(opts, routes)
  const { url } = await listen(built.app)
  return { ...built, base: url.replace('ws://', 'http://') }
}

t.test('an event stream: the scope, groups, handlers by type with their Delivery, disconnect() once when the client leaves', async t => {
  const disconnects: string[] = []
  class RoomEvents extends AsyncHttpConsumer {
    override groups = ['announcements']
    override async handle () {
      await this.channelLayer.groupAdd(`room.${this.scope.params.room}`, this.channelName)
      const { type, path, query, params, user, headers } = this.scope
      await this.sendEvent({ event: 'hello', data: { type, path, query, params, user, agent: headers['user-agent'] } })
    }

    async roomMessage (event: { text: string }, info: Delivery) {
      await this.sendEvent({ data: event.text, event: 'message', id: `${info.group ?? ''}` })
    }

    override async disconnect () { disconnects.push(this.scope.params.room) }
  }
  const { app, base, logs } = await serve(app => {
    app.get('/events/:room', {
      preHandler: async (request: FastifyRequest) => { (request as unknown as { user: object }).user = { name: 'Ada' } }
    }, RoomEvents.asHandler())
  })
  t.teardown(() => app.close())
  const stream = await openEventStream(`${base}/events/lobby?since=3`, { 'user-agent': 'test-agent' })
  t.equal(stream.status, 200)
  t.match(stream.headers, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' })
  const [hello] = await stream.waitForEvents(1)
  t.same(JSON.parse(hello.data), {
    type: 'http', path: '/events/lobby', query: { since: '3' }, params: { room: 'lobby' }, user: { name: 'Ada' }, agent: 'test-agent'
  }, 'the scope: type http, params, query, the user from the route\'s hook, headers')
  t.equal(hello.event, 'hello')

  await app.channelLayer.groupSend('room.lobby', { type: 'room.message', text: 'first line\nsecond line' })
  await app.channelLayer.groupSend('room.other', { type: 'room.message', text: 'not for us' })
  await app.channelLayer.groupSend('announcements', { type: 'room.message', text: 'to everyone' })
  const events = await stream.waitForEvents(3)
  t.same(events.slice(1).map(e => [e.event, e.data, e.id]), [
    ['message', 'first line\nsecond line', 'room.lobby'],
    ['message', 'to everyone', 'announcements']
  ], 'layer messages by type, with their Delivery; a multi-line string arrives whole')
  t.same(inspect(app), { channels: 1, groups: 2, memberships: 2 }, 'its channel, listened to, in two groups')

  stream.close()
  await eventually(() => disconnects.length === 1)
  await eventually(() => inspect(app).memberships === 0)
  t.same(disconnects, ['lobby'], 'disconnect() once when the client goes away')
  t.same(inspect(app), empty, 'its channel and memberships are gone')
  t.notOk(logs.some(l => (l.level as number) >= 40), 'nothing worse than info logged')
})

t.test('the session and its user reach the scope, as for a WebSocket consumer; cookies too', async t => {
  class Me extends AsyncHttpConsumer {
    override async handle () {
      const { session, user, cookies } = this.scope
      const visits = (session as { get (key: string): unknown } | null)?.get('visits') ?? null
      await this.sendEvent({ data: { user, visits, hasCookie: 'sessionId' in cookies } })
    }
  }
  const { app } = await buildSessionApp({}, app => {
    app.post('/login', async (request) => {
      sessionData(request).set('user', { name: 'Grace' })
      sessionData(request).set('visits', 3)
      return { ok: true }
    })
    app.get('/me', Me.asHandler())
  })
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const base = url.replace('ws://', 'http://')
  const cookie = sessionCookie(await app.inject({ method: 'POST', url: '/login' }))
  const signedIn = await openEventStream(`${base}/me`, { cookie })
  t.same(JSON.parse((await signedIn.waitForEvents(1))[0].data), { user: { name: 'Grace' }, visits: 3, hasCookie: true })
  signedIn.close()
  const anonymous = await openEventStream(`${base}/me`)
  t.same(JSON.parse((await anonymous.waitForEvents(1))[0].data), { user: null, visits: null, hasCookie: false })
  anonymous.close()
})

t.test('layer messages that arrive while handle() runs wait for it, then come in order', async t => {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let started!: () => void
  const handling = new Promise<void>(resolve => { started = resolve })
  class Slow extends AsyncHttpConsumer {
    override groups = ['feed']
    override async handle () {
      await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
      started()
      await gate
      await this.sendEvent({ data: 'handle done' })
    }

    async feedItem (event: { n: number }) { await this.sendEvent({ data: `item ${event.n}` }) }
  }
  const { app, base } = await serve(app => app.get('/feed', Slow.asHandler()))
  t.teardown(() => app.close())
  const stream = await openEventStream(`${base}/feed`)
  await handling
  for (let n = 1; n <= 5; n++) await app.channelLayer.groupSend('feed', { type: 'feed.item', n })
  await sleep(20)
  t.same(stream.events, [], 'nothing before handle() returns')
  release()
  const events = await stream.waitForEvents(6)
  t.same(events.map(e => e.data), ['handle done', 'item 1', 'item 2', 'item 3', 'item 4', 'item 5'])
  stream.close()
})

t.test('sendHeaders() and sendBody(): status and headers (with the hooks\' own), chunks, and the end with more: false', async t => {
  const disconnects: number[] = []
  const errors: unknown[] = []
  class LongPoll extends AsyncHttpConsumer {
    override groups = ['jobs']
    override async handle () {
      await this.sendHeaders({ status: 202, headers: { 'Content-Type': 'application/json', 'x-poll': 'yes' } })
      await this.sendBody('', { more: true })
    }

    async jobDone (event: { id: number }) {
      await this.sendBody(JSON.stringify({ done: event.id }))
      try {
        await this.sendBody('too late')
      } catch (err) {
        errors.push(err)
      }
    }

    override async disconnect () { disconnects.push(1) }
  }
  const { app, base } = await serve(app => app.get('/poll', {
    onRequest: async (_request: FastifyRequest, reply: FastifyReply) => { reply.header('x-from-hook', 'kept') }
  }, LongPoll.asHandler()))
  t.teardown(() => app.close())
  const stream = await openEventStream(`${base}/poll`)
  t.equal(stream.status, 202)
  t.match(stream.headers, { 'content-type': 'application/json', 'x-poll': 'yes', 'x-from-hook': 'kept' })
  await app.channelLayer.groupSend('jobs', { type: 'job.done', id: 7 })
  t.equal(await stream.ended, true, 'the response ended normally')
  t.equal(stream.body(), '{"done":7}')
  await eventually(() => disconnects.length === 1)
  t.same(disconnects, [1])
  t.match(errors, [{ code: 'FST_CHANNELS_CONNECTION_CLOSED' }], 'sendBody() after the end rejects with a typed error')
  await eventually(() => inspect(app).memberships === 0)
})

t.test('sendHeaders() with an event stream\'s content type: no cache and no nginx buffering unless the app set its own', async t => {
  class Stream extends AsyncHttpConsumer {
    override async handle () {
      const own = this.scope.query.own === '1' ? { 'Cache-Control': 'private, max-age=5' } : {}
      await this.sendHeaders({ headers: { 'content-type': this.scope.query.type ?? 'text/event-stream', ...own } })
      await this.sendBody('data: x\n\n')
    }
  }
  const { app, base } = await serve(app => app.get('/stream', Stream.asHandler()))
  t.teardown(() => app.close())
  const plain = await openEventStream(`${base}/stream`)
  t.match(plain.headers, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' },
    'the README\'s sendHeaders() of an event stream gets the head sendEvent() would send')
  const own = await openEventStream(`${base}/stream?own=1`)
  t.match(own.headers, { 'cache-control': 'private, max-age=5', 'x-accel-buffering': 'no' }, 'a header the app set wins')
  const json = await openEventStream(`${base}/stream?type=application/json`)
  t.equal(json.headers['x-accel-buffering'], undefined, 'another content type is left as it is')
  t.equal(json.headers['cache-control'], undefined)
  await Promise.all([plain.ended, own.ended, json.ended])
})

t.test('sendBody() alone answers 200 and ends; bytes are written as they are', async t => {
  class Once extends AsyncHttpConsumer {
    override async handle () { await this.sendBody(Buffer.from([0x68, 0x69])) }
  }
  const { app, base } = await serve(app => app.get('/once', Once.asHandler()))
  t.teardown(() => app.close())
  const stream = await openEventStream(`${base}/once`)
  t.equal(stream.status, 200)
  t.equal(await stream.ended, true)
  t.equal(stream.body(), 'hi')
})

t.test('handle() that sends nothing, throws, or is missing: 500 and an error log; disconnect() still runs once', async t => {
  const disconnects: string[] = []
  class Silent extends AsyncHttpConsumer {
    override async handle () {}
    override async disconnect () { disconnects.push('silent') }
  }
  class Throws extends AsyncHttpConsumer {
    override async handle () { throw new Error('database down') }
    override async disconnect () { disconnects.push('throws') }
  }
  class ThrowsLater extends AsyncHttpConsumer {
    override async handle () {
      await this.sendEvent({ data: 'started' })
      throw new Error('after the head')
    }
  }
  class Missing extends AsyncHttpConsumer {}
  const { app, base, logs } = await serve(app => {
    app.addHook('onRequest', async (_request, reply) => { void reply.header('access-control-allow-origin', 'https://app.example') })
    app.get('/silent', Silent.asHandler())
    app.get('/throws', Throws.asHandler())
    app.get('/throws-later', ThrowsLater.asHandler())
    app.get('/missing', Missing.asHandler())
  })
  t.teardown(() => app.close())
  for (const path of ['/silent', '/throws', '/missing']) {
    const stream = await openEventStream(`${base}${path}`)
    t.equal(stream.status, 500, `${path}: 500`)
    t.equal(stream.headers['access-control-allow-origin'], 'https://app.example', `${path}: with the header a hook set (a browser would hide the status without it)`)
    await stream.ended
    t.match(JSON.parse(stream.body()), { statusCode: 500, error: 'Internal Server Error' })
  }
  const failures = logs.filter(l => l.msg === 'consumer handler failed; ending the response (500 if its head was not sent)').map(l => (l.err as { message: string, code?: string }))
  t.match(failures, [
    { code: 'FST_CHANNELS_HTTP_RESPONSE', message: 'Silent.handle() returned without sending a response' },
    { message: 'database down' },
    { code: 'FST_CHANNELS_HTTP_RESPONSE', message: 'Missing must implement handle()' }
  ])
  const later = await openEventStream(`${base}/throws-later`)
  t.equal(later.status, 200, 'a failure after the head cannot change the status…')
  t.equal(await later.ended, true, '…so the response ends')
  t.same(later.events.map(e => e.data), ['started'])
  await eventually(() => disconnects.length === 2)
  t.same(disconnects.sort(), ['silent', 'throws'])
  await eventually(() => inspect(app).channels === 0 && inspect(app).memberships === 0)
})

t.test('the route\'s hooks run first: a 401 from onRequest creates no consumer', async t => {
  let built = 0
  class Private extends AsyncHttpConsumer {
    constructor () { super(); built++ }
    override async handle () { await this.sendEvent({ data: 'secret' }) }
  }
  const { app, base } = await serve(app => app.get('/private', {
    onRequest: async (request: FastifyRequest, reply: FastifyReply) => {
      if (request.headers.authorization !== 'Bearer ok') await reply.code(401).send({ error: 'no' })
    }
  }, Private.asHandler()))
  t.teardown(() => app.close())
  const refused = await openEventStream(`${base}/private`)
  t.equal(refused.status, 401)
  await refused.ended
  t.equal(built, 0, 'no consumer for a refused request')
  const allowed = await openEventStream(`${base}/private`, { authorization: 'Bearer ok' })
  t.same((await allowed.waitForEvents(1)).map(e => e.data), ['secret'])
  allowed.close()
})

t.test('app.close() ends every stream, runs each disconnect() once, refuses new requests with 503', async t => {
  const disconnects: number[] = []
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  class Ticker extends AsyncHttpConsumer {
    override groups = ['ticks']
    override async handle () { await this.sendEvent({ data: 'open' }) }
    override async disconnect () { await gate; disconnects.push(1) }
  }
  const { app, base } = await serve(app => app.get('/ticks', Ticker.asHandler()))
  const streams = await Promise.all([1, 2, 3].map(async () => await openEventStream(`${base}/ticks`)))
  await Promise.all(streams.map(async s => await s.waitForEvents(1)))
  // A browser's stream, on a connection kept alive.
  const browser = connect(Number(new URL(base).port), '127.0.0.1')
  t.teardown(() => { browser.destroy() })
  let received = ''
  browser.setEncoding('latin1')
  browser.on('data', (chunk: string) => { received += chunk })
  const connectionEnded = new Promise<string>(resolve => browser.once('end', () => { resolve(received) }))
  browser.write('GET /ticks HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: keep-alive\r\n\r\n')
  await eventually(() => received.includes('data: open'))
  const closing = app.close()
  for (const s of streams) t.equal(await s.ended, true, 'each stream ended cleanly (an EventSource would reconnect)')
  t.match(await connectionEnded, /\r\n0\r\n\r\n$/, 'the keep-alive connection closes right after the body\'s end, before the disconnect()s are done: an EventSource\'s reconnect cannot come back on it to a 503')
  t.same(disconnects, [], 'the disconnect()s were still running')
  const late = await openEventStream(`${base}/ticks`)
  t.equal(late.status, 503, 'a request while closing gets 503')
  release()
  await closing
  t.same(disconnects, [1, 1, 1, 1], 'every disconnect() ran once, before close() resolved')
  t.same(inspect(app), empty)
})

/**
 * An event stream with about 1 MiB left waiting in the server's socket for its reader, which has
 * stopped reading: under maxBufferedBytes (4 MiB), a reader a little behind.
 */
async function readerBehind (t: Test) {
  let sent = 0
  let queuedAtServer = (): number => 0
  class Feed extends AsyncHttpConsumer {
    override async handle () {
      const socket = this.scope.request.raw.socket
      queuedAtServer = () => socket.writableLength
      const pad = 'x'.repeat(16 * 1024)
      while (socket.writableLength < 1024 * 1024 && sent < 2000) {
        await this.sendEvent({ id: ++sent, data: pad })
        if (sent % 16 === 0) await sleep(1)
      }
    }
  }
  const { app, base, logs } = await serve(app => app.get('/feed', Feed.asHandler()))
  const { port } = new URL(base)
  const reader = connect(Number(port), '127.0.0.1')
  t.teardown(() => { reader.destroy() })
  let body = ''
  reader.setEncoding('latin1')
  reader.on('data', (chunk: string) => { body += chunk })
  const gone = new Promise(resolve => reader.once('close', resolve))
  reader.write('GET /feed HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n')
  reader.pause()
  await eventually(() => queuedAtServer() >= 1024 * 1024, 10_000)
  return { app, logs, reader, gone, body: () => body, sent: () => sent }
}

const cutOffWarnings = (logs: Array<{ msg?: unknown }>) => logs.filter(l => /did not take the rest of their response/.test(String(l.msg)))

t.test('app.close() with a reader behind: the rest of its stream and the end still reach it once it reads again, within the grace', async t => {
  const { app, logs, reader, gone, body, sent } = await readerBehind(t)
  const closing = app.close()
  await sleep(300)
  reader.resume()
  await closing
  await gone
  const ids = [...body().matchAll(/id: (\d+)\n/g)].map(m => Number(m[1]))
  t.equal(ids.length, sent(), `every event arrived (${ids.length} of ${sent()})`)
  t.ok(body().endsWith('0\r\n\r\n'), 'and the end of the body')
  t.same(cutOffWarnings(logs), [], 'nothing was cut off')
})

t.test('app.close() with a reader that never reads again: its response is cut off after the 5 s grace, counted in one warning', async t => {
  const { app, logs, reader, gone, body, sent } = await readerBehind(t)
  const started = Date.now()
  await app.close()
  const took = Date.now() - started
  reader.resume() // what had reached its kernel, then the end of the connection
  await gone
  const ids = [...body().matchAll(/id: (\d+)\n/g)].map(m => Number(m[1]))
  t.ok(took >= 4000 && took < 15_000, `close() waited for the grace, not longer (${took} ms)`)
  t.ok(ids.length < sent(), `the reader got part of the stream (${ids.length} of ${sent()} events)`)
  t.notOk(body().endsWith('0\r\n\r\n'), 'and never the end of the body')
  t.match(cutOffWarnings(logs), [{ level: 40, responses: 1, graceMs: 5000 }], 'the cut is logged at warn, once')
})

t.test('a stream whose handle() is still running at shutdown is answered 503', async t => {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let started!: () => void
  const handling = new Promise<void>(resolve => { started = resolve })
  class Stuck extends AsyncHttpConsumer {
    override async handle () { started(); await gate; await this.sendEvent({ data: 'late' }) }
  }
  const { app, base, logs } = await serve(app => app.get('/stuck', Stuck.asHandler()))
  const pending = openEventStream(`${base}/stuck`)
  await handling
  const closing = app.close()
  const stream = await pending
  t.equal(stream.status, 503)
  release()
  await closing
  t.notOk(logs.some(l => (l.level as number) >= 50), 'the late send is a lost race, not an error')
})

t.test('bad calls reject with typed errors and cost only their own response', async t => {
  const outcomes: Record<string, unknown> = {}
  class Careless extends AsyncHttpConsumer {
    override groups = ['bad']
    override async handle () {
      await this.sendEvent({ data: 'ready' })
    }

    async badTry (event: { what: string }) {
      const attempts: Record<string, () => Promise<void>> = {
        newlineEvent: async () => await this.sendEvent({ event: 'x\ndata: forged', data: 'y' }),
        newlineId: async () => await this.sendEvent({ id: '1\r\nevent: forged', data: 'y' }),
        headersAgain: async () => await this.sendHeaders(),
        badStatus: async () => await this.sendHeaders({ status: 99 }),
        nullHead: async () => await this.sendHeaders(null as never),
        nullBodyOptions: async () => await this.sendBody('x', null as never),
        badChunk: async () => await this.sendBody(42 as never),
        noData: async () => await this.sendEvent({} as never),
        spawnNothing: async () => { this.spawn(undefined as never) }
      }
      const attempt = attempts[event.what]
      try {
        await attempt()
        outcomes[event.what] = 'sent'
      } catch (err) {
        outcomes[event.what] = (err as { code: string }).code
      }
      await this.sendEvent({ data: `after ${event.what}` })
    }

    async badThrow () {
      await this.sendEvent({ event: 'bad\nevent: forged', data: 'y' })
    }
  }
  class Injecting extends AsyncHttpConsumer {
    override async handle () { await this.sendHeaders({ headers: { 'x-evil': 'a\r\nset-cookie: forged=1' } }) }
  }
  const { app, base, logs } = await serve(app => {
    app.get('/careless', Careless.asHandler())
    app.get('/injecting', Injecting.asHandler())
  })
  t.teardown(() => app.close())
  const victim = await openEventStream(`${base}/careless`)
  const bystander = await openEventStream(`${base}/careless`)
  await victim.waitForEvents(1)
  await bystander.waitForEvents(1)
  const whats = ['newlineEvent', 'newlineId', 'headersAgain', 'badStatus', 'nullHead', 'nullBodyOptions', 'badChunk', 'noData', 'spawnNothing']
  for (const what of whats) await app.channelLayer.groupSend('bad', { type: 'bad.try', what })
  await victim.waitForEvents(1 + whats.length)
  t.same(outcomes, {
    newlineEvent: 'FST_CHANNELS_INVALID_EVENT',
    newlineId: 'FST_CHANNELS_INVALID_EVENT',
    headersAgain: 'FST_CHANNELS_HTTP_RESPONSE',
    badStatus: 'FST_CHANNELS_INVALID_OPTION',
    nullHead: 'FST_CHANNELS_INVALID_OPTION',
    nullBodyOptions: 'FST_CHANNELS_INVALID_OPTION',
    badChunk: 'FST_CHANNELS_INVALID_OPTION',
    noData: 'FST_CHANNELS_INVALID_EVENT',
    spawnNothing: 'FST_CHANNELS_INVALID_OPTION'
  })
  t.notMatch(victim.body(), /forged/, 'nothing forged reached the stream')

  // Uncaught, the error fails the handler: that response ends, the others go on.
  await app.channelLayer.groupSend('bad', { type: 'bad.throw' })
  t.equal(await victim.ended, true)
  t.equal(await bystander.ended, true, 'both members got the message and both failed alike…')
  t.ok(logs.some(l => l.msg === 'consumer handler failed; ending the response (500 if its head was not sent)' && (l.err as { code: string }).code === 'FST_CHANNELS_INVALID_EVENT'))
  const fresh = await openEventStream(`${base}/careless`)
  t.same((await fresh.waitForEvents(1)).map(e => e.data), ['ready'], '…and a new stream works')
  t.notMatch(victim.body() + bystander.body(), /forged/)
  fresh.close()

  const injecting = await openEventStream(`${base}/injecting`)
  t.equal(injecting.status, 500, 'a header value with CRLF is refused before anything is written')
  t.equal(injecting.headers['set-cookie'], undefined)
  t.ok(logs.some(l => (l.err as { code?: string } | undefined)?.code === 'FST_CHANNELS_INVALID_OPTION'))
})

t.test('a sendEvent() nothing awaited that fails ends its response and is logged, never an unhandled rejection', async t => {
  const unhandled = unhandledRejections(t)
  class Forgetful extends AsyncHttpConsumer {
    override groups = ['forgetful']
    override async handle () {
      await this.sendEvent({ data: 'ready' })
    }

    // A plain method that does not wait for its send.
    forgetfulSend (event: { id: string }): void {
      void this.sendEvent({ id: event.id, data: 'y' })
    }
  }
  const { app, base, logs } = await serve(app => app.get('/forgetful', Forgetful.asHandler()))
  t.teardown(() => app.close())
  const stream = await openEventStream(`${base}/forgetful`)
  await stream.waitForEvents(1)
  await app.channelLayer.groupSend('forgetful', { type: 'forgetful.send', id: '7' })
  t.same((await stream.waitForEvents(2)).map(e => e.id), ['', '7'], 'a send that succeeds needs no await')
  await app.channelLayer.groupSend('forgetful', { type: 'forgetful.send', id: '1\nevent: forged' })
  t.equal(await stream.ended, true, 'the response ends')
  t.notMatch(stream.body(), /forged/)
  const logged = logs.find(l => l.msg === 'a send that nothing awaited failed; ending the response (500 if its head was not sent)')
  t.match(logged, { level: 50, err: { code: 'FST_CHANNELS_INVALID_EVENT' } }, 'logged at error with the typed error')
  t.same(unhandled, [], 'no unhandled rejection')
  const fresh = await openEventStream(`${base}/forgetful`)
  t.same((await fresh.waitForEvents(1)).map(e => e.data), ['ready'], 'a new stream works')
  fresh.close()
})

t.test('HEAD is 405; { websocket: true } on an HTTP consumer fails at registration; a WebSocket upgrade there is not served', async t => {
  let handled = 0
  class Events extends AsyncHttpConsumer {
    override async handle () { handled++; await this.sendEvent({ data: 'x' }) }
  }
  const { app, base } = await serve(app => app.get('/events', Events.asHandler()))
  t.teardown(() => app.close())
  const head = await openEventStream(`${base}/events`, {}, 'HEAD')
  t.equal(head.status, 405)
  t.equal(head.headers.allow, 'GET')
  const upgraded = await openClient(`${base.replace('http://', 'ws://')}/events`)
  await upgraded.closed
  t.equal(handled, 0, 'an upgrade on the route is closed by @fastify/websocket, as on any HTTP route; no consumer runs')

  const other = Fastify()
  await other.register(fastifyChannels)
  t.throws(() => other.get('/ws', { websocket: true }, Events.asHandler() as never), { code: 'FST_CHANNELS_INVALID_OPTION' })
  await other.close()
})

t.test('spawn() in an HTTP consumer: the SSE clock stops when the client leaves', async t => {
  let ticks = 0
  let disconnected = 0
  class Clock extends AsyncHttpConsumer {
    override async handle () {
      await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
      this.spawn(async signal => {
        for (;;) {
          ticks++
          await this.sendEvent({ event: 'tick', data: String(ticks) })
          await sleep(10, undefined, { signal })
        }
      })
    }

    override async disconnect () { disconnected++ }
  }
  const { app, base, logs } = await serve(app => app.get('/clock', Clock.asHandler()))
  t.teardown(() => app.close())
  const stream = await openEventStream(`${base}/clock`)
  await stream.waitForEvents(3)
  stream.close()
  await eventually(() => disconnected === 1)
  const stopped = ticks
  await sleep(40)
  t.equal(ticks, stopped, 'the clock stopped')
  t.notOk(logs.some(l => (l.level as number) >= 40))
})

t.test('without the plugin in scope, the handler answers 500 and says why', async t => {
  class Events extends AsyncHttpConsumer {}
  const app = Fastify()
  app.get('/events', Events.asHandler())
  t.teardown(() => app.close())
  const reply = await app.inject({ method: 'GET', url: '/events' })
  t.equal(reply.statusCode, 500)
  t.match(reply.json(), { message: 'fastify-channels is not registered' })
})

t.test('a group message to many event streams: each gets exactly the JSON of what its own handler sent', async t => {
  const edits: Record<string, (event: Record<string, any>) => unknown> = {
    same: event => event.payload,
    change: event => { event.payload.n = 99; return event.payload },
    reorder: event => { const a = event.payload.a; delete event.payload.a; event.payload.a = a; return event.payload }
  }
  class Feed extends AsyncHttpConsumer {
    override groups = ['feed']
    override async handle () { await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } }) }
    async feedItem (event: Record<string, any>) {
      await this.sendEvent({ data: edits[this.scope.params.how](event) })
    }
  }
  const { app, base } = await serve(app => { app.get('/feed/:how', Feed.asHandler()) })
  t.teardown(() => app.close())
  const order = ['same', 'change', 'same', 'reorder', 'same', 'change']
  const streams = []
  for (const how of order) {
    const stream = await openEventStream(`${base}/feed/${how}`)
    t.teardown(() => stream.close())
    streams.push({ how, stream })
  }
  await eventually(() => inspect(app).memberships === order.length)
  await app.channelLayer.groupSend('feed', { type: 'feed.item', payload: { n: 1, a: 'x', t: 0.1 + 0.2 } })
  const expected: Record<string, string> = {
    same: '{"n":1,"a":"x","t":0.30000000000000004}',
    change: '{"n":99,"a":"x","t":0.30000000000000004}',
    reorder: '{"n":1,"t":0.30000000000000004,"a":"x"}'
  }
  for (const { how, stream } of streams) {
    const [event] = await stream.waitForEvents(1)
    t.equal(event.data, expected[how], how)
  }
})

t.test('sendHeaders({ status: 204 }) ends the response with its head: disconnect() runs, a later send rejects, the connection serves the next request', async t => {
  let afterwards: unknown
  const disconnected: number[] = []
  class Stop extends AsyncHttpConsumer {
    override async handle () {
      await this.sendHeaders({ status: 204 })
      afterwards = await this.sendEvent({ data: 'too late' }).then(() => 'sent', (err: Error & { code?: string }) => err.code)
    }

    override async disconnect () { disconnected.push(1) }
  }
  const { app, base } = await serve(app => {
    app.get('/stop', Stop.asHandler())
    app.get('/plain', async () => 'next')
  })
  t.teardown(() => app.close())
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  let received = ''
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => { received += chunk })
  socket.write('GET /stop HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\nGET /plain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  await eventually(() => received.includes('next'), 3000)
  t.match(received, /^HTTP\/1\.1 204 No Content\r\n[\s\S]*HTTP\/1\.1 200 OK\r\n[\s\S]*next$/, 'the 204, then the next request on the same connection answered')
  await eventually(() => disconnected.length === 1)
  t.same(disconnected, [1], 'disconnect() ran once')
  t.equal(afterwards, 'FST_CHANNELS_CONNECTION_CLOSED', 'a send after it rejects')
  t.same(inspect(app), empty)
})
