/**
 * A burst of client frames to the README's chat consumer, over a real socket, on both layers: each
 * frame sends to the room, the sender's own channel included. ws hands over every frame of what
 * it read at once (hundreds of small ones), and the consumer handles them while the group messages
 * they produce wait in its channel: those must take turns with the frames, not pile up past the
 * channel's capacity (100) and be skipped. Every member, the sender too, gets every line, in order.
 */
import t, { type Test } from 'tap'
import type WebSocket from 'ws'
import { InMemoryChannelLayer, JsonWebsocketConsumer, RedisChannelLayer, WebsocketConsumer, type ChannelLayer } from '../lib/index.js'
import { buildApp, eventually } from './helpers/app.js'
import { listen, openClient } from './helpers/loopback.js'
import { REDIS_URL, cleanedPrefix, requireRedis } from './helpers/redis.js'

const LINES = 400

class ChatConsumer extends JsonWebsocketConsumer {
  override async connect (): Promise<void> {
    await this.channelLayer.groupAdd('chat', this.channelName)
    await this.accept()
  }

  override async receiveJson (content: { text: string }): Promise<void> {
    await this.channelLayer.groupSend('chat', { type: 'chat.message', text: content.text })
  }

  async chatMessage (event: { text: string }): Promise<void> {
    await this.sendJson({ text: event.text })
  }
}

/** The texts a client is sent, in order. */
function received (ws: WebSocket): string[] {
  const texts: string[] = []
  ws.on('message', data => { texts.push((JSON.parse(data.toString()) as { text: string }).text) })
  return texts
}

async function burstToRoom (t: Test, layer: ChannelLayer): Promise<void> {
  const { app, logs } = await buildApp({ layer }, app => { app.get('/chat', { websocket: true }, ChatConsumer.asHandler()) })
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const sender = await openClient(`${url}/chat`)
  const other = await openClient(`${url}/chat`)
  const bySender = received(sender.ws)
  const byOther = received(other.ws)
  const lines = Array.from({ length: LINES }, (_, i) => `line ${i}`)
  // One burst: the frames reach the server in a few reads, far more than 16 per read.
  for (const text of lines) sender.ws.send(JSON.stringify({ text }))
  await eventually(() => bySender.length >= LINES && byOther.length >= LINES, 15_000)
    .catch(() => {}) // what is missing shows in the assertions below
  t.same(bySender, lines, 'the sender gets every line it sent, once, in order')
  t.same(byOther, lines, 'the other member gets every line, once, in order')
  t.same(logs.filter(log => /skipped|full/.test(String(log.msg))).map(log => log.msg), [], 'no channel was full: nothing skipped')
  sender.ws.close()
  other.ws.close()
}

/**
 * Several members burst at once: each sender's channel takes the lines of all of them while it
 * handles its own frames, several messages for each frame it takes. Its frames wait in TCP (they
 * cannot be lost); the messages must not wait past the channel's capacity.
 */
async function burstsFromSeveral (t: Test, layer: ChannelLayer, senders: number, lines: number): Promise<void> {
  const { app, logs } = await buildApp({ layer }, app => { app.get('/chat', { websocket: true }, ChatConsumer.asHandler()) })
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const clients = await Promise.all(Array.from({ length: senders + 1 }, async () => await openClient(`${url}/chat`)))
  const got = clients.map(client => received(client.ws))
  for (let line = 0; line < lines; line++) {
    for (let sender = 0; sender < senders; sender++) clients[sender].ws.send(JSON.stringify({ text: `${sender}:${line}` }))
  }
  const total = senders * lines
  await eventually(() => got.every(texts => texts.length >= total), 20_000).catch(() => {})
  got.forEach((texts, i) => {
    const who = i < senders ? `sender ${i}` : 'the member that only reads'
    t.equal(texts.length, total, `${who} gets every line once (${texts.length} of ${total})`)
    for (let sender = 0; sender < senders; sender++) {
      const own = texts.filter(text => text.startsWith(`${sender}:`))
      t.same(own, Array.from({ length: lines }, (_, line) => `${sender}:${line}`), `${who}: sender ${sender}'s lines in order`)
    }
  })
  t.same(logs.filter(log => /skipped|full/.test(String(log.msg))).map(log => log.msg), [], 'no channel was full: nothing skipped')
  for (const client of clients) client.ws.close()
}

t.test('in memory: a burst of frames that each send to the room loses nothing', async t => {
  await burstToRoom(t, new InMemoryChannelLayer())
})

t.test('on Redis: a burst of frames that each send to the room loses nothing', async t => {
  if (!await requireRedis(t)) return
  await burstToRoom(t, new RedisChannelLayer({ url: REDIS_URL, prefix: cleanedPrefix(t, 'fc-burst') }))
})

t.test('in memory: several members bursting at once lose nothing', async t => {
  await burstsFromSeveral(t, new InMemoryChannelLayer(), 5, 200)
})

t.test('on Redis: several members bursting at once lose nothing', async t => {
  if (!await requireRedis(t)) return
  await burstsFromSeveral(t, new RedisChannelLayer({ url: REDIS_URL, prefix: cleanedPrefix(t, 'fc-bursts') }), 5, 200)
})

t.test('a channel that stays over capacity (more comes than the consumer handles) does not keep its client\'s frames out meanwhile', async t => {
  const layer = new InMemoryChannelLayer()
  class Busy extends WebsocketConsumer {
    override groups = ['room']
    override async receive (text?: string): Promise<void> { await this.send(`echo ${String(text)}`) }
    async tick (): Promise<void> { await new Promise(resolve => setTimeout(resolve, 5)) }
  }
  const { app } = await buildApp({ layer }, app => { app.get('/ws', { websocket: true }, Busy.asHandler()) })
  t.teardown(() => app.close())
  const { url } = await listen(app)
  const client = await openClient(`${url}/ws`)
  const echoes: string[] = []
  client.ws.on('message', data => { echoes.push(String(data)) })
  // About 600 ticks a second for a consumer that handles at most 200: its channel stays full.
  let overloaded = true
  const load = (async () => {
    while (overloaded) {
      for (let i = 0; i < 6; i++) await layer.groupSend('room', { type: 'tick' }).catch(() => {})
      await new Promise(resolve => setTimeout(resolve, 10))
    }
  })()
  for (let n = 0; n < 20; n++) {
    client.ws.send(String(n))
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const during = echoes.length
  overloaded = false
  await load
  t.ok(during >= 5, `the client's frames were answered while the overload lasted (${during} of 20)`)
  client.ws.close()
})
