/**
 * The async context a consumer's code runs in: the one of the request that opened its connection
 * (the AsyncLocalStorage values a route's hooks set, as @fastify/request-context does), in every
 * handler and what it awaits. Never the context of whoever sent it a layer message: on the
 * in-memory layer a groupSend() from another user's request runs the fan-out in that request.
 */
import t from 'tap'
import { AsyncLocalStorage } from 'node:async_hooks'
import { AsyncHttpConsumer, JsonWebsocketConsumer } from '../lib/index.js'
import { buildApp, eventually } from './helpers/app.js'
import { listen, openClient } from './helpers/loopback.js'
import { openEventStream } from './helpers/event-stream.js'

const requestUser = new AsyncLocalStorage<{ name: string }>()
const nameInContext = (): string => requestUser.getStore()?.name ?? 'none'
const disconnects: string[] = []

class Room extends JsonWebsocketConsumer {
  override groups = ['room']
  override async connect () {
    await this.accept()
    await this.sendJson({ on: 'connect', name: nameInContext() })
  }

  override async receiveJson () {
    await this.sendJson({ on: 'receive', name: nameInContext() })
  }

  async roomMessage () {
    await new Promise(resolve => setImmediate(resolve))
    await this.sendJson({ on: 'message', name: nameInContext() })
  }

  override async disconnect () { disconnects.push(nameInContext()) }
}

class RoomEvents extends AsyncHttpConsumer {
  override groups = ['room']
  override async handle () {
    await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
  }

  async roomMessage () {
    await this.sendEvent({ data: nameInContext() })
  }
}

t.test('every handler runs in the context of the request that opened its connection, never the sender\'s', async t => {
  const { app } = await buildApp({}, app => {
    app.addHook('onRequest', (request, _reply, done) => {
      const { name } = request.query as { name?: string }
      // A request without a name holds no value at all.
      if (name === undefined) done()
      else requestUser.run({ name }, done)
    })
    app.get('/ws', { websocket: true }, Room.asHandler())
    app.get('/events', RoomEvents.asHandler())
    app.post('/say', async () => { await app.channelLayer.groupSend('room', { type: 'room.message' }); return {} })
  })
  t.teardown(() => app.close())
  const { url } = await listen(app)
  // dave's request held no value: his handlers see none, never the sender's.
  const sockets = await Promise.all(['alice', 'bob', 'none'].map(async name => {
    const frames: unknown[] = []
    const client = await openClient(`${url}/ws${name === 'none' ? '' : `?name=${name}`}`, {}, ws => ws.on('message', data => frames.push(JSON.parse(String(data)))))
    return { name, frames, client }
  }))
  const stream = await openEventStream(`${url.replace(/^ws:/, 'http:')}/events?name=carol`)
  for (const { name, frames, client } of sockets) {
    client.ws.send('{}')
    await eventually(() => frames.length === 2)
    t.same(frames, [{ on: 'connect', name }, { on: 'receive', name }], `${name}: connect() and a client frame`)
  }

  t.equal((await app.inject({ method: 'POST', url: '/say?name=mallory' })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/say' })).statusCode, 200, 'and once from a request without values')
  for (const { name, frames } of sockets) {
    await eventually(() => frames.length === 4)
    t.same(frames.slice(2), [{ on: 'message', name }, { on: 'message', name }], `${name}: the group messages sent from mallory's request and from one without values`)
  }
  t.same((await stream.waitForEvents(2)).map(e => e.data), ['carol', 'carol'], 'an event stream too')

  stream.close()
  for (const { client } of sockets) client.ws.close()
  await eventually(() => disconnects.length === 3)
  t.same(disconnects.sort(), ['alice', 'bob', 'none'], 'disconnect() too')
})
