/**
 * Limits for hostile or broken clients, each seen by the client through a real socket:
 *
 * | option                   | default  | what the client sees                                    |
 * |--------------------------|----------|---------------------------------------------------------|
 * | `maxPayload`             | 1 MiB    | close 1009                                              |
 * | `heartbeatInterval`      | 30000 ms | a peer that does not answer pings is dropped (1006)      |
 * | `maxBufferedBytes`       | 4 MiB    | a reader that does not read is closed with 1008          |
 * | (closing handshake)      | 5 s      | a peer that does not answer the close frame is dropped  |
 * | `maxGroupsPerConnection` | 100      | joining one more group closes with 1008                  |
 * | (backpressure, no option) | 16 frames | a client flooding a busy consumer is no longer read   |
 *
 * Each test also shows that `disconnect()` ran once and that other clients were not affected.
 */
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { spawn } from 'node:child_process'
import Fastify from 'fastify'
import WebSocket from 'ws'
import fastifyChannels, {
  InMemoryChannelLayer, JsonWebsocketConsumer, WebsocketConsumer, type FastifyChannelsOptions, type LayerMessage
} from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { buildApp, eventually, sleep } from './helpers/app.js'
import { listen, openClient } from './helpers/loopback.js'

const MiB = 1024 * 1024

/** Replies with the size of each frame; records every disconnect. */
function sizeConsumer (disconnects: number[]) {
  return class Size extends WebsocketConsumer {
    override async receive (text?: string, bytes?: Buffer) { await this.send(String((text ?? bytes ?? '').length)) }
    override async disconnect (code: number) { disconnects.push(code) }
  }
}

t.test('maxPayload: the default 1 MiB is accepted, one byte more closes with 1009; others keep working', async t => {
  const disconnects: number[] = []
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, sizeConsumer(disconnects).asHandler()))
  t.teardown(() => app.close())
  const other = new WebsocketCommunicator(app, '/ws')
  await other.connect()
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendTo(Buffer.alloc(MiB))
  t.equal(await comm.receiveFrom(), String(MiB), 'exactly 1 MiB passes')
  await comm.sendTo(Buffer.alloc(MiB + 1))
  t.match(await comm.closed, { code: 1009 })
  await comm.serverFinished()
  t.equal(disconnects.length, 1, 'disconnect() ran once')
  await other.sendTo('still here')
  t.equal(await other.receiveFrom(), '10')
  await other.disconnect()
})

t.test('maxPayload option: a smaller limit', async t => {
  const disconnects: number[] = []
  const { app } = await buildApp({ maxPayload: 1000 }, app => app.get('/ws', { websocket: true }, sizeConsumer(disconnects).asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendTo('x'.repeat(1000))
  t.equal(await comm.receiveFrom(), '1000')
  await comm.sendTo('x'.repeat(1001))
  t.match(await comm.closed, { code: 1009 })
  await comm.serverFinished()
  t.same(disconnects.length, 1)
})

t.test('heartbeat: a peer that does not answer pings is terminated and its disconnect() runs once with 1006', async t => {
  const disconnects = new Map<string, number[]>()
  class Named extends WebsocketConsumer {
    override async receive (text?: string) { await this.send(`echo ${text ?? ''}`) }
    override async disconnect (code: number) {
      const name = String(this.scope.query.name)
      disconnects.set(name, [...(disconnects.get(name) ?? []), code])
    }
  }
  const { app, logs } = await buildApp({ heartbeatInterval: 200 }, app => app.get('/ws', { websocket: true }, Named.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  let pingsSeen = 0
  const silent = await openClient(`${url}/ws?name=silent`, { autoPong: false }, ws => ws.on('ping', () => { pingsSeen++ }))
  const alive = await openClient(`${url}/ws?name=alive`)

  t.match(await silent.closed, { code: 1006 }, 'the silent peer was dropped without a close handshake')
  t.ok(pingsSeen >= 1, 'it had been pinged')
  await eventually(() => disconnects.has('silent'))
  t.same(disconnects.get('silent'), [1006], 'disconnect(1006) ran once')
  t.equal(logs.filter(l => l.level === 30 && l.msg === 'peer did not answer the last ping; terminated (1006)').length, 1, 'logged once, at info')

  const reply = new Promise((resolve, reject) => {
    alive.ws.once('message', data => resolve(String(data)))
    alive.ws.once('close', code => reject(new Error(`closed with ${code}`)))
  })
  alive.ws.send('hi')
  t.equal(await reply, 'echo hi', 'the peer that answers pings is still connected')
  t.notOk(disconnects.has('alive'))
  await app.close()
  t.same(disconnects.get('alive'), [1001])
  t.same(disconnects.get('silent'), [1006], 'still only once after shutdown')
})

t.test('heartbeat: pings are spread over the interval, each connection pinged once per interval', async t => {
  class Quiet extends WebsocketConsumer {}
  // 500 ms: two slices, one tick every 250 ms, each for half of the connections.
  const { app } = await buildApp({ heartbeatInterval: 500 }, app => app.get('/ws', { websocket: true }, Quiet.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const pings: number[][] = []
  const clients = []
  for (let i = 0; i < 20; i++) {
    const times: number[] = []
    pings.push(times)
    clients.push(await openClient(`${url}/ws`, {}, ws => ws.on('ping', () => times.push(performance.now()))))
  }
  await eventually(() => pings.every(times => times.length > 0), 5000)
  // The first pings come in two bursts: the widest gap between arrivals splits them ten and ten.
  const firsts = pings.map(times => times[0]).sort((a, b) => a - b)
  let widest = 0
  let split = 0
  for (let i = 1; i < firsts.length; i++) {
    if (firsts[i] - firsts[i - 1] > widest) [widest, split] = [firsts[i] - firsts[i - 1], i]
  }
  t.equal(split, 10, 'one tick pinged half of the connections, the next tick the other half')
  t.ok(widest >= 125, `a tick apart (${Math.round(widest)} ms)`)
  await eventually(() => pings.every(times => times.length > 1), 4000)
  const gaps = pings.map(times => times[1] - times[0])
  t.ok(gaps.every(gap => gap >= 375), 'each connection waits a whole interval for its next ping', { gaps })
  for (const { ws } of clients) t.equal(ws.readyState, ws.OPEN, 'answering peers stay connected')
  for (const { ws } of clients) ws.close()
})

t.test('heartbeatInterval 0 disables pings', async t => {
  class Quiet extends WebsocketConsumer {}
  const { app } = await buildApp({ heartbeatInterval: 0 }, app => app.get('/ws', { websocket: true }, Quiet.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const silent = await openClient(`${url}/ws`, { autoPong: false })
  let pings = 0
  silent.ws.on('ping', () => { pings++ })
  await sleep(300)
  t.equal(pings, 0)
  t.equal(silent.ws.readyState, silent.ws.OPEN)
  silent.ws.close()
  await silent.closed
})

t.test('maxBufferedBytes on group messages (frames written a turn at a time): the reader that stops is closed with 1008, the other members get every message', async t => {
  const ended: number[] = []
  class Member extends WebsocketConsumer {
    override groups = ['flood']
    async floodMessage (event: { text: string }) { await this.send(event.text) }
    override async disconnect (code: number) { ended.push(code) }
  }
  const { app } = await buildApp({ maxBufferedBytes: 256 * 1024 }, app => app.get('/ws', { websocket: true }, Member.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const reader = await openClient(`${url}/ws`)
  const member = await openClient(`${url}/ws`)
  // The member that reads is sent a burst only once it has read the one before, so it never has
  // more than one burst (4 x 60 KiB, under the limit) waiting, however slowly this host reads;
  // the reader that stopped is sent the same bursts until its kernel buffers are full.
  let delivered = 0
  member.ws.on('message', () => { delivered++ })
  const memberGone = member.closed.then(({ code, reason }) => { throw new Error(`the member that reads was closed: ${code} ${reason}`) })
  memberGone.catch(() => {}) // reported by the wait it ends, if any; its close at the end is expected
  reader.ws.pause()
  const MESSAGES = 2048
  const BURST = 4
  // 60 KiB each (under the 64 KiB to which a group's text is framed once for every member): 120
  // MiB in all, far more than the kernel buffers hold for the reader. A burst is written to each
  // socket in one turn.
  const text = 'x'.repeat(60 * 1024)
  for (let i = 0; i < MESSAGES; i += BURST) {
    for (let j = i; j < i + BURST; j++) await app.channelLayer.groupSend('flood', { type: 'flood.message', text: `${j} ${text}` })
    while (delivered < i + BURST) await Promise.race([once(member.ws, 'message'), memberGone])
  }
  t.equal(delivered, MESSAGES, 'the member that reads got every message')
  t.same(ended, [1008], 'only the reader was given up on')
  let received = 0
  reader.ws.on('message', () => { received++ })
  reader.ws.resume()
  t.match(await reader.closed, { code: 1008, reason: /slow reader/ }, 'the reader finds close 1008 after the data written before it')
  t.ok(received < MESSAGES / 4, `only what was written before the limit reached it (${received} of ${MESSAGES})`)
  t.equal(member.ws.readyState, member.ws.OPEN, 'the member that reads stays open')
  member.ws.close()
  await member.closed
})

const FLOOD_FRAMES = 4096

/** Echoes each frame, but answers 'flood' with FLOOD_FRAMES binary frames of 64 KiB. */
class Flood extends WebsocketConsumer {
  override async receive (text?: string) {
    if (text !== 'flood') { await this.send(`echo ${text ?? ''}`); return }
    const chunk = Buffer.alloc(64 * 1024, 7)
    // 256 MiB, far more than the kernel buffers hold: once the connection is closed, send() rejects.
    for (let i = 0; i < FLOOD_FRAMES; i++) {
      await this.send(chunk)
      if (i % 64 === 63) await new Promise(resolve => setImmediate(resolve))
    }
  }
}

t.test('maxBufferedBytes: a reader that stops reading is closed with 1008 instead of buffering forever', async t => {
  let resolveEnded!: (code: number) => void
  const ended = new Promise<number>(resolve => { resolveEnded = resolve })
  class Recorded extends Flood {
    override async disconnect (code: number) { resolveEnded(code) }
  }
  const { app } = await buildApp({ maxBufferedBytes: 256 * 1024 }, app => app.get('/ws', { websocket: true }, Recorded.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const reader = await openClient(`${url}/ws`)
  const bystander = await openClient(`${url}/ws`)
  reader.ws.pause()
  reader.ws.send('flood')
  t.equal(await ended, 1008, 'the server gave up on the reader: disconnect(1008)')
  let received = 0
  reader.ws.on('message', () => { received++ })
  reader.ws.resume()
  t.match(await reader.closed, { code: 1008, reason: /slow reader/ }, 'the reader, once it reads again, finds close 1008 after the data')
  t.ok(received < FLOOD_FRAMES / 4, `only what was queued before the limit reached it (${received} of ${FLOOD_FRAMES} frames)`)

  const reply = new Promise(resolve => bystander.ws.once('message', data => resolve(String(data))))
  bystander.ws.send('hi')
  t.equal(await reply, 'echo hi', 'another client is not affected')
  bystander.ws.close()
  await bystander.closed
})

/**
 * Sends `trigger` from a client that then stops reading, so that `closeIt` closes it, and measures
 * how long the server keeps its socket after `disconnect()` ran: the peer never answers the close
 * frame.
 */
async function dropsUnansweredClose (t: Test, opts: FastifyChannelsOptions, closeIt: typeof WebsocketConsumer, trigger: string, expectedCode: number) {
  const disconnects: number[] = []
  class Recorded extends closeIt {
    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app, logs } = await buildApp({ heartbeatInterval: 0, ...opts }, app => app.get('/ws', { websocket: true }, Recorded.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const stopped = await openClient(`${url}/ws`)
  const bystander = await openClient(`${url}/ws`)
  t.teardown(() => { stopped.ws.terminate() })
  stopped.ws.pause() // the close frame will wait in its socket, unanswered
  stopped.ws.send(trigger)
  await eventually(() => disconnects.length === 1)
  const closedAt = Date.now()
  t.same(disconnects, [expectedCode], `disconnect(${expectedCode}) ran at once`)
  t.equal(app.websocketServer.clients.size, 2, 'the socket still waits for the peer\'s answer')
  await eventually(() => app.websocketServer.clients.size === 1, 20_000)
  const took = Date.now() - closedAt
  t.ok(took >= 4000 && took < 15_000, `its socket was dropped after the 5 s grace, not ws' 30 s (${took} ms)`)
  t.match(logs.filter(l => /did not complete the closing handshake/.test(String(l.msg))), [{ level: 20, graceMs: 5000 }], 'the drop is logged at debug, once')

  const reply = new Promise(resolve => bystander.ws.once('message', data => resolve(String(data))))
  bystander.ws.send('hi')
  t.equal(await reply, 'echo hi', 'another client is not affected')
  bystander.ws.close()
  await bystander.closed
}

t.test('maxBufferedBytes: a reader still stopped 5 s after its 1008 has its socket dropped, with what was queued for it', async t => {
  await dropsUnansweredClose(t, { maxBufferedBytes: 256 * 1024 }, Flood, 'flood', 1008)
})

t.test('close(): a peer that never answers the close frame has its socket dropped 5 s later', async t => {
  class Closing extends WebsocketConsumer {
    override async receive (text?: string) {
      if (text === 'close me') await this.close(4000, 'bye')
      else await this.send(`echo ${text ?? ''}`)
    }
  }
  await dropsUnansweredClose(t, {}, Closing, 'close me', 4000)
})

t.test('a client that sends its close frame and never ends its TCP side: disconnect() runs at once with its code, its socket is dropped 5 s later', async t => {
  const disconnects: number[] = []
  const handled: unknown[] = []
  class Leaving extends WebsocketConsumer {
    override groups = ['leaving']
    async note (message: LayerMessage) { handled.push(message.n) }
    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app } = await buildApp({ heartbeatInterval: 0 }, app => app.get('/ws', { websocket: true }, Leaving.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const { ws } = await openClient(`${url}/ws`)
  // This client's TCP side stays open whatever comes: it never completes the closing handshake.
  const tcp = (ws as unknown as { _socket: { end: () => unknown, destroy: () => unknown } })._socket
  const destroy = tcp.destroy.bind(tcp)
  t.teardown(() => { destroy() })
  tcp.end = () => tcp
  tcp.destroy = () => tcp
  ws.close(4001, 'bye')
  await eventually(() => disconnects.length === 1, 3000)
  const closedAt = Date.now()
  t.same(disconnects, [4001], 'disconnect() runs with the client\'s code as its close frame arrives')
  await app.channelLayer.groupSend('leaving', { type: 'note', n: 1 })
  await sleep(50)
  t.same(handled, [], 'a layer message after the close frame is not handled')
  await eventually(() => app.websocketServer.clients.size === 0, 20_000)
  const took = Date.now() - closedAt
  t.ok(took >= 4000 && took < 15_000, `its socket is dropped after the 5 s grace, not ws' 30 s (${took} ms)`)
})

t.test('a client flooding a busy consumer is not read further (TCP backpressure); nothing is lost', async t => {
  const FRAMES = 128
  const SIZE = 512 * 1024
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  class Busy extends WebsocketConsumer {
    next = 0
    inOrder = true
    override async receive (_text?: string, bytes?: Buffer) {
      if (bytes === undefined) return
      if (bytes.readUInt32BE(0) !== this.next++) this.inOrder = false
      if (this.next === 1) await gate
      if (this.next === FRAMES) await this.send(`got ${this.next} ${this.inOrder ? 'in order' : 'OUT OF ORDER'}`)
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Busy.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const client = await openClient(`${url}/ws`)
  const done = new Promise(resolve => client.ws.once('message', data => resolve(String(data))))
  for (let i = 0; i < FRAMES; i++) {
    const frame = Buffer.alloc(SIZE)
    frame.writeUInt32BE(i, 0)
    client.ws.send(frame)
  }
  // A server that kept reading would take all 64 MiB off the client well within this window
  // (it reaches 0 in a fraction of a second on loopback); one that stopped leaves most of it there.
  const deadline = Date.now() + 2000
  while (Date.now() < deadline && client.ws.bufferedAmount > 0) await sleep(20)
  const waiting = client.ws.bufferedAmount
  t.ok(waiting > (FRAMES * SIZE) / 4, `the server stopped reading: ${Math.round(waiting / MiB)} MiB of ${FRAMES * SIZE / MiB} still wait at the client`)
  release()
  t.equal(await done, `got ${FRAMES} in order`, 'once the consumer catches up, every frame is handled, in order')
  client.ws.close()
  await client.closed
})

t.test('rateLimit: the frame over the limit closes with 1008 \'rate limit\'; the frames sent before it, within the limit, are handled', async t => {
  const received: string[] = []
  const disconnects: number[] = []
  class Recorder extends WebsocketConsumer {
    override async receive (text?: string) {
      await sleep(1)
      received.push(String(text))
    }

    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app } = await buildApp({ rateLimit: { messages: 5, interval: 60_000 } }, app => app.get('/ws', { websocket: true }, Recorder.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const client = await openClient(`${url}/ws`)
  // Sent together: the server reads them in one chunk, so frames 2 to 5 still wait behind the
  // first's handler when the sixth goes over the limit.
  for (let i = 1; i <= 6; i++) client.ws.send(`frame ${i}`)
  t.match(await client.closed, { code: 1008, reason: 'rate limit' }, 'the client is closed with 1008 \'rate limit\'')
  await eventually(() => disconnects.length === 1)
  t.same(received, ['frame 1', 'frame 2', 'frame 3', 'frame 4', 'frame 5'], 'the five frames within the limit were handled, in order; the sixth was not')
  t.same(disconnects, [1008], 'disconnect(1008) ran once, after them')
})

t.test('rateLimit: pings and unasked pongs count as frames: a flood of them closes with 1008 \'rate limit\'; another client is not affected', async t => {
  const received: string[] = []
  class Echo extends WebsocketConsumer {
    override async receive (text?: string) {
      received.push(String(text))
      await this.send(String(text))
    }
  }
  const { app } = await buildApp({ rateLimit: { messages: 20, interval: 60_000 }, heartbeatInterval: 0 }, app => app.get('/ws', { websocket: true }, Echo.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  for (const control of ['ping', 'pong'] as const) {
    const flooder = await openClient(`${url}/ws`)
    let sent = 0
    // Paced by the socket's buffer, not all at once: ws' own limit on unanswered pings is not what closes it.
    while (sent < 1000 && flooder.ws.readyState === WebSocket.OPEN) {
      flooder.ws[control]()
      sent++
      if (sent % 10 === 0) await sleep(1)
    }
    const closed = await Promise.race([flooder.closed, sleep(5000).then(() => ({ code: 0, reason: 'still open 5 s after the flood' }))])
    flooder.ws.terminate()
    t.match(closed, { code: 1008, reason: 'rate limit' }, `a ${control} flood is closed with 1008 'rate limit'`)
    t.ok(sent <= 200, `within a few frames of the limit (${sent} ${control}s sent)`)
  }
  const other = await openClient(`${url}/ws`)
  const echoed = new Promise(resolve => other.ws.once('message', data => { resolve(String(data)) }))
  other.ws.send('still here')
  t.equal(await echoed, 'still here', 'another client is served')
  other.ws.close()
})

t.test('rateLimit: a client within the limit whose frames waited in TCP while its consumer was busy is not closed', async t => {
  // 40 frames a second against 100 a second: after 16 frames the busy consumer is no longer read,
  // and the 120 or so sent in the next 3 s are read together once it catches up.
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  const disconnects: number[] = []
  class Busy extends WebsocketConsumer {
    handled = 0
    override async receive (text?: string) {
      if (this.handled++ === 0) await gate
      if (text === 'last') await this.send(`handled ${this.handled}`)
    }

    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app } = await buildApp({ rateLimit: { messages: 100, interval: 1000 } }, app => app.get('/ws', { websocket: true }, Busy.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const client = await openClient(`${url}/ws`)
  const answer = new Promise(resolve => client.ws.once('message', data => resolve(String(data))))
  let sent = 0
  const started = Date.now()
  while (Date.now() - started < 4000 && client.ws.readyState === client.ws.OPEN) {
    if (sent === 16 + 120) release()
    client.ws.send(`frame ${sent++}`)
    await sleep(25)
  }
  release()
  client.ws.send('last')
  sent++
  const outcome = await Promise.race([answer, client.closed])
  t.equal(outcome, `handled ${sent}`, `every one of the ${sent} frames was handled, and the client was not closed`)
  client.ws.close(1000)
  await client.closed
  await eventually(() => disconnects.length === 1)
  t.same(disconnects, [1000], 'it ended when the client closed, once')
})

t.test('rateLimit: a client within the limit whose frames were read together after the process stalled is not closed', async t => {
  // The client runs in a process of its own, so that it goes on sending (40 frames a second against
  // 100) while this one is held up for 4 s by a handler's synchronous work; the 160 or so frames
  // sent meanwhile are read together afterwards.
  class Stalling extends WebsocketConsumer {
    handled = 0
    override async receive (text?: string) {
      this.handled++
      if (text === 'stall') for (const until = performance.now() + 4000; performance.now() < until;);
      if (text === 'last') await this.send(`handled ${this.handled}`)
    }
  }
  const { app } = await buildApp({ rateLimit: { messages: 100, interval: 1000 } }, app => app.get('/ws', { websocket: true }, Stalling.asHandler()))
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const client = spawn(process.execPath, ['--input-type=module', '-e', `
    import WebSocket from 'ws'
    const ws = new WebSocket(${JSON.stringify(`${url}/ws`)})
    const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
    ws.on('close', (code, reason) => { console.log(JSON.stringify({ closed: code, reason: String(reason) })); process.exit(0) })
    ws.on('message', data => { console.log(JSON.stringify({ answer: String(data), sent })); ws.close(1000) })
    await new Promise(resolve => ws.once('open', resolve))
    let sent = 0
    for (; sent < 220 && ws.readyState === ws.OPEN; sent++) {
      ws.send(sent === 20 ? 'stall' : \`frame \${sent}\`)
      await sleep(25)
    }
    if (ws.readyState === ws.OPEN) { ws.send('last'); sent++ }
    setTimeout(() => process.exit(1), 5000).unref()
  `], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { client.kill() })
  let output = ''
  client.stdout.on('data', chunk => { output += String(chunk) })
  await once(client, 'exit')
  const outcome = JSON.parse(output.trim().split('\n')[0]) as { answer?: string, sent?: number, closed?: number }
  t.same(outcome, { answer: `handled ${outcome.sent}`, sent: outcome.sent }, 'every frame was handled, and the client was not closed')
})

t.test('maxGroupsPerConnection: joining one group too many closes with 1008; leaving frees a slot', async t => {
  const disconnects: number[] = []
  class Joiner extends JsonWebsocketConsumer {
    override groups = ['base']
    override async receiveJson (c: { join?: string[], parallel?: string[], leave?: string, snake?: string, inspect?: true }) {
      if (c.leave !== undefined) await this.channelLayer.groupDiscard(c.leave, this.channelName)
      for (const group of c.join ?? []) await this.channelLayer.groupAdd(group, this.channelName)
      if (c.parallel !== undefined) await Promise.all(c.parallel.map(g => this.channelLayer.groupAdd(g, this.channelName)))
      if (c.snake !== undefined) await this.channelLayer.group_add(c.snake, this.channelName)
      if (c.inspect === true) {
        await this.sendJson({ real: this.channelLayer instanceof InMemoryChannelLayer, inspect: (this.channelLayer as InMemoryChannelLayer).inspect() })
        return
      }
      await this.sendJson({ ok: true, channel: this.channelName })
    }

    override async disconnect (code: number) { disconnects.push(code) }
  }
  const { app, logs } = await buildApp({ maxGroupsPerConnection: 3 }, app => app.get('/ws', { websocket: true }, Joiner.asHandler()))
  t.teardown(() => app.close())
  const layer = app.channelLayer as InMemoryChannelLayer

  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendJsonTo({ join: ['a', 'b', 'a', 'b'] })
  const { channel } = await comm.receiveJsonFrom() as { channel: string }
  t.pass('base + a + b: three groups, joining one again does not count')
  await comm.sendJsonTo({ leave: 'a', join: ['c'] })
  t.match(await comm.receiveJsonFrom(), { ok: true }, 'leaving a frees its slot for c')
  // App code (an HTTP route, a job) is trusted: it is not limited and the consumer still sees it through its view.
  for (const g of ['x1', 'x2', 'x3', 'x4']) await app.channelLayer.groupAdd(g, channel)
  await comm.sendJsonTo({ inspect: true })
  t.match(await comm.receiveJsonFrom(), { real: true, inspect: { memberships: 7 } }, 'this.channelLayer is still the layer (instanceof, its own methods)')
  await comm.sendJsonTo({ snake: 'd' })
  t.match(await comm.closed, { code: 1008, reason: 'too many groups' }, 'group_add counts as well')
  await comm.serverFinished()
  t.same(disconnects, [1008])
  t.equal(layer.inspect().memberships, 0, 'every membership is gone, also those added by app code')
  t.ok(logs.some(l => l.level === 40 && (l.err as { code?: string } | undefined)?.code === 'FST_CHANNELS_TOO_MANY_GROUPS'), 'logged at warn')

  const racer = new WebsocketCommunicator(app, '/ws')
  await racer.connect()
  await racer.sendJsonTo({ parallel: ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7', 'p8'] })
  t.match(await racer.closed, { code: 1008 }, 'joins started together cannot slip past the limit')
  await racer.serverFinished()
  t.equal(layer.inspect().memberships, 0)
})

t.test('maxGroupsPerConnection: the default is 100, and `groups` counts too', async t => {
  class Joiner extends JsonWebsocketConsumer {
    override async receiveJson (c: { count: number, from: number }) {
      for (let i = c.from; i < c.from + c.count; i++) await this.channelLayer.groupAdd(`g${i}`, this.channelName)
      await this.sendJson({ ok: true })
    }
  }
  class TooMany extends WebsocketConsumer { override groups = ['a', 'b', 'c'] }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Joiner.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  await comm.sendJsonTo({ count: 100, from: 0 })
  t.match(await comm.receiveJsonFrom(), { ok: true }, '100 groups')
  await comm.sendJsonTo({ count: 1, from: 100 })
  t.match(await comm.closed, { code: 1008 }, 'the 101st closes')

  const small = Fastify({ logger: false })
  await small.register(fastifyChannels, { maxGroupsPerConnection: 2 })
  small.get('/ws', { websocket: true }, TooMany.asHandler())
  t.teardown(() => small.close())
  t.match(await new WebsocketCommunicator(small, '/ws').connect(), { connected: false, status: 500 }, 'a class whose `groups` exceed the limit cannot connect')
})

t.test('bad limit values fail register with InvalidOptionError', async t => {
  const bad: FastifyChannelsOptions[] = [
    { maxPayload: 0 }, { maxPayload: 1.5 }, { heartbeatInterval: -1 }, { maxBufferedBytes: 0 },
    { maxGroupsPerConnection: 0 }, { maxGroupsPerConnection: -3 }, { maxGroupsPerConnection: '10' as unknown as number }
  ]
  for (const opts of bad) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(fastifyChannels, opts) }, { code: 'FST_CHANNELS_INVALID_OPTION' }, JSON.stringify(opts))
    await app.close()
  }
})
