/**
 * The client in a browser that goes offline and comes back, with the browser's part played here:
 * `navigator.onLine` and the window's 'online' and 'offline' events on the global object, and a
 * WebSocket that, as a browser's on a dead connection, has no terminate() and holds its `close`
 * (its closing handshake cannot complete). This file's process is its own: the globals are its.
 */
import t from 'tap'
import WebSocket from 'ws'
import { ChannelsClient, type ClientState } from '../../lib/client/index.js'
import { eventually } from '../helpers/app.js'
import { roomsApp } from '../groups/rooms.js'
import { deadLinkWebSocket } from '../helpers/dead-link-websocket.js'

const page = new EventTarget()
const navigator = { onLine: true }
Object.assign(globalThis, {
  addEventListener: page.addEventListener.bind(page),
  removeEventListener: page.removeEventListener.bind(page)
})
Object.defineProperty(globalThis, 'navigator', { value: navigator, configurable: true })

const { BrowserSocket, sockets } = deadLinkWebSocket(t)

function goOffline (): void {
  navigator.onLine = false
  page.dispatchEvent(new Event('offline'))
}

function goOnline (): void {
  navigator.onLine = true
  page.dispatchEvent(new Event('online'))
}

t.test('back online, the client opens a new socket at once: it does not wait for the one it gave up offline', async t => {
  const server = await roomsApp()
  t.teardown(() => server.app.close())
  const client = new ChannelsClient(server.url, { WebSocket: BrowserSocket, minDelay: 50, maxDelay: 5000 })
  t.teardown(() => { client.close() })
  const states: Array<[ClientState, string | undefined]> = []
  client.on('state', (state, detail) => { states.push([state, detail.reason]) })
  await eventually(() => client.state === 'open')
  goOffline()
  t.same(states.at(-1), ['reconnecting', 'offline'], 'offline: reconnecting at once')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(sockets.length, 1, 'no attempt while offline')
  goOnline()
  await eventually(() => client.state === 'open', 2000)
  t.equal(sockets.length, 2, 'back online: one new socket, opened')
  t.equal(await client.call('echo', 'again'), 'again', 'and it works')
})

t.test('a client made while offline makes no attempt until it is back online', async t => {
  const server = await roomsApp()
  t.teardown(() => server.app.close())
  const before = sockets.length
  goOffline()
  const client = new ChannelsClient(server.url, { WebSocket: BrowserSocket, minDelay: 50, maxDelay: 5000 })
  t.teardown(() => { client.close() })
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(sockets.length, before, 'no attempt while offline')
  goOnline()
  await eventually(() => client.state === 'open', 2000)
  t.equal(sockets.length, before + 1, 'one attempt once online, and it opened')
})

t.test('offline, the client tries once a maxDelay, and its backoff does not grow', async t => {
  // A server that is gone: every attempt fails, as one made offline does.
  const server = await roomsApp()
  const url = server.url
  await server.app.close()
  goOffline()
  t.teardown(goOnline)
  const before = sockets.length
  const client = new ChannelsClient(url, { WebSocket: BrowserSocket, minDelay: 50, maxDelay: 150 })
  t.teardown(() => { client.close() })
  const retries: Array<{ attempt?: number, delay?: number }> = []
  client.on('state', (state, detail) => { if (state === 'reconnecting') retries.push({ attempt: detail.attempt, delay: detail.delay }) })
  await eventually(() => retries.length >= 4, 5000)
  t.ok(sockets.length - before >= 3, `attempts were made offline, once a maxDelay (${sockets.length - before})`)
  t.same(new Set(retries.map(r => r.attempt)), new Set([1]), 'the attempt count stays at 1')
  t.same(new Set(retries.map(r => r.delay)), new Set([150]), 'each waits maxDelay, no backoff on top')
})

t.test('a page put in the back/forward cache closes its socket, so it leaves presence; shown again, it reconnects at once and recovers', async t => {
  const server = await roomsApp()
  t.teardown(() => server.app.close())
  // A live link: this socket's close completes, as a browser's does when its connection is alive.
  const client = new ChannelsClient(server.url, { WebSocket, minDelay: 50, maxDelay: 5000 })
  t.teardown(() => { client.close() })
  const states: Array<[ClientState, string | undefined]> = []
  client.on('state', (state, detail) => { states.push([state, detail.reason]) })
  const got: string[] = []
  await client.join('room.cached', { message (data) { got.push((data as { text: string }).text) } }).ready
  const present = async (): Promise<number> => (await server.app.channelLayer.presence('room.cached')).length
  t.equal(await present(), 1)

  page.dispatchEvent(Object.assign(new Event('pagehide'), { persisted: false }))
  t.equal(client.state, 'open', 'a page that is only unloading is left to the browser')
  page.dispatchEvent(Object.assign(new Event('pagehide'), { persisted: true }))
  t.same(states.at(-1), ['reconnecting', 'page hidden'], 'into the cache: the socket is closed, and says why')
  await eventually(async () => await present() === 0, 3000)
  t.pass('the server no longer counts the cached page as present')
  await server.app.channelLayer.groupSend('room.cached', { type: 'room.message', text: 'while cached' })
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(client.state, 'reconnecting', 'no attempt while the page is cached (a browser would not run one either)')
  t.equal(await present(), 0)

  page.dispatchEvent(Object.assign(new Event('pageshow'), { persisted: true }))
  await eventually(() => client.state === 'open', 2000)
  await eventually(() => got.length === 1, 2000)
  t.same(got, ['while cached'], 'shown again: the re-join recovers what was sent meanwhile')
  t.equal(await present(), 1, 'and the page is present again')
})
