/**
 * The HTTP response as a connection's socket, on its own over real HTTP: the head, chunks, how
 * each close code ends the response, the heartbeat's ping and pong, and the client going away.
 * Through a consumer: test/http-consumer.test.ts and test/sse-limits.test.ts.
 */
import t, { type Test } from 'tap'
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import { ResponseSocket } from '../../lib/connection/response-socket.js'
import { SLOW_READER_REASON } from '../../lib/connection/outbound.js'
import { openEventStream } from '../helpers/event-stream.js'
import { eventually } from '../helpers/app.js'

/** An app whose one route hands its response, as a ResponseSocket, to the test. */
async function responder (t: Test) {
  const app = Fastify()
  const sockets: ResponseSocket[] = []
  const writes = new Map<ResponseSocket, unknown[]>()
  app.get('/', {
    onRequest: async (_request: FastifyRequest, reply: FastifyReply) => { reply.header('x-hook', 'kept').header('x-both', 'hook') }
  }, async (_request, reply) => {
    // Records what is written to the TCP socket (by the response, or straight to it).
    const chunks: unknown[] = []
    const tcp = reply.raw.socket as NonNullable<typeof reply.raw.socket>
    const write = tcp.write.bind(tcp) as (...args: unknown[]) => boolean
    tcp.write = ((...args: unknown[]) => { chunks.push(args[0]); return write(...args) }) as typeof tcp.write
    const socket = new ResponseSocket(reply)
    writes.set(socket, chunks)
    sockets.push(socket)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/`
  return {
    url,
    /** What was written to the TCP socket of the socket's response, in order. */
    writes: (socket: ResponseSocket) => writes.get(socket) ?? [],
    /** Opens a request and resolves with the server's socket for it and the client's stream promise. */
    async open () {
      const count = sockets.length
      const stream = openEventStream(url)
      await eventually(() => sockets.length > count)
      return { socket: sockets[count], stream }
    }
  }
}

t.test('send() before any head sends a bare 200; writeHead() keeps the hooks\' headers under its own', async t => {
  const r = await responder(t)
  const bare = await r.open()
  bare.socket.send('plain ')
  bare.socket.send(Buffer.from('bytes'))
  const bareStream = await bare.stream
  t.equal(bareStream.status, 200)
  t.equal(bareStream.headers['x-hook'], 'kept')
  bare.socket.close(1000, '')
  t.equal(await bareStream.ended, true)
  t.equal(bareStream.body(), 'plain bytes')

  const headed = await r.open()
  headed.socket.writeHead(201, { 'X-Both': 'mine', 'content-type': 'text/event-stream' })
  t.ok(headed.socket.started)
  const headedStream = await headed.stream
  t.equal(headedStream.status, 201, 'the head is flushed at once, before any body')
  t.match(headedStream.headers, { 'x-hook': 'kept', 'x-both': 'mine', 'content-type': 'text/event-stream' })
  headed.socket.close(1000, '')
  await headedStream.ended
})

t.test('close codes: before the head 503 (shutdown) or 500; after it the end, or a destroyed socket for a slow reader only', async t => {
  const r = await responder(t)
  const shutdown = await r.open()
  shutdown.socket.close(1001, 'server shutting down')
  const s1 = await shutdown.stream
  t.equal(s1.status, 503)
  await s1.ended
  t.same(JSON.parse(s1.body()), { statusCode: 503, error: 'Service Unavailable', message: 'server shutting down' })

  const failed = await r.open()
  failed.socket.close(1011, 'internal error')
  t.equal((await failed.stream).status, 500)

  const slow = await r.open()
  slow.socket.send('x')
  const s3 = await slow.stream
  slow.socket.close(1008, SLOW_READER_REASON)
  t.equal(await s3.ended, false, 'the slow reader\'s response is cut off, not ended')
  t.equal(slow.socket.readyState, 3)

  const tooMany = await r.open()
  tooMany.socket.send('x')
  const s5 = await tooMany.stream
  tooMany.socket.close(1008, 'too many groups')
  t.equal(await s5.ended, true, 'another 1008 ends the response')

  const twice = await r.open()
  twice.socket.close(1011, 'first')
  twice.socket.close(1001, 'second')
  twice.socket.refuse(503, 'third')
  const s4 = await twice.stream
  t.equal(s4.status, 500, 'the first close wins')
})

t.test('the heartbeat: a comment on an event stream, its pong once written; any other body is left alone', async t => {
  const r = await responder(t)
  const sse = await r.open()
  sse.socket.writeHead(200, { 'content-type': 'text/event-stream' })
  let pongs = 0
  sse.socket.on('pong', () => { pongs++ })
  sse.socket.ping()
  await eventually(() => pongs === 1)
  const stream = await sse.stream
  await eventually(() => stream.comments === 1)
  t.equal(stream.body(), ':\n')
  t.same(stream.events, [], 'a comment is no event')
  sse.socket.close(1000, '')

  const json = await r.open()
  json.socket.writeHead(200, { 'content-type': 'application/json' })
  let jsonPongs = 0
  json.socket.on('pong', () => { jsonPongs++ })
  json.socket.ping()
  await eventually(() => jsonPongs === 1)
  json.socket.send('{}')
  json.socket.close(1000, '')
  const jsonStream = await json.stream
  await jsonStream.ended
  t.equal(jsonStream.body(), '{}', 'nothing was added to the body')
})

t.test('the client going away closes with 1006, also for a listener added afterwards', async t => {
  const r = await responder(t)
  const early = await r.open()
  early.socket.writeHead(200, {})
  const stream = await early.stream
  const codes: number[] = []
  early.socket.on('close', code => { codes.push(code) })
  stream.close()
  await eventually(() => codes.length === 1)
  t.same(codes, [1006])
  t.equal(early.socket.readyState, 3)

  const late = await r.open()
  late.socket.writeHead(200, {})
  const lateStream = await late.stream
  lateStream.close()
  await eventually(() => late.socket.readyState === 3)
  const lateCodes: number[] = []
  late.socket.on('close', code => { lateCodes.push(code) })
  await eventually(() => lateCodes.length === 1)
  t.same(lateCodes, [1006], 'told once it listens')
})

t.test('one text sent to several responses is encoded once: each is written the same bytes', async t => {
  const r = await responder(t)
  const opened = [await r.open(), await r.open(), await r.open()]
  for (const { socket } of opened) socket.writeHead(200, { 'content-type': 'text/event-stream' })
  const written = opened.map(({ socket }) => r.writes(socket))
  const streams = await Promise.all(opened.map(async o => await o.stream))
  for (const { socket } of opened) socket.send(JSON.stringify({ same: 'event' }))
  for (const s of streams) await eventually(() => s.body() === '{"same":"event"}')
  // The event's bytes (with their chunk framing): one Buffer, written to every response's socket.
  const event = written.map(chunks => chunks.find(chunk => Buffer.isBuffer(chunk) && chunk.includes('{"same":"event"}')))
  t.ok(Buffer.isBuffer(event[0]), 'written as bytes')
  t.equal(event[0]?.toString(), '10\r\n{"same":"event"}\r\n', 'the whole chunk, size line and CRLF included, in one write')
  t.equal(event[1], event[0], 'the same Buffer for every response')
  t.equal(event[2], event[0])
  for (const { socket } of opened) socket.close(1000, '')
})
