/**
 * Abuse through real sockets, against a GroupsConsumer app as it runs in production: each kind is
 * bounded, counted where the app can count it, and a witness client on fastify-channels/client,
 * calling the server all along, keeps getting its answers.
 *
 * | abuse                                  | bound                                   | what the abuser sees               | counted by           |
 * |----------------------------------------|-----------------------------------------|------------------------------------|----------------------|
 * | a flood of handshakes from one address | @fastify/rate-limit on the route        | HTTP 429, no consumer created      | its `onExceeded`     |
 * | oversized request headers              | Node's `maxHeaderSize` (16 KiB)         | HTTP 431, no request reaches the app | `clientError` event |
 * | a client that never reads              | `maxBufferedBytes` (4 MiB)              | close 1008 `slow reader: …`        | `dropped_total{reason="slow_reader"}` |
 * | a flood of frames                      | `rateLimit`                             | close 1008 `rate limit`            | `dropped_total{reason="rate_limited"}` |
 */
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import WebSocket from 'ws'
import fastifyChannels, { GroupsConsumer, InMemoryChannelLayer, type FastifyChannelsOptions } from '../lib/index.js'
import { ChannelsClient } from '../lib/client/index.js'
import { listen, openClient } from './helpers/loopback.js'
import { eventually, sleep } from './helpers/app.js'

const HANDSHAKES_PER_MINUTE = 20


class Rooms extends GroupsConsumer {
  static connects = 0
  static override actions = { echo: {} }

  override async connect (): Promise<void> {
    Rooms.connects++
    await super.connect()
  }

  override canJoin (group: string): boolean {
    return group.startsWith('room.')
  }

  async echo (args: unknown): Promise<unknown> {
    return args
  }
}

interface AbuseApp {
  app: FastifyInstance
  url: string
  port: number
  logs: Array<{ msg?: string, level?: number }>
  /** Handshakes refused by the rate limit (its onExceeded). */
  limited: () => number
}

async function abuseApp (t: Test, options: FastifyChannelsOptions = {}): Promise<AbuseApp> {
  const logs: AbuseApp['logs'] = []
  const app = Fastify({ logger: { level: 'info', stream: { write (line: string) { logs.push(JSON.parse(line) as AbuseApp['logs'][number]) } } } })
  let limited = 0
  await app.register(rateLimit, { global: false })
  await app.register(fastifyChannels, { layer: new InMemoryChannelLayer({ groups: { 'room.*': { history: { size: 100, ttl: 60 } } } }), ...options })
  app.get('/ws/rooms', {
    websocket: true,
    config: { rateLimit: { max: HANDSHAKES_PER_MINUTE, timeWindow: 60_000, onExceeded: () => { limited++ } } }
  }, Rooms.asHandler())
  const { url, port } = await listen(app)
  t.teardown(() => app.close())
  return { app, url: `${url}/ws/rooms`, port, logs, limited: () => limited }
}

interface Witness {
  client: ChannelsClient
  answered: number
  failures: unknown[]
  /** Waits until `n` more calls have been answered. */
  answers: (n: number) => Promise<void>
}

/** A well-behaved client that calls `echo` 20 times a second until the test ends. */
async function witness (t: Test, url: string): Promise<Witness> {
  const client = new ChannelsClient(url, { WebSocket })
  const w: Witness = {
    client,
    answered: 0,
    failures: [],
    async answers (n) {
      const target = w.answered + n
      for (let i = 0; i < 200 && w.answered < target; i++) await sleep(25)
    }
  }
  let running = true
  const loop = (async () => {
    for (let i = 0; running && i < 100_000; i++) {
      try {
        const reply = await client.call('echo', { i }, { timeout: 5000 }) as { i: number }
        if (reply.i === i) w.answered++
        else w.failures.push(new Error(`echo ${i} answered ${JSON.stringify(reply)}`))
      } catch (err) {
        if (running) w.failures.push(err)
      }
      await sleep(50)
    }
  })()
  t.teardown(async () => {
    running = false
    client.close()
    await loop
  })
  await w.answers(1)
  return w
}

/** Opens a handshake from `localAddress`; resolves with the HTTP status (101 when upgraded, then closed). */
function handshake (url: string, localAddress: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise(resolve => {
    const ws = new WebSocket(url, { localAddress, headers })
    ws.once('open', () => { ws.close(); resolve(101) })
    ws.once('unexpected-response', (_req, res) => { res.resume(); resolve(res.statusCode ?? 0) })
    ws.once('error', () => resolve(0))
  })
}

t.test('a flood of handshakes from one address: 429 before any upgrade, counted; other addresses and open sockets are served', async t => {
  const { url, limited } = await abuseApp(t)
  const w = await witness(t, url)
  const connectsBefore = Rooms.connects
  const answeredBefore = w.answered

  const FLOOD = 200
  const statuses: number[] = []
  for (let sent = 0; sent < FLOOD; sent += 25) {
    statuses.push(...await Promise.all(Array.from({ length: 25 }, () => handshake(url, '127.0.0.2'))))
  }
  const upgraded = statuses.filter(s => s === 101).length
  t.equal(upgraded, HANDSHAKES_PER_MINUTE, `the first ${HANDSHAKES_PER_MINUTE} handshakes of the minute are upgraded`)
  t.equal(statuses.filter(s => s === 429).length, FLOOD - HANDSHAKES_PER_MINUTE, 'every other one gets 429')
  t.equal(limited(), FLOOD - HANDSHAKES_PER_MINUTE, 'and each refusal is counted')
  t.equal(Rooms.connects - connectsBefore, HANDSHAKES_PER_MINUTE, 'no consumer was created for a refused handshake')

  t.ok(w.answered > answeredBefore, `the witness's open socket was answered during the flood (${w.answered - answeredBefore} calls)`)
  t.equal(await handshake(url, '127.0.0.1'), 101, 'a new handshake from another address is upgraded')
  await w.answers(3)
  t.same(w.failures, [], 'no witness call failed')
})

t.test('oversized headers: 431 from Node before the app sees the request, counted; the app goes on', async t => {
  const { app, url } = await abuseApp(t)
  const w = await witness(t, url)
  const overflows: string[] = []
  // Fastify answers 431 itself; a second listener only counts.
  app.server.on('clientError', (err: NodeJS.ErrnoException) => { if (err.code === 'HPE_HEADER_OVERFLOW') overflows.push(err.code) })
  const connectsBefore = Rooms.connects

  t.equal(await handshake(url, '127.0.0.1', { cookie: 'a='.padEnd(20 * 1024, 'x') }), 431, 'a 20 KiB cookie: 431')
  t.equal(await handshake(url, '127.0.0.1', Object.fromEntries(Array.from({ length: 400 }, (_, i) => [`x-h${i}`, 'y'.repeat(60)]))), 431, '400 headers of 60 bytes: 431')
  t.same(overflows, ['HPE_HEADER_OVERFLOW', 'HPE_HEADER_OVERFLOW'], 'each one counted')
  t.equal(Rooms.connects, connectsBefore, 'no consumer was created')
  t.equal(await handshake(url, '127.0.0.1', { cookie: 'a='.padEnd(8 * 1024, 'x') }), 101, 'an 8 KiB cookie is still accepted')
  await w.answers(3)
  t.same(w.failures, [], 'the witness was answered throughout')
})

t.test('a client that never reads: closed with 1008 once 4 MiB wait for it, counted; a reader in the same room gets everything', async t => {
  const { app, url, logs } = await abuseApp(t)
  const w = await witness(t, url)
  const room = 'room.busy'
  const received: number[] = []
  w.client.join<{ n: number }>(room, { message (data) { received.push(data.n) } })
  // Joined once a call made after the join is answered (frames are handled in order).
  await w.answers(1)

  const stalled = await openClient(url)
  const joined = new Promise(resolve => stalled.ws.once('message', resolve))
  stalled.ws.send(JSON.stringify({ op: 'join', group: room }))
  await joined
  stalled.ws.pause() // from here on it reads nothing

  const slowReader = (): number => logs.filter(l => /slow reader/.test(l.msg ?? '')).length
  const text = 'x'.repeat(64 * 1024)
  let sent = 0
  // At most 64 MiB: far beyond the 4 MiB limit plus what the kernel buffers on loopback.
  while (slowReader() === 0 && sent < 1024) {
    await app.channelLayer.groupSend(room, { type: 'room.message', n: ++sent, text })
    // Keep the witness (which reads) within its channel's capacity of 100, and under the 4 MiB
    // limit however slowly this host lets it read: it is never more than 50 behind.
    await eventually(() => sent - received.length <= 50, 30_000)
  }
  t.equal(slowReader(), 1, `the server gave up on the stalled client after ${sent} messages of 64 KiB (logged once)`)
  for (let i = 0; i < 5; i++) await app.channelLayer.groupSend(room, { type: 'room.message', n: ++sent, text })
  stalled.ws.resume()
  t.match(await stalled.closed, { code: 1008, reason: /^slow reader/ }, 'once it reads, it finds close 1008 after what was queued')

  for (let i = 0; i < 200 && received.length < sent; i++) await sleep(25)
  t.same(received, Array.from({ length: sent }, (_, i) => i + 1), `the reader in the same room got all ${sent}, in order`)
  await w.answers(3)
  t.same(w.failures, [], 'the witness was answered throughout')
})

t.test('a flood of frames: rateLimit closes the flooder with 1008 \'rate limit\'; the witness, under the limit, is answered', async t => {
  const { url } = await abuseApp(t, { rateLimit: { messages: 100, interval: 1000 } })
  const w = await witness(t, url)
  const flooder = await openClient(url)
  let replies = 0
  flooder.ws.on('message', () => { replies++ })
  const FLOOD = 2000
  for (let i = 0; i < FLOOD && flooder.ws.readyState === WebSocket.OPEN; i++) {
    flooder.ws.send(JSON.stringify({ op: 'call', id: i, action: 'echo', args: { i } }))
    if (i % 100 === 99) await sleep(1)
  }
  const outcome = await Promise.race([flooder.closed, sleep(5000).then(() => 'still open after 5 s')])
  t.match(outcome, { code: 1008, reason: 'rate limit' }, 'the flooder is closed with 1008 \'rate limit\'')
  t.ok(replies <= 150, `it was answered for about the burst the bucket holds (${replies} replies), no more`)
  await w.answers(5)
  t.same(w.failures, [], 'the witness (20 calls a second, under the limit) was answered throughout and never closed')
  t.equal(w.client.state, 'open')
})
