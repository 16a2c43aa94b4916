/**
 * Connection-scoped tasks through real sockets on loopback: the clock written with `spawn()`, the
 * tutorials' loop written in `connect()`, and what a failing or badly called task costs (its own
 * connection, nothing else). The lifecycle details against a fake socket:
 * test/connection/connection.test.ts; the tasks alone: test/connection/scoped-tasks.test.ts.
 */
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type WebSocket from 'ws'
import { InMemoryChannelLayer, JsonWebsocketConsumer, WebsocketConsumer } from '../lib/index.js'
import { buildApp, eventually, unhandledRejections } from './helpers/app.js'
import { listen, openClient, rawSession } from './helpers/loopback.js'

/** Collects what a client receives, as text. */
function inbox (ws: WebSocket): string[] {
  const received: string[] = []
  ws.on('message', (data: Buffer) => received.push(data.toString()))
  return received
}

/**
 * Another client of an echo consumer (one that answers a frame with `echo <text>`), to show that
 * a failure cost only its own connection: `stillServed()` gets its echo, then leaves.
 */
async function echoBystander (url: string): Promise<{ stillServed: (t: Test) => Promise<void> }> {
  const { ws, closed } = await openClient(url)
  const received = inbox(ws)
  return {
    async stillServed (t) {
      ws.send('still here')
      await eventually(() => received.includes('echo still here'))
      t.pass('the other connection is unaffected')
      ws.close()
      await closed
    }
  }
}

t.test('the clock with spawn(): ticks while open, stops when the client leaves, disconnect() once', async t => {
  let ticks = 0
  const disconnects: number[] = []
  class ClockConsumer extends JsonWebsocketConsumer {
    override async connect () {
      await this.accept()
      this.spawn(async signal => {
        while (!signal.aborted) {
          ticks++
          await this.sendJson({ now: Date.now() })
          await sleep(10, undefined, { signal }) // rejects once the connection ends: that ends the task
        }
      })
    }

    override async receiveJson (content: { ping: number }) { await this.sendJson({ pong: content.ping }) }
    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app, logs } = await buildApp({}, app => app.get('/clock', { websocket: true }, ClockConsumer.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const { ws, closed } = await openClient(`${url}/clock`)
  const received = inbox(ws)
  await eventually(() => received.length >= 3)
  ws.send(JSON.stringify({ ping: 1 }))
  await eventually(() => received.some(m => m === '{"pong":1}'))
  t.pass('frames are handled while the clock runs: it is not in the handler queue')
  ws.close(1000)
  await closed
  await eventually(() => disconnects.length === 1)
  const stopped = ticks
  await sleep(50)
  t.equal(ticks, stopped, 'the clock stopped with the connection')
  t.same(disconnects, [1000])
  t.notOk(logs.some(l => (l.level as number) >= 40), 'no warning or error: the aborted sleep is how the task ends')
  t.same((app.channelLayer as unknown as { inspect: () => object }).inspect(), { channels: 0, groups: 0, memberships: 0 })
})

t.test('the tutorials\' loop in connect(): ends by itself once the client is gone; nothing logged as a failure', async t => {
  let iterations = 0
  const disconnects: number[] = []
  const received: string[] = []
  class TutorialClock extends WebsocketConsumer {
    override async connect () {
      await this.accept()
      for (;;) { // accept(); while True: send(now); sleep(1) — as Channels tutorials write it
        iterations++
        await this.send(String(Date.now()))
        await sleep(10)
      }
    }

    override async receive (text?: string) { received.push(text ?? '') }
    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app, logs } = await buildApp({}, app => app.get('/tutorial', { websocket: true }, TutorialClock.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const { ws, closed } = await openClient(`${url}/tutorial`)
  const frames = inbox(ws)
  await eventually(() => frames.length >= 3)
  ws.send('hello')
  await sleep(30)
  t.same(received, [], 'client frames wait behind connect(), as in Channels')
  ws.close(1000)
  await closed
  await eventually(() => disconnects.length === 1)
  const stopped = iterations
  await sleep(50)
  t.equal(iterations, stopped, 'the loop ended')
  t.same(disconnects, [1000], 'disconnect() ran once')
  t.notOk(logs.some(l => (l.level as number) >= 40), 'no warning or error: losing the race with the close is no failure')
  t.ok(logs.some(l => l.msg === 'consumer handler stopped: the connection had ended'), 'logged at debug')
})

t.test('app.close() is not held up by the tutorials\' loop: clients see 1001, disconnect(1001) runs once', async t => {
  const disconnects: number[] = []
  class TutorialClock extends WebsocketConsumer {
    override async connect () {
      await this.accept()
      for (;;) {
        await this.send('tick')
        await sleep(20)
      }
    }

    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app, logs } = await buildApp({}, app => app.get('/tutorial', { websocket: true }, TutorialClock.asHandler()))
  const { url } = await listen(app)
  const clients = await Promise.all([1, 2, 3].map(async () => await openClient(`${url}/tutorial`)))
  await Promise.all(clients.map(async ({ ws }) => await new Promise(resolve => ws.once('message', resolve))))
  await app.close()
  t.same(disconnects, [1001, 1001, 1001], 'every disconnect() ran, before close() resolved')
  for (const { closed } of clients) t.match(await closed, { code: 1001 })
  t.notOk(logs.some(l => (l.level as number) >= 50))
})

t.test('a refused handshake ends a task that only sends: send() rejects, app.close() is not held up', async t => {
  let iterations = 0
  const stops: unknown[] = []
  class Refusing extends WebsocketConsumer {
    override async connect () {
      this.spawn(async () => {
        try {
          for (;;) { // ignores its signal: only send() can end it
            iterations++
            await this.send('tick')
            await sleep(10)
          }
        } catch (err) {
          stops.push((err as { code?: string }).code)
          throw err
        }
      })
      await sleep(30)
      // returns without accept(): the handshake is refused with 403
    }
  }
  const { app, logs } = await buildApp({}, app => app.get('/refusing', { websocket: true }, Refusing.asHandler()))
  const { url } = await listen(app)
  await t.rejects(openClient(`${url}/refusing`), /HTTP 403/)
  await eventually(() => stops.length === 1, 2000)
  t.same(stops, ['FST_CHANNELS_CONNECTION_CLOSED'], 'the first send() after the refusal rejects')
  const stopped = iterations
  await sleep(50)
  t.equal(iterations, stopped, 'the loop ended')
  const closing = app.close().then(() => 'closed')
  t.equal(await Promise.race([closing, sleep(5000, 'still waiting')]), 'closed', 'app.close() resolves')
  t.notOk(logs.some(l => (l.level as number) >= 50), 'nothing logged as an error')
})

t.test('a spawned task that fails closes its own connection with 1011; the others keep working', async t => {
  class Failing extends WebsocketConsumer {
    override async receive (text?: string) {
      if (text === 'fail') this.spawn(async () => { await sleep(1); throw new Error('task bug') })
      else if (text === 'bad') this.spawn('not a function' as never)
      else await this.send(`echo ${text ?? ''}`)
    }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Failing.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const bystander = await echoBystander(`${url}/ws`)

  const failing = await openClient(`${url}/ws`)
  failing.ws.send('fail')
  t.match(await failing.closed, { code: 1011, reason: 'internal error' })
  t.ok(logs.some(l => l.msg === 'spawned task failed; closing with 1011' && (l.err as { message: string }).message === 'task bug'))

  const badCall = await openClient(`${url}/ws`)
  badCall.ws.send('bad')
  t.match(await badCall.closed, { code: 1011 }, 'spawn() with a non-function is a typed error: the handler fails')
  t.ok(logs.some(l => l.msg === 'consumer handler failed; closing with 1011' && (l.err as { code: string }).code === 'FST_CHANNELS_INVALID_OPTION'))

  await bystander.stillServed(t)
})

t.test('a send nothing awaited, after the client left: no unhandled rejection, logged at debug, the others keep working', async t => {
  const unhandled = unhandledRejections(t)
  class Echo extends WebsocketConsumer {
    // async, but does not wait for its send(): a common slip, which must not stop the process.
    override async receive (text?: string) {
      await sleep(1)
      void this.send(`echo ${text ?? ''}`)
    }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Echo.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const bystander = await echoBystander(`${url}/ws`)
  const leaving = await openClient(`${url}/ws`)
  for (let i = 0; i < 20; i++) leaving.ws.send(`${i}`)
  leaving.ws.terminate()
  await leaving.closed
  const stopped = (): typeof logs => logs.filter(l => l.msg === 'a send that nothing awaited stopped: the connection had ended')
  await eventually(() => stopped().length > 0)
  await sleep(50)
  t.same(unhandled, [], 'no unhandled rejection')
  t.ok(stopped().every(l => l.level === 20), 'logged at debug')
  t.notOk(logs.some(l => (l.level as number) >= 40), 'no warning or error: losing the race with the close is no failure')
  await bystander.stillServed(t)
})

t.test('a sendJson() nothing awaited, of content JSON cannot encode: closed with 1011 and logged, as if the handler threw', async t => {
  const unhandled = unhandledRejections(t)
  const disconnects: number[] = []
  class Relay extends JsonWebsocketConsumer {
    // A plain method: the README's way to handle a message without a promise.
    override receiveJson (content: unknown): Promise<void> {
      if (content === 'bigint') void this.sendJson({ n: 10n })
      else if (content === 'caught') void this.#caught()
      else void this.sendJson({ echo: content })
      return Promise.resolve()
    }

    async #caught (): Promise<void> {
      try {
        await this.sendJson({ n: 10n })
      } catch (err) {
        await this.sendJson({ caught: (err as Error).name })
      }
    }

    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Relay.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)

  const catching = await openClient(`${url}/ws`)
  const caught = inbox(catching.ws)
  catching.ws.send('"caught"')
  await eventually(() => caught.length === 1)
  t.same(JSON.parse(caught[0]), { caught: 'TypeError' }, 'a failure the code waited for is its own to handle')
  catching.ws.send('"again"')
  await eventually(() => caught.length === 2)
  t.same(JSON.parse(caught[1]), { echo: 'again' }, 'and the connection stays open')

  const failing = await openClient(`${url}/ws`)
  failing.ws.send('"bigint"')
  t.match(await failing.closed, { code: 1011, reason: 'internal error' })
  await eventually(() => disconnects.includes(1011))
  const errors = logs.filter(l => (l.level as number) >= 50)
  t.equal(errors.length, 1, 'one error logged')
  t.equal(errors[0]?.msg, 'a send that nothing awaited failed; closing with 1011')
  t.match(errors[0]?.err, { type: 'TypeError', message: /BigInt/ }, 'with the encoding error')
  t.same(unhandled, [], 'no unhandled rejection')
  catching.ws.close()
  await catching.closed
})

t.test('an accept() nothing awaited, with a subprotocol the client did not offer: refused, and the error logged', async t => {
  const unhandled = unhandledRejections(t)
  class Careless extends WebsocketConsumer {
    override async connect () {
      void this.accept('not-offered')
    }
  }
  const { app, logs } = await buildApp({}, app => app.get('/ws', { websocket: true }, Careless.asHandler()))
  t.teardown(() => app.close())
  const { port } = await listen(app)
  const result = await rawSession(port, '/ws', {})
  // connect() returned before the failure was known: refused as a connect() that did not accept.
  t.equal(result.status, 403, 'the handshake is refused')
  await eventually(() => logs.some(l => l.level === 50 && l.msg === 'an accept() that nothing awaited failed; the connection had already ended'))
  t.match(logs.find(l => l.level === 50)?.err, { code: 'FST_CHANNELS_INVALID_OPTION' })
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a join made after the connection ended (a timer, a wait nothing tracks): rejected with ConnectionClosedError, no member left behind', async t => {
  const unhandled = unhandledRejections(t)
  const outcomes: string[] = []
  class Late extends WebsocketConsumer {
    override async receive (text?: string) {
      const room = text ?? ''
      if (room.startsWith('timer-')) {
        // A join nothing awaits: its failure goes where a handler's would.
        setTimeout(() => { void this.channelLayer.groupAdd(room, this.channelName) }, 100)
      } else {
        // A wait the connection does not track (a lookup), then the join, its failure caught.
        void this.enter(room).then(() => outcomes.push('joined'), (err: { code?: string }) => outcomes.push(err.code ?? String(err)))
      }
    }

    async enter (room: string): Promise<void> {
      await sleep(100)
      await this.channelLayer.groupAdd(room, this.channelName)
    }
  }
  const layer = new InMemoryChannelLayer()
  const { app, logs } = await buildApp({ layer }, app => app.get('/ws', { websocket: true }, Late.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  for (const room of ['lookup-room', 'timer-room']) {
    const client = await openClient(`${url}/ws`)
    client.ws.send(room)
    await sleep(20)
    client.ws.close()
    await client.closed
  }
  await eventually(() => outcomes.length === 1 && logs.some(l => l.msg === 'a groupAdd() that nothing awaited stopped: the connection had ended'))
  t.same(outcomes, ['FST_CHANNELS_CONNECTION_CLOSED'], 'the awaited join rejects, as a send() would')
  await sleep(50)
  t.same(layer.inspect(), { channels: 0, groups: 0, memberships: 0 }, 'no membership outlives its connection')
  t.notOk(logs.some(l => (l.level as number) >= 40), 'the join nothing awaited is logged at debug: losing the race with the close is no failure')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('joins and leaves nothing awaited: a refused one closes its own connection as if the handler threw, never an unhandled rejection', async t => {
  const unhandled = unhandledRejections(t)
  class Rooms extends JsonWebsocketConsumer {
    // The client names the room; a plain method, as joins take effect in call order awaited or not.
    override receiveJson (content: unknown): Promise<void> {
      const { join, leave } = content as { join?: string, leave?: string }
      if (join !== undefined) void this.channelLayer.groupAdd(join, this.channelName)
      if (leave !== undefined) void this.channelLayer.groupDiscard(leave, this.channelName)
      return this.sendJson({ asked: join ?? leave })
    }

    roomMessage (event: { text: string }): void {
      void this.sendJson({ text: event.text })
    }
  }
  const { app, logs } = await buildApp({ maxGroupsPerConnection: 2 }, app => app.get('/ws', { websocket: true }, Rooms.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)

  const member = await openClient(`${url}/ws`)
  const memberInbox = inbox(member.ws)
  member.ws.send('{"join":"lobby"}')
  await eventually(() => memberInbox.length === 1)
  await app.channelLayer.groupSend('lobby', { type: 'room.message', text: 'hi' })
  await eventually(() => memberInbox.includes('{"text":"hi"}'))
  t.pass('a join nothing awaited works as an awaited one')

  const greedy = await openClient(`${url}/ws`)
  for (const room of ['a', 'b', 'c']) greedy.ws.send(JSON.stringify({ join: room }))
  t.match(await greedy.closed, { code: 1008, reason: 'too many groups' }, 'one group too many: 1008, as when awaited')
  t.ok(logs.some(l => l.level === 40 && l.msg === 'consumer joined too many groups; closing with 1008'))

  const badName = await openClient(`${url}/ws`)
  badName.ws.send('{"join":"not a valid name"}')
  t.match(await badName.closed, { code: 1011 }, 'a name the layer refuses: 1011')
  const badLeave = await openClient(`${url}/ws`)
  badLeave.ws.send('{"leave":"not a valid name either"}')
  t.match(await badLeave.closed, { code: 1011 }, 'a leave the layer refuses: 1011')
  t.same(logs.filter(l => l.level === 50).map(l => [l.msg, (l.err as { code?: string }).code]), [
    ['a groupAdd() that nothing awaited failed; closing with 1011', 'FST_CHANNELS_INVALID_NAME'],
    ['a groupDiscard() that nothing awaited failed; closing with 1011', 'FST_CHANNELS_INVALID_NAME']
  ], 'each logged at error with its typed error')

  await app.channelLayer.groupSend('lobby', { type: 'room.message', text: 'still here' })
  await eventually(() => memberInbox.includes('{"text":"still here"}'))
  t.pass('the other connection is unaffected')
  t.same(unhandled, [], 'no unhandled rejection')
  member.ws.close()
  await member.closed
})
