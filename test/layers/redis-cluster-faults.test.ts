import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Cluster, Redis, type ClusterOptions } from 'ioredis'
import { RedisChannelLayer } from '../../lib/layers/redis.js'
import type { LayerMessage } from '../../lib/layers/types.js'
import { keysOf, stallingProxy, startRedisCluster, uniquePrefix, type RedisCluster, type StallingProxy } from '../helpers/redis.js'

// Named channels on Redis Cluster when the network fails, through real sockets: a layer reaches
// every master through a proxy of its own (ioredis' `natMap` maps the addresses the cluster
// announces to the proxies), the other layer reaches the masters directly. On Cluster a pop given
// up is not ended in Redis: what it took comes back once its claim's lease has run out (20 s with
// this timeout), so each test here takes about half a minute.

const TIMEOUT = 1000
// The lease (20 s), a reader's sweep every quarter of it, a pop's second, and room for a slow machine.
const LEASE_AND_MORE = 35_000

const unhandled: unknown[] = []
process.on('unhandledRejection', reason => { unhandled.push(reason) })

let cluster: RedisCluster | undefined
t.before(async () => {
  // No redis-server, or no cluster made of it: this throws, and the file fails (never skips).
  cluster = await startRedisCluster(t)
})

function receiveWithin (layer: RedisChannelLayer, channel: string, ms = 3000): Promise<LayerMessage> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(`nothing on ${channel} within ${ms} ms`)), ms)
  return layer.receive(channel, { signal: controller.signal }).finally(() => clearTimeout(timer))
}

/** A Cluster client as an app makes one; disconnected in teardown (the layer leaves it open: it is the app's). */
function clusterClient (t: Test, nodes: Array<{ host: string, port: number }>, options: ClusterOptions = {}): Cluster {
  const client = new Cluster(nodes, options)
  client.on('error', () => {})
  t.teardown(() => { client.disconnect() })
  return client
}

/** One plain client per master, for assertions. */
function masters (t: Test): Redis[] {
  return (cluster as RedisCluster).nodes.map(node => {
    const client = new Redis(node.port, node.host, { maxRetriesPerRequest: 1 })
    client.on('error', () => {})
    t.teardown(() => { client.disconnect() })
    return client
  })
}

/** The port of the master that holds `key`'s slot. */
async function ownerOf (admin: Redis, key: string): Promise<number> {
  const slot = await admin.cluster('KEYSLOT', key)
  const range = (await admin.cluster('SLOTS')).find(([from, to]) => from <= slot && slot <= to)
  const port = range?.[2]?.[1]
  if (port === undefined) throw new Error(`no master holds slot ${slot}`)
  return port
}

interface ProxiedPair {
  prefix: string
  /** Each master's proxy, by the master's port. */
  proxies: Map<number, StallingProxy>
  /** Reaches the cluster through the proxies only. */
  behind: RedisChannelLayer
  /** Reaches the cluster directly. */
  direct: RedisChannelLayer
}

/**
 * Two layers on the cluster with one prefix: `behind` through a proxy per master (its startup
 * nodes are the proxies, and natMap sends it to them whatever CLUSTER SLOTS says), `direct` not.
 */
async function behindProxies (t: Test, base: string): Promise<ProxiedPair> {
  const { nodes } = cluster as RedisCluster
  const proxies = new Map<number, StallingProxy>()
  const natMap: Record<string, { host: string, port: number }> = {}
  for (const node of nodes) {
    const proxy = await stallingProxy(t, `redis://${node.host}:${node.port}`)
    proxies.set(node.port, proxy)
    natMap[`${node.host}:${node.port}`] = { host: '127.0.0.1', port: Number(new URL(proxy.url).port) }
  }
  const prefix = uniquePrefix(base)
  const behind = new RedisChannelLayer({ client: clusterClient(t, Object.values(natMap), { natMap }), prefix, timeout: TIMEOUT })
  const direct = new RedisChannelLayer({ client: clusterClient(t, nodes), prefix, timeout: TIMEOUT })
  // Registered after the clients: tap runs teardowns last registered first, so the layers close
  // while their clients are still open.
  t.teardown(async () => { await Promise.all([behind.close(), direct.close()]) })
  // Each layer is connected, and the proxied one really goes through the proxies.
  await Promise.all([behind.connect(), direct.connect()])
  return { prefix, proxies, behind, direct }
}

/**
 * `behindProxies`, with a first message of `jobs` received through the proxies (the proxied
 * layer's reader is connected and popping through the proxy of the channel's master), and that
 * master: its port and a plain client to it.
 */
async function readingThroughProxies (t: Test, base: string): Promise<ProxiedPair & { nodes: Redis[], queue: string, ownerPort: number, owner: Redis }> {
  const nodes = masters(t)
  const pair = await behindProxies(t, base)
  const queue = `${pair.prefix}:q:{jobs}`
  const ownerPort = await ownerOf(nodes[0], queue)
  const owner = nodes[(cluster as RedisCluster).nodes.findIndex(node => node.port === ownerPort)]
  const first = receiveWithin(pair.behind, 'jobs', 5000)
  await pair.direct.send('jobs', { type: 'job', n: 0 })
  t.same(await first, { type: 'job', n: 0 }, 'a first message arrives through the proxy')
  return { ...pair, nodes, queue, ownerPort, owner }
}

/** The layer's claim keys (and claim sets) left on any master. */
async function claimKeys (nodes: Redis[], prefix: string): Promise<string[]> {
  const keys = (await Promise.all(nodes.map(node => keysOf(node, prefix)))).flat()
  return keys.filter(key => key.startsWith(`${prefix}:qc`))
}

t.test('Cluster: a named channel\'s pop whose answer is lost with its connection: the message comes back after the lease, once', async t => {
  const { nodes, prefix, proxies, behind: cutOff, direct, queue, ownerPort, owner } = await readingThroughProxies(t, 'fc-cluster-lost-pop')

  const waiting = receiveWithin(cutOff, 'jobs', 5000)
  await sleep(100) // its pop waits in Redis
  // Redis moves the message into the reader's claim; the connection fails with the answer on the way.
  const cut = (proxies.get(ownerPort) as StallingProxy).cutAnswerWith('lost-on-the-way')
  await direct.send('jobs', { type: 'lost-on-the-way' })
  await cut
  const started = performance.now()
  t.equal(await owner.llen(queue), 0, 'the message is no longer in the list')
  const claims = await claimKeys(nodes, prefix)
  const held = await Promise.all(claims.filter(key => key.startsWith(`${prefix}:qc:`)).map(key => owner.lrange(key, 0, -1)))
  t.equal(held.flat().filter(element => element.includes('lost-on-the-way')).length, 1, 'it is in a claim of the reader')

  // The channel goes on meanwhile: the reader is back on a new connection, and the receive that
  // waited gets the next message.
  await direct.send('jobs', { type: 'job', n: 1 })
  t.same(await waiting, { type: 'job', n: 1 }, 'a message sent after the cut arrives at once')
  const lost = await receiveWithin(cutOff, 'jobs', LEASE_AND_MORE)
  const took = Math.round(performance.now() - started)
  t.same(lost, { type: 'lost-on-the-way' }, `the lost message comes back once the claim's lease ran out (${took} ms after the cut)`)
  await t.rejects(receiveWithin(direct, 'jobs', 500), 'nothing comes twice, to the other layer')
  await t.rejects(receiveWithin(cutOff, 'jobs', 500), 'nor to the layer that lost it')

  await Promise.all([cutOff.close(), direct.close()])
  t.same(await claimKeys(nodes, prefix), [], 'closed layers leave no claim on any master')
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('Cluster: a process cut off for good with a message its pop took: another process gets it once the claim\'s lease runs out', async t => {
  const { nodes, prefix, proxies, behind: gone, direct: other, queue, owner } = await readingThroughProxies(t, 'fc-cluster-dead-pop')

  const waiting = receiveWithin(gone, 'jobs', 10_000).catch((err: unknown) => err)
  await sleep(100) // its pop waits in Redis
  for (const proxy of proxies.values()) proxy.stall()
  await other.send('jobs', { type: 'job', n: 1 })
  await sleep(100) // Redis has taken it for that pop; the answer is held
  t.equal(await owner.llen(queue), 0, 'the message is no longer in the list: the pop took it')
  for (const proxy of proxies.values()) proxy.cut() // and the process never reaches the cluster again, as if killed
  t.match(await waiting, { code: 'FST_CHANNELS_LAYER_TIMEOUT' }, 'its waiting receive is told the cluster is unreachable')
  const started = performance.now()
  await other.send('jobs', { type: 'job', n: 2 })
  const got = [await receiveWithin(other, 'jobs'), await receiveWithin(other, 'jobs', LEASE_AND_MORE)]
  const took = Math.round(performance.now() - started)
  t.same(got, [{ type: 'job', n: 2 }, { type: 'job', n: 1 }],
    `the message sent later first, then the one the cut-off process took (${took} ms after the cut)`)
  await t.rejects(receiveWithin(other, 'jobs', 500), 'each once')

  await Promise.all([gone.close(), other.close()])
  t.same(await claimKeys(nodes, prefix), [], 'no claim left on any master: the other process removed the one it gave back')
  t.same(unhandled, [], 'no unhandled rejection')
})
