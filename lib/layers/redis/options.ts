/** The Redis layer's options, checked once in its constructor. */
import type { Cluster, Redis, RedisOptions } from 'ioredis'
import { InvalidOptionError } from '../../errors.js'
import { CLUSTER_OPTIONS, type ClusterChannelLayerOptions } from '../cluster.js'
import { MAX_TIMER_MS, positiveOption, refuseUnknownOptions } from '../arguments.js'

export interface RedisChannelLayerOptions extends ClusterChannelLayerOptions {
  /** `redis://[user:password@]host:port/db` (or `rediss://`). Default: ioredis' default, 127.0.0.1:6379. */
  url?: string | undefined
  /** ioredis options for the connection the layer opens (with `url`, or alone). */
  redisOptions?: RedisOptions | undefined
  /**
   * An ioredis `Redis` or `Cluster` the layer uses for commands; it duplicates it for subscribing
   * and blocking pops. `close()` leaves this client open: it is yours.
   */
  client?: Redis | Cluster | undefined
  /** Every key and pub/sub channel starts with `<prefix>:`. Letters, digits, `_`, `-`, `.`. Default 'channels'. */
  prefix?: string | undefined
  /** Milliseconds a call may wait for an unreachable Redis before it rejects with LayerTimeoutError (at most 2^31 - 1). Default 5000. */
  timeout?: number | undefined
}

// No ':' (a SCAN for one prefix must not match another's keys) and no glob or hash-tag characters.
const PREFIX = /^[A-Za-z\d_.-]{1,64}$/

const OPTIONS: Readonly<Record<keyof RedisChannelLayerOptions, true>> = { ...CLUSTER_OPTIONS, url: true, redisOptions: true, client: true, prefix: true, timeout: true }

export function checkOptions (options: RedisChannelLayerOptions): void {
  refuseUnknownOptions('RedisChannelLayer', options, OPTIONS)
  const { url, client, redisOptions, prefix, timeout } = options
  if (url !== undefined && (typeof url !== 'string' || !/^rediss?:\/\//.test(url))) {
    throw new InvalidOptionError('RedisChannelLayer option "url" must be a redis:// or rediss:// URL')
  }
  if (redisOptions !== undefined && (typeof redisOptions !== 'object' || redisOptions === null)) {
    throw new InvalidOptionError('RedisChannelLayer option "redisOptions" must be an object of ioredis options')
  }
  if (client !== undefined) {
    const c = client as Partial<Record<'duplicate' | 'status', unknown>> | null
    if (c === null || typeof c !== 'object' || typeof c.duplicate !== 'function' || typeof c.status !== 'string') {
      throw new InvalidOptionError('RedisChannelLayer option "client" must be an ioredis Redis or Cluster')
    }
    if (url !== undefined || redisOptions !== undefined) {
      throw new InvalidOptionError('RedisChannelLayer takes either "client" or "url"/"redisOptions", not both')
    }
  }
  if (prefix !== undefined && (typeof prefix !== 'string' || !PREFIX.test(prefix))) {
    throw new InvalidOptionError('RedisChannelLayer option "prefix" must be 1 to 64 letters, digits, "_", "-" or "."')
  }
  positiveOption('timeout', timeout, 5000, false, MAX_TIMER_MS)
}
