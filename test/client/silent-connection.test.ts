/**
 * A connection that goes silent without closing (a network that drops packets: a NAT that forgot
 * it, a phone that changed networks), through a TCP proxy that holds everything the server sends:
 * the client asks (ping), gives the socket up a heartbeat later, reconnects, and the re-join
 * recovers what the group sent meanwhile, once and in order. A socket that talks, or whose server
 * answers the ping, is kept. And close() does not wait for a server that does not answer.
 */
import t, { type Test } from 'tap'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { createServer as createHttpServer } from 'node:http'
import { createHash } from 'node:crypto'
import WebSocket from 'ws'
import { ChannelsClient, type ClientState } from '../../lib/client/index.js'
import { eventually } from '../helpers/app.js'
import { stallingProxy } from '../helpers/redis.js'
import { roomsApp } from '../groups/rooms.js'
import { deadLinkWebSocket } from '../helpers/dead-link-websocket.js'

t.test('a silent connection is given up after two heartbeats, and what the group sent meanwhile is recovered', async t => {
  const server = await roomsApp()
  t.teardown(() => server.app.close())
  // A plain TCP proxy (its URL's scheme is only a label here).
  const proxy = await stallingProxy(t, `redis://127.0.0.1:${server.port}`)
  const url = `ws://127.0.0.1:${new URL(proxy.url).port}/ws/rooms`
  const client = new ChannelsClient(url, { WebSocket, heartbeat: 200, minDelay: 50, maxDelay: 100 })
  t.teardown(() => { client.close() })
  const states: Array<[ClientState, string | undefined]> = []
  client.on('state', (state, detail) => { states.push([state, detail.reason]) })
  const got: unknown[] = []
  let gaps = 0
  await client.join('room.quiet', { message (data) { got.push(data) }, gap () { gaps++ } }).ready

  await server.app.channelLayer.groupSend('room.quiet', { type: 'room.message', text: 'one' })
  await eventually(() => got.length === 1)
  proxy.stall()
  await server.app.channelLayer.groupSend('room.quiet', { type: 'room.message', text: 'two' })
  await server.app.channelLayer.groupSend('room.quiet', { type: 'room.message', text: 'three' })
  await eventually(() => client.state === 'reconnecting', 5000)
  t.same(states.at(-1), ['reconnecting', 'heartbeat timeout'], 'the silent socket is given up, and says why')
  t.same(got.length, 1, 'nothing came through the silent socket')

  proxy.resume()
  await eventually(() => client.state === 'open' && got.length === 3, 5000)
  t.same(got.map(m => (m as { text: string }).text), ['one', 'two', 'three'], 'once back, the re-join recovers what was sent meanwhile, in order')
  t.equal(gaps, 0, 'nothing was lost, so no gap')

  // A connection that talks keeps going: the group speaks more often than the heartbeat.
  const before = states.length
  for (let i = 0; i < 10; i++) {
    await server.app.channelLayer.groupSend('room.quiet', { type: 'room.message', text: `more ${i}` })
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  await eventually(() => got.length === 13)
  t.equal(states.length, before, 'no state change while messages flow')
  // A quiet connection that is alive answers the client's pings: five heartbeats of silence, no change.
  await new Promise(resolve => setTimeout(resolve, 1000))
  t.equal(states.length, before, 'a quiet connection whose server answers is kept')
  t.equal(client.state, 'open')
})

/** A client with this `heartbeat` open on a rooms app of its own, and the states it goes through. */
async function openWithHeartbeat (t: Test, heartbeat: number): Promise<{ client: ChannelsClient, states: Array<[ClientState, string | undefined]> }> {
  const server = await roomsApp()
  t.teardown(() => server.app.close())
  const client = new ChannelsClient(`ws://127.0.0.1:${server.port}/ws/rooms`, { WebSocket, heartbeat, minDelay: 50, maxDelay: 100 })
  t.teardown(() => { client.close() })
  const states: Array<[ClientState, string | undefined]> = []
  client.on('state', (state, detail) => { states.push([state, detail.reason]) })
  await eventually(() => client.state === 'open')
  return { client, states }
}

t.test('a long action does not make a live connection look dead: its pings are answered meanwhile', async t => {
  const { client, states } = await openWithHeartbeat(t, 200)
  const before = states.length
  // Six heartbeats long: the client pings while the action runs, and the server answers.
  t.equal(await client.call('wait', { ms: 1200 }, { timeout: 5000 }), 1200, 'the call resolves with its result')
  t.equal(states.length, before, 'the socket was kept all along')
  t.equal(client.state, 'open')
})

t.test('a long action with more frames queued behind it than are read: the server says it is there, and the socket is kept', async t => {
  const { client, states } = await openWithHeartbeat(t, 1000)
  const before = states.length
  // 20 calls wait behind one of three heartbeats: past 16 queued, the server stops reading, the client's pings too.
  const slow = client.call('wait', { ms: 3000 }, { timeout: 10_000 })
  const quick = Array.from({ length: 20 }, async (_, n) => await client.call('echo', n, { timeout: 10_000 }))
  t.equal(await slow, 3000)
  t.same(await Promise.all(quick), Array.from({ length: 20 }, (_, n) => n), 'every call answered, in order')
  t.equal(states.length, before, 'the socket was kept all along')
})

t.test('a socket that still gets frames but whose own frames are lost: a call that times out makes the client ask, and it reconnects', async t => {
  const server = await roomsApp()
  t.teardown(() => server.app.close())
  // A proxy whose current connection can lose what the client sends, while the server's frames still come.
  let mute: (() => void) | undefined
  const proxy = createServer(client => {
    const upstream = connect(server.port, '127.0.0.1')
    let muted = false
    mute = () => { muted = true }
    client.on('data', chunk => { if (!muted) upstream.write(chunk) })
    upstream.pipe(client)
    for (const socket of [client, upstream]) socket.on('error', () => {}).on('close', () => { client.destroy(); upstream.destroy() })
  })
  await new Promise<void>(resolve => proxy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { proxy.close() })
  const { port } = proxy.address() as AddressInfo
  // The heartbeat alone never asks: the group speaks more often than it.
  const client = new ChannelsClient(`ws://127.0.0.1:${port}/ws/rooms`, { WebSocket, heartbeat: 300, minDelay: 50, maxDelay: 100 })
  t.teardown(() => { client.close() })
  const states: Array<[ClientState, string | undefined]> = []
  client.on('state', (state, detail) => { states.push([state, detail.reason]) })
  const got: string[] = []
  await client.join('room.quiet', { message (data) { got.push((data as { text: string }).text) } }).ready
  let sent = 0
  const talking = setInterval(() => { void server.app.channelLayer.groupSend('room.quiet', { type: 'room.message', text: `m${++sent}` }) }, 50)
  t.teardown(() => { clearInterval(talking) })

  mute?.()
  await t.rejects(client.call('echo', 1, { timeout: 200 }), { code: 'FST_CHANNELS_CALL_TIMEOUT' }, 'the call goes unanswered')
  await eventually(() => states.some(([state]) => state === 'reconnecting'), 3000)
  t.same(states.find(([state]) => state === 'reconnecting'), ['reconnecting', 'no answer to a ping'], 'the socket is given up, and says why')
  await eventually(() => client.state === 'open', 3000)
  t.equal(await client.call('echo', 2, { timeout: 2000 }), 2, 'on the new socket, calls are answered')
  clearInterval(talking)
  await eventually(() => got.length === sent, 3000)
  t.same(got, Array.from({ length: sent }, (_, n) => `m${n + 1}`), 'the re-join recovered every message, once and in order')
})

t.test('in a browser, whose WebSocket holds the `close` of a dead connection for a minute, the new socket does not wait for it', async t => {
  const server = await roomsApp()
  t.teardown(() => server.app.close())
  const proxy = await stallingProxy(t, `redis://127.0.0.1:${server.port}`)
  const url = `ws://127.0.0.1:${new URL(proxy.url).port}/ws/rooms`
  const { BrowserSocket, sockets } = deadLinkWebSocket(t)
  const client = new ChannelsClient(url, { WebSocket: BrowserSocket, heartbeat: 200, minDelay: 50, maxDelay: 100 })
  t.teardown(() => { client.close() })
  const got: string[] = []
  await client.join('room.quiet', { message (data) { got.push((data as { text: string }).text) } }).ready
  proxy.stall()
  await server.app.channelLayer.groupSend('room.quiet', { type: 'room.message', text: 'while silent' })
  await eventually(() => client.state === 'reconnecting', 5000)
  proxy.resume()
  // Without the bound on that wait, the old socket's close never comes here, and neither does a new socket.
  await eventually(() => client.state === 'open', 5000)
  t.equal(sockets.length, 2, 'one new socket, while the old one is still closing')
  await eventually(() => got.length === 1, 3000)
  t.same(got, ['while silent'], 'and the re-join recovered what was sent meanwhile')
})

t.test('close() on a connection whose server is not reading: the socket ends within a second, not ws\' 30 s, so the process may exit', async t => {
  // A server that completes the handshake, then never reads nor answers (stuck, or gone silent).
  const held = new Set<Socket>()
  const server = createHttpServer()
  server.on('upgrade', (request, socket: Socket) => {
    held.add(socket)
    socket.on('error', () => {})
    const accept = createHash('sha1').update(`${String(request.headers['sec-websocket-key'])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
    socket.pause()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const socket of held) socket.destroy(); server.close() })
  const sockets: WebSocket[] = []
  class Recorded extends WebSocket {
    constructor (...args: ConstructorParameters<typeof WebSocket>) {
      super(...args)
      sockets.push(this)
    }
  }
  const client = new ChannelsClient(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`, { WebSocket: Recorded })
  await eventually(() => client.state === 'open')
  client.close()
  t.equal(sockets.length, 1)
  await eventually(() => sockets[0].readyState === WebSocket.CLOSED, 5000)
  t.pass('the socket is closed')
})
