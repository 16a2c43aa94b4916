/**
 * The cluster protocol's transport over Redis: routes are pub/sub channels (sharded pub/sub on
 * Redis Cluster), membership records are sorted sets scored by their lease deadline, and named
 * channels are lists (named-channels.ts). Keys are listed in keys.ts.
 */
import type { ClusterContext, Route, SharedQueues, Transport } from '../cluster/transport.js'
import { RedisConnections, type Client } from './connections.js'
import { Subscriber } from './subscriber.js'
import { NamedChannels } from './named-channels.js'
import { RedisKeys } from './keys.js'
import { ServerClock, recordMembers, runScript } from './scripts.js'
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
    this.#keys = new RedisKeys(prefix)
    this.#connections = new RedisConnections({
      client: options.client,
      url: options.url,
      redisOptions: options.redisOptions,
      timeout: this.timeout,
      name: `${prefix}:${layer.processToken}`
    }, (err, which) => layer.log().debug({ err, connection: which }, 'Redis connection error'))
    this.#subscriber = new Subscriber(this.#connections, (channel, payload) => {
      const route = this.#keys.routeOf(channel)
      if (route !== undefined) layer.received(route, payload)
    })
    this.queues = new NamedChannels(this.#connections, this.#keys, layer, this.#clock)
    this.#connections.on('state', () => layer.stateChanged())
    this.#subscriber.on('state', () => layer.stateChanged())
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
    return this.#connections.run(what, client => this.#publish(client, this.#keys.channelOf(route), payload))
  }

  publishToGroup (group: string, payload: Buffer, what: string): Promise<string[]> {
    return this.#connections.run(what, async client => {
      const pipeline = client.pipeline()
      this.#queuePublish(pipeline, this.#keys.groupChannel(group), payload)
      pipeline.zrange(this.#keys.namedMembers(group), '0', '-1', 'WITHSCORES')
      const named = throwFirst(await pipeline.exec())[1] as string[]
      const now = this.#clock.now()
      const live: string[] = []
      for (let i = 0; i + 1 < named.length; i += 2) if (Number(named[i + 1]) > now) live.push(named[i])
      return live
    })
  }

  async recordMembers (group: string, members: ReadonlyArray<readonly [string, number]>, what: string): Promise<void> {
    const pairs = members.flat()
    this.#clock.observe(await this.#connections.run(what, client =>
      runScript(client, recordMembers, [this.#keys.members(group)], pairs)))
  }

  async removeMembers (group: string, channels: readonly string[], what: string, notice?: Buffer): Promise<void> {
    await this.#connections.run(what, async client => {
      if (notice === undefined) return await client.zrem(this.#keys.members(group), ...channels)
      const pipeline = client.pipeline().zrem(this.#keys.members(group), ...channels)
      this.#queuePublish(pipeline, this.#keys.groupChannel(group), notice)
      throwFirst(await pipeline.exec())
    })
  }

  async deleteAll (what: string): Promise<void> {
    await this.#connections.run(what, client => this.#connections.deleteMatching(client, this.#keys.pattern))
  }

  close (): void {
    this.queues.close()
    this.#subscriber.close()
    this.#connections.close()
  }

  #publish (client: Client, channel: string, payload: Buffer): Promise<number> {
    return (this.#connections.cluster ? client.spublish(channel, payload) : client.publish(channel, payload)) as Promise<number>
  }

  #queuePublish (pipeline: ReturnType<Client['pipeline']>, channel: string, payload: Buffer): void {
    if (this.#connections.cluster) pipeline.spublish(channel, payload)
    else pipeline.publish(channel, payload)
  }
}

/** The replies of a pipeline, or the first error in it. */
function throwFirst (results: Array<[Error | null, unknown]> | null): unknown[] {
  if (results === null) throw new RedisPipelineError()
  for (const [err] of results) if (err !== null) throw err
  return results.map(([, value]) => value)
}
