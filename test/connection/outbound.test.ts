/**
 * The outbound side on its own, over real ws sockets on loopback: what clients read, the slow
 * reader limit, nothing written once shut, and one frame shared by the members a text goes to.
 */
import t, { type Test } from 'tap'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import type { FastifyBaseLogger } from 'fastify'
import { Outbound, type OutboundOwner } from '../../lib/connection/outbound.js'
import { eventually } from '../helpers/app.js'

/** A ws server on a free port with `count` connected clients; each client records what it reads. */
async function pairs (t: Test, count: number, serverOptions: WebSocket.ServerOptions = {}, clientOptions: WebSocket.ClientOptions = {}) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', ...serverOptions })
  await new Promise(resolve => wss.once('listening', resolve))
  const { port } = wss.address() as AddressInfo
  const servers: WebSocket[] = []
  wss.on('connection', socket => servers.push(socket))
  const clients = await Promise.all(Array.from({ length: count }, async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, clientOptions)
    const received: Array<string | Buffer> = []
    ws.on('message', (data: Buffer, binary: boolean) => received.push(binary ? data : data.toString()))
    await new Promise(resolve => ws.once('open', resolve))
    return { ws, received }
  }))
  await eventually(() => servers.length === count)
  t.teardown(async () => {
    for (const { ws } of clients) ws.terminate()
    await new Promise(resolve => wss.close(resolve))
  })
  return { servers, clients }
}

/** An owner that records logs and close() calls. */
function owner () {
  const logs: Array<{ level: string, msg: string }> = []
  const closes: Array<[number, string]> = []
  const log = {
    debug: (_obj: object, msg: string) => logs.push({ level: 'debug', msg }),
    warn: (_obj: object, msg: string) => logs.push({ level: 'warn', msg })
  } as unknown as FastifyBaseLogger
  const o: OutboundOwner = { log, channelName: 'specific!test', close: (code, reason) => { closes.push([code, reason]) } }
  return { owner: o, logs, closes }
}

t.test('text and bytes arrive as text and binary frames, in order', async t => {
  const { servers: [socket], clients: [client] } = await pairs(t, 1)
  const out = new Outbound(owner().owner, 1024 * 1024, { framesSent: 0, slowReaders: 0 })
  out.open(socket)
  out.send('hello')
  out.send(Buffer.from([1, 2, 3]))
  out.send('é😀')
  await eventually(() => client.received.length === 3)
  t.same(client.received, ['hello', Buffer.from([1, 2, 3]), 'é😀'])
})

t.test('one text sent to many members is framed once: every socket is written the same bytes', async t => {
  const { servers, clients } = await pairs(t, 3)
  const written: Buffer[][] = []
  const outs = servers.map(socket => {
    const sender = (socket as unknown as { _sender: { sendFrame: (list: Buffer[], cb?: () => void) => void } })._sender
    const sendFrame = sender.sendFrame.bind(sender)
    sender.sendFrame = (list, cb) => { written.push(list); sendFrame(list, cb) }
    const out = new Outbound(owner().owner, 1024 * 1024, { framesSent: 0, slowReaders: 0 })
    out.open(socket)
    return out
  })
  for (const out of outs) out.send('{"same":"text"}')
  for (const out of outs) out.send('{"other":"text"}')
  await eventually(() => clients.every(c => c.received.length === 2))
  for (const c of clients) t.same(c.received, ['{"same":"text"}', '{"other":"text"}'])
  t.equal(written.length, 6, 'each text written to each socket as a ready frame')
  // Written at the end of the turn, socket after socket: each socket's two frames in a row.
  const [firsts, seconds] = [[written[0], written[2], written[4]], [written[1], written[3], written[5]]]
  t.ok(firsts.every(list => list[0] === firsts[0][0]), 'the same frame Buffer for the first text…')
  t.ok(seconds.every(list => list[0] === seconds[0][0]), '…and one for the second')
  t.not(firsts[0][0], seconds[0][0])
})

t.test('a compressed socket frames per socket, through ws.send()', async t => {
  const { servers: [socket], clients: [client] } = await pairs(t, 1, { perMessageDeflate: { threshold: 0 } }, { perMessageDeflate: true })
  const sender = (socket as unknown as { _sender: { sendFrame: unknown } })._sender
  let direct = 0
  const sendFrame = (sender.sendFrame as (list: Buffer[], cb?: () => void) => void).bind(sender)
  sender.sendFrame = (list: Buffer[], cb?: () => void) => { direct++; sendFrame(list, cb) }
  const out = new Outbound(owner().owner, 1024 * 1024, { framesSent: 0, slowReaders: 0 })
  out.open(socket)
  out.send('x'.repeat(2000))
  await eventually(() => client.received.length === 1)
  t.equal(client.received[0], 'x'.repeat(2000))
  t.equal(direct, 1, 'written once, by ws itself after compressing (not a shared uncompressed frame)')
  t.match(socket.extensions, /permessage-deflate/)
})

t.test('a reader over the buffered limit: nothing more is written, the owner closes with 1008, logged at warn', async t => {
  const { servers: [socket], clients: [client] } = await pairs(t, 1)
  const { owner: o, logs, closes } = owner()
  const out = new Outbound(o, 64 * 1024, { framesSent: 0, slowReaders: 0 })
  out.open(socket)
  client.ws.pause() // the client stops reading; the server's buffer fills
  const chunk = Buffer.alloc(64 * 1024)
  let sent = 0
  while (closes.length === 0 && sent < 10_000) {
    out.send(chunk)
    sent++
    if (sent % 32 === 0) await new Promise(resolve => setImmediate(resolve))
  }
  t.same(closes, [[1008, 'slow reader: too much data queued']])
  t.ok(socket.bufferedAmount > 64 * 1024, 'it happened once the socket held more than the limit')
  t.ok(logs.some(l => l.level === 'warn' && /slow reader/.test(l.msg)))
})

t.test('four states: before expect() send() drops the data (warn); after it, data waits for open() and goes first; after shut() it throws ConnectionClosedError', async t => {
  const { servers: [socket], clients: [client] } = await pairs(t, 1)
  const { owner: o, logs } = owner()
  const out = new Outbound(o, 1024 * 1024, { framesSent: 0, slowReaders: 0 })
  out.send('too early')
  t.same(logs, [{ level: 'warn', msg: 'send() before accept(): dropped (accept() first)' }])
  out.expect()
  out.send('accepted')
  out.open(socket)
  out.send('while open')
  out.shut()
  t.throws(() => out.send('too late'), { code: 'FST_CHANNELS_CONNECTION_CLOSED', message: 'Connection "specific!test" has ended: nothing more can be sent' })
  t.throws(() => out.send(Buffer.from('late bytes')), { code: 'FST_CHANNELS_CONNECTION_CLOSED' })
  await eventually(() => client.received.length >= 2)
  await new Promise(resolve => setTimeout(resolve, 30))
  t.same(client.received, ['accepted', 'while open'])
  t.equal(logs.length, 1, 'nothing more logged: the caller has the error')
})

t.test('a socket that is closing gets text through ws.send(), never a frame after its close frame', async t => {
  const { servers: [socket], clients: [client] } = await pairs(t, 1)
  const out = new Outbound(owner().owner, 1024 * 1024, { framesSent: 0, slowReaders: 0 })
  out.open(socket)
  const closed = new Promise<number>(resolve => client.ws.once('close', code => resolve(code)))
  socket.close(1000)
  let error: Error | undefined
  socket.send = ((data: string, cb?: (err?: Error) => void) => {
    error = new Error(`ws.send(${data}) while ${socket.readyState}`)
    cb?.()
  }) as typeof socket.send
  out.send('after the close frame')
  t.equal(await closed, 1000)
  t.match(error?.message, /ws\.send\(after the close frame\) while 2/, 'handed to ws.send(), which refuses it')
  t.same(client.received, [])
})

t.test('what waits to be written goes out before the socket closes', async t => {
  const { servers: [socket], clients: [client] } = await pairs(t, 1)
  const out = new Outbound(owner().owner, 1024 * 1024, { framesSent: 0, slowReaders: 0 })
  out.open(socket)
  const closed = new Promise<number>(resolve => client.ws.once('close', code => resolve(code)))
  out.send('last words')
  out.shut()
  socket.close(1000, 'bye')
  t.equal(await closed, 1000)
  t.same(client.received, ['last words'], 'written before the close frame')
})

/** Counts the writes that reach the TCP socket under a server-side ws socket: one per system call. */
function countWrites (socket: WebSocket) {
  const tcp = (socket as unknown as { _socket: { _write: (...a: unknown[]) => void, _writev: (chunks: unknown[], cb: unknown) => void } })._socket
  const writes: number[] = [] // frames per write
  const write = tcp._write.bind(tcp)
  const writev = tcp._writev.bind(tcp)
  tcp._write = (...a: unknown[]) => { writes.push(1); write(...a) }
  tcp._writev = (chunks: unknown[], cb: unknown) => { writes.push(chunks.length); writev(chunks, cb) }
  return writes
}

t.test('the frames a socket gets in one turn, from one handler after another, leave in one write, in order', async t => {
  const { servers: [socket], clients: [client] } = await pairs(t, 1)
  const out = new Outbound(owner().owner, 1024 * 1024, { framesSent: 0, slowReaders: 0 })
  out.open(socket)
  const writes = countWrites(socket)
  // As a connection's async handlers run: each send follows the previous one's promise.
  await new Promise<void>(resolve => {
    setTimeout(() => {
      out.send('{"n":1}')
      void Promise.resolve().then(() => { out.send('{"n":2}') }).then(() => { out.send('{"n":3}') }).then(resolve)
    }, 1)
  })
  await eventually(() => client.received.length === 3)
  t.same(client.received, ['{"n":1}', '{"n":2}', '{"n":3}'])
  t.same(writes, [3], 'three frames, one write')
})

t.test('a burst to one socket is written every 32 frames, so the slow-reader limit sees it within the turn', async t => {
  const { servers: [socket], clients: [client] } = await pairs(t, 1)
  const out = new Outbound(owner().owner, 1024 * 1024, { framesSent: 0, slowReaders: 0 })
  out.open(socket)
  const writes = countWrites(socket)
  const texts = Array.from({ length: 40 }, (_, i) => `{"n":${i}}`)
  for (const text of texts) out.send(text)
  t.same(writes, [32], 'the first 32 at once')
  await eventually(() => client.received.length === 40)
  t.same(client.received, texts)
  t.same(writes, [32, 8], 'the rest at the end of the turn')
})
