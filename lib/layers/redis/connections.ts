/**
 * The Redis layer's connections to Redis: the command connection (the user's `client` or one
 * opened from `url`/`redisOptions`), duplicates for subscribing and for blocking pops, and the one
 * rule every call obeys: while Redis is unreachable it settles within `timeout` with
 * LayerTimeoutError — never hangs, never leaves an unhandled rejection behind. An answer from
 * Redis itself, and any other error (a bug is a bug), passes through unchanged.
 */
import { EventEmitter } from 'node:events'
import { Command, Redis, ReplyError, type Cluster, type ClusterOptions, type RedisOptions } from 'ioredis'
import { LayerClosedError, LayerTimeoutError } from '../../errors.js'
import { withDeadline } from '../deadline.js'
import type { ScriptSender } from './scripts.js'

export type Client = Redis | Cluster

const noop = (): void => {}
// How long close() lets the calls already sent finish.
const CLOSE_GRACE_MS = 1000

/** Reconnect quickly, then every second: a restarted Redis is found again within about a second. */
export function retryStrategy (times: number): number {
  return Math.min(50 * 2 ** Math.min(times, 5), 1000) + Math.floor(Math.random() * 50)
}

export function isCluster (client: Client): client is Cluster {
  return (client as { isCluster?: unknown }).isCluster === true
}

/** An answer from Redis itself (WRONGTYPE, OOM…), as opposed to a connection that failed. */
export function isReplyError (err: unknown): boolean {
  return err instanceof (ReplyError as new () => Error)
}

function describe (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

// How ioredis reports a connection that is down, closing or not answering (its messages and error
// classes, and Node's system errors): Redis is unreachable, which callers see as LayerTimeoutError.
const UNREACHABLE_NAMES = new Set(['MaxRetriesPerRequestError', 'ClusterAllFailedError'])
const UNREACHABLE_MESSAGES = [
  'Connection is closed', "Stream isn't writeable", 'Cluster is disconnect', "Cluster isn't ready",
  'None of startup nodes is available', 'Node is disconnected', 'Command timed out', 'Socket timeout',
  'connect ETIMEDOUT', 'Too many Cluster redirections', 'Command aborted due to connection close'
]
const SYSTEM_ERROR = /^E[A-Z]+$/

/** Whether `err` says Redis could not be reached (as opposed to an answer from Redis, or a bug). */
export function isUnreachable (err: unknown): boolean {
  if (!(err instanceof Error)) return false
  const code = (err as { code?: unknown }).code
  return UNREACHABLE_NAMES.has(err.name) || (typeof code === 'string' && SYSTEM_ERROR.test(code)) ||
    UNREACHABLE_MESSAGES.some(start => err.message.startsWith(start))
}

/**
 * Waits until a connection is ready, without adding a listener per waiting call: many calls
 * during an outage share one 'ready' listener.
 */
class ReadyGate {
  readonly #waiters = new Set<(err?: Error) => void>()
  readonly #onReady = (): void => {
    for (const wake of this.#waiters) wake()
    this.#waiters.clear()
  }

  #closed = false

  constructor (readonly client: Client) {
    client.on('ready', this.#onReady)
  }

  /** The layer closes: what waits for the connection rejects with LayerClosedError, and so does what comes. */
  close (): void {
    this.#closed = true
    this.client.off('ready', this.#onReady)
    for (const wake of this.#waiters) wake(new LayerClosedError())
    this.#waiters.clear()
  }

  wait (deadline: number, what: string, timeout: number): Promise<void> {
    if (this.#closed) return Promise.reject(new LayerClosedError())
    const status = this.client.status
    if (status === 'ready') return Promise.resolve()
    if (status === 'end') return Promise.reject(new LayerTimeoutError(`${what} (the Redis connection was closed)`, timeout))
    if (status === 'wait') this.client.connect().catch(noop)
    let wake: (err?: Error) => void = noop
    const ready = new Promise<void>((resolve, reject) => { wake = err => { if (err === undefined) resolve(); else reject(err) } })
    this.#waiters.add(wake)
    return withDeadline(ready, deadline, what, timeout).finally(() => this.#waiters.delete(wake))
  }
}

export interface ConnectionOptions {
  client?: Client
  url?: string
  redisOptions?: RedisOptions
  timeout: number
  name: string
}

/**
 * The command connection and the factory of the layer's other connections. Emits 'state' when the
 * command connection goes up or down, and 'error' never (errors are reported through `onError`).
 */
export class RedisConnections extends EventEmitter {
  readonly cmd: Client
  readonly cluster: boolean
  readonly timeout: number
  /** ioredis' own key prefix on the user's client: applied to keys, not to SCAN patterns. */
  readonly keyPrefix: string
  #up = false
  readonly #owned: Client[] = []
  readonly #gate: ReadyGate
  // Calls sent and not yet answered, each settling quietly: close() lets them finish.
  readonly #running = new Set<Promise<void>>()
  #closing = false
  readonly #name: string
  readonly #detach: Array<() => void> = []

  constructor (options: ConnectionOptions, readonly onError: (err: unknown, which: string) => void) {
    super()
    this.timeout = options.timeout
    this.#name = options.name
    if (options.client !== undefined) {
      this.cmd = options.client
    } else {
      const defaults: RedisOptions = {
        lazyConnect: true,
        retryStrategy,
        enableAutoPipelining: true,
        autoResendUnfulfilledCommands: false,
        maxRetriesPerRequest: 1,
        connectionName: `${this.#name}:cmd`
      }
      const settings = { ...defaults, ...options.redisOptions }
      this.cmd = options.url !== undefined ? new Redis(options.url, settings) : new Redis(settings)
      this.#own(this.cmd, 'command')
    }
    this.cluster = isCluster(this.cmd)
    const clientOptions = this.cmd.options as { keyPrefix?: string, redisOptions?: { keyPrefix?: string } }
    this.keyPrefix = clientOptions.keyPrefix ?? clientOptions.redisOptions?.keyPrefix ?? ''
    this.#gate = new ReadyGate(this.cmd)
    this.#up = this.cmd.status === 'ready'
    const onReady = (): void => this.#set(true)
    const onClose = (): void => this.#set(false)
    // On Redis Cluster one master can go (and come back empty) while the client stays ready.
    const onNodeLost = (): void => { if (this.#up) this.emit('partLost') }
    this.cmd.on('ready', onReady)
    this.cmd.on('close', onClose)
    this.cmd.on('end', onClose)
    this.cmd.on('-node', onNodeLost)
    this.#detach.push(() => {
      this.cmd.off('ready', onReady)
      this.cmd.off('close', onClose)
      this.cmd.off('end', onClose)
      this.cmd.off('-node', onNodeLost)
    })
  }

  get up (): boolean {
    return this.#up
  }

  #set (up: boolean): void {
    if (up === this.#up) return
    this.#up = up
    this.emit('state', up)
  }

  /** Keeps an owned connection's errors out of 'unhandled error' territory, and closes it with the layer. */
  #own<T extends Client> (client: T, which: string): T {
    client.on('error', (err: unknown) => this.onError(err, which))
    if (isCluster(client)) client.on('node error', (err: unknown) => this.onError(err, which))
    this.#owned.push(client)
    return client
  }

  /**
   * Runs `op` once the command connection is ready, within `timeout` in all: waiting for Redis to
   * come back counts. An unreachable Redis becomes LayerTimeoutError; anything else passes through.
   */
  /** Resolves once the command connection is ready (it connects on first use), within `timeout`. */
  ready (what: string): Promise<void> {
    return this.#gate.wait(performance.now() + this.timeout, what, this.timeout)
  }

  async run<T> (what: string, op: (client: Client) => Promise<T>): Promise<T> {
    const deadline = performance.now() + this.timeout
    await this.#gate.wait(deadline, what, this.timeout)
    const running = withDeadline(op(this.cmd), deadline, what, this.timeout)
    const settled = running.then(noop, noop)
    this.#running.add(settled)
    try {
      return await running
    } catch (err) {
      if (!isUnreachable(err) || isReplyError(err)) throw err
      if (this.#closing) throw Object.assign(new LayerClosedError(), { cause: err })
      throw Object.assign(new LayerTimeoutError(`${what} (${describe(err)})`, this.timeout), { cause: err })
    } finally {
      this.#running.delete(settled)
    }
  }

  /**
   * Writes a command to Redis at once, keyPrefix applied as ioredis' own methods apply it: for the
   * calls that send a message. Autopipelining holds a command to the end of the turn (and behind a
   * batch still waiting for its replies), so a process busy past the deadline would write it and
   * then report it timed out, though Redis carries it out. Replies come as strings, or as Buffers
   * with `binary`.
   */
  sendNow (client: Client, name: string, args: Array<string | number | Buffer>, binary = false): Promise<unknown> {
    // Command makes its own flat copy of `args`: no copy here.
    const command = new Command(name, args, { keyPrefix: this.keyPrefix || undefined, replyEncoding: binary ? null : 'utf8' })
    client.sendCommand(command)
    return command.promise
  }

  /**
   * Runs `write`, whose commands (`sendNow`) then leave in one socket write, still at once: the
   * socket is corked around it. A Cluster client routes each command itself: there, one write each.
   */
  inOneWrite<T> (client: Client, write: () => T): T {
    const stream = isCluster(client) ? undefined : client.stream
    if (stream === undefined || stream === null) return write()
    stream.cork()
    try {
      return write()
    } finally {
      stream.uncork()
    }
  }

  /** Sends scripting commands through `sendNow` (for `runScriptBy`). */
  scriptSender (client: Client, binary = false): ScriptSender {
    return (name, args) => this.sendNow(client, name, args, binary)
  }

  /** A connection in subscriber mode: standalone with manual resubscription, or sharded on Cluster. */
  subscriber (): Client {
    if (isCluster(this.cmd)) {
      // Its reads of the slot map are the subscriber's (subscriber.ts), not those of the app's client.
      const options: ClusterOptions = { shardedSubscribers: true, lazyConnect: true, slotsRefreshInterval: 0 }
      return this.#own(this.cmd.duplicate(undefined, options), 'subscriber')
    }
    return this.#own(this.cmd.duplicate({
      lazyConnect: true,
      retryStrategy,
      autoResubscribe: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: null,
      enableOfflineQueue: true,
      enableAutoPipelining: false,
      connectionName: `${this.#name}:sub`
    }), 'subscriber')
  }

  /**
   * A connection for one blocking pop at a time. It never reconnects or queues by itself: a pop
   * must never be sent late, after its caller gave up, or it would take a message nobody handles.
   */
  blocking (): Client {
    if (isCluster(this.cmd)) {
      return this.#own(this.cmd.duplicate(undefined, { lazyConnect: true, enableOfflineQueue: false, clusterRetryStrategy: () => null }), 'blocking')
    }
    return this.#own(this.cmd.duplicate({
      lazyConnect: true,
      retryStrategy: null,
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      enableAutoPipelining: false,
      connectionName: `${this.#name}:pop`
    }), 'blocking')
  }

  /**
   * Deletes the keys matching `pattern` (without ioredis' keyPrefix) with SCAN on every master,
   * never FLUSHDB: other prefixes on the same Redis are left alone. Run it inside `run()`.
   */
  async deleteMatching (client: Client, pattern: string): Promise<void> {
    const keyPrefix = this.keyPrefix
    const nodes: Client[] = isCluster(client) ? client.nodes('master') : [client]
    for (const node of nodes) {
      let cursor = '0'
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${keyPrefix}${pattern}`, 'COUNT', 1000)
        cursor = next
        // ioredis adds its keyPrefix again; one key per command keeps Cluster slots apart.
        await Promise.all(keys.map(key => client.unlink(key.slice(keyPrefix.length))))
      } while (cursor !== '0')
    }
  }

  /** Disconnects and forgets one of the connections made here. */
  release (client: Client): void {
    const at = this.#owned.indexOf(client)
    if (at !== -1) this.#owned.splice(at, 1)
    client.disconnect()
  }

  /**
   * Ends every connection this object opened; the user's `client` is left as it was. Calls
   * already sent get their answers first (a second at most); those still waiting for a
   * connection reject with LayerClosedError.
   */
  async close (): Promise<void> {
    this.#closing = true
    this.#gate.close()
    if (this.#running.size > 0) await withDeadline(Promise.all(this.#running), performance.now() + CLOSE_GRACE_MS, 'close', CLOSE_GRACE_MS).catch(noop)
    for (const detach of this.#detach) detach()
    for (const client of this.#owned.splice(0)) client.disconnect()
  }
}
