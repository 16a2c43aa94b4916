/**
 * What `app.close()` does with the work a connection has in hand: the handler running when the
 * server begins to stop finishes and what it sends leaves before the close (1001), so a client's
 * call in flight is answered; what the client sent behind it is not run; a handler that does not
 * finish within the grace is not waited for.
 */
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import { setTimeout as wait } from 'node:timers/promises'
import { GroupsConsumer, WebsocketConsumer } from '../lib/index.js'
import { ChannelsClient } from '../lib/client/index.js'
import { appWithOwnWebsocket, buildApp, eventually, sleep } from './helpers/app.js'
import { listen, openClient } from './helpers/loopback.js'
import { clientRejection } from './helpers/client.js'

t.test('a call whose action runs when app.close() begins is answered, then the socket closes 1001; the call queued behind it never runs', async t => {
  const ran: string[] = []
  class Orders extends GroupsConsumer {
    static override actions = { place: {}, cancel: {} }
    async place (): Promise<string> {
      ran.push('place')
      await sleep(300) // a database write
      return 'placed'
    }

    async cancel (): Promise<string> {
      ran.push('cancel')
      return 'cancelled'
    }
  }
  const { app } = await buildApp({ heartbeatInterval: 0 }, app => app.get('/ws', { websocket: true }, Orders.asHandler()))
  const { url } = await listen(app)
  const client = new ChannelsClient(`${url}/ws`, { WebSocket })
  t.teardown(() => { client.close() })
  await eventually(() => client.state === 'open')
  const states: string[] = []
  client.on('state', state => { states.push(state) })

  const place = client.call('place')
  const cancel = clientRejection(client.call('cancel'))
  await eventually(() => ran.includes('place'))
  const closing = app.close()
  t.equal(await place, 'placed', 'the call in flight got its reply')
  const lost = await cancel
  t.equal(lost.code, 'FST_CHANNELS_CONNECTION_LOST', 'the call queued behind it is rejected as lost')
  await closing
  t.same(ran, ['place'], 'and its action never ran')
  t.not(states.length, 0, 'the client saw the connection end')
})

/** A consumer that answers each frame after 200 ms; `handled` gets each frame it took. */
function slowConsumer (handled: string[]) {
  return class Slow extends WebsocketConsumer {
    override async receive (text: string | undefined): Promise<void> {
      handled.push(String(text))
      await sleep(200)
      await this.send(`done ${String(text)}`)
    }
  }
}

/**
 * A frame in hand when app.close() begins: its reply arrives, then 1001; a frame sent meanwhile is
 * not handled; a socket of the app's own route (/plain) is closed 1001 at once.
 */
async function inHandThenClose (t: Test, app: FastifyInstance, handled: string[]): Promise<void> {
  const { url } = await listen(app)
  const received: string[] = []
  const { ws, closed } = await openClient(`${url}/ws`, {}, ws => { ws.on('message', data => { received.push(String(data)) }) })
  const plain = await openClient(`${url}/plain`)
  ws.send('first')
  await eventually(() => handled.length === 1)
  const closing = app.close()
  const plainClosed = await plain.closed
  t.equal(plainClosed.code, 1001, 'the app\'s own socket was closed 1001')
  t.same(received, [], 'while the handler in hand was still running')
  ws.send('second') // the server is stopping: not read
  const close = await closed
  await closing
  t.same(received, ['done first'], 'the reply of the frame in hand arrived')
  t.equal(close.code, 1001, 'then the close: 1001')
  t.same(handled, ['first'], 'the frame sent while the server stopped was not handled')
}

t.test('a plain consumer: what the handler in hand sends leaves before the 1001; a frame the client sends meanwhile is not handled', async t => {
  const handled: string[] = []
  const { app } = await buildApp({ heartbeatInterval: 0 }, app => {
    app.get('/ws', { websocket: true }, slowConsumer(handled).asHandler())
    app.get('/plain', { websocket: true }, () => {})
  })
  await inHandThenClose(t, app, handled)
})

t.test('the same with the app\'s own @fastify/websocket registered first (its preClose closes every socket)', async t => {
  const handled: string[] = []
  const app = await appWithOwnWebsocket({ heartbeatInterval: 0 })
  app.get('/ws', { websocket: true }, slowConsumer(handled).asHandler())
  app.get('/plain', { websocket: true }, () => {})
  await inHandThenClose(t, app, handled)
})

t.test('a client that closes while the server waits for the handler in hand: what it sent behind it still does not run', async t => {
  const handled: string[] = []
  const { app } = await buildApp({ heartbeatInterval: 0 }, app => app.get('/ws', { websocket: true }, slowConsumer(handled).asHandler()))
  const { url } = await listen(app)
  const { ws, closed } = await openClient(`${url}/ws`)
  ws.send('first')
  ws.send('second') // queued behind the first
  await eventually(() => handled.length === 1)
  const closing = app.close()
  await sleep(20)
  ws.close(1000)
  await closed
  await closing
  t.same(handled, ['first'], 'the frame queued behind the handler in hand was not handled')
})

t.test('with the app\'s own @fastify/websocket, a client that closes without a code ends its connection as any close does, not as a shutdown', async t => {
  const handled: string[] = []
  const codes: number[] = []
  class Recorded extends WebsocketConsumer {
    override async receive (text: string | undefined): Promise<void> {
      handled.push(String(text))
      await sleep(100)
    }

    override async disconnect (code: number): Promise<void> { codes.push(code) }
  }
  const app = await appWithOwnWebsocket({ heartbeatInterval: 0 })
  app.get('/ws', { websocket: true }, Recorded.asHandler())
  t.teardown(() => app.close())
  const { url } = await listen(app)
  for (const busy of [false, true]) {
    const { ws, closed } = await openClient(`${url}/ws`)
    if (busy) {
      ws.send('work')
      await eventually(() => handled.length === 1)
    }
    ws.close() // a close frame without a code (1005), as a browser's ws.close() sends
    const close = await Promise.race([closed, sleep(5000).then(() => ({ code: 0, reason: 'no answer within 5 s' }))])
    t.equal(close.code, 1005, `${busy ? 'with a handler running, ' : ''}the close is answered at once, as sent`)
  }
  await eventually(() => codes.length === 2)
  t.same(codes, [1005, 1005], 'disconnect() gets the client\'s close, not a shutdown\'s 1001')
})

t.test('a handler that waits on its signal stops at once: the client gets 1001 and app.close() does not wait for the grace, no error', async t => {
  const stopped: string[] = []
  class Progress extends WebsocketConsumer {
    override async receive (): Promise<void> {
      try {
        for (let step = 0; step < 600; step++) {
          await wait(100, undefined, { signal: this.signal }) // a long job's progress, until the connection ends
          await this.send(`step ${step}`)
        }
      } catch (err) {
        stopped.push((err as Error).name)
        throw err
      }
    }
  }
  const { app, logs } = await buildApp({ heartbeatInterval: 0 }, app => app.get('/ws', { websocket: true }, Progress.asHandler()))
  const { url } = await listen(app)
  const { ws, closed } = await openClient(`${url}/ws`)
  ws.send('go')
  await sleep(150)
  const began = performance.now()
  await app.close()
  const took = performance.now() - began
  t.equal((await closed).code, 1001, 'the client got 1001')
  t.ok(took < 2_000, `app.close() did not wait for the grace (${Math.round(took)} ms)`)
  t.same(stopped, ['AbortError'], 'the handler\'s wait was aborted')
  t.same(logs.filter(l => Number(l.level) >= 40).map(l => l.msg), [], 'nothing logged as a failure')
})

t.test('a handler still running after the grace is not waited for: the client gets 1001, app.close() completes, logged', async t => {
  let started = false
  class Stuck extends WebsocketConsumer {
    override async receive (): Promise<void> {
      started = true
      await new Promise(() => {}) // a call to a service that never answers
    }
  }
  const { app, logs } = await buildApp({ heartbeatInterval: 0 }, app => app.get('/ws', { websocket: true }, Stuck.asHandler()))
  const { url } = await listen(app)
  const { ws, closed } = await openClient(`${url}/ws`)
  ws.send('go')
  await eventually(() => started)
  const began = performance.now()
  const closing = app.close().then(() => 'closed')
  t.equal((await closed).code, 1001, 'the client got 1001')
  t.equal(await Promise.race([closing, sleep(15_000).then(() => 'still closing after 15 s')]), 'closed', 'app.close() completed')
  const took = performance.now() - began
  t.ok(took >= 4_500, `after the grace, not before (${Math.round(took)} ms)`)
  t.match(logs.filter(l => /after the grace/.test(String(l.msg))), [{ level: 40, connections: 1 }], 'said so at warn')
})
