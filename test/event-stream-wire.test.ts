/**
 * An event stream's bytes on the wire, read from a raw TCP socket: each event is one HTTP chunk
 * whose size counts bytes, in order, whether it was written straight to the socket (an open,
 * chunked response) or through Node's `res.write()` (HTTP/1.0, a pipelined response waiting for
 * its turn, a `res.write` that a middleware wrapped).
 */
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import type { FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify'
import { AsyncHttpConsumer, type InMemoryChannelLayer } from '../lib/index.js'
import { buildApp, eventually } from './helpers/app.js'
import { listen } from './helpers/loopback.js'

const inspect = (app: { channelLayer: unknown }) => (app.channelLayer as InMemoryChannelLayer).inspect()

/** Joins `feed` and its own group; relays `feed.item`, ends on `feed.end`. */
class Feed extends AsyncHttpConsumer {
  override groups = ['feed']
  override async handle () {
    await this.channelLayer.groupAdd(`only.${this.scope.params.name}`, this.channelName)
    await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
  }
  async feedItem (event: { text: string }) { await this.sendEvent({ data: event.text }) }
  async feedEnd () { await this.sendBody('', { more: false }) }
}

async function serve (t: Test, hooks: RouteShorthandOptions = {}) {
  const { app } = await buildApp({}, app => { app.get('/feed/:name', hooks, Feed.asHandler()) })
  const { port } = await listen(app)
  t.teardown(() => app.close())
  return { app, port }
}

/** A raw connection that keeps every byte it reads. */
function rawConnection (port: number, t: Test): { socket: Socket, received: () => Buffer, closed: Promise<void> } {
  const socket = connect({ host: '127.0.0.1', port })
  const parts: Buffer[] = []
  socket.on('data', part => parts.push(part))
  const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
  t.teardown(() => socket.destroy())
  return { socket, received: () => Buffer.concat(parts), closed }
}

interface Parsed { status: string, headers: string, chunks: string[], ended: boolean }

/** Chunked HTTP/1.1 responses, one after the other, as far as `bytes` goes. */
function parseChunked (bytes: Buffer): Parsed[] {
  const responses: Parsed[] = []
  let at = 0
  while (at < bytes.length) {
    const headEnd = bytes.indexOf('\r\n\r\n', at)
    if (headEnd === -1) break
    const head = bytes.toString('latin1', at, headEnd).split('\r\n')
    const response: Parsed = { status: head[0], headers: head.slice(1).join('\n').toLowerCase(), chunks: [], ended: false }
    responses.push(response)
    at = headEnd + 4
    for (;;) {
      const lineEnd = bytes.indexOf('\r\n', at)
      if (lineEnd === -1) return responses
      const size = Number.parseInt(bytes.toString('latin1', at, lineEnd), 16)
      const start = lineEnd + 2
      if (start + size + 2 > bytes.length) return responses
      if (bytes.toString('latin1', start + size, start + size + 2) !== '\r\n') throw new Error(`chunk of ${size} bytes not followed by CRLF`)
      at = start + size + 2
      if (size === 0) {
        response.ended = true
        break
      }
      response.chunks.push(bytes.toString('utf8', start, start + size))
    }
  }
  return responses
}

const event = (text: string) => `data: ${text}\n\n`

t.test('HTTP/1.1: every event is one chunk sized in bytes, a burst in order, then the last chunk', async t => {
  const { app, port } = await serve(t)
  const client = rawConnection(port, t)
  client.socket.write('GET /feed/one HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n')
  await eventually(() => parseChunked(client.received()).length === 1)
  t.match(parseChunked(client.received())[0], { status: 'HTTP/1.1 200 OK', headers: /transfer-encoding: chunked/ })
  await eventually(() => inspect(app).memberships === 2)

  const texts = ['plain', 'é€ and 😀: more bytes than characters', 'x'.repeat(5000), 'last']
  // One tick: the four go out together.
  await Promise.all(texts.map(text => app.channelLayer.groupSend('feed', { type: 'feed.item', text })))
  await eventually(() => parseChunked(client.received())[0].chunks.length === texts.length)
  await app.channelLayer.groupSend('only.one', { type: 'feed.end' })
  await eventually(() => parseChunked(client.received())[0].ended)
  t.same(parseChunked(client.received())[0].chunks, texts.map(event))
})

t.test('HTTP/1.0: no chunks, the events as they are, and the end closes the connection', async t => {
  const { app, port } = await serve(t)
  const client = rawConnection(port, t)
  client.socket.write('GET /feed/old HTTP/1.0\r\nHost: x\r\n\r\n')
  await eventually(() => client.received().includes('\r\n\r\n'))
  await eventually(() => inspect(app).memberships === 2)
  await app.channelLayer.groupSend('feed', { type: 'feed.item', text: 'é€ one' })
  await app.channelLayer.groupSend('feed', { type: 'feed.item', text: 'two' })
  await app.channelLayer.groupSend('only.old', { type: 'feed.end' })
  await client.closed
  const bytes = client.received()
  const headEnd = bytes.indexOf('\r\n\r\n')
  t.match(bytes.toString('latin1', 0, headEnd), /^HTTP\/1\.1 200 OK/)
  t.notMatch(bytes.toString('latin1', 0, headEnd).toLowerCase(), /transfer-encoding/)
  t.equal(bytes.toString('utf8', headEnd + 4), event('é€ one') + event('two'))
})

t.test('a pipelined stream waits for the one before it: its events, sent meanwhile and after, come whole and in order', async t => {
  const { app, port } = await serve(t)
  const client = rawConnection(port, t)
  // Both requests in one write: the second response has no socket until the first one ends.
  client.socket.write('GET /feed/first HTTP/1.1\r\nHost: x\r\n\r\nGET /feed/second HTTP/1.1\r\nHost: x\r\n\r\n')
  await eventually(() => inspect(app).memberships === 4)
  await app.channelLayer.groupSend('feed', { type: 'feed.item', text: 'to both, 1' })
  await app.channelLayer.groupSend('only.second', { type: 'feed.item', text: 'second waits, 2' })
  await app.channelLayer.groupSend('feed', { type: 'feed.item', text: 'to both, 3' })
  await eventually(() => parseChunked(client.received())[0]?.chunks.length === 2)
  t.equal(parseChunked(client.received()).length, 1, 'nothing of the second response before the first ends')

  await app.channelLayer.groupSend('only.first', { type: 'feed.end' })
  await eventually(() => parseChunked(client.received())[1]?.chunks.length === 3)
  // Now the second response has the socket: these go straight to it, after what waited.
  await app.channelLayer.groupSend('feed', { type: 'feed.item', text: 'to the one left, 4' })
  await app.channelLayer.groupSend('only.second', { type: 'feed.end' })
  await eventually(() => parseChunked(client.received())[1]?.ended === true)

  const [first, second] = parseChunked(client.received())
  t.same(first, { status: 'HTTP/1.1 200 OK', headers: first.headers, chunks: [event('to both, 1'), event('to both, 3')], ended: true })
  t.equal(second.status, 'HTTP/1.1 200 OK')
  t.same(second.chunks, [event('to both, 1'), event('second waits, 2'), event('to both, 3'), event('to the one left, 4')])
  t.equal(second.ended, true)
})

t.test('a middleware that wraps res.write() (compression, byte counts) gets every event through it', async t => {
  const seen: string[] = []
  const { app, port } = await serve(t, {
    onRequest: async (_request: FastifyRequest, reply: FastifyReply) => {
      const raw = reply.raw
      const write = raw.write.bind(raw) as (chunk: unknown, ...rest: unknown[]) => boolean
      // Marks each chunk, as a transforming middleware would change it.
      raw.write = ((chunk: unknown, ...rest: unknown[]) => {
        seen.push(String(chunk))
        return write(`${String(chunk)}: wrapped\n\n`, ...rest)
      }) as typeof raw.write
    }
  })
  const client = rawConnection(port, t)
  client.socket.write('GET /feed/one HTTP/1.1\r\nHost: x\r\n\r\n')
  await eventually(() => inspect(app).memberships === 2)
  await app.channelLayer.groupSend('feed', { type: 'feed.item', text: 'one' })
  await app.channelLayer.groupSend('feed', { type: 'feed.item', text: 'two' })
  // Through res.write(), chunk boundaries are Node's: from Node 24 the writes of one tick leave as one chunk.
  const body = (): string => parseChunked(client.received())[0]?.chunks.join('') ?? ''
  const expected = event('one') + ': wrapped\n\n' + event('two') + ': wrapped\n\n'
  await eventually(() => body().length >= expected.length)
  t.same(seen, [event('one'), event('two')])
  t.equal(body(), expected)
})

t.test('events and bytes keep the order they were sent in, whichever way each is written (a large event goes through res.write())', async t => {
  class Mixed extends AsyncHttpConsumer {
    override async handle () {
      await this.sendHeaders({ headers: { 'content-type': 'text/event-stream' } })
      await new Promise(resolve => setTimeout(resolve, 20))
      await this.sendEvent({ data: 'first' })
      // A later turn, so nothing is corked: the large event is written by res.write(), the small one after it straight to the socket.
      await new Promise(resolve => setTimeout(resolve, 20))
      await this.sendEvent({ data: 'large ' + 'x'.repeat(70_000) })
      await this.sendEvent({ data: 'third' })
      await this.sendBody(Buffer.from('data: bytes\n\n'), { more: true })
      await this.sendEvent({ data: 'last' })
      await this.sendBody('', { more: false })
    }
  }
  const { app } = await buildApp({}, app => { app.get('/mixed', Mixed.asHandler()) })
  t.teardown(() => app.close())
  const { port } = await listen(app)
  const client = rawConnection(port, t)
  client.socket.write('GET /mixed HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
  await client.closed
  const order = [...client.received().toString('latin1').matchAll(/data: (first|large|third|bytes|last)/g)].map(match => match[1])
  t.same(order, ['first', 'large', 'third', 'bytes', 'last'])
})
