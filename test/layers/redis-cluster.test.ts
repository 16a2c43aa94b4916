import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Cluster, Redis, type ClusterOptions } from 'ioredis'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import type { LayerMessage } from '../../lib/layers/types.js'
import { conformance } from './conformance.js'
import { startRedisCluster, uniquePrefix, type RedisCluster } from '../helpers/redis.js'

// Redis Cluster: three masters made by the test, clients made the way users make them
// (`new Cluster(nodes)`, no special options). The layer must use sharded pub/sub and keep every
// multi-key operation on one slot.

const execFileAsync = promisify(execFile)
const clients: Cluster[] = []
let cluster: RedisCluster | undefined

function userClient (options: ClusterOptions = {}): Cluster {
  if (cluster === undefined) throw new Error('cluster not started')
  const client = new Cluster(cluster.nodes, options)
  clients.push(client)
  return client
}

t.before(async () => {
  cluster = await startRedisCluster(t)
})
t.teardown(() => { for (const client of clients) client.disconnect() })

const prefix = uniquePrefix('fc-cluster')
conformance('RedisChannelLayer on Redis Cluster', options => new RedisChannelLayer({ client: userClient(), prefix, ...options }),
  { shared: true, latency: 150 })
// Options of ioredis that rewrite commands or replies, as an app's shared client may have them:
// keyPrefix prefixes sharded channels too (to Redis they are keys); stringNumbers returns
// integers as strings.
const keyPrefix = `${uniquePrefix('fc-cluster-kp')}:`
conformance('RedisChannelLayer on Redis Cluster, client with keyPrefix and stringNumbers',
  options => new RedisChannelLayer({ client: userClient({ keyPrefix, redisOptions: { stringNumbers: true } }), prefix: 'app', ...options }),
  { shared: true, latency: 150 })

function receiveWithin (layer: RedisChannelLayer, channel: string, ms = 3000): Promise<LayerMessage> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(`nothing on ${channel} within ${ms} ms`)), ms)
  return layer.receive(channel, { signal: controller.signal }).finally(() => clearTimeout(timer))
}

function open (t: Test, layerPrefix: string): RedisChannelLayer {
  const layer = new RedisChannelLayer({ client: userClient(), prefix: layerPrefix })
  t.teardown(() => layer.close())
  return layer
}

/** A client of each master, with its node id; disconnected in teardown. */
async function masters (t: Test) {
  return await Promise.all((cluster as RedisCluster).nodes.map(async node => {
    const client = new Redis(node.port, node.host)
    t.teardown(() => client.disconnect())
    return { ...node, client, id: await client.cluster('MYID') as string }
  }))
}

type Master = Awaited<ReturnType<typeof masters>>[number]

/** The master that holds slot 0, as the first master's CLUSTER SLOTS says. */
async function ownerOfSlot0 (nodes: Master[]): Promise<Master> {
  const id = (await nodes[0].client.cluster('SLOTS')).find(([from, to]) => from <= 0 && 0 <= to)?.[2]?.[2]
  const owner = nodes.find(node => node.id === id)
  if (owner === undefined) throw new Error(`slot 0 is held by no master the test knows (${String(id)})`)
  return owner
}

t.test('group and direct sends across two layers use sharded pub/sub', async t => {
  const nodes = (cluster as RedisCluster).nodes.map(node => {
    const client = new Redis(node.port, node.host)
    t.teardown(() => client.disconnect())
    return client
  })
  const p = uniquePrefix('fc-shard')
  const [a, b] = [open(t, p), open(t, p)]
  // Several groups, so that they land on different shards.
  const groups = ['alpha', 'bravo', 'charlie', 'delta', 'echo']
  const [ca, cb] = [await a.newChannel(), await b.newChannel()]
  for (const group of groups) {
    await a.groupAdd(group, ca)
    await b.groupAdd(group, cb)
  }
  for (const group of groups) {
    await a.groupSend(group, { type: 'from.a', group })
    await b.groupSend(group, { type: 'from.b', group })
  }
  const got: Record<string, string[]> = { a: [], b: [] }
  for (let i = 0; i < groups.length * 2; i++) {
    got.a.push(`${(await receiveWithin(a, ca)).type as string}`)
    got.b.push(`${(await receiveWithin(b, cb)).type as string}`)
  }
  t.equal(got.a.length, 10, 'every group message reached the member of layer a')
  t.equal(got.b.length, 10, 'and the member of layer b')
  await a.send(cb, { type: 'direct.to.b' })
  await b.send(ca, { type: 'direct.to.a' })
  t.same(await receiveWithin(b, cb), { type: 'direct.to.b' })
  t.same(await receiveWithin(a, ca), { type: 'direct.to.a' })
  await a.send('cluster-jobs', { type: 'job' })
  t.same(await receiveWithin(b, 'cluster-jobs'), { type: 'job' }, 'named channels work on the cluster')

  const sharded = new Set<string>()
  const classic = new Set<string>()
  const owners = new Set<number>()
  for (const [i, node] of nodes.entries()) {
    const here = await node.call('PUBSUB', 'SHARDCHANNELS', `${p}:*`) as string[]
    for (const channel of here) {
      sharded.add(channel)
      if (channel.startsWith(`${p}:g:`)) owners.add(i)
    }
    for (const channel of await node.pubsub('CHANNELS', `${p}:*`) as string[]) classic.add(channel)
  }
  for (const group of groups) t.ok(sharded.has(`${p}:g:{${group}}`), `group ${group} is a shard channel`)
  t.ok(owners.size > 1, `the groups are spread over ${owners.size} shards`)
  t.same([...classic], [], 'no classic (cluster-wide) pub/sub channel is used')
  for (const group of groups) {
    const slots = await Promise.all([`${p}:g:{${group}}`, `${p}:gm:{${group}}`, `${p}:gn:{${group}}`]
      .map(name => nodes[0].call('CLUSTER', 'KEYSLOT', name)))
    t.equal(new Set(slots).size, 1, `${group}: its channel and keys share one slot`)
  }
  await a.flush()
  for (const node of nodes) t.same(await node.keys(`${p}:*`), [], 'flush emptied every master')
})

t.test('a group\'s slot moving between masters (redis-cli --cluster reshard): its members miss nothing the history kept', async t => {
  const nodes = await masters(t)
  // Its keys and channel hash to slot 0, the first slot of the master that has it: a reshard of
  // one slot from that master moves this one.
  const group = 'g7486'
  t.equal(await nodes[0].client.cluster('KEYSLOT', group), 0)
  const p = uniquePrefix('fc-reshard')
  const groups = { [group]: { history: { size: 50_000, ttl: 60 } } }
  // The member reads once the stream is over: its channel holds all of it.
  const member = new RedisChannelLayer({ client: userClient(), prefix: p, groups, capacity: 100_000 })
  const sender = new RedisChannelLayer({ client: userClient(), prefix: p, groups })
  t.teardown(async () => { await Promise.all([member.close(), sender.close()]) })
  const channel = await member.newChannel()
  await member.groupAdd(group, channel)

  // Eight senders at once, and three reshards (around the three masters) in their middle.
  const offsets = new Map<number, number>() // offset → line
  let refused = 0
  let streaming = true
  let next = 1
  const streams = Array.from({ length: 8 }, async () => {
    while (streaming && next <= 100_000) {
      const n = next++
      await sender.groupSend(group, { type: 'line', n }).then(position => { offsets.set(position?.offset ?? 0, n) }, () => { refused++ })
    }
  })
  const first = await ownerOfSlot0(nodes)
  await sleep(200)
  const duringEach: number[] = []
  for (let i = 0; i < 3; i++) {
    const before = offsets.size
    const from = await ownerOfSlot0(nodes)
    const to = nodes[(nodes.indexOf(from) + 1) % nodes.length]
    await execFileAsync('redis-cli', ['--cluster', 'reshard', `${to.host}:${to.port}`, '--cluster-from', from.id, '--cluster-to', to.id,
      '--cluster-slots', '1', '--cluster-yes'], { timeout: 30_000 })
    duringEach.push(offsets.size - before)
    await sleep(200)
  }
  streaming = false
  await Promise.all(streams)
  t.equal(await ownerOfSlot0(nodes), first, 'the slot went around the three masters')

  const lines: number[] = []
  for (;;) {
    const message = await receiveWithin(member, channel, 1500).catch(() => undefined)
    if (message === undefined) break
    lines.push(message.n as number)
  }
  const sent = [...offsets].sort(([x], [y]) => x - y).map(([, n]) => n)
  t.notOk(duringEach.includes(0), `lines were sent during each reshard (${duringEach.join(', ')} of ${sent.length}; ${refused} refused)`)
  t.same(sent.filter(n => !lines.includes(n)), [], 'no line sent is missing')
  t.same(lines, sent, 'each line once, in order')
})

t.test('a group\'s slot moved by hand (CLUSTER SETSLOT … NODE on every master): a member\'s process subscribes again on the new master', async t => {
  const nodes = await masters(t)
  // Slot 0, as above; no history, so that only the subscription can bring the messages.
  const group = 'g7486'
  const p = uniquePrefix('fc-setslot')
  const member = open(t, p)
  const sender = open(t, p)
  const channel = await member.newChannel()
  await member.groupAdd(group, channel)
  await sender.groupSend(group, { type: 'line', n: 0 })
  t.same(await receiveWithin(member, channel), { type: 'line', n: 0 }, 'heard before the move')

  // What an operator does to move one slot without redis-cli: importing on the target, migrating
  // on the source, the slot's keys moved, then the new owner told to every master, the source
  // first. The source then unsubscribes the slot's subscribers, and ioredis reads the slot map
  // again at once: from a master not yet told, it is the old map. Three moves, around the masters.
  for (let move = 1; move <= 3; move++) {
    const from = await ownerOfSlot0(nodes)
    const to = nodes[(nodes.indexOf(from) + 1) % nodes.length]
    await to.client.cluster('SETSLOT', 0, 'IMPORTING', from.id)
    await from.client.cluster('SETSLOT', 0, 'MIGRATING', to.id)
    const keys = await from.client.cluster('GETKEYSINSLOT', 0, 1000) as string[]
    if (keys.length > 0) await from.client.migrate(to.host, to.port, '', 0, 5000, 'KEYS', ...keys)
    await from.client.cluster('SETSLOT', 0, 'NODE', to.id)
    await sleep(300)
    for (const node of nodes.filter(node => node !== from)) await node.client.cluster('SETSLOT', 0, 'NODE', to.id)
    t.equal((await ownerOfSlot0(nodes)).id, to.id, `move ${move}: the slot moved`)

    // Messages sent after the move, until the member hears one again (bounded: 10 s).
    let heard: LayerMessage | undefined
    for (let n = 1; n <= 50 && heard === undefined; n++) {
      await sender.groupSend(group, { type: 'line', move, n })
      heard = await receiveWithin(member, channel, 200).catch(() => undefined)
    }
    t.match(heard, { type: 'line', move }, `move ${move}: the member hears the group again`)
    // What arrived late of this move's messages is not the next move's.
    while (await receiveWithin(member, channel, 300).catch(() => undefined) !== undefined);
  }
})
