/**
 * The connection's lifecycle against a fake socket: every transition of the state machine, what
 * the HTTP request is told, what the consumer sees (disconnect() exactly once, with the code), and
 * that the layer is left empty whatever the path. The same through real sockets is in
 * test/consumer.test.ts, test/limits.test.ts and test/shutdown.test.ts.
 */
import t from 'tap'
import { EventEmitter } from 'node:events'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import { InMemoryChannelLayer, WebsocketConsumer, type LayerMessage } from '../../lib/index.js'
import { Connection, type Decision, type Runtime } from '../../lib/connection/connection.js'
import { Counts } from '../../lib/metrics.js'
import { ConnectionSet } from '../../lib/connection/connection-set.js'
import type { ConnectionSocket } from '../../lib/connection/socket.js'
import { kInit } from '../../lib/consumer.js'
import { eventually } from '../helpers/app.js'

/** A socket that records what the connection does to it; its events are emitted by the test. */
class FakeSocket extends EventEmitter implements ConnectionSocket {
  bufferedAmount = 0
  readyState = 1
  sent: Array<string | Uint8Array> = []
  closedWith: [number, string] | null = null
  terminated = false
  pings = 0
  paused = false
  send (data: string | Uint8Array): void { this.sent.push(data) }
  close (code: number, reason: string): void { this.closedWith = [code, reason]; this.readyState = 2 }
  terminate (): void { this.terminated = true; this.readyState = 3 }
  ping (): void { this.pings++ }
  pause (): void { this.paused = true }
  resume (): void { this.paused = false }
}

/** A consumer whose connect() the test scripts; records what reaches it. */
class Scripted extends WebsocketConsumer {
  override groups = ['room']
  script: (consumer: Scripted) => Promise<void> = async c => { await c.accept() }
  received: string[] = []
  disconnects: number[] = []
  override async connect (): Promise<void> { await this.script(this) }
  override async receive (text?: string): Promise<void> {
    if (text === 'throw') throw new Error('handler bug')
    this.received.push(text ?? '')
  }

  note (message: LayerMessage & { text: string }): void { this.received.push(`layer ${message.text}`) }
  override async disconnect (code: number): Promise<void> { this.disconnects.push(code) }
}

function setup (script?: Scripted['script'], options: Partial<Runtime> = {}) {
  const layer = new InMemoryChannelLayer()
  const logs: Array<{ level: string, msg: string }> = []
  const record = (level: string) => (_obj: object, msg?: string) => { logs.push({ level, msg: msg ?? '' }) }
  const log = { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') } as unknown as FastifyBaseLogger
  // Just what building a scope and watching for an early goodbye read of a Fastify request.
  const tcp = new EventEmitter()
  const request = { url: '/ws', routeOptions: { url: '/ws' }, query: {}, params: {}, headers: {}, ip: '127.0.0.1', log, raw: { socket: tcp } } as unknown as FastifyRequest
  const runtime: Runtime = { layer, getUser: () => null, connections: new ConnectionSet(), maxBufferedBytes: 1024 * 1024, maxGroupsPerConnection: 100, counts: new Counts(), rateLimit: undefined, ...options }
  const consumer = new Scripted()
  if (script !== undefined) consumer.script = script
  const connection = new Connection(runtime, request, consumer)
  const decision = connection.handshake(ctx => consumer[kInit](ctx))
  const socket = new FakeSocket()
  return { layer, logs, tcp, runtime, consumer, connection, decision, socket }
}

const empty = { channels: 0, groups: 0, memberships: 0 }

/** A promise the test settles when it chooses. */
function gated (): [Promise<void>, () => void] {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  return [gate, release]
}

t.test('handshake → accepted → open → closing → ended: the whole life of a connection', async t => {
  const s = setup()
  t.equal(s.connection.state, 'handshake')
  t.same(await s.decision, { accepted: true } satisfies Decision, 'the request is told to upgrade')
  t.equal(s.connection.state, 'accepted')
  t.same(s.layer.inspect(), { channels: 0, groups: 1, memberships: 1 }, '`groups` joined before connect()')
  s.connection.attach(s.socket)
  t.equal(s.connection.state, 'open')
  s.socket.emit('message', Buffer.from('hello'), false)
  await s.layer.groupSend('room', { type: 'note', text: 'hi' })
  await eventually(() => s.consumer.received.length === 2)
  t.same(s.consumer.received, ['hello', 'layer hi'], 'frames and layer messages reach the consumer in order')
  await s.consumer.send('out')
  t.same(s.socket.sent, ['out'])

  s.socket.emit('close', 1000)
  t.equal(s.connection.state === 'closing' || s.connection.state === 'ended', true, 'the client closed: closing')
  await s.connection.finished
  t.equal(s.connection.state, 'ended')
  t.same(s.consumer.disconnects, [1000], 'disconnect() once, with the client\'s code')
  t.same(s.layer.inspect(), empty, 'the layer is freed of the channel and its groups')
  t.equal(s.runtime.connections.size, 0)
  await t.rejects(s.consumer.send('late'), { code: 'FST_CHANNELS_CONNECTION_CLOSED' }, 'a send after the end rejects')
  t.same(s.socket.sent, ['out'], 'nothing is written after the end')
})

t.test('handshake → ended: refusals, each with its status; disconnect() never runs', async t => {
  const cases: Array<[string, Scripted['script'], number]> = [
    ['close() before accept()', async c => { await c.close() }, 403],
    ['connect() returns without accept()', async () => {}, 403],
    ['connect() throws', async () => { throw new Error('connect bug') }, 500]
  ]
  for (const [what, script, status] of cases) {
    const s = setup(script)
    t.same(await s.decision, { accepted: false, status, clientGone: false }, what)
    await s.connection.finished
    t.equal(s.connection.state, 'ended')
    t.same(s.consumer.disconnects, [], `${what}: no disconnect()`)
    t.same(s.layer.inspect(), empty, `${what}: the groups joined for it are left`)
    t.equal(s.runtime.connections.size, 0)
    s.connection.attach(s.socket)
    t.ok(s.socket.terminated, `${what}: a socket that comes anyway is terminated`)
  }
})

t.test('handshake → ended when the set-up fails: handshake() rejects, nothing is left', async t => {
  const s = setup(undefined, { maxGroupsPerConnection: 0 })
  await t.rejects(s.decision, { code: 'FST_CHANNELS_TOO_MANY_GROUPS' })
  t.equal(s.connection.state, 'ended')
  t.same(s.consumer.disconnects, [])
  t.same(s.layer.inspect(), empty)
  t.equal(s.runtime.connections.size, 0)
})

t.test('accepted → closing: the client goes away before the upgrade', async t => {
  const s = setup()
  await s.decision
  s.tcp.emit('close')
  t.equal(s.connection.state === 'closing' || s.connection.state === 'ended', true)
  await s.connection.finished
  t.same(s.consumer.disconnects, [1006], 'disconnect(1006) once')
  t.same(s.layer.inspect(), empty)
  s.connection.attach(s.socket)
  t.ok(s.socket.terminated, 'a socket that comes late is terminated')
  t.equal(s.connection.state, 'ended')
})

t.test('accepted: close() waits for the socket, which is then closed with that code', async t => {
  const s = setup(async c => {
    void c.accept()
    await c.close(4000, 'not today')
  })
  await s.decision
  t.equal(s.connection.state, 'accepted')
  s.connection.attach(s.socket)
  t.same(s.socket.closedWith, [4000, 'not today'])
  await s.connection.finished
  t.same(s.consumer.disconnects, [4000])
})

t.test('frames that arrive while connect() still runs wait for it, in order', async t => {
  const [gate, release] = gated()
  const s = setup(async c => {
    await c.accept()
    await gate
  })
  await s.decision
  s.connection.attach(s.socket)
  for (const text of ['a', 'b', 'c']) s.socket.emit('message', Buffer.from(text), false)
  await new Promise(resolve => setImmediate(resolve))
  t.same(s.consumer.received, [], 'nothing before connect() returns')
  release()
  await eventually(() => s.consumer.received.length === 3)
  t.same(s.consumer.received, ['a', 'b', 'c'])
})

t.test('shutdown in each state', async t => {
  t.test('handshake: refused with 503 at once, connect() told through its signal; the layer is left once it returns', async t => {
    const [gate, release] = gated()
    let late: unknown
    const s = setup(async c => { await gate; await c.accept().catch((err: unknown) => { late = err }) })
    await new Promise(resolve => setImmediate(resolve))
    s.connection.shutdown()
    t.same(await s.decision, { accepted: false, status: 503, clientGone: false }, 'the request is answered 503 without waiting for connect()')
    t.equal(s.connection.signal.aborted, true, 'the signal connect() can watch is aborted')
    t.same(s.layer.inspect(), { channels: 0, groups: 1, memberships: 1 }, 'connect() still runs: what it joined stays for now')
    release()
    await s.connection.finished
    t.match(late, { code: 'FST_CHANNELS_CONNECTION_CLOSED' }, 'an accept() after it rejects')
    t.same(s.consumer.disconnects, [], 'a refused handshake runs no disconnect()')
    t.same(s.layer.inspect(), empty, 'then the layer is left')
  })

  t.test('handshake, before connect() runs: refused with 503 once the set-up is done; connect() never runs', async t => {
    let connected = false
    const s = setup(async () => { connected = true })
    s.connection.shutdown()
    t.same(await s.decision, { accepted: false, status: 503, clientGone: false })
    await s.connection.finished
    t.notOk(connected, 'connect() did not run')
    t.same(s.layer.inspect(), empty, 'what the set-up joined is left')
  })

  t.test('accepted: ends with 1001 without a socket; accept() returns', async t => {
    let accepted = false
    const s = setup(async c => { await c.accept(); accepted = true })
    await s.decision
    s.connection.shutdown()
    await s.connection.finished
    t.ok(accepted, 'the consumer\'s accept() resolved')
    t.same(s.consumer.disconnects, [1001])
    t.same(s.layer.inspect(), empty)
  })

  t.test('open: a close frame with 1001, then disconnect(1001)', async t => {
    const s = setup()
    await s.decision
    s.connection.attach(s.socket)
    s.connection.shutdown()
    t.same(s.socket.closedWith, [1001, 'server shutting down'])
    await s.connection.finished
    t.same(s.consumer.disconnects, [1001])
  })

  t.test('closing and ended: nothing more', async t => {
    const [gate, release] = gated()
    const s = setup()
    s.consumer.disconnect = async (code: number) => { s.consumer.disconnects.push(code); await gate }
    await s.decision
    s.connection.attach(s.socket)
    s.socket.emit('close', 1000)
    t.equal(s.connection.state, 'closing', 'End waits for connect() to return')
    s.connection.shutdown()
    await eventually(() => s.consumer.disconnects.length > 0)
    t.equal(s.connection.state, 'ended', 'disconnect() is running')
    s.connection.shutdown()
    release()
    await s.connection.finished
    s.connection.shutdown()
    t.same(s.consumer.disconnects, [1000])
    t.equal(s.socket.closedWith, null, 'no close frame to a client that already closed')
  })
})

t.test('disconnect() runs exactly once, with the first code, however many ways the end comes', async t => {
  const s = setup()
  await s.decision
  s.connection.attach(s.socket)
  s.socket.emit('error', Object.assign(new Error('bad utf-8'), { code: 'WS_ERR_INVALID_UTF8' }))
  s.socket.emit('close', 1006)
  s.connection.terminate()
  s.connection.close(1000)
  s.connection.shutdown()
  await s.connection.finished
  t.same(s.consumer.disconnects, [1007], 'the protocol error\'s code (invalid UTF-8)')
  t.equal(s.socket.terminated, false)
  t.equal(s.socket.closedWith, null)
})

t.test('open → closing by the server: close(), terminate(), a failing handler', async t => {
  const closed = setup()
  await closed.decision
  closed.connection.attach(closed.socket)
  closed.connection.close(4001, 'bye')
  t.same(closed.socket.closedWith, [4001, 'bye'])
  await closed.connection.finished
  t.same(closed.consumer.disconnects, [4001])

  const silent = setup()
  await silent.decision
  silent.connection.attach(silent.socket)
  silent.connection.terminate()
  t.ok(silent.socket.terminated)
  await silent.connection.finished
  t.same(silent.consumer.disconnects, [1006])

  const failing = setup()
  await failing.decision
  failing.connection.attach(failing.socket)
  for (const text of ['one', 'throw', 'never']) failing.socket.emit('message', Buffer.from(text), false)
  await failing.connection.finished
  t.same(failing.socket.closedWith, [1011, 'internal error'])
  t.same(failing.consumer.received, ['one'], 'what was queued behind the failure is skipped')
  t.same(failing.consumer.disconnects, [1011])
  t.ok(failing.logs.some(l => l.level === 'error' && l.msg === 'consumer handler failed; closing with 1011'))
})

t.test('the heartbeat sees an open connection only, and reads paused by backpressure', async t => {
  const [gate, release] = gated()
  const s = setup()
  s.consumer.receive = async () => { await gate }
  t.equal(s.connection.isOpen, false)
  await s.decision
  s.connection.attach(s.socket)
  t.equal(s.connection.isOpen, true)
  s.connection.sendPing()
  t.equal(s.socket.pings, 1)
  for (let i = 0; i < 20; i++) s.socket.emit('message', Buffer.from('x'), false)
  t.equal(s.connection.readsPaused, true)
  t.equal(s.socket.paused, true, 'the socket is no longer read')
  release()
  await eventually(() => !s.connection.readsPaused)
  t.equal(s.socket.paused, false)
  s.socket.emit('close', 1000)
  t.equal(s.connection.isOpen, false)
})

t.test('a disconnect() that throws is logged; the layer is still freed and finished resolves', async t => {
  const s = setup()
  s.consumer.disconnect = async () => { throw new Error('disconnect bug') }
  await s.decision
  s.connection.attach(s.socket)
  s.socket.emit('close', 1000)
  await s.connection.finished
  t.ok(s.logs.some(l => l.level === 'error' && l.msg === 'consumer disconnect() failed'))
  t.same(s.layer.inspect(), empty)
  t.equal(s.runtime.connections.size, 0)
})

t.test('accept() with a subprotocol that is not a string is a clear error, and decides nothing', async t => {
  const s = setup(async c => { await c.accept(42 as unknown as string) })
  t.same(await s.decision, { accepted: false, status: 500, clientGone: false }, 'connect() threw: refused with 500')
  t.ok(s.logs.some(l => l.level === 'error' && l.msg === 'consumer connect() failed'))
  t.equal(s.connection.subprotocol, undefined)
})

t.test('signal: aborted as closing begins, before disconnect() runs; read after the end it is aborted already', async t => {
  const s = setup()
  let abortedInDisconnect: boolean | undefined
  s.consumer.disconnect = async (code: number) => { abortedInDisconnect = s.consumer.signal.aborted; s.consumer.disconnects.push(code) }
  await s.decision
  s.connection.attach(s.socket)
  const signal = s.consumer.signal
  t.equal(signal.aborted, false)
  t.equal(s.consumer.signal, signal, 'one signal per connection')
  s.socket.emit('close', 1000)
  t.equal(signal.aborted, true, 'aborted at once')
  t.match(signal.reason, { code: 'FST_CHANNELS_CONNECTION_CLOSED' })
  await s.connection.finished
  t.equal(abortedInDisconnect, true, 'already aborted inside disconnect()')

  const late = setup()
  await late.decision
  late.connection.attach(late.socket)
  late.socket.emit('close', 1000)
  await late.connection.finished
  t.equal(late.consumer.signal.aborted, true, 'first read after the end')
})

t.test('spawn: runs beside the handler queue; disconnect() waits for it, and what it joins on its way out is freed', async t => {
  const [handlerGate, releaseHandler] = gated()
  const [cleanupGate, releaseCleanup] = gated()
  const s = setup()
  s.consumer.receive = async () => { await handlerGate } // the queue is stuck behind this handler
  await s.decision
  s.connection.attach(s.socket)
  s.socket.emit('message', Buffer.from('blocks'), false)
  let ticks = 0
  let cleaning = false
  s.consumer.spawn(async signal => {
    while (!signal.aborted) {
      await s.consumer.send(`tick ${++ticks}`)
      await new Promise(resolve => setTimeout(resolve, 2))
    }
    // A slow clean-up that still touches the layer: the connection must wait for it.
    cleaning = true
    await cleanupGate
    await s.layer.groupAdd('late', s.consumer.channelName)
  })
  await eventually(() => s.socket.sent.length >= 3)
  t.pass('ticks go out while a handler holds the queue')
  s.socket.emit('close', 1001)
  await eventually(() => cleaning)
  releaseHandler()
  await new Promise(resolve => setTimeout(resolve, 10))
  t.same(s.consumer.disconnects, [], 'disconnect() waits for the spawned task')
  releaseCleanup()
  await s.connection.finished
  t.same(s.consumer.disconnects, [1001])
  t.same(s.layer.inspect(), empty, 'the membership the task made while stopping is gone too')
  t.notOk(s.logs.some(l => l.level === 'error'), 'nothing logged as an error')
})

t.test('spawn: a task that fails while open closes with 1011 and is logged; spawn() after the end throws', async t => {
  const s = setup()
  await s.decision
  s.connection.attach(s.socket)
  s.consumer.spawn(async () => { throw new Error('task bug') })
  await s.connection.finished
  t.same(s.socket.closedWith, [1011, 'internal error'])
  t.same(s.consumer.disconnects, [1011])
  t.ok(s.logs.some(l => l.level === 'error' && l.msg === 'spawned task failed; closing with 1011'))
  t.throws(() => s.consumer.spawn(async () => {}), { code: 'FST_CHANNELS_CONNECTION_CLOSED' })
  t.throws(() => s.consumer.spawn('not a function' as never), { code: 'FST_CHANNELS_INVALID_OPTION' })
})

t.test('a refused handshake aborts the signal and waits for spawned tasks before it frees the layer', async t => {
  const [gate, release] = gated()
  let aborted = false
  const s = setup(async c => {
    c.spawn(async signal => {
      await new Promise(resolve => signal.addEventListener('abort', resolve))
      aborted = true
      await gate
      await c.channelLayer.groupAdd('while-refusing', c.channelName)
    })
    await c.close()
  })
  t.same(await s.decision, { accepted: false, status: 403, clientGone: false })
  t.ok(aborted)
  t.equal(s.runtime.connections.size, 1, 'not finished while the task runs')
  release()
  await s.connection.finished
  t.same(s.layer.inspect(), empty)
})

t.test('the tutorials\' loop in connect(): holds frames back, and ends by itself once the client is gone', async t => {
  let iterations = 0
  const s = setup(async c => {
    await c.accept()
    for (;;) {
      iterations++
      await c.send('now')
      await new Promise(resolve => setTimeout(resolve, 2))
    }
  })
  await s.decision
  s.connection.attach(s.socket)
  s.socket.emit('message', Buffer.from('held'), false)
  await eventually(() => s.socket.sent.length >= 3)
  t.same(s.consumer.received, [], 'frames wait for connect(), as in Channels')
  s.socket.emit('close', 1000)
  await s.connection.finished
  const stopped = iterations
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(iterations, stopped, 'the loop ended')
  t.same(s.consumer.disconnects, [1000], 'disconnect() once')
  t.same(s.consumer.received, ['held'], 'the held frame still reaches receive(): the client sent it before it closed, as in Channels')
  t.notOk(s.logs.some(l => l.level === 'error'), 'not logged as a handler failure')
  t.ok(s.logs.some(l => l.level === 'debug' && l.msg === 'consumer handler stopped: the connection had ended'))
  t.same(s.layer.inspect(), empty)
})

t.test('accept(): the watch for a client gone before the socket is removed once the socket is there', async t => {
  const s = setup()
  await s.decision
  t.equal(s.tcp.listenerCount('close'), 1)
  s.connection.attach(s.socket)
  t.equal(s.tcp.listenerCount('close'), 0, 'a TCP socket that outlives the connection collects no listeners')
  s.socket.emit('close', 1000)
  await s.connection.finished
})
