import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import WebSocket from 'ws'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import { spawnNode, type NodeProcess } from '../helpers/process.js'
import { ensureBuilt } from '../helpers/dist.js'
import { REDIS_URL, adminClient, requireRedis, uniquePrefix } from '../helpers/redis.js'

// Several app processes behind one Redis, each a Fastify server built from the published package:
// clients on different processes share groups, reach each other directly, and split a queue.

const fixture = fileURLToPath(new URL('./fixtures/redis-chat-server.js', import.meta.url))
// A possible rebuild of dist/ and four process starts: on a busy machine more than .taprc's 120 s.
t.setTimeout(240_000)

interface Server {
  proc: NodeProcess
  port: number
  token: string
}

async function startServer (t: Test, name: string, env: Record<string, string>): Promise<Server> {
  const proc = spawnNode([fixture], { REDIS_URL, SERVER_NAME: name, _TAPJS_PROCESSINFO_COVERAGE_: '0', ...env })
  t.teardown(() => proc.stop())
  const line = await proc.waitFor(/^\{"listening"/, 30_000)
  const { listening, token } = JSON.parse(line) as { listening: number, token: string }
  return { proc, port: listening, token }
}

/** A WebSocket client that keeps every JSON message it gets. */
class Client {
  readonly messages: Array<Record<string, unknown>> = []
  #waiters = new Set<() => void>()
  constructor (readonly ws: WebSocket) {
    ws.on('message', data => {
      this.messages.push(JSON.parse(String(data)) as Record<string, unknown>)
      for (const wake of this.#waiters) wake()
    })
  }

  static async open (t: Test, server: Server, room: string): Promise<Client> {
    // Listening from the start: the welcome may come in the same packet as the handshake answer.
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws/chat/${room}`)
    const client = new Client(ws)
    t.teardown(() => ws.close())
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${String(res.statusCode)}`)))
      ws.once('error', reject)
    })
    await client.next(m => m.type === 'welcome')
    return client
  }

  get channel (): string {
    return this.messages.find(m => m.type === 'welcome')?.channel as string
  }

  send (content: object): void {
    this.ws.send(JSON.stringify(content))
  }

  /** The first message (seen or to come) that matches. */
  async next (match: (m: Record<string, unknown>) => boolean, ms = 5000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + ms
    for (;;) {
      const found = this.messages.find(match)
      if (found !== undefined) return found
      if (Date.now() > deadline) throw new Error(`no matching message within ${ms} ms; got ${JSON.stringify(this.messages)}`)
      await new Promise<void>(resolve => {
        const wake = (): void => { clearTimeout(timer); this.#waiters.delete(wake); resolve() }
        const timer = setTimeout(wake, 100)
        this.#waiters.add(wake)
      })
    }
  }
}

if (await requireRedis(t)) {
  await ensureBuilt()
  tests()
}

function tests (): void {
  t.test('two servers in separate processes share groups, direct channels and a queue', async t => {
    const prefix = uniquePrefix('fc-procs')
    const env = { LAYER_PREFIX: prefix, WORKER_CHANNEL: 'jobs' }
    const [a, b] = await Promise.all([startServer(t, 'a', env), startServer(t, 'b', env)])
    const [onA, onB] = [await Client.open(t, a, 'lobby'), await Client.open(t, b, 'lobby')]

    onA.send({ text: 'hello from a' })
    for (const client of [onA, onB]) t.match(await client.next(m => m.text === 'hello from a'), { from: 'a' })
    onB.send({ text: 'hello from b' })
    for (const client of [onA, onB]) t.match(await client.next(m => m.text === 'hello from b'), { from: 'b' })
    t.equal(onA.messages.filter(m => m.text === 'hello from b').length, 1, 'each member got it once')

    const response = await fetch(`http://127.0.0.1:${a.port}/announce/lobby`, { method: 'POST' })
    t.equal(response.status, 200)
    for (const client of [onA, onB]) t.match(await client.next(m => m.text === 'announcement'), { from: 'a-http' })

    onA.send({ to: onB.channel, text: 'psst' })
    t.match(await onB.next(m => m.text === 'psst'), { from: 'a', server: 'b' }, 'a direct send crossed processes')
    await sleep(200)
    t.equal(onA.messages.filter(m => m.text === 'psst').length, 0, 'and reached nobody else')

    // The queue: both processes run a worker on 'jobs'; each job is handled once, by either.
    const sender = new RedisChannelLayer({ url: REDIS_URL, prefix })
    t.teardown(() => sender.close())
    const total = 100
    for (let n = 0; n < total; n++) await sender.send('jobs', { type: 'job.run', n })
    const handled = (): Array<{ handled: number, by: string }> =>
      [a, b].flatMap(s => s.proc.lines.filter(l => l.startsWith('{"handled"')).map(l => JSON.parse(l) as { handled: number, by: string }))
    const deadline = Date.now() + 20_000
    while (handled().length < total && Date.now() < deadline) await sleep(50)
    await sleep(300) // a duplicate, if there were one, has time to show up
    const all = handled()
    t.same(all.map(h => h.handled).sort((x, y) => x - y), Array.from({ length: total }, (_, n) => n), 'every job exactly once')
    t.ok(all.some(h => h.by === 'a') && all.some(h => h.by === 'b'), 'both processes took jobs')

    t.same(await Promise.all([a.proc.stop(), b.proc.stop()]), [0, 0], 'both servers shut down cleanly')
  })

  t.test('a SIGKILLed process leaves no members behind once they expire', async t => {
    const admin = adminClient(t)
    const prefix = uniquePrefix('fc-sigkill')
    // Default groupExpiry (a day); the records' lease is three seconds, renewed while the process lives.
    const env = { LAYER_PREFIX: prefix, MEMBERSHIP_LEASE: '3' }
    const [alive, doomed] = await Promise.all([startServer(t, 'alive', env), startServer(t, 'doomed', env)])
    const [survivor, victim] = [await Client.open(t, alive, 'room'), await Client.open(t, doomed, 'room')]
    const key = `${prefix}:gm:{chat_room}`
    t.same((await admin.zrange(key, '0', '-1')).sort(), [survivor.channel, victim.channel].sort(), 'both members recorded')

    doomed.proc.child.kill('SIGKILL')
    await doomed.proc.exited
    // Polled: a loaded machine may delay the survivor's renewal a moment, never the victim's expiry.
    const settled = async (ms: number): Promise<string[]> => {
      const deadline = Date.now() + ms
      let members = await admin.zrange(key, '0', '-1')
      while (!(members.length === 1 && members[0] === survivor.channel) && Date.now() < deadline) {
        await sleep(100)
        members = await admin.zrange(key, '0', '-1')
      }
      return members
    }
    t.same(await settled(10_000), [survivor.channel], 'the dead process\' member expired with its lease')
    await sleep(4000)
    t.same(await settled(3000), [survivor.channel], 'the live member\'s record is renewed past its lease')
    t.same(await admin.pubsub('NUMSUB', `${prefix}:g:{chat_room}`), [`${prefix}:g:{chat_room}`, 1], 'only the live process is subscribed')
    survivor.send({ text: 'still here' })
    t.match(await survivor.next(m => m.text === 'still here'), { from: 'alive' })
  })
}
