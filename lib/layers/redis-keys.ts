/**
 * Every Redis key and pub/sub channel of the layer, in one place. `P` is the prefix; `{…}` is the
 * Redis Cluster hash tag, so a group's channel and keys (or a named channel's keys) share a slot.
 *
 *   P:g:{group}      pub/sub  group messages, and discards of remote members (ordered with them)
 *   P:gm:{group}     zset     process-specific members → lease deadline (server ms)
 *   P:gn:{group}     zset     named-channel members → expiry deadline (server ms)
 *   P:q:{channel}    list     a named channel's queue: deadline + msgpack per element
 *   P:cg:{channel}   set      groups a named channel belongs to
 *   P:p:{token}      pub/sub  a process' inbox: direct messages, requests and replies
 *   P:x              pub/sub  broadcast to every process (flush)
 *
 * Names cannot contain braces (the naming rules forbid them), so the tag is always the whole name.
 */
export class RedisKeys {
  readonly broadcast: string
  readonly #groupChannelPrefix: string

  constructor (readonly prefix: string) {
    this.broadcast = `${prefix}:x`
    this.#groupChannelPrefix = `${prefix}:g:{`
  }

  /** SCAN pattern for every key of this prefix. */
  get pattern (): string {
    return `${this.prefix}:*`
  }

  groupChannel (group: string): string { return `${this.#groupChannelPrefix}${group}}` }
  members (group: string): string { return `${this.prefix}:gm:{${group}}` }
  namedMembers (group: string): string { return `${this.prefix}:gn:{${group}}` }
  queue (channel: string): string { return `${this.prefix}:q:{${channel}}` }
  channelGroups (channel: string): string { return `${this.prefix}:cg:{${channel}}` }
  inbox (token: string): string { return `${this.prefix}:p:{${token}}` }

  /** The group a group pub/sub channel carries, or undefined for another channel. */
  groupOf (channel: string): string | undefined {
    return channel.startsWith(this.#groupChannelPrefix) ? channel.slice(this.#groupChannelPrefix.length, -1) : undefined
  }
}
