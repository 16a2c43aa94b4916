import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { spawnNode } from '../helpers/process.js'
import { ensureBuilt } from '../helpers/dist.js'
import { requireNginx, startNginx } from '../helpers/nginx.js'
import { REDIS_URL, requireRedis, uniquePrefix } from '../helpers/redis.js'

// The nginx configuration the README documents (example-app/nginx.conf), run by a real nginx in
// front of two app processes sharing Redis: WebSocket upgrades pass, no sticky sessions are needed,
// the Origin check and scope.client see what the browser sent, and an idle socket outlives the
// proxy's read timeout because the heartbeat crosses it.

const fixture = fileURLToPath(new URL('./fixtures/redis-chat-server.js', import.meta.url))
t.setTimeout(240_000)

async function startApp (t: Test, name: string, env: Record<string, string>): Promise<number> {
  const proc = spawnNode([fixture], { REDIS_URL, SERVER_NAME: name, TRUST_PROXY: '127.0.0.1', _TAPJS_PROCESSINFO_COVERAGE_: '0', ...env })
  t.teardown(() => proc.stop())
  return (JSON.parse(await proc.waitFor(/^\{"listening"/, 30_000)) as { listening: number }).listening
}

interface Client {
  ws: WebSocket
  messages: Array<Record<string, unknown>>
  closed: Promise<number>
  next: (match: (m: Record<string, unknown>) => boolean, ms?: number) => Promise<Record<string, unknown>>
}

async function connect (t: Test, url: string, headers: Record<string, string>): Promise<Client> {
  const ws = new WebSocket(url, { headers })
  const messages: Array<Record<string, unknown>> = []
  ws.on('message', data => messages.push(JSON.parse(String(data)) as Record<string, unknown>))
  const closed = new Promise<number>(resolve => ws.once('close', code => resolve(code)))
  t.teardown(() => ws.close())
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${String(res.statusCode)}`)))
    ws.once('error', reject)
  })
  const next = async (match: (m: Record<string, unknown>) => boolean, ms = 5000): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + ms
    for (;;) {
      const found = messages.find(match)
      if (found !== undefined) return found
      if (Date.now() > deadline) throw new Error(`no matching message within ${ms} ms; got ${JSON.stringify(messages)}`)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }
  return { ws, messages, closed, next }
}

if (await requireRedis(t) && requireNginx(t)) {
  await ensureBuilt()

  t.test('two app processes behind nginx: upgrades, no sticky sessions, Origin and client as the browser sent them', async t => {
    const prefix = uniquePrefix('fc-nginx')
    const ports = [await startApp(t, 'one', { LAYER_PREFIX: prefix }), await startApp(t, 'two', { LAYER_PREFIX: prefix })]
    const nginx = await startNginx(t, ports)
    const url = `ws://127.0.0.1:${nginx.port}/ws/chat/lobby`
    // A browser on the page served through nginx sends this Origin; the client's own
    // X-Forwarded-For stands for the address nginx would see on a real network.
    const headers = { origin: nginx.url, 'x-forwarded-for': '198.51.100.7' }
    const clients: Client[] = []
    for (let i = 0; i < 4; i++) clients.push(await connect(t, url, headers))
    const welcomes = await Promise.all(clients.map(async c => await c.next(m => m.type === 'welcome')))
    t.same(new Set(welcomes.map(w => w.server)), new Set(['one', 'two']), 'nginx spreads the clients over both processes')
    t.same(welcomes.map(w => w.client), welcomes.map(() => ({ address: '198.51.100.7', port: 0 })), 'scope.client is the forwarded address')

    clients[0].ws.send(JSON.stringify({ text: 'hello everyone' }))
    for (const client of clients) {
      t.match(await client.next(m => m.type === 'message'), { text: 'hello everyone', from: welcomes[0].server }, 'every process delivers it')
    }
    const other = welcomes.findIndex(w => w.server !== welcomes[0].server)
    clients[other].ws.send(JSON.stringify({ text: 'just you', to: welcomes[0].channel }))
    t.match(await clients[0].next(m => m.text === 'just you'), { from: welcomes[other].server }, 'a direct send crosses processes')

    await t.rejects(connect(t, url, { origin: 'http://evil.example' }), /HTTP 403/, 'another Origin is refused through the proxy too')
  })

  t.test('the heartbeat keeps an idle socket open past the proxy\'s read timeout; without it nginx cuts it', async t => {
    const prefix = uniquePrefix('fc-nginx-idle')
    const beating = await startApp(t, 'beating', { LAYER_PREFIX: prefix, HEARTBEAT: '500' })
    const silent = await startApp(t, 'silent', { LAYER_PREFIX: prefix, HEARTBEAT: '0' })
    const [viaBeating, viaSilent] = [await startNginx(t, [beating], { readTimeout: '2s' }), await startNginx(t, [silent], { readTimeout: '2s' })]
    const alive = await connect(t, `ws://127.0.0.1:${viaBeating.port}/ws/chat/idle`, { origin: viaBeating.url })
    const cut = await connect(t, `ws://127.0.0.1:${viaSilent.port}/ws/chat/idle`, { origin: viaSilent.url })
    const outcome = await Promise.race([cut.closed.then(code => `closed ${code}`), new Promise(resolve => setTimeout(() => resolve('open'), 6000))])
    t.match(String(outcome), /^closed/, 'no heartbeat: nginx closes the idle socket after its read timeout')
    t.equal(alive.ws.readyState, WebSocket.OPEN, 'with a heartbeat shorter than the timeout, the idle socket is still open')
    alive.ws.send(JSON.stringify({ text: 'still here' }))
    t.match(await alive.next(m => m.type === 'message'), { text: 'still here' })
  })
}
