/**
 * The plugin's options: what each means, its default, and the check `register` runs so that a bad
 * value fails with a clear InvalidOptionError instead of misbehaving later.
 */
import type { ChannelLayer } from './layers/types.js'
import type { GetUser } from './scope.js'
import { InvalidOptionError } from './errors.js'
import { MAX_TIMER_MS, refuseUnknownOptions } from './layers/arguments.js'
import { checkOriginOptions } from './origin.js'
import { checkMetricsOptions, type MetricsOptions } from './metrics.js'

export interface FastifyChannelsOptions {
  /** Default: a new `InMemoryChannelLayer()`. */
  layer?: ChannelLayer | undefined
  /** Resolves `scope.user` once per connection, after the route's hooks. */
  getUser?: GetUser | undefined
  /** Largest message a client may send, in bytes (default 1 MiB); a larger one closes with 1009. */
  maxPayload?: number | undefined
  /** Ping interval in ms (default 30000); a peer silent until the next ping is terminated. 0 disables. */
  heartbeatInterval?: number | undefined
  /** Bytes that may wait in a connection's outgoing buffer (default 4 MiB); past it, close with 1008. */
  maxBufferedBytes?: number | undefined
  /**
   * Channels' OriginValidator patterns: `'*'`, `'example.com'`, `'.example.com'` (and subdomains),
   * `'https://example.com:8443'`. Unset: the Origin must match the request's Host. Refused: HTTP 403.
   */
  allowedOrigins?: readonly string[] | undefined
  /** Refuse upgrades without an Origin header (non-browser clients) with 403. Default false. */
  rejectMissingOrigin?: boolean | undefined
  /** Groups one connection may join through its consumer (default 100); past it, close with 1008. */
  maxGroupsPerConnection?: number | undefined
  /** Prometheus metrics, registered in your prom-client `Registry` (prom-client is an optional peer). */
  metrics?: MetricsOptions | undefined
  /**
   * Per connection, at most `messages` client frames per `interval` ms (a token bucket: bursts up
   * to `messages`, refilled continuously); a client that sends faster is closed with 1008 'rate limit'.
   */
  rateLimit?: RateLimit | undefined
}

export interface RateLimit {
  messages: number
  /** Milliseconds. */
  interval: number
}

const RATE_LIMIT_OPTIONS: Readonly<Record<keyof RateLimit, true>> = { messages: true, interval: true }

export const DEFAULTS = {
  maxPayload: 1024 * 1024,
  heartbeatInterval: 30_000,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxGroupsPerConnection: 100
} as const

const LAYER_METHODS = ['newChannel', 'send', 'receive', 'groupAdd', 'groupDiscard', 'groupSend', 'flush', 'close'] as const

// Every option above (the type makes the list whole), and those Fastify's register() takes for any plugin.
const OPTIONS: Record<keyof FastifyChannelsOptions, true> = {
  layer: true,
  getUser: true,
  maxPayload: true,
  heartbeatInterval: true,
  maxBufferedBytes: true,
  allowedOrigins: true,
  rejectMissingOrigin: true,
  maxGroupsPerConnection: true,
  metrics: true,
  rateLimit: true
}
const FASTIFYS = ['prefix', 'logLevel', 'logSerializers']

export function checkOptions (opts: FastifyChannelsOptions): void {
  if (opts === null || typeof opts !== 'object') throw new InvalidOptionError('fastify-channels options must be an object')
  // A misspelt option would be ignored: a misspelt `layer`, say, would run the app on the
  // in-memory layer, where no message crosses to another process.
  refuseUnknownOptions('fastify-channels', opts, OPTIONS, FASTIFYS)
  const { layer, getUser, maxPayload, heartbeatInterval, maxBufferedBytes, maxGroupsPerConnection, metrics, rateLimit } = opts
  if (layer !== undefined) {
    const missing = LAYER_METHODS.filter(m => typeof (layer as unknown as Record<string, unknown>)?.[m] !== 'function')
    if (missing.length > 0) throw new InvalidOptionError(`option "layer" must be a ChannelLayer; missing: ${missing.join(', ')}`)
    // The plugin closes its layer with the app: a layer kept from an app closed before (a test
    // suite's rebuild) would fail every handshake.
    if ((layer as { closed?: unknown }).closed === true) {
      throw new InvalidOptionError('option "layer" is closed: app.close() closes the layer the plugin was given, so give each app (and each rebuild of one) a new layer')
    }
  }
  if (getUser !== undefined && typeof getUser !== 'function') throw new InvalidOptionError('option "getUser" must be a function')
  checkInteger('maxPayload', maxPayload, false)
  // A timer's delay: past MAX_TIMER_MS, Node would fire it after 1 ms instead.
  checkInteger('heartbeatInterval', heartbeatInterval, true, MAX_TIMER_MS)
  checkInteger('maxBufferedBytes', maxBufferedBytes, false)
  checkInteger('maxGroupsPerConnection', maxGroupsPerConnection, false)
  checkOriginOptions(opts)
  checkMetricsOptions(metrics)
  if (rateLimit !== undefined) {
    if (typeof rateLimit !== 'object' || rateLimit === null) throw new InvalidOptionError('option "rateLimit" must be { messages, interval }')
    refuseUnknownOptions('option "rateLimit"', rateLimit, RATE_LIMIT_OPTIONS)
    checkInteger('rateLimit.messages', rateLimit.messages, false)
    checkInteger('rateLimit.interval', rateLimit.interval, false)
    if (rateLimit.messages === undefined || rateLimit.interval === undefined) throw new InvalidOptionError('option "rateLimit" must be { messages, interval }')
  }
}

function checkInteger (name: string, value: unknown, allowZero: boolean, max = Infinity): void {
  if (value === undefined) return
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || (!allowZero && value === 0) || value > max) {
    throw new InvalidOptionError(`option "${name}" must be a ${allowZero ? 'non-negative' : 'positive'} integer` +
      `${max < Infinity ? ` of at most ${max}` : ''}, got ${String(value)}`)
  }
}
