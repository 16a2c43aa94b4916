/**
 * The channel layer for many processes sharing one Redis (or Redis Cluster).
 *
 * Groups cost one PUBLISH per groupSend, however many members and processes: each process
 * subscribes to a group's pub/sub channel while it has local members and fans messages out
 * locally. A process-specific channel (`prefix.<token>!x`) is reached through its process' inbox
 * channel; a named channel is a Redis list (redis-queue.ts). Memberships are also recorded in
 * Redis, on a lease the owning process renews, so a process that dies leaves nothing behind for
 * long. The rules (names, message shape, capacity, expiry) are BaseChannelLayer's, as for the
 * in-memory layer. Keys and channels are listed in redis-keys.ts.
 */
import { ChannelFullError, LayerClosedError, LayerTimeoutError } from '../errors.js'
import { BaseChannelLayer } from './base.js'
import { assertChannelName, assertGroupName, isProcessSpecific, processTokenOf } from './names.js'
import type { LayerMessage } from './types.js'
import { Frame, decodeFrame, encodeFrame, reviveMessage } from './redis-codec.js'
import { recordMembers, runScript } from './redis-scripts.js'
import { Connections, withDeadline, type Client } from './redis-connection.js'
import { Subscriber } from './redis-subscriber.js'
import { NamedChannels } from './redis-queue.js'
import { RedisKeys } from './redis-keys.js'
import { Requests } from './redis-requests.js'
import { checkOptions, type RedisChannelLayerOptions, type RedisLayerInspection, type RedisLayerStats } from './redis-options.js'

export type { RedisChannelLayerOptions, RedisLayerInspection, RedisLayerStats } from './redis-options.js'

const TOKEN = /^[\da-z]{12}$/
/** Default lease on a membership record: a process that dies leaves its records this long at most. */
const LEASE_MS = 60_000
const RENEW_MIN_MS = 50

const noop = (): void => {}

/**
 * Events: 'disconnect' when the connection to Redis is lost, 'reconnect' once it is back with every
 * subscription and membership restored (after a Redis restart too). Messages published while a
 * process was disconnected are lost to it: delivery is at most once.
 */
export class RedisChannelLayer extends BaseChannelLayer {
  override readonly stats: RedisLayerStats = { groupSendSkipped: 0, directSendDropped: 0 }
  readonly prefix: string
  readonly #timeout: number
  readonly #conns: Connections
  readonly #sub: Subscriber
  readonly #named: NamedChannels
  readonly #keys: RedisKeys
  /** Groups whose pub/sub channel this process wants: those with local members. */
  readonly #groups = new Set<string>()
  readonly #requests = new Requests()
  readonly #leaseMs: number
  readonly #renewer: NodeJS.Timeout
  readonly #inbox: string
  #clockOffset = 0
  #renewal: Promise<void> = Promise.resolve()
  #renewalQueued = false
  #everUp = false
  #outage = false

  constructor (options: RedisChannelLayerOptions = {}) {
    super(options)
    checkOptions(options)
    this.prefix = options.prefix ?? 'channels'
    this.#timeout = options.timeout ?? 5000
    this.#keys = new RedisKeys(this.prefix)
    this.#inbox = this.#keys.inbox(this.processToken)
    this.#leaseMs = Math.min(this.groupExpiryMs, options.membershipLease === undefined ? LEASE_MS : options.membershipLease * 1000)

    this.#conns = new Connections({
      client: options.client,
      url: options.url,
      redisOptions: options.redisOptions,
      timeout: this.#timeout,
      name: `${this.prefix}:${this.processToken}`
    }, (err, which) => this.log.debug({ err, connection: which }, 'Redis connection error'))
    this.#sub = new Subscriber(this.#conns, (channel, payload) => this.#onMessage(channel, payload))
    this.#named = new NamedChannels(this.#conns, this.#keys, {
      receiveLocal: (channel, signal) => this.receiveLocal(channel, signal),
      deliverLocal: (channel, message) => this.deliverLocal(channel, message),
      hasLocalReceivers: channel => this.hasLocalReceivers(channel),
      serverNow: () => this.#serverNow(),
      observeServerTime: now => this.#observeServerTime(now),
      skipped: (group, channel) => {
        this.stats.groupSendSkipped++
        this.log.warn({ group, channel }, 'groupSend skipped a full channel')
      },
      log: () => this.log,
      capacity: this.capacity,
      expiryMs: this.#ttl(this.expiryMs),
      groupExpiryMs: this.#ttl(this.groupExpiryMs)
    })
    this.#conns.on('state', () => this.#onState())
    this.#sub.on('state', () => this.#onState())
    this.#onState() // a `client` may be connected already

    // Held weakly, like the base class' sweeper: a layer dropped without close() can be collected.
    const every = Math.max(this.#leaseMs / 3, RENEW_MIN_MS)
    const ref = new WeakRef(this)
    const renewer: NodeJS.Timeout = setInterval(() => {
      const alive = ref.deref()
      if (alive === undefined) clearInterval(renewer)
      else alive.#scheduleRenewal(false)
    }, every).unref()
    this.#renewer = renewer
  }

  override inspect (): RedisLayerInspection {
    return { ...super.inspect(), subscriptions: this.#sub.size, readers: this.#named.readers, requests: this.#requests.size }
  }

  /** Connects now instead of at the first call; resolves once Redis answers (or rejects after `timeout`). */
  async connect (): Promise<void> {
    this.assertOpen()
    await this.#conns.run('connect', client => client.ping())
  }

  // Helpers

  /** A process-specific channel of another live layer instance: reached through its inbox. */
  #remoteToken (channel: string): string | undefined {
    const token = processTokenOf(channel)
    // Names with a `!` that newChannel() did not make belong to no process: kept where they are used.
    return token === undefined || token === this.processToken || !TOKEN.test(token) ? undefined : token
  }

  #serverNow (): number {
    return Date.now() + this.#clockOffset
  }

  #observeServerTime (now: unknown): void {
    if (typeof now === 'number' && Number.isFinite(now)) this.#clockOffset = now - Date.now()
  }

  #publish (client: Client, channel: string, payload: Buffer): Promise<number> {
    return (this.#conns.cluster ? client.spublish(channel, payload) : client.publish(channel, payload)) as Promise<number>
  }

  #bounded<T> (promise: Promise<T>, what: string): Promise<T> {
    return withDeadline(promise, performance.now() + this.#timeout, what, this.#timeout)
  }

  #ttl (ms: number): number {
    return Math.max(1, Math.ceil(ms))
  }

  // Hooks

  protected override async doNewChannel (): Promise<void> {
    await this.#bounded(this.#joinProcess(), 'newChannel')
  }

  protected override async doSend (channel: string, message: LayerMessage): Promise<void> {
    if (!isProcessSpecific(channel)) {
      if (!await this.#named.push(channel, message, `send ${channel}`)) throw new ChannelFullError(channel)
      return
    }
    const token = this.#remoteToken(channel)
    if (token === undefined) {
      if (!this.deliverLocal(channel, message)) throw new ChannelFullError(channel)
      return
    }
    // Capacity is the receiving process' to enforce: a full channel there drops it (and counts it).
    const frame = encodeFrame([Frame.direct, channel, message])
    await this.#conns.run(`send ${channel}`, client => this.#publish(client, this.#keys.inbox(token), frame))
  }

  protected override doReceive (channel: string, signal: AbortSignal | undefined): Promise<LayerMessage> {
    if (isProcessSpecific(channel)) return this.receiveLocal(channel, signal)
    return this.#named.receive(channel, signal)
  }

  protected override async doGroupAdd (group: string, channel: string): Promise<void> {
    if (!isProcessSpecific(channel)) return this.#named.addMember(group, channel)
    const token = this.#remoteToken(channel)
    if (token !== undefined) return this.#request(token, 'add', group, channel)
    return this.#addLocal(group, channel)
  }

  protected override async doGroupDiscard (group: string, channel: string): Promise<void> {
    if (!isProcessSpecific(channel)) return this.#named.removeMember(group, channel)
    const what = `groupDiscard ${group}`
    const token = this.#remoteToken(channel)
    if (token === undefined) {
      this.removeMembershipLocal(group, channel)
      this.#releaseIfEmpty(group)
      await this.#conns.run(what, client => client.zrem(this.#keys.members(group), channel))
      return
    }
    // On the group's own channel, so the owner drops the member before any later groupSend arrives.
    const frame = encodeFrame([Frame.discard, channel])
    await this.#conns.run(what, async client => {
      const pipeline = client.pipeline().zrem(this.#keys.members(group), channel)
      if (this.#conns.cluster) pipeline.spublish(this.#keys.groupChannel(group), frame)
      else pipeline.publish(this.#keys.groupChannel(group), frame)
      throwFirst(await pipeline.exec())
    })
  }

  protected override async doGroupSend (group: string, message: LayerMessage): Promise<void> {
    const frame = encodeFrame([Frame.group, message])
    const what = `groupSend ${group}`
    const named = await this.#conns.run(what, async client => {
      const pipeline = client.pipeline()
      if (this.#conns.cluster) pipeline.spublish(this.#keys.groupChannel(group), frame)
      else pipeline.publish(this.#keys.groupChannel(group), frame)
      pipeline.zrange(this.#keys.namedMembers(group), '0', '-1', 'WITHSCORES')
      return throwFirst(await pipeline.exec())[1] as string[]
    })
    // Named channels are queues in Redis, not members of any process: the sender fills them.
    if (named.length > 0) await this.#named.fill(group, named, message, what)
  }

  protected override async doDiscardChannel (channel: string): Promise<void> {
    if (!isProcessSpecific(channel)) return this.#named.discard(channel)
    const token = this.#remoteToken(channel)
    if (token !== undefined) return this.#request(token, 'discardChannel', '', channel)
    return this.#discardLocal(channel)
  }

  protected override async doFlush (): Promise<void> {
    // Redis first: a flush that cannot reach Redis rejects and leaves this process as it was.
    await this.#conns.run('flush', async client => {
      await this.#conns.deleteMatching(client, this.#keys.pattern)
      await this.#publish(client, this.#keys.broadcast, encodeFrame([Frame.flush, this.processToken]))
    })
    this.#forgetLocal()
  }

  protected override async doClose (): Promise<void> {
    clearInterval(this.#renewer)
    this.#requests.close()
    const records = this.#localRecords()
    this.closeLocal()
    // Best effort, and only when Redis is there: the records would expire with their lease anyway.
    if (records.length > 0 && this.#conns.up) {
      const removals = records.map(([group, channels]) => this.#conns.cmd.zrem(this.#keys.members(group), ...channels))
      await withDeadline(Promise.all(removals), performance.now() + Math.min(this.#timeout, 1000), 'close', this.#timeout).catch(noop)
    }
    this.#named.close()
    this.#sub.close()
    this.#conns.close()
  }

  // Process-specific channels of this process

  /** Subscribes this process' inbox and the broadcast channel (once; again after a reconnect). */
  #joinProcess (): Promise<unknown> {
    return Promise.all([this.#sub.want(this.#inbox), this.#sub.want(this.#keys.broadcast)])
  }

  async #addLocal (group: string, channel: string): Promise<void> {
    const existed = this.membersLocal(group)?.has(channel) === true
    this.addMembershipLocal(group, channel)
    this.#groups.add(group)
    const what = `groupAdd ${group}`
    try {
      await Promise.all([
        this.#bounded(Promise.all([this.#sub.want(this.#keys.groupChannel(group)), this.#sub.want(this.#keys.broadcast)]), what),
        this.#conns.run(what, client => this.#record(client, this.#keys.members(group), [channel, this.#ttl(this.#leaseMs)]))
      ])
    } catch (err) {
      if (!existed && !this.closed) {
        this.removeMembershipLocal(group, channel)
        this.#releaseIfEmpty(group)
      }
      throw err
    }
  }

  async #discardLocal (channel: string): Promise<void> {
    const groups = [...(this.groupsOfLocal(channel) ?? [])]
    this.discardChannelLocal(channel)
    if (groups.length === 0) return
    for (const group of groups) this.#releaseIfEmpty(group)
    await this.#conns.run(`discardChannel ${channel}`, client =>
      Promise.all(groups.map(group => client.zrem(this.#keys.members(group), channel))))
  }

  /** Unsubscribes from a group once its last local member is gone. */
  #releaseIfEmpty (group: string): void {
    if (this.membersLocal(group) !== undefined || !this.#groups.delete(group)) return
    this.#sub.drop(this.#keys.groupChannel(group))
  }

  #forgetLocal (): void {
    this.flushLocal()
    for (const group of this.#groups) this.#sub.drop(this.#keys.groupChannel(group))
    this.#groups.clear()
  }

  async #record (client: Client, key: string, pairs: Array<string | number>): Promise<void> {
    this.#observeServerTime(await runScript(client, recordMembers, [key], pairs))
  }

  /** Live local memberships per group, as (channel, ms left) pairs; expired ones are dropped on the way. */
  #localRecords (): Array<[string, string[]]> {
    const out: Array<[string, string[]]> = []
    for (const group of this.#groups) {
      const members = this.membersLocal(group)
      if (members !== undefined && members.size > 0) out.push([group, [...members.keys()]])
    }
    return out
  }

  // Renewal: the records of live memberships are re-written every lease/3; after a reconnect at once.

  #scheduleRenewal (urgent: boolean): Promise<void> {
    if (this.#renewalQueued && !urgent) return this.#renewal
    this.#renewalQueued = true
    this.#renewal = this.#renewal.then(() => {
      this.#renewalQueued = false
      return this.#renew()
    }).catch((err: unknown) => this.log.error({ err }, 'membership renewal failed'))
    return this.#renewal
  }

  async #renew (): Promise<void> {
    if (this.closed || !this.#conns.up) return
    const now = performance.now()
    const work: Array<[string, Array<string | number>]> = []
    for (const group of [...this.#groups]) {
      const members = this.membersLocal(group)
      const pairs: Array<string | number> = []
      for (const [channel, expiresAt] of [...(members ?? [])]) {
        if (expiresAt <= now) this.removeMembershipLocal(group, channel)
        else pairs.push(channel, this.#ttl(Math.min(this.#leaseMs, expiresAt - now)))
      }
      if (pairs.length === 0) this.#releaseIfEmpty(group)
      else work.push([group, pairs])
    }
    if (work.length === 0) return
    try {
      await this.#conns.run('renew memberships', client =>
        Promise.all(work.map(([group, pairs]) => this.#record(client, this.#keys.members(group), pairs))))
    } catch (err) {
      this.log.warn({ err }, 'could not renew group memberships in Redis; retrying')
    }
  }

  #onState (): void {
    if (this.closed) return
    const healthy = this.#conns.up && this.#sub.up
    if (healthy) {
      this.#everUp = true
      if (!this.#outage) return
      this.#outage = false
      // Subscriptions are back (Subscriber waited for them); re-assert the memberships, then tell.
      void this.#scheduleRenewal(true).then(() => {
        if (this.closed || this.#outage) return
        this.log.warn({}, 'Redis connection restored; subscriptions and memberships re-asserted')
        this.#emitSafely('reconnect')
      })
    } else if (this.#everUp && !this.#outage) {
      this.#outage = true
      this.log.warn({}, 'Redis connection lost; calls reject after the timeout until it is back')
      this.#emitSafely('disconnect')
    }
  }

  /** A listener that throws is the app's bug, not a reason to stop restoring the layer. */
  #emitSafely (event: 'disconnect' | 'reconnect'): void {
    try {
      this.emit(event)
    } catch (err) {
      this.log.error({ err, event }, 'a channel layer event listener threw')
    }
  }

  // Incoming pub/sub

  #onMessage (channel: string, payload: Buffer): void {
    const frame = decodeFrame(payload)
    if (frame === undefined) {
      this.log.warn({ channel }, 'ignored a pub/sub message this layer did not write')
      return
    }
    try {
      if (channel === this.#inbox) this.#onInbox(frame)
      else if (channel === this.#keys.broadcast) this.#onBroadcast(frame)
      else {
        const group = this.#keys.groupOf(channel)
        if (group !== undefined) this.#onGroup(group, frame)
      }
    } catch (err) {
      this.log.warn({ err, channel }, 'ignored a malformed pub/sub message')
    }
  }

  #onGroup (group: string, frame: unknown[]): void {
    if (frame[0] === Frame.group) {
      this.groupSendLocal(group, reviveMessage(frame[1]))
    } else if (frame[0] === Frame.discard) {
      const channel = frame[1]
      if (typeof channel !== 'string' || processTokenOf(channel) !== this.processToken) return
      this.removeMembershipLocal(group, channel)
      this.#releaseIfEmpty(group)
    }
  }

  #onInbox (frame: unknown[]): void {
    switch (frame[0]) {
      case Frame.direct: {
        const channel = frame[1]
        if (typeof channel !== 'string') return
        if (this.deliverLocal(channel, reviveMessage(frame[2]))) return
        this.stats.directSendDropped++
        this.log.warn({ channel }, 'a message from another process found its channel full; dropped')
        return
      }
      case Frame.request:
        void this.#answer(frame)
        return
      case Frame.reply: {
        const [, id, error] = frame
        if (typeof id === 'number') this.#requests.settle(id, typeof error === 'string' ? error : 'malformed reply')
      }
    }
  }

  #onBroadcast (frame: unknown[]): void {
    if (frame[0] === Frame.flush && frame[1] !== this.processToken) this.#forgetLocal()
  }

  // Requests to the process that owns a channel: changes only it can make.

  async #request (token: string, op: 'add' | 'discardChannel', group: string, channel: string): Promise<void> {
    const what = op === 'add' ? `groupAdd ${group}` : `discardChannel ${channel}`
    await this.#bounded(this.#joinProcess(), what) // the reply comes to our inbox
    const { id, reply } = this.#requests.open()
    try {
      const frame = encodeFrame([Frame.request, id, this.processToken, op, group, channel])
      const receivers = await this.#conns.run(what, client => this.#publish(client, this.#keys.inbox(token), frame))
      // Nobody listens there: that process is gone, and so is the channel.
      if (receivers === 0) return
      const error = await this.#bounded(reply, what)
      if (error === Requests.closed) throw new LayerClosedError()
      if (error !== '') throw new LayerTimeoutError(`${what} (in the channel's process: ${error})`, this.#timeout)
    } finally {
      this.#requests.forget(id)
    }
  }

  async #answer (frame: unknown[]): Promise<void> {
    const [, id, replyTo, op, group, channel] = frame
    if (this.closed || typeof id !== 'number' || typeof replyTo !== 'string' || !TOKEN.test(replyTo)) return
    let error = ''
    try {
      assertChannelName(channel)
      if (processTokenOf(channel) !== this.processToken) throw new Error('not a channel of this process')
      if (op === 'add') {
        assertGroupName(group)
        await this.#addLocal(group, channel)
      } else if (op === 'discardChannel') {
        await this.#discardLocal(channel)
      } else {
        throw new Error(`unknown request ${String(op)}`)
      }
    } catch (err) {
      error = err instanceof Error ? err.message : String(err)
    }
    if (this.closed) return
    const reply = encodeFrame([Frame.reply, id, error])
    await this.#conns.run('reply', client => this.#publish(client, this.#keys.inbox(replyTo), reply))
      .catch((err: unknown) => this.log.warn({ err }, 'could not answer another process'))
  }
}

function throwFirst (results: Array<[Error | null, unknown]> | null): unknown[] {
  if (results === null) throw new Error('pipeline discarded')
  for (const [err] of results) if (err !== null) throw err
  return results.map(([, value]) => value)
}
