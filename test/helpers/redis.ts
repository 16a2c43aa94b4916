/**
 * Redis for the Redis layer's tests: the shared server at REDIS_URL, and private `redis-server`
 * processes (a killable one, a 3-master cluster) on free high ports, always stopped in teardown;
 * a proxy that holds Redis' answers back.
 */
import type { Test } from 'tap'
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { createServer, connect, type AddressInfo, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import { freePort } from './process.js'

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/** A prefix no other test file or run uses: tap runs files in parallel against one Redis. */
export function uniquePrefix (base: string): string {
  return `${base}-${process.pid.toString(36)}-${randomBytes(3).toString('hex')}`
}

/** A plain client for assertions; closed when the test ends. */
export function adminClient (t: Test, url = REDIS_URL): Redis {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  client.on('error', () => {})
  t.teardown(() => { client.disconnect() })
  return client
}

/**
 * Puts `group`'s data back to what a Redis that lost its writes after offset `kept` holds (a
 * restart from an older snapshot, a replica that was behind taking over): the same epoch, the
 * offset back at `kept`, the stream without the messages after it.
 */
export async function loseWritesAfter (t: Test, prefix: string, group: string, kept: number): Promise<void> {
  const admin = adminClient(t)
  const stream = `${prefix}:s:{${group}}`
  const entries = await admin.xrangeBuffer(stream, '1-0', `${kept}-0`)
  const restore = admin.multi().hset(`${prefix}:h:{${group}}`, 't', kept).del(stream)
  entries.forEach(([, fields], i) => { restore.xadd(stream, `${i + 1}-0`, ...fields) })
  await restore.exec()
}

/**
 * Whether Redis answers at REDIS_URL. When it does not, the test fails with a message saying so
 * (with CI=true or not: a Redis layer test that silently skips proves nothing).
 */
export async function requireRedis (t: Test): Promise<boolean> {
  const client = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    return true
  } catch (err) {
    t.fail(`Redis is not reachable at ${REDIS_URL} (${(err as Error).message}): start redis-server or set REDIS_URL` +
      (process.env.CI === 'true' ? ' — CI=true requires Redis' : ''))
    return false
  } finally {
    client.disconnect()
  }
}

/** A prefix of its own (`uniquePrefix`) for one test on the shared Redis, whose keys are deleted when it ends. */
export function cleanedPrefix (t: Test, base: string): string {
  const prefix = uniquePrefix(base)
  const redis = adminClient(t)
  t.teardown(async () => { await deleteKeysOf(redis, prefix) })
  return prefix
}

/** Deletes every key of one prefix: what a test leaves on the shared Redis. */
export async function deleteKeysOf (client: Redis, prefix: string): Promise<void> {
  const keys = await keysOf(client, prefix)
  if (keys.length > 0) await client.unlink(...keys)
}

/** Keys of one prefix (SCAN, never KEYS *). */
export async function keysOf (client: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, found] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000)
    cursor = next
    keys.push(...found)
  } while (cursor !== '0')
  return keys
}

/** Calls per command since the last CONFIG RESETSTAT, from INFO commandstats. */
export async function commandStats (client: Redis): Promise<Record<string, number>> {
  const info = await client.info('commandstats')
  const stats: Record<string, number> = {}
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) stats[match[1]] = Number(match[2])
  return stats
}

function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

async function waitFor (check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  let last: unknown
  while (!(await check().catch((err: unknown) => { last = err; return false }))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms${last instanceof Error ? ` (${last.message})` : ''}`)
    await sleep(50)
  }
}

async function pings (port: number): Promise<boolean> {
  const client = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 500 })
  client.on('error', () => {})
  try {
    await client.connect()
    return await client.ping() === 'PONG'
  } finally {
    client.disconnect()
  }
}

export interface RedisServer {
  port: number
  url: string
  /** kill -9: the data is gone, as after a crash. */
  kill (): Promise<void>
  /** Starts it again on the same port (empty). */
  start (): Promise<void>
}

function spawnServer (port: number, dir: string, extra: string[] = []): ChildProcess {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', 'no', '--daemonize', 'no', ...extra], { stdio: 'ignore' })
  child.on('error', err => { spawnError = err })
  return child
}

let spawnError: Error | undefined

async function serving (port: number): Promise<boolean> {
  if (spawnError !== undefined) throw new Error(`cannot run redis-server (${spawnError.message}): install Redis (the CI script does)`)
  return await pings(port)
}

function killChild (child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise(resolve => {
    child.once('exit', () => resolve())
    child.kill('SIGKILL')
  })
}

/** A private redis-server on a free high port, killed in teardown. */
export async function startRedisServer (t: Test): Promise<RedisServer> {
  const port = await freePort()
  const dir = mkdtempSync(path.join(tmpdir(), 'fc-redis-'))
  let child: ChildProcess | undefined
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async kill () {
      await killChild(child)
      child = undefined
    },
    async start () {
      child = spawnServer(port, dir)
      await waitFor(() => serving(port), 10_000, `redis-server on ${port}`)
    }
  }
  t.teardown(async () => {
    await killChild(child)
    rmSync(dir, { recursive: true, force: true })
  })
  await server.start()
  return server
}

export interface RedisCluster {
  nodes: Array<{ host: string, port: number }>
  /** kill -9 of one master: its data is gone, as after a crash. */
  kill (port: number): Promise<void>
  /** Starts that master again on its port, empty, with its cluster config (its slots). */
  start (port: number): Promise<void>
}

/** Three masters, made with `redis-cli --cluster create`, as an operator would; killed in teardown. */
export async function startRedisCluster (t: Test): Promise<RedisCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fc-cluster-'))
  const children = new Map<number, ChildProcess>()
  t.teardown(async () => {
    await Promise.all([...children.values()].map(killChild))
    rmSync(dir, { recursive: true, force: true })
  })
  const spawnNode = (port: number): void => {
    children.set(port, spawnServer(port, dir, ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`]))
  }
  const ports: number[] = []
  while (ports.length < 3) {
    const port = await freePort()
    // The cluster bus listens on port + 10000: both must be free and below 65536.
    if (port + 10000 < 65536 && !ports.includes(port) && await portFree(port + 10000)) ports.push(port)
  }
  for (const port of ports) spawnNode(port)
  for (const port of ports) await waitFor(() => serving(port), 10_000, `cluster node ${port}`)
  await new Promise<void>((resolve, reject) => {
    execFile('redis-cli', ['--cluster', 'create', ...ports.map(p => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
      { timeout: 30_000 }, (err, stdout, stderr) => err === null ? resolve() : reject(new Error(`redis-cli --cluster create failed: ${stderr || stdout}`)))
  })
  for (const port of ports) await clusterOk(port)
  return {
    nodes: ports.map(port => ({ host: '127.0.0.1', port })),
    async kill (port) {
      await killChild(children.get(port))
      children.delete(port)
    },
    async start (port) {
      spawnNode(port)
      await waitFor(() => serving(port), 10_000, `cluster node ${port}`)
      for (const each of ports) await clusterOk(each)
    }
  }
}

async function clusterOk (port: number): Promise<void> {
  await waitFor(async () => {
    const client = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    client.on('error', () => {})
    try {
      await client.connect()
      return /cluster_state:ok/.test(await client.cluster('INFO') as string)
    } finally {
      client.disconnect()
    }
  }, 20_000, `cluster_state:ok on ${port}`)
}

async function portFree (port: number): Promise<boolean> {
  return new Promise(resolve => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

export interface StallingProxy {
  /** `redis://` URL of the proxy. */
  url: string
  /**
   * Holds everything Redis sends back, as a Redis too slow to answer would: on every connection,
   * only on those that subscribed (a layer's pub/sub: its messages come late), or only on the
   * others (answers to commands come late, pub/sub messages on time).
   */
  stall (only?: 'subscribers' | 'commands'): void
  /**
   * Cuts the connections that subscribed and refuses every new one, as a network partition would
   * to a process' pub/sub (its connections for commands stay).
   */
  cutSubscribers (): void
  /**
   * Drops what Redis sends next to a subscribed connection (one pub/sub message, when messages
   * are sent one at a time), as a subscription lost and made again would; resolves once dropped.
   */
  dropNextToSubscribers (): Promise<void>
  /**
   * Cuts the connection whose answer from Redis next contains `text` (after `skip` such answers),
   * before that answer reaches it, as a network would that fails with an answer on the way;
   * resolves once cut.
   */
  cutAnswerWith (text: string, skip?: number): Promise<void>
  /**
   * Holds, for `ms`, the answer from Redis that next contains `text` and what follows it on that
   * connection, as a Redis too slow for one call would.
   */
  holdAnswerWith (text: string, ms: number): void
  /**
   * Holds, for `ms`, what a connection next sends Redis that contains `text` and what it sends
   * after it, as a slow link to Redis for that connection would.
   */
  holdRequestWith (text: string, ms: number): void
  /** Cuts every connection and refuses new ones, as to a process that died (until `resume`). */
  cut (): void
  /** Sends what was held, in order, and forwards again (and accepts connections again). */
  resume (): void
}

/** What one side of the proxy's connections sends, held for a while from the chunk that contains a text on. */
function holder () {
  let next: { text: string, ms: number } | undefined
  const heldUntil = new Map<Socket, Buffer[]>()
  return {
    arm (text: string, ms: number): void {
      next = { text, ms }
    },
    /** Whether `chunk`, from the connection `from`, is held: then it is written to `to` later, in order. */
    holds (from: Socket, chunk: Buffer, to: Socket): boolean {
      const late = heldUntil.get(from)
      if (late !== undefined) {
        late.push(chunk)
        return true
      }
      if (next === undefined || !chunk.includes(next.text)) return false
      const chunks = [chunk]
      heldUntil.set(from, chunks)
      setTimeout(() => {
        heldUntil.delete(from)
        if (!to.destroyed) for (const held of chunks) to.write(held)
      }, next.ms)
      next = undefined
      return true
    }
  }
}

/** A TCP proxy to `url`'s Redis that can hold Redis' answers back; closed in teardown. */
export async function stallingProxy (t: Test, url = REDIS_URL): Promise<StallingProxy> {
  const target = new URL(url)
  let stalled = false
  let refusing = false
  let dropped: (() => void) | undefined
  let cutting: { text: string, skip: number, done: () => void } | undefined
  const answers = holder()
  const requests = holder()
  let only: 'subscribers' | 'commands' | undefined
  const subscribers = new WeakSet<Socket>()
  const held: Array<[Socket, Buffer]> = []
  const sockets = new Set<Socket>()
  const server = createServer(client => {
    if (refusing) {
      client.destroy()
      return
    }
    const upstream = connect(Number(target.port || 6379), target.hostname)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => { sockets.delete(socket); client.destroy(); upstream.destroy() })
    }
    client.on('data', (chunk: Buffer) => {
      if (/subscribe/i.test(chunk.toString('latin1'))) subscribers.add(client)
      if (!requests.holds(client, chunk, upstream)) upstream.write(chunk)
    })
    upstream.on('data', chunk => {
      if (answers.holds(client, chunk, client)) return
      const holds = stalled && (only === undefined || (only === 'subscribers') === subscribers.has(client))
      if (cutting !== undefined && chunk.includes(cutting.text) && cutting.skip-- === 0) {
        client.destroy()
        cutting.done()
        cutting = undefined
      } else if (dropped !== undefined && subscribers.has(client)) {
        dropped()
        dropped = undefined
      } else if (holds) held.push([client, chunk])
      else client.write(chunk)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  const { port } = server.address() as AddressInfo
  return {
    url: `redis://127.0.0.1:${port}`,
    stall (which) {
      stalled = true
      only = which
    },
    dropNextToSubscribers () {
      return new Promise(resolve => { dropped = resolve })
    },
    cutAnswerWith (text, skip = 0) {
      return new Promise(resolve => { cutting = { text, skip, done: resolve } })
    },
    holdAnswerWith (text, ms) {
      answers.arm(text, ms)
    },
    holdRequestWith (text, ms) {
      requests.arm(text, ms)
    },
    cut () {
      refusing = true
      for (const socket of sockets) socket.destroy()
    },
    cutSubscribers () {
      refusing = true
      for (const socket of sockets) if (subscribers.has(socket)) socket.destroy()
    },
    resume () {
      stalled = false
      refusing = false
      for (const [client, chunk] of held.splice(0)) if (!client.destroyed) client.write(chunk)
    }
  }
}
