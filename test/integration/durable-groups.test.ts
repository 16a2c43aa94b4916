import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import type { LayerMessage } from '../../lib/layers/types.js'
import { spawnNode, type NodeProcess } from '../helpers/process.js'
import { ensureBuilt } from '../helpers/dist.js'
import { REDIS_URL, adminClient, requireRedis, uniquePrefix } from '../helpers/redis.js'
import { receiveWithin } from '../helpers/layers.js'

// Durable groups across real processes on one Redis: a member that comes back in another process
// (or after its process was killed) recovers exactly what it missed, and the presence of a
// process killed with SIGKILL is found and announced by the survivors.

const fixture = fileURLToPath(new URL('./fixtures/durable-member.js', import.meta.url))
t.setTimeout(240_000)

const LEASE = 1
const groups = { 'durable.*': { history: { size: 1000, ttl: 60 }, presenceEvents: true } }

function member (t: Test, env: Record<string, string>): NodeProcess {
  const proc = spawnNode([fixture], { REDIS_URL, MEMBERSHIP_LEASE: String(LEASE), _TAPJS_PROCESSINFO_COVERAGE_: '0', ...env })
  t.teardown(() => proc.stop(2000))
  return proc
}

/** The offsets a member process printed, in the order it printed them. */
function offsets (proc: NodeProcess): number[] {
  return proc.lines.filter(line => line.startsWith('{"got"')).map(line => (JSON.parse(line) as { got: number }).got)
}

async function until (what: string, check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

async function receive (layer: RedisChannelLayer, channel: string, ms = 10_000): Promise<LayerMessage> {
  return await receiveWithin(channel, ms, signal => layer.receive(channel, { signal }))
}

if (await requireRedis(t)) {
  await ensureBuilt()

  t.test('a member recovers in another process, while sends race its join, and again after its process is killed', async t => {
    const prefix = uniquePrefix('fc-durable')
    const layer = new RedisChannelLayer({ url: REDIS_URL, prefix, groups })
    t.teardown(() => layer.close())
    const group = 'durable.chat'
    let sent = 0
    const send = async (): Promise<void> => { await layer.groupSend(group, { type: 'line', n: ++sent }) }
    for (let i = 0; i < 5; i++) await send()
    const epoch = (await layer.history(group)).position?.epoch as string

    // Comes back in a new process, having seen up to 2, while 150 more are sent.
    const first = member(t, { LAYER_PREFIX: prefix, GROUP: group, SINCE: JSON.stringify({ offset: 2, epoch }) })
    const racing = (async () => { while (sent < 155) await send() })()
    const joined = JSON.parse(await first.waitFor(/^\{"joined"/)) as { join: { recovered: boolean } }
    await racing
    t.equal(joined.join.recovered, true)
    await until('the first process got everything', () => offsets(first).length >= 153, 20_000)
    t.same(offsets(first), Array.from({ length: 153 }, (_, i) => i + 3), 'offsets 3..155, each once, in order')

    // Killed without a word; the chat goes on; a new process comes back from the last offset seen.
    first.child.kill('SIGKILL')
    await first.exited
    const lastSeen = offsets(first).at(-1) as number
    for (let i = 0; i < 10; i++) await send()
    const second = member(t, { LAYER_PREFIX: prefix, GROUP: group, SINCE: JSON.stringify({ offset: lastSeen, epoch }) })
    const rejoined = JSON.parse(await second.waitFor(/^\{"joined"/)) as { join: { recovered: boolean, position: { offset: number } } }
    t.same(rejoined.join, { recovered: true, position: { offset: 165, epoch } })
    await until('the second process got what it missed', () => offsets(second).length >= 10, 10_000)
    await send()
    await until('and what came next', () => offsets(second).length >= 11, 10_000)
    t.same(offsets(second), Array.from({ length: 11 }, (_, i) => i + 156), 'offsets 156..166, nothing missed, nothing twice')
  })

  // A watcher in this process, a member of the group with or without a presence entry of its own
  // (one without keeps no entry alive: the dead process' must still be there for the reaper).
  for (const watcherInfo of [{ name: 'watcher' }, undefined]) {
    const title = watcherInfo === undefined
      ? 'a SIGKILLed process\'s presence goes, announced to survivors that record none of their own, within the lease + 5 s'
      : 'a SIGKILLed process\'s presence goes, announced by the survivors, within the lease + 5 s'
    t.test(title, async t => {
      const prefix = uniquePrefix('fc-presence')
      const layer = new RedisChannelLayer({ url: REDIS_URL, prefix, groups, membershipLease: LEASE })
      t.teardown(() => layer.close())
      const group = 'durable.room'
      const watcher = await layer.newChannel()
      await layer.groupAdd(group, watcher, { presence: watcherInfo })
      if (watcherInfo !== undefined) await receive(layer, watcher) // its own join
      const living = watcherInfo === undefined ? [] : ['watcher']

      const doomed = member(t, { LAYER_PREFIX: prefix, GROUP: group, PRESENCE: JSON.stringify({ name: 'doomed' }) })
      const { joined } = JSON.parse(await doomed.waitFor(/^\{"joined"/)) as { joined: string }
      t.same(await receive(layer, watcher), { type: 'presence.join', channel: joined, info: { name: 'doomed' } })
      t.same((await layer.presence(group)).map(e => e.info.name).sort(), ['doomed', ...living])

      doomed.child.kill('SIGKILL')
      await doomed.exited
      const killedAt = Date.now()
      t.same(await receive(layer, watcher, (LEASE + 5) * 1000 + 2000), { type: 'presence.leave', channel: joined, info: { name: 'doomed' } })
      const took = Date.now() - killedAt
      t.ok(took <= (LEASE + 5) * 1000 + 1000, `announced ${took} ms after the kill (lease ${LEASE} s)`)
      t.same((await layer.presence(group)).map(e => e.info.name), living, 'and gone from presence()')
    })
  }

  t.test('where no survivor records presence, a SIGKILLed process\'s entries leave Redis with its lease: other processes\' plain members do not keep them', async t => {
    const prefix = uniquePrefix('fc-presence-plain')
    const layer = new RedisChannelLayer({ url: REDIS_URL, prefix, membershipLease: LEASE })
    t.teardown(() => layer.close())
    const group = 'plain.room' // no policy: no presence events, so no process reaps entries
    const living = await layer.newChannel()
    await layer.groupAdd(group, living)
    const admin = adminClient(t)
    await admin.connect()
    const entries = `${prefix}:pi:{${group}}`
    for (let round = 1; round <= 2; round++) {
      const doomed = member(t, { LAYER_PREFIX: prefix, GROUP: group, PRESENCE: JSON.stringify({ name: `doomed ${round}` }) })
      await doomed.waitFor(/^\{"joined"/)
      t.equal(await admin.hlen(entries), 1, `round ${round}: its entry is in Redis`)
      doomed.child.kill('SIGKILL')
      await doomed.exited
      // The lease, and the two reaping periods (5 s each) a dead entry stays for a survivor to announce it.
      const deadline = Date.now() + (LEASE + 10 + 2) * 1000
      while (await admin.exists(entries) === 1 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
      t.equal(await admin.exists(entries), 0, `round ${round}: the entry left after the lease, not kept by the living member's renewals`)
    }
    t.same(await layer.presence(group), [])
    await layer.groupSend(group, { type: 'still.here' })
    t.same(await receive(layer, living), { type: 'still.here' }, 'the living plain member is still a member')
  })
}
