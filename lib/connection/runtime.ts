/**
 * What a connection is given and what it gives: the state every connection of one plugin
 * instance shares, what a consumer is handed when its handshake starts, and the handshake's
 * decision the HTTP request waits for.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { ChannelLayer } from '../layers/types.js'
import type { GetUser, HttpScope, Scope } from '../scope.js'
import type { Counts } from '../metrics.js'
import type { RateLimit } from '../options.js'
import type { Connection } from './connection.js'
import type { Outbound } from './outbound.js'
import type { ConnectionSet } from './connection-set.js'

/** What every connection of one plugin instance shares. */
export interface Runtime {
  layer: ChannelLayer
  getUser: GetUser
  connections: ConnectionSet<Connection>
  /** Bytes a slow reader may have queued before it is closed with 1008. */
  maxBufferedBytes: number
  /** Groups one connection's channel may join through its consumer's `channelLayer`. */
  maxGroupsPerConnection: number
  /** What connections count, per route (the plugin's metrics read it). */
  counts: Counts
  /** Client frames allowed per connection, when limited. */
  rateLimit: RateLimit | undefined
}

export interface ConsumerContext {
  scope: Scope | HttpScope
  channelName: string
  channelLayer: ChannelLayer
  log: FastifyBaseLogger
  connection: Connection
  /** Where the consumer's `send()` goes. */
  outbound: Outbound
}

export type Decision = { accepted: true } | { accepted: false, status: number, clientGone: boolean }
