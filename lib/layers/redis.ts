/**
 * The channel layer for many processes sharing one Redis (or Redis Cluster): the cluster protocol
 * (cluster.ts) over a Redis transport (redis/transport.ts). The rules (names, message shape,
 * capacity, expiry) are BaseChannelLayer's, as for the in-memory layer.
 */
import { ClusterChannelLayer, type ClusterLayerInspection, type ClusterLayerStats } from './cluster.js'
import { RedisTransport } from './redis/transport.js'
import { checkOptions, type RedisChannelLayerOptions } from './redis/options.js'

export type { RedisChannelLayerOptions } from './redis/options.js'
export type RedisLayerStats = ClusterLayerStats
export type RedisLayerInspection = ClusterLayerInspection

/**
 * Events: 'disconnect' when the connection to Redis is lost, 'reconnect' once it is back with every
 * subscription and membership restored (after a Redis restart too). Messages published while a
 * process was disconnected are lost to it: delivery is at most once.
 */
export class RedisChannelLayer extends ClusterChannelLayer<RedisTransport> {
  readonly prefix: string

  constructor (options: RedisChannelLayerOptions = {}) {
    super(options, layer => {
      checkOptions(options)
      return new RedisTransport(options, layer)
    })
    this.prefix = options.prefix ?? 'channels'
  }

  /**
   * Connects now instead of at the first call, and sets up what this process' channels need (its
   * inbox): resolves once Redis answers (or rejects after `timeout`). From then on `newChannel()`
   * needs no Redis.
   */
  async connect (): Promise<void> {
    this.assertOpen()
    await Promise.all([this.transport.ping(), this.doNewChannel()])
  }
}
