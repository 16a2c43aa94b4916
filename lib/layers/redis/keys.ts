/**
 * Every Redis key and pub/sub channel of the layer, in one place. `P` is the prefix; `{…}` is the
 * Redis Cluster hash tag, so a group's channel and keys (or a named channel's keys) share a slot.
 *
 *   P:g:{group}      pub/sub  a group's route: its messages, and discards of remote members
 *   P:gm:{group}     zset     process-specific members → lease deadline (server ms)
 *   P:gn:{group}     zset     named-channel members → expiry deadline (server ms)
 *   P:q:{channel}    list     a named channel's queue: deadline + msgpack per element
 *   P:qc:{channel}:c list     a claim: what a pop took from the queue, until handed over (claims.ts)
 *   P:qcs:{channel}  zset     a named channel's claims → lease deadline (server ms)
 *   P:cg:{channel}   set      groups a named channel belongs to
 *   P:p:{token}      pub/sub  a process' inbox: direct messages, requests and replies
 *   P:x              pub/sub  the broadcast route (flush)
 *   P:h:{group}      hash     a group's epoch and latest offset (group-scripts.ts)
 *   P:s:{group}      stream   a group's history
 *   P:pi:{group}     hash     presence info of the group's memberships
 *   P:pr:{group}     string   the group's presence was reaped this period (group-scripts.ts)
 *
 * Names cannot contain braces (the naming rules forbid them), so the tag is always the whole name.
 *
 * ioredis' `keyPrefix` (a client's option) goes before every key, and before every pub/sub channel
 * too: on Cluster ioredis puts it there itself (a sharded channel is a key to Redis), on standalone
 * Redis `channelPrefix` does. Apps that share a Redis and are kept apart by their keyPrefix then
 * hear neither each other's groups nor each other's flush.
 */
import type { Route } from '../cluster/transport.js'

export class RedisKeys {
  readonly broadcast: string
  readonly #groupPrefix: string
  readonly #inboxPrefix: string

  constructor (readonly prefix: string, channelPrefix = '') {
    this.broadcast = `${channelPrefix}${prefix}:x`
    this.#groupPrefix = `${channelPrefix}${prefix}:g:{`
    this.#inboxPrefix = `${channelPrefix}${prefix}:p:{`
  }

  /** SCAN pattern for every key of this prefix. */
  get pattern (): string {
    return `${this.prefix}:*`
  }

  groupChannel (group: string): string { return `${this.#groupPrefix}${group}}` }
  members (group: string): string { return `${this.prefix}:gm:{${group}}` }
  namedMembers (group: string): string { return `${this.prefix}:gn:{${group}}` }
  queue (channel: string): string { return `${this.prefix}:q:{${channel}}` }
  claim (channel: string, claim: string): string { return `${this.prefix}:qc:{${channel}}:${claim}` }
  claims (channel: string): string { return `${this.prefix}:qcs:{${channel}}` }
  channelGroups (channel: string): string { return `${this.prefix}:cg:{${channel}}` }
  inbox (token: string): string { return `${this.#inboxPrefix}${token}}` }
  meta (group: string): string { return `${this.prefix}:h:{${group}}` }
  stream (group: string): string { return `${this.prefix}:s:{${group}}` }
  presence (group: string): string { return `${this.prefix}:pi:{${group}}` }
  reaped (group: string): string { return `${this.prefix}:pr:{${group}}` }

  /** The pub/sub channel of a route. */
  channelOf (route: Route): string {
    switch (route.kind) {
      case 'group': return this.groupChannel(route.group)
      case 'process': return this.inbox(route.token)
      case 'broadcast': return this.broadcast
    }
  }

  /** The route a pub/sub channel carries, or undefined for a channel that is not the layer's. */
  routeOf (channel: string): Route | undefined {
    if (channel.startsWith(this.#groupPrefix)) return { kind: 'group', group: channel.slice(this.#groupPrefix.length, -1) }
    if (channel.startsWith(this.#inboxPrefix)) return { kind: 'process', token: channel.slice(this.#inboxPrefix.length, -1) }
    return channel === this.broadcast ? { kind: 'broadcast' } : undefined
  }
}
