import t from 'tap'
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import type WebSocket from 'ws'
import fastifyChannels, { JsonWebsocketConsumer, WebsocketConsumer, type LayerMessage } from '../lib/index.js'
import { WebsocketCommunicator } from '../lib/testing.js'
import { buildApp, eventually } from './helpers/app.js'
import { listen, openClient } from './helpers/loopback.js'

// Outgoing text frames: what the client reads must be exactly what the consumer sent, whatever the
// length (each header size of RFC 6455), the characters, and whether members share a frame.

/** A text of exactly `bytes` UTF-8 bytes, with 1-, 2-, 3- and 4-byte characters in it. */
function textOfBytes (bytes: number, seed: number): string {
  const parts = ['a', 'é', '€', '😀']
  let text = ''
  let size = 0
  for (let i = seed; size < bytes; i++) {
    const part = parts[i % parts.length]
    const length = Buffer.byteLength(part)
    if (size + length > bytes) {
      text += 'a'.repeat(bytes - size)
      break
    }
    text += part
    size += length
  }
  return text
}

t.test('texts of every header size arrive intact', async t => {
  class Sender extends WebsocketConsumer {
    override async receive (text?: string) {
      const bytes = Number(text)
      await this.send(textOfBytes(bytes, bytes))
    }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Sender.asHandler()))
  t.teardown(() => app.close())
  const comm = new WebsocketCommunicator(app, '/ws')
  await comm.connect()
  // 7-bit, 16-bit and 64-bit lengths, at and around each boundary; 200,000 is past the shared-frame limit.
  for (const bytes of [0, 1, 125, 126, 127, 65535, 65536, 70000, 200_000]) {
    await comm.sendTo(String(bytes))
    const got = await comm.receiveFrom()
    t.ok(got === textOfBytes(bytes, bytes), `${bytes} bytes`)
  }
  await comm.disconnect()
})

t.test('every member of a group reads its message, also when texts alternate', async t => {
  class Member extends JsonWebsocketConsumer {
    override async connect () {
      await this.channelLayer.groupAdd(String(this.scope.query.group), this.channelName)
      await this.accept()
    }

    async relay (message: LayerMessage & { body: unknown }) { await this.sendJson(message.body) }
  }
  const { app } = await buildApp({}, app => app.get('/ws', { websocket: true }, Member.asHandler()))
  t.teardown(() => app.close())
  const members = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
    const comm = new WebsocketCommunicator(app, `/ws?group=${i % 2 === 0 ? 'even' : 'odd'}`)
    await comm.connect()
    return { comm, group: i % 2 === 0 ? 'even' : 'odd' }
  }))
  for (let n = 0; n < 3; n++) {
    await Promise.all([
      app.channelLayer.groupSend('even', { type: 'relay', body: { n, group: 'even', text: 'é'.repeat(n * 50) } }),
      app.channelLayer.groupSend('odd', { type: 'relay', body: { n, group: 'odd', text: '😀'.repeat(n * 50) } })
    ])
  }
  for (const { comm, group } of members) {
    const got = [await comm.receiveJsonFrom(), await comm.receiveJsonFrom(), await comm.receiveJsonFrom()]
    const char = group === 'even' ? 'é' : '😀'
    t.same(got, [0, 1, 2].map(n => ({ n, group, text: char.repeat(n * 50) })), `a member of ${group}`)
  }
  await Promise.all(members.map(async ({ comm }) => { await comm.disconnect() }))
})

t.test('on a compressed socket, frames are compressed per socket and read back intact', async t => {
  class Echo extends WebsocketConsumer {
    override async receive (text?: string) { await this.send(`echo ${text ?? ''}`) }
  }
  const app = Fastify()
  // The app's own @fastify/websocket, with compression: the plugin uses it as it is.
  await app.register(fastifyWebsocket, { options: { perMessageDeflate: { threshold: 0 } } })
  await app.register(fastifyChannels)
  app.get('/ws', { websocket: true }, Echo.asHandler())
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const received: string[] = []
  const { ws } = await openClient(`${url}/ws`, { perMessageDeflate: true }, (ws: WebSocket) => {
    ws.on('message', (data: Buffer) => received.push(data.toString()))
  })
  t.match(ws.extensions, /permessage-deflate/, 'compression was negotiated')
  const long = 'x'.repeat(5000)
  ws.send('short')
  ws.send(long)
  await eventually(() => received.length === 2)
  t.same(received, ['echo short', `echo ${long}`])
  const bytesRead = (ws as unknown as { _socket: { bytesRead: number } })._socket.bytesRead
  t.ok(bytesRead < 1000, `the 5 KB text came compressed (${bytesRead} bytes read in all)`)
  ws.close()
})
