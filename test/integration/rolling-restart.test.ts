import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { ChannelsClient } from '../../lib/client/index.js'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import { spawnNode, type NodeProcess } from '../helpers/process.js'
import { ensureBuilt } from '../helpers/dist.js'
import { requireNginx, startNginx, type Nginx } from '../helpers/nginx.js'
import { REDIS_URL, requireRedis, uniquePrefix } from '../helpers/redis.js'

// A deploy as the README describes it: two app processes on one Redis behind the documented nginx
// configuration, restarted one at a time (SIGTERM, wait for the exit, start the new one on the same
// port, wait until nginx sends it requests again) while a publisher that is not restarted sends a
// numbered stream to a room with history. Clients on fastify-channels/client reconnect through
// nginx and re-join with their last position: each ends with every message once, in order, and
// none is told it missed anything.

const fixture = fileURLToPath(new URL('./fixtures/rooms-server.js', import.meta.url))
t.setTimeout(120_000)

const CLIENTS = 20
const RATE = 50 // messages per second
const MAX_MESSAGES = 2000 // the publisher stops by itself here whatever happens
const ROOM = 'room.deploy'
const groups = { 'room.*': { history: { size: 1000, ttl: 60 } } }

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

async function until (what: string, check: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await sleep(50)
  }
}

interface AppProcess { name: string, port: number, pid: number, proc: NodeProcess }

async function startApp (t: Test, name: string, prefix: string, port = 0): Promise<AppProcess> {
  const proc = spawnNode([fixture], {
    REDIS_URL, LAYER_PREFIX: prefix, GROUPS: JSON.stringify(groups), SERVER_NAME: name, PORT: String(port),
    TRUST_PROXY: '127.0.0.1', _TAPJS_PROCESSINFO_COVERAGE_: '0'
  })
  t.teardown(() => proc.stop())
  const ready = JSON.parse(await proc.waitFor(/^\{"listening"/, 30_000)) as { listening: number, pid: number }
  return { name, port: ready.listening, pid: ready.pid, proc }
}

/** Whether nginx sends requests to `app` (it asks /healthz through nginx until that process answers). */
async function servedThroughNginx (nginx: Nginx, app: AppProcess): Promise<boolean> {
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${nginx.url}/healthz`).catch(() => null)
    if (res === null) continue
    const body = await res.json().catch(() => null) as { pid?: number } | null
    if (res.status === 200 && body?.pid === app.pid) return true
  }
  return false
}

interface Member {
  client: ChannelsClient<{ whoami: { args: undefined, result: { server: string } } }>
  received: number[]
  gaps: number
  opens: number
  /** Reconnect attempts scheduled: each socket that dropped, or failed to open. */
  retries: number
}

if (await requireRedis(t) && requireNginx(t)) {
  await ensureBuilt()

  t.test('restarting each of two processes in turn while messages flow: every client gets every message once, in order', async t => {
    const prefix = uniquePrefix('fc-rolling')
    const apps = [await startApp(t, 'a', prefix), await startApp(t, 'b', prefix)]
    const nginx = await startNginx(t, apps.map(a => a.port))

    const members: Member[] = []
    t.teardown(() => { for (const m of members) m.client.close() })
    for (let i = 0; i < CLIENTS; i++) {
      const member: Member = { client: new ChannelsClient(`ws://127.0.0.1:${nginx.port}/ws/rooms`, { WebSocket }), received: [], gaps: 0, opens: 0, retries: 0 }
      member.client.on('state', state => {
        if (state === 'open') member.opens++
        else if (state === 'reconnecting') member.retries++
      })
      member.client.join<{ n: number }>(ROOM, {
        message (data) { member.received.push(data.n) },
        gap () { member.gaps++ }
      })
      members.push(member)
    }
    await until('every client joined', () => members.every(m => m.client.state === 'open'), 20_000)
    // Joined: a call answered after the join frame means the join has taken effect (frames are handled in order).
    const servers = await Promise.all(members.map(async m => (await m.client.call('whoami')).server))
    t.comment(`clients per process before the deploy: a ${servers.filter(s => s === 'a').length}, b ${servers.filter(s => s === 'b').length}`)

    // The publisher is not part of the deploy: its own layer, the same prefix and policy.
    const layer = new RedisChannelLayer({ url: REDIS_URL, prefix, groups })
    t.teardown(() => layer.close())
    let sent = 0
    let publishing = true
    const publisher = (async () => {
      const start = performance.now()
      while (publishing && sent < MAX_MESSAGES) {
        const wait = start + sent * 1000 / RATE - performance.now()
        if (wait > 0) await sleep(wait)
        const n = sent + 1
        await layer.groupSend(ROOM, { type: 'room.message', n })
        sent = n
      }
    })().catch((err: unknown) => err)

    await sleep(500)
    for (const [i, app] of apps.entries()) {
      const stoppedAt = Date.now()
      t.equal(await app.proc.stop(), 0, `${app.name}: SIGTERM, app.close(), exit 0`)
      const next = await startApp(t, app.name, prefix, app.port)
      const upAt = Date.now()
      await until(`nginx sends requests to the new ${app.name}`, () => servedThroughNginx(nginx, next), 15_000)
      t.comment(`${app.name}: ${upAt - stoppedAt} ms from SIGTERM to the new process listening, in nginx's rotation ${Date.now() - upAt} ms later (${sent} messages sent so far)`)
      apps[i] = next
    }
    await sleep(500)
    publishing = false
    t.equal(await publisher, undefined, 'the publisher never failed')

    await until('every client has every message', () => members.every(m => m.received.length >= sent), 15_000).catch(() => {})
    const expected = Array.from({ length: sent }, (_, i) => i + 1)
    t.ok(sent > RATE, `${sent} messages sent during the deploy`)
    t.equal(members.filter(m => JSON.stringify(m.received) === JSON.stringify(expected)).length, CLIENTS,
      `each of the ${CLIENTS} clients got messages 1..${sent}, each once, in order`)
    for (const [i, m] of members.entries()) {
      if (JSON.stringify(m.received) !== JSON.stringify(expected)) {
        const missing = expected.filter(n => !m.received.includes(n))
        t.fail(`client ${i}: ${m.received.length} deliveries, missing ${JSON.stringify(missing.slice(0, 20))}, ` +
          `${m.received.length - new Set(m.received).size} duplicated`)
      }
    }
    t.equal(members.reduce((sum, m) => sum + m.gaps, 0), 0, 'no client was told it missed anything (gap() never ran)')
    const reconnects = members.map(m => m.opens - 1)
    t.ok(reconnects.every(r => r >= 1), 'every client was moved at least once: each process it was on restarted')
    t.comment(`sent ${sent}; deliveries per client ${Math.min(...members.map(m => m.received.length))}–${Math.max(...members.map(m => m.received.length))}; ` +
      `reconnects ${reconnects.reduce((a, b) => a + b, 0)} in all (per client: ${[...new Set(reconnects)].sort().join(', ')}), ` +
      `after ${members.reduce((sum, m) => sum + m.retries, 0)} attempts`)
  })

  t.test('while a process closes, held open by a client that does not answer its close frame, POSTs through nginx go to the other one', async t => {
    const prefix = uniquePrefix('fc-rolling-post')
    const [closing, staying] = [await startApp(t, 'closing', prefix), await startApp(t, 'staying', prefix)]
    const nginx = await startNginx(t, [closing.port, staying.port])
    // A client whose network went quiet: connected straight to the process, it never reads again,
    // so the close frame stays unanswered and app.close() waits out its grace.
    const silent = new WebSocket(`ws://127.0.0.1:${closing.port}/ws/rooms`)
    t.teardown(() => { silent.terminate() })
    await new Promise((resolve, reject) => { silent.once('open', resolve); silent.once('error', reject) })
    ;(silent as unknown as { _socket: { pause: () => void } })._socket.pause()

    const stopped = closing.proc.stop()
    await until('the process is closing', async () => (await fetch(`http://127.0.0.1:${closing.port}/healthz`).catch(() => null))?.status === 503, 5000)
    const statuses: number[] = []
    const servers = new Set<string>()
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${nginx.url}/api/ping`, { method: 'POST' })
      statuses.push(res.status)
      if (res.status === 200) servers.add(((await res.json()) as { server: string }).server)
      else await res.body?.cancel()
      await sleep(50)
    }
    t.same(statuses.filter(s => s !== 200), [], `${statuses.length} POSTs during the close, each answered 200`)
    t.same([...servers], ['staying'], 'by the process that stays')
    t.equal(await stopped, 0, 'the closing process exits once its grace is over')
  })
}
