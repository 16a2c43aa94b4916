/**
 * The example app through real HTTP and real sockets: as two processes on one Redis with no
 * sticky sessions (as behind its nginx.conf), a page whose /api/me came from one process and whose
 * socket reached the other still gets the clock it was told to join; a deploy under way when
 * others fill the job queue ends (stopped, or done), never left running; signing out in one tab
 * closes the other tabs' sockets.
 */
import t, { type Test } from 'tap'
import { tmpdir } from 'node:os'
import WebSocket from 'ws'
import { ChannelsClient, type WebSocketConstructor } from '../../lib/client/index.js'
import { freePort } from '../helpers/process.js'
import { ensureBuilt } from '../helpers/dist.js'
import { startExampleApp } from '../helpers/browser.js'
import { REDIS_URL, adminClient, deleteKeysOf, requireRedis, uniquePrefix } from '../helpers/redis.js'

t.setTimeout(120_000)

/** Signs Ada in at the process on `port`; resolves with her session cookie. */
async function signIn (port: number): Promise<string> {
  const login = await fetch(`http://127.0.0.1:${port}/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'name=Ada', redirect: 'manual' })
  return (login.headers.get('set-cookie') ?? '').split(';')[0]
}

/** What a page served by the process on `port` sends with its socket: the session cookie and its Origin. */
function pageHeaders (cookie: string, port: number): Record<string, string> {
  return { cookie, origin: `http://127.0.0.1:${port}` }
}

/** The WebSocket class a ChannelsClient of such a page uses. */
function pageWebSocket (cookie: string, port: number): WebSocketConstructor {
  const headers = pageHeaders(cookie, port)
  return class extends WebSocket {
    constructor (url: string, protocols?: string | string[]) {
      super(url, protocols, { headers })
    }
  }
}

/** The example on the in-memory layer, stopped when the test ends; resolves with its port. */
async function inMemoryExample (t: Test, name: string): Promise<number> {
  await ensureBuilt()
  const port = await freePort()
  const server = await startExampleApp({ PORT: String(port), HOST: '127.0.0.1', REDIS_URL: '', SESSION_FILE: `${tmpdir()}/fc-example-${name}-${process.pid}.json` })
  t.teardown(() => server.stop())
  return port
}

t.test('the clock of the process that answered /api/me reaches a socket held by the other process', async t => {
  if (!await requireRedis(t)) return
  await ensureBuilt()
  const prefix = uniquePrefix('fc-example-clock')
  const [portA, portB] = [await freePort(), await freePort()]
  const env = { REDIS_URL, REDIS_PREFIX: prefix, HOST: '127.0.0.1' }
  const [a, b] = await Promise.all([startExampleApp({ ...env, PORT: String(portA) }), startExampleApp({ ...env, PORT: String(portB) })])
  const redis = adminClient(t)
  t.teardown(async () => {
    await Promise.all([a.stop(), b.stop()])
    await deleteKeysOf(redis, prefix)
  })

  // Signed in at A, and told by A which clock to join.
  const cookie = await signIn(portA)
  t.match(cookie, /^sessionId=/, 'signed in')
  const me = await (await fetch(`http://127.0.0.1:${portA}/api/me`, { headers: { cookie } })).json() as { clock: string, server: string }
  t.equal(me.server, `:${portA}`)

  // The page's socket lands on B.
  const client = new ChannelsClient(`ws://127.0.0.1:${portB}/ws/app`, { WebSocket: pageWebSocket(cookie, portB) })
  t.teardown(() => { client.close() })
  const ticks: Array<{ server?: string }> = []
  const sub = client.join(me.clock, { message (tick) { ticks.push(tick as { server?: string }) } })
  await sub.ready
  const until = Date.now() + 10_000
  while (ticks.length < 2 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 100))
  t.ok(ticks.length >= 2, `the clock ticks (${ticks.length} ticks)`)
  t.equal(ticks[0]?.server, `:${portA}`, 'from the process the page was told of')
})

t.test('a deploy under way when others fill the job queue ends, stopped or done, never left running', async t => {
  const port = await inMemoryExample(t, 'deploys')
  const Page = pageWebSocket(await signIn(port), port)
  const open = (): ChannelsClient => {
    const client = new ChannelsClient(`ws://127.0.0.1:${port}/ws/app`, { WebSocket: Page })
    t.teardown(() => { client.close() })
    return client
  }
  const ada = open()
  const status = new Map<string, string>()
  await ada.join('deploys', { message (event) { const e = event as { jobId: string, status: string }; status.set(e.jobId, e.status) } }).ready
  const { jobId } = await ada.call('deploy', { servers: 2 }) as { jobId: string }
  // While its first server deploys, three others click Deploy 40 times each (under the rate limit).
  const others = [open(), open(), open()]
  const outcomes = await Promise.all(others.flatMap(c => Array.from({ length: 40 }, async () =>
    await c.call('deploy', { servers: 1 }).then(() => 'queued', (err: { code?: string }) => err.code))))
  t.ok(outcomes.filter(o => o === 'queued').length >= 90, `most were queued (${outcomes.filter(o => o === 'queued').length})`)
  const until = Date.now() + 10_000
  while (status.get(jobId) !== 'succeeded' && status.get(jobId) !== 'failed' && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 100))
  t.match(status.get(jobId), /^(succeeded|failed)$/, `the deploy ended (${String(status.get(jobId))})`)
})

t.test('signing out in one tab closes the sockets of the other tabs of that session (4001)', async t => {
  const port = await inMemoryExample(t, 'logout')
  const cookie = await signIn(port)
  const tabs = await Promise.all([1, 2].map(async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/app`, { headers: pageHeaders(cookie, port) })
    const closed = new Promise<number>(resolve => ws.once('close', code => resolve(code)))
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
    t.teardown(() => { ws.terminate() })
    return { ws, closed }
  }))
  const logout = await fetch(`http://127.0.0.1:${port}/logout`, { method: 'POST', headers: { cookie }, redirect: 'manual' })
  t.equal(logout.status, 303)
  const within = (closed: Promise<number>): Promise<number | string> =>
    Promise.race([closed, new Promise<string>(resolve => setTimeout(resolve, 5000, 'still open after 5 s'))])
  t.same(await Promise.all(tabs.map(async tab => await within(tab.closed))), [4001, 4001], 'every tab\'s socket closes')
})
