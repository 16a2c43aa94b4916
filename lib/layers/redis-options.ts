/** The Redis layer's options, checked once in its constructor, and its diagnostics types. */
import type { Cluster, Redis, RedisOptions } from 'ioredis'
import { InvalidOptionError } from '../errors.js'
import type { BaseChannelLayerOptions, LayerInspection, LayerStats } from './base.js'

export interface RedisChannelLayerOptions extends BaseChannelLayerOptions {
  /** `redis://[user:password@]host:port/db` (or `rediss://`). Default: ioredis' default, 127.0.0.1:6379. */
  url?: string
  /** ioredis options for the connection the layer opens (with `url`, or alone). */
  redisOptions?: RedisOptions
  /**
   * An ioredis `Redis` or `Cluster` the layer uses for commands; it duplicates it for subscribing
   * and blocking pops. `close()` leaves this client open: it is yours.
   */
  client?: Redis | Cluster
  /** Every key and pub/sub channel starts with `<prefix>:`. Letters, digits, `_`, `-`, `.`. Default 'channels'. */
  prefix?: string
  /** Milliseconds a call may wait for an unreachable Redis before it rejects with LayerTimeoutError. Default 5000. */
  timeout?: number
  /**
   * Seconds a membership record in Redis outlives its process at most (default 60, never more than
   * `groupExpiry`): the owning process renews it every third of that while the membership lasts.
   */
  membershipLease?: number
}

export interface RedisLayerStats extends LayerStats {
  /** Messages sent from another process to a channel of this one that was full: dropped here. */
  directSendDropped: number
}

/** Counts of the process-local state, for diagnostics and leak tests; not a stable format. */
export interface RedisLayerInspection extends LayerInspection {
  /** Pub/sub channels this process is subscribed to (groups with local members, inbox, broadcast). */
  subscriptions: number
  /** Named channels this process is popping from for waiting receivers. */
  readers: number
  /** Requests to other processes waiting for their reply. */
  requests: number
}

// No ':' (a SCAN for one prefix must not match another's keys) and no glob or hash-tag characters.
const PREFIX = /^[A-Za-z\d_.-]{1,64}$/

export function checkOptions (options: RedisChannelLayerOptions): void {
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
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0)) {
    throw new InvalidOptionError(`RedisChannelLayer option "timeout" must be a positive number of milliseconds, got ${String(timeout)}`)
  }
  const { membershipLease: lease } = options
  if (lease !== undefined && (typeof lease !== 'number' || !Number.isFinite(lease) || lease <= 0)) {
    throw new InvalidOptionError(`RedisChannelLayer option "membershipLease" must be a positive number of seconds, got ${String(lease)}`)
  }
}
