/**
 * The cluster protocol's transport over Redis: routes are pub/sub channels (sharded pub/sub on
 * Redis Cluster), membership records are sorted sets scored by their lease deadline, and named
 * channels are lists (named-channels.ts). Keys are listed in keys.ts.
 *
 * An integer in a reply is read with Number(): on a user's client with ioredis' `stringNumbers`
 * it comes as a string, and "0" === 0 would be false.
 */
import type {
  ClusterContext, HistoryKeeping, HistoryRead, JoinRecord, JoinResult, Route, SharedQueues, StoredPayload, StoredPresence, Transport
} from '../cluster/transport.js'
import type { StreamPosition } from '../types.js'
import { newEpoch } from '../history.js'
import { RedisConnections, type Client } from './connections.js'
import { Subscriber } from './subscriber.js'
import { NamedChannels } from './named-channels.js'
import { RedisKeys } from './keys.js'
import { ServerClock, lostScript, queueScript, runScript, runScriptBy } from './scripts.js'
import { joinGroup, publishWithHistory, reapPresence, readHistory, readPresence, removeMembers, renewEpoch, renewMembers } from './group-scripts.js'
import type { RedisChannelLayerOptions } from './options.js'
import { RedisPipelineError } from '../../errors.js'

export class RedisTransport implements Transport {
  readonly timeout: number
  readonly queues: SharedQueues
  readonly #connections: RedisConnections
  readonly #subscriber: Subscriber
  readonly #keys: RedisKeys
  readonly #clock = new ServerClock()

  constructor (options: RedisChannelLayerOptions, layer: ClusterContext) {
    const prefix = options.prefix ?? 'channels'
    this.timeout = options.timeout ?? 5000
    this.#connections = new RedisConnections({
      client: options.client,
      url: options.url,
      redisOptions: options.redisOptions,
      timeout: this.timeout,
      name: `${prefix}:${layer.processToken}`
    }, (err, which) => layer.log().debug({ err, connection: which }, 'Redis connection error'))
    // ioredis puts its keyPrefix before a sharded channel itself (Cluster), not before a plain one.
    this.#keys = new RedisKeys(prefix, this.#connections.cluster ? '' : this.#connections.keyPrefix)
    this.#subscriber = new Subscriber(this.#connections, (channel, payload) => {
      const route = this.#keys.routeOf(channel)
      if (route !== undefined) layer.received(route, payload)
    })
    this.queues = new NamedChannels(this.#connections, this.#keys, layer, this.#clock)
    this.#connections.on('state', () => layer.stateChanged())
    this.#subscriber.on('state', () => layer.stateChanged())
    this.#connections.on('partLost', () => layer.partLost())
  }

  get up (): boolean {
    return this.#connections.up && this.#subscriber.up
  }

  get subscriptions (): number {
    return this.#subscriber.size
  }

  /** Resolves once Redis answers (or rejects after `timeout`). */
  async ping (): Promise<void> {
    await this.#connections.run('connect', client => client.ping())
  }

  subscribe (route: Route): Promise<void> {
    return this.#subscriber.want(this.#keys.channelOf(route))
  }

  unsubscribe (route: Route): void {
    this.#subscriber.drop(this.#keys.channelOf(route))
  }

  publish (route: Route, payload: Buffer, what: string): Promise<number> {
    return this.#connections.run(what, async client => Number(await this.#publish(client, this.#keys.channelOf(route), payload)))
  }

  publishToGroup (group: string, payload: Buffer, what: string, history?: HistoryKeeping): Promise<{ named: string[], position?: StreamPosition }> {
    const keys = this.#keys
    if (history !== undefined) {
      return this.#connections.run(what, async client => {
        const [offset, epoch, named] = await runScriptBy(this.#connections.scriptSender(client, true), publishWithHistory,
          [keys.meta(group), keys.stream(group), keys.namedMembers(group)],
          [payload, history.size, history.ttlMs, history.idleMs, newEpoch(), ...this.#scriptChannel(group)]) as [number | string, Buffer, Buffer[]]
        return { named: named.map(String), position: { offset: Number(offset), epoch: epoch.toString() } }
      })
    }
    // Two commands written at once (sendNow), in one round trip and one socket write: not in a
    // Pipeline object, which cost the sender a third more CPU per send (bench/group-send.js).
    return this.#connections.run(what, async client => {
      const [, members, time] = await Promise.all(this.#connections.inOneWrite(client, () => [
        this.#publish(client, keys.groupChannel(group), payload),
        this.#connections.sendNow(client, 'zrange', [keys.namedMembers(group), '0', '-1', 'WITHSCORES']) as Promise<string[]>,
        // The named members' deadlines are server time: until a reply has said what it is, ask.
        this.#clock.known ? undefined : this.#connections.sendNow(client, 'time', []) as Promise<string[]>
      ] as const))
      if (time !== undefined) this.#clock.observeTime(time)
      const now = this.#clock.now()
      const named: string[] = []
      for (let i = 0; i + 1 < members.length; i += 2) if (Number(members[i + 1]) > now) named.push(members[i])
      return { named }
    })
  }

  async recordMembers (group: string, members: ReadonlyArray<readonly [string, number]>, what: string,
    presence: readonly StoredPresence[] = []): Promise<StoredPresence[]> {
    const args = [members.length * 2, ...members.flat(), ...presence.flat()]
    const [now, restored] = await this.#connections.run(what, client =>
      runScript(client, renewMembers, [this.#keys.members(group), this.#keys.presence(group)], args)) as [number | string, Array<string | Buffer>]
    this.#clock.observe(now)
    if (restored.length === 0) return []
    const written = new Set(restored.map(String))
    return presence.filter(([channel]) => written.has(channel))
  }

  async join (group: string, record: JoinRecord, what: string): Promise<JoinResult> {
    const keys = this.#keys
    const { history } = record
    const reply = await this.#connections.run(what, client => runScript(client, joinGroup,
      [keys.members(group), keys.presence(group), keys.meta(group), keys.stream(group)],
      [record.channel, record.leaseMs, record.presence ?? '', history?.ttlMs ?? 0, history?.idleMs ?? 0, newEpoch(),
        history?.since?.epoch ?? '', history?.since?.offset ?? -1], true)) as [number | string, Buffer | null, Buffer | null, number | string, Buffer[]]
    const [now, before, epoch, top, missed] = reply
    this.#clock.observe(now)
    return {
      previousPresence: before,
      position: epoch === null ? null : { offset: Number(top), epoch: epoch.toString() },
      missed: storedPayloads(missed)
    }
  }

  async removeMembers (group: string, channels: readonly string[], what: string, notice?: Buffer): Promise<StoredPresence[]> {
    const keys = [this.#keys.members(group), this.#keys.presence(group)]
    const removed = await this.#connections.run(what, async client => {
      if (notice === undefined) return await runScript(client, removeMembers, keys, channels, true)
      const pipeline = queueScript(client.pipeline(), removeMembers, keys, channels)
      this.#queuePublish(pipeline, this.#keys.groupChannel(group), notice)
      const results = await pipeline.exec()
      // Redis lost its script cache: run it again on its own (the notice went out already).
      if (lostScript(results?.[0])) return await runScript(client, removeMembers, keys, channels, true)
      return throwFirst(results)[0]
    }) as Buffer[]
    return storedPresence(removed)
  }

  async readHistory (group: string, history: HistoryKeeping, since: StreamPosition | undefined, limit: number, what: string, followRenewal = false): Promise<HistoryRead> {
    const [epoch, top, entries, at, followed] = await this.#connections.run(what, client => runScript(client, readHistory,
      [this.#keys.meta(group), this.#keys.stream(group)],
      [history.ttlMs, history.idleMs, newEpoch(), since?.epoch ?? '', since?.offset ?? 0, limit, followRenewal ? '1' : ''], true)) as [Buffer, number | string, Buffer[], number | string | null | undefined, number | null | undefined]
    const stored = storedPayloads(entries)
    // Without `since` the latest come newest first.
    if (since === undefined) stored.reverse()
    const read: HistoryRead = { position: { offset: Number(top), epoch: epoch.toString() }, stored }
    if (at !== null && at !== undefined) read.stampAtSince = Number(at)
    if (followed === 1) read.followedRenewal = true
    return read
  }

  async renewEpoch (group: string, seen: string, what: string): Promise<void> {
    await this.#connections.run(what, client => runScript(client, renewEpoch, [this.#keys.meta(group)], [seen, newEpoch()]))
  }

  async presence (group: string, what: string): Promise<StoredPresence[]> {
    return storedPresence(await this.#connections.run(what, client =>
      runScript(client, readPresence, [this.#keys.members(group), this.#keys.presence(group)], [], true)) as Buffer[])
  }

  async reapPresence (group: string, periodMs: number, what: string): Promise<StoredPresence[]> {
    // Set for a little less than the period: the next period's first caller, whichever process
    // it is (their timers are not in step), finds it gone.
    const skipMs = Math.max(1, Math.floor(periodMs * 0.9))
    return storedPresence(await this.#connections.run(what, client =>
      runScript(client, reapPresence, [this.#keys.members(group), this.#keys.presence(group), this.#keys.reaped(group)], [skipMs], true)) as Buffer[])
  }

  async deleteAll (what: string): Promise<void> {
    await this.#connections.run(what, client => this.#connections.deleteMatching(client, this.#keys.pattern))
  }

  async close (): Promise<void> {
    await this.queues.close()
    this.#subscriber.close()
    await this.#connections.close()
  }

  /**
   * The sharded flag and the group's pub/sub channel for the history script, which publishes:
   * named as Redis knows it, since ioredis' keyPrefix reaches a script's KEYS but no ARGV.
   * SSUBSCRIBE gets the prefix from ioredis (its channel is a key to Redis); a plain channel's
   * name has it already (keys.ts).
   */
  #scriptChannel (group: string): [string, string] {
    const channel = this.#keys.groupChannel(group)
    return this.#connections.cluster ? ['1', this.#connections.keyPrefix + channel] : ['0', channel]
  }

  /** Resolves with how many subscribers received it: a number, or its digits (`stringNumbers`). */
  #publish (client: Client, channel: string, payload: Buffer): Promise<unknown> {
    return this.#connections.sendNow(client, this.#connections.cluster ? 'spublish' : 'publish', [channel, payload])
  }

  #queuePublish (pipeline: ReturnType<Client['pipeline']>, channel: string, payload: Buffer): void {
    if (this.#connections.cluster) pipeline.spublish(channel, payload)
    else pipeline.publish(channel, payload)
  }
}

function storedPayloads (flat: Buffer[] | unknown[]): StoredPayload[] {
  const out: StoredPayload[] = []
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([Number(flat[i]), flat[i + 1] as Buffer])
  return out
}

function storedPresence (flat: Buffer[]): StoredPresence[] {
  const out: StoredPresence[] = []
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i].toString(), flat[i + 1]])
  return out
}

/** The replies of a pipeline, or the first error in it. */
function throwFirst (results: Array<[Error | null, unknown]> | null): unknown[] {
  if (results === null) throw new RedisPipelineError()
  for (const [err] of results) if (err !== null) throw err
  return results.map(([, value]) => value)
}
