/**
 * The limits of a long-lived HTTP response, through real sockets: heartbeat comments keep proxies
 * from timing out an idle event stream, and a reader that stops reading is cut off at
 * `maxBufferedBytes` instead of buffering without bound, while the others keep receiving.
 */
import t from 'tap'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { AsyncHttpConsumer } from '../lib/index.js'
import { buildApp, eventually } from './helpers/app.js'
import { listen } from './helpers/loopback.js'
import { openEventStream } from './helpers/event-stream.js'

t.test('heartbeat: an idle event stream gets a comment every interval; a JSON body gets none', async t => {
  class Idle extends AsyncHttpConsumer {
    override async handle () {
      if (this.scope.query.kind === 'json') {
        await this.sendHeaders({ headers: { 'content-type': 'application/json' } })
      } else {
        await this.sendEvent({ data: 'open' })
      }
    }
  }
  const { app } = await buildApp({ heartbeatInterval: 100 }, app => app.get('/idle', Idle.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const base = url.replace('ws://', 'http://')
  const sse = await openEventStream(`${base}/idle`)
  const json = await openEventStream(`${base}/idle?kind=json`)
  await eventually(() => sse.comments >= 3, 3000)
  t.ok(sse.comments >= 3, 'comments keep coming')
  t.same(sse.events.map(e => e.data), ['open'], 'and are no events')
  t.equal(json.body(), '', 'nothing is added to a body that is not an event stream')
  t.equal(sse.response.complete, false, 'both still open: a reader that reads is never cut off')
  sse.close()
  json.close()
})

t.test('heartbeat: a comment between the pieces of an event an app writes itself does not end that event', async t => {
  class Pieces extends AsyncHttpConsumer {
    override async handle () {
      await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
      await this.sendBody('data: first half\n', { more: true })
      await sleep(350) // heartbeats come meanwhile
      await this.sendBody('data: second half\n\n', { more: true })
    }
  }
  const { app } = await buildApp({ heartbeatInterval: 100 }, app => app.get('/pieces', Pieces.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const stream = await openEventStream(`${url.replace('ws://', 'http://')}/pieces`)
  await stream.waitForEvents(1)
  t.ok(stream.comments >= 2, 'heartbeats came between the pieces')
  t.same(stream.events.map(e => e.data), ['first half\nsecond half'], 'one event, whole')
  stream.close()
})

t.test('maxBufferedBytes: a reader that stops reading is cut off; disconnect() once; the others keep receiving', async t => {
  const disconnects: string[] = []
  class Firehose extends AsyncHttpConsumer {
    override groups = ['firehose']
    override async handle () { await this.sendEvent({ data: 'open' }) }
    async firehoseChunk (event: { n: number, pad: string }) { await this.sendEvent({ id: event.n, data: event.pad }) }
    override async disconnect () { disconnects.push(this.scope.query.who as string) }
  }
  const { app, logs } = await buildApp({ maxBufferedBytes: 256 * 1024, heartbeatInterval: 0 }, app => app.get('/firehose', Firehose.asHandler()))
  t.teardown(() => app.close())
  const { url, port } = await listen(app)
  const base = url.replace('ws://', 'http://')

  // A client that asks and then never reads: what the server writes piles up.
  const stalled = connect(port, '127.0.0.1')
  await new Promise(resolve => stalled.once('connect', resolve))
  stalled.pause()
  stalled.write('GET /firehose?who=stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n')
  t.teardown(() => stalled.destroy())
  const reader = await openEventStream(`${base}/firehose?who=reader`)
  await reader.waitForEvents(1)
  await eventually(() => (app.channelLayer as unknown as { inspect: () => { memberships: number } }).inspect().memberships === 2)

  const pad = 'x'.repeat(16 * 1024)
  let sent = 0
  while (disconnects.length === 0 && sent < 2000) {
    await app.channelLayer.groupSend('firehose', { type: 'firehose.chunk', n: ++sent, pad })
    if (sent % 10 === 0) await sleep(1) // let the reader read
  }
  await eventually(() => disconnects.length === 1, 5000)
  t.same(disconnects, ['stalled'], 'only the stalled reader was cut off')
  t.ok(logs.some(l => l.msg === 'slow reader: outgoing buffer over the limit, closing' && l.level === 40), 'logged at warn')
  const more = sent + 5
  while (sent < more) await app.channelLayer.groupSend('firehose', { type: 'firehose.chunk', n: ++sent, pad })
  const events = await reader.waitForEvents(1 + sent, 10_000)
  t.same(events.slice(1).map(e => Number(e.id)), Array.from({ length: sent }, (_, i) => i + 1), 'the reader got every event, in order')
  reader.close()
})

t.test('a burst handle() writes in one go (a history replayed), larger than maxBufferedBytes, reaches a reader that keeps up', async t => {
  class Replay extends AsyncHttpConsumer {
    override async handle () {
      await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
      // 5 MB of awaited sends with no turn of the event loop between them.
      for (let n = 1; n <= 1000; n++) await this.sendEvent({ id: n, event: 'line', data: `${n} ${'x'.repeat(5000)}` })
    }
  }
  const { app, logs } = await buildApp({ heartbeatInterval: 0 }, app => app.get('/replay', Replay.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const reader = await openEventStream(`${url.replace('ws://', 'http://')}/replay`)
  const events = await reader.waitForEvents(1000, 10_000)
  t.same(events.map(e => Number(e.id)), Array.from({ length: 1000 }, (_, i) => i + 1), 'every event, in order')
  t.notOk(logs.some(l => l.msg === 'slow reader: outgoing buffer over the limit, closing'), 'the reader was not taken for a slow one')
  reader.close()
})

t.test('maxGroupsPerConnection after the head: the response ends (its last chunk sent), with the event sent just before; the socket is not dropped', async t => {
  let disconnects = 0
  class Rooms extends AsyncHttpConsumer {
    override groups = ['control']
    override async handle () { await this.sendEvent({ data: 'open' }) }
    async roomJoin (event: { room: string }) {
      await this.sendEvent({ event: 'joining', data: event.room })
      await this.channelLayer.groupAdd(event.room, this.channelName)
    }
    override async disconnect () { disconnects++ }
  }
  const { app } = await buildApp({ maxGroupsPerConnection: 2, heartbeatInterval: 0 }, app => app.get('/rooms', Rooms.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const stream = await openEventStream(`${url.replace('ws://', 'http://')}/rooms`)
  await stream.waitForEvents(1)
  await app.channelLayer.groupSend('control', { type: 'room.join', room: 'a' })
  await stream.waitForEvents(2)
  // 'control' and 'a' make two: 'b' is one too many.
  await app.channelLayer.groupSend('control', { type: 'room.join', room: 'b' })
  t.equal(await stream.ended, true, 'the response ends as a response does, not cut off')
  t.same(stream.events.map(e => `${e.event} ${e.data}`), ['message open', 'joining a', 'joining b'], 'every event sent before, the last one included')
  await eventually(() => disconnects > 0)
  await sleep(30)
  t.equal(disconnects, 1, 'disconnect() runs once')
})
