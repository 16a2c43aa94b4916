/**
 * The README's recovery recipe for server-sent events, through real HTTP: event ids carry the
 * group position (`epoch:offset`), the browser sends the last one back as `Last-Event-ID`, and
 * `groupAdd(…, { since })` delivers exactly what was missed. Every line arrives once, in order,
 * across reconnects, also while lines are being sent during the reconnect; a position the group
 * cannot serve any more (another epoch) starts over from the history, announced by a `reset`.
 */
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { AsyncHttpConsumer, InMemoryChannelLayer, type Delivery, type StreamPosition } from '../lib/index.js'
import { buildApp } from './helpers/app.js'
import { listen } from './helpers/loopback.js'
import { openEventStream, type StreamEvent } from './helpers/event-stream.js'

// --- the recipe, as the README shows it -------------------------------------------------------

/** The position an event id `epoch:offset` names; undefined for anything else (the header is the client's). */
function positionOf (lastEventId: unknown): StreamPosition | undefined {
  if (typeof lastEventId !== 'string') return undefined
  const at = lastEventId.lastIndexOf(':')
  const epoch = lastEventId.slice(0, at)
  const offset = Number(lastEventId.slice(at + 1))
  if (at < 1 || epoch.length > 100 || !Number.isSafeInteger(offset) || offset < 0) return undefined
  return { epoch, offset }
}

class DeployLog extends AsyncHttpConsumer {
  override async handle () {
    await this.sendHeaders({ headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } })
    const since = positionOf(this.scope.headers['last-event-id'])
    const { position, recovered } = await this.channelLayer.groupAdd('deploy-log', this.channelName, { since })
    if (recovered || position === null) return // what was missed comes first, through deployLine()
    // A first visit, or too much missed: start over from what the group keeps, up to the join.
    await this.sendEvent({ event: 'reset', data: '' })
    const { messages } = await this.channelLayer.history('deploy-log', { limit: 1000 })
    for (const { message, offset } of messages) {
      if (offset > position.offset) break // sent after the join: it comes through deployLine()
      await this.sendEvent({ id: `${position.epoch}:${offset}`, event: 'line', data: message.line })
    }
  }

  async deployLine (message: { line: string }, info: Delivery) {
    await this.sendEvent({ id: `${info.epoch}:${info.offset}`, event: 'line', data: message.line })
  }
}

// ----------------------------------------------------------------------------------------------

async function setup (maxBufferedBytes?: number) {
  const layer = new InMemoryChannelLayer({ groups: { 'deploy-log': { history: { size: 1000, ttl: 3600 } } } })
  const { app } = await buildApp({ layer, maxBufferedBytes }, app => app.get('/deploy-log', DeployLog.asHandler()))
  const { url } = await listen(app)
  const base = url.replace('ws://', 'http://')
  const send = async (line: string) => await app.channelLayer.groupSend('deploy-log', { type: 'deploy.line', line })
  return { app, base, send }
}

const lines = (events: StreamEvent[]) => events.filter(e => e.event === 'line').map(e => e.data)

t.test('a first visit gets the history; a reconnect with Last-Event-ID gets exactly what it missed', async t => {
  const { app, base, send } = await setup()
  t.teardown(() => app.close())
  for (const line of ['one', 'two', 'three']) await send(line)
  const first = await openEventStream(`${base}/deploy-log`)
  await first.waitForEvents(4)
  await send('four')
  const seen = await first.waitForEvents(5)
  t.same(seen.map(e => e.event), ['reset', 'line', 'line', 'line', 'line'])
  t.same(lines(seen), ['one', 'two', 'three', 'four'])
  t.match(seen[4].id, /^.+:4$/, 'the id is the position: epoch and offset')
  first.close()

  await send('five')
  await send('six')
  const again = await openEventStream(`${base}/deploy-log`, { 'last-event-id': seen[4].id })
  await send('seven')
  const resumed = await again.waitForEvents(3)
  t.same(resumed.map(e => e.event), ['line', 'line', 'line'], 'no reset: recovered')
  t.same(lines(resumed), ['five', 'six', 'seven'], 'what was missed first, then live, each once')
  await sleep(20)
  t.equal(again.events.length, 3, 'nothing twice')
  again.close()
})

t.test('a recovery many times maxBufferedBytes reaches a reader that reads, whole: it is written at its pace, not cut off', async t => {
  // 600 events of 10 KB against a limit of 256 KiB: each handler sends its own event, so the
  // replay is handed to the consumer one event at a time, as fast as the reader takes them.
  const { app, base, send } = await setup(256 * 1024)
  t.teardown(() => app.close())
  await send('first')
  const first = await openEventStream(`${base}/deploy-log`)
  const [, seen] = await first.waitForEvents(2)
  first.close()
  const pad = 'p'.repeat(10_240)
  for (let n = 1; n <= 600; n++) await send(`${n} ${pad}`)
  const again = await openEventStream(`${base}/deploy-log`, { 'last-event-id': seen.id })
  const resumed = await again.waitForEvents(600, 20_000)
  t.ok(lines(resumed).every((line, i) => line === `${i + 1} ${pad}`), 'every missed event, once, in order')
  await sleep(20)
  t.equal(again.events.length, 600, 'nothing twice')
  t.equal(again.response.destroyed, false, 'the reader was not cut off as a slow one')
  again.close()
})

t.test('a position from another epoch, or a malformed one, starts over with a reset', async t => {
  const { app, base, send } = await setup()
  t.teardown(() => app.close())
  await send('kept')
  for (const id of ['another-epoch:1', 'no-colon', ':5', 'e:-1', `${'x'.repeat(200)}:1`]) {
    const stream = await openEventStream(`${base}/deploy-log`, { 'last-event-id': id })
    const events = await stream.waitForEvents(2)
    t.same(events.map(e => [e.event, e.data]), [['reset', ''], ['line', 'kept']], JSON.stringify(id.slice(0, 20)))
    stream.close()
  }
})

t.test('lines sent while clients come and go: every line once, in order, across six reconnects', async t => {
  const { app, base, send } = await setup()
  t.teardown(() => app.close())
  const total = 120
  let sent = 0
  const sender = (async () => {
    while (sent < total) {
      await send(`line ${++sent}`)
      await sleep(1)
    }
  })()
  const received: string[] = []
  let lastId: string | undefined
  for (let session = 0; session < 6; session++) {
    const stream = await openEventStream(`${base}/deploy-log`, lastId === undefined ? {} : { 'last-event-id': lastId })
    const reset = session === 0 ? 1 : 0 // a first visit starts with one
    const want = session === 5 ? total - received.length : 12
    const events = await stream.waitForEvents(reset + want, 10_000)
    const got = events.filter(e => e.event === 'line')
    if (session > 0) t.notOk(events.some(e => e.event === 'reset'), `session ${session}: recovered`)
    received.push(...got.map(e => e.data))
    lastId = got[got.length - 1].id
    stream.close()
    await sleep(5)
  }
  await sender
  t.same(received, Array.from({ length: total }, (_, i) => `line ${i + 1}`), 'each line exactly once, in order')
})
