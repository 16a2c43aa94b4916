/**
 * Named channels (no `!`): a Redis list per channel, shared by every process, with `capacity` and
 * `expiry` kept by a Lua script on send. Queue elements are a fixed-width expiry deadline (Redis
 * server time, ms) in ASCII, then the message. What waits on them is read by queue-readers.ts.
 *
 * A named channel may also be a group member. It belongs to no process, so the member is recorded
 * in Redis only and the process that calls groupSend fills the queue.
 */
import type { Delivery, LayerMessage, Received } from '../types.js'
import { ttl } from '../deadline.js'
import { DIRECT } from '../local-channels.js'
import type { ClusterContext, SharedQueues } from '../cluster/transport.js'
import { addToSet, queuePush, recordMembers, runScript, runScriptBy, type ServerClock } from './scripts.js'
import type { RedisConnections } from './connections.js'
import { Claims } from './claims.js'
import { POP_SECONDS, QueueReaders } from './queue-readers.js'
import type { RedisKeys } from './keys.js'


export class NamedChannels implements SharedQueues {
  readonly #connections: RedisConnections
  readonly #keys: RedisKeys
  readonly #layer: ClusterContext
  readonly #clock: ServerClock
  readonly #readers: QueueReaders

  constructor (connections: RedisConnections, keys: RedisKeys, layer: ClusterContext, clock: ServerClock) {
    this.#connections = connections
    this.#keys = keys
    this.#layer = layer
    this.#clock = clock
    this.#readers = new QueueReaders(connections, layer, clock, new Claims(connections, keys, layer, POP_SECONDS * 1000 + connections.timeout))
  }

  /** Readers running now: for leak checks. */
  get readers (): number {
    return this.#readers.size
  }

  receive (channel: string, signal: AbortSignal | undefined): Promise<Received> {
    return this.#readers.receive(channel, this.#keys.queue(channel), signal)
  }

  /** Appends to the queue; false when it holds `capacity` messages already. */
  async push (channel: string, message: LayerMessage, what: string, info: Delivery = DIRECT): Promise<boolean> {
    const { capacity, expiryMs } = this.#layer
    const payload = this.#layer.codec.encodeDelivery(message, info)
    const reply = await this.#connections.run(what, client =>
      runScriptBy(this.#connections.scriptSender(client), queuePush, [this.#keys.queue(channel)], [capacity, ttl(expiryMs), payload])) as [number | string, number | string, number | string]
    this.#clock.observe(reply[1])
    // Number(): a client with ioredis' `stringNumbers` returns integers as strings.
    const expired = Number(reply[2])
    if (expired > 0) this.#layer.expired(expired)
    return Number(reply[0]) === 1
  }

  /** groupSend's part for the group's live named members. */
  async fill (group: string, members: readonly string[], message: LayerMessage, what: string, info: Delivery): Promise<void> {
    await Promise.all(members.map(channel => this.push(channel, message, what, info).then(accepted => {
      if (!accepted) this.#layer.skipped(group, channel)
    })))
  }

  async addMember (group: string, channel: string): Promise<void> {
    const lasts = ttl(this.#layer.groupExpiryMs)
    const reverse = this.#keys.channelGroups(channel)
    await this.#connections.run(`groupAdd ${group}`, client => Promise.all([
      runScript(client, recordMembers, [this.#keys.namedMembers(group)], [channel, lasts])
        .then(now => this.#clock.observe(now)),
      // One script: a process that dies between an SADD and its PEXPIRE would leave the set for ever.
      runScript(client, addToSet, [reverse], [group, lasts])
    ]))
  }

  async removeMember (group: string, channel: string): Promise<void> {
    await this.#connections.run(`groupDiscard ${group}`, client => Promise.all([
      client.zrem(this.#keys.namedMembers(group), channel),
      client.srem(this.#keys.channelGroups(channel), group)
    ]))
  }

  /** Empties the queue and leaves every group. */
  async discard (channel: string): Promise<void> {
    await this.#connections.run(`discardChannel ${channel}`, async client => {
      const reverse = this.#keys.channelGroups(channel)
      const groups = await client.smembers(reverse)
      await Promise.all([
        client.del(this.#keys.queue(channel)),
        client.del(reverse),
        ...groups.map(group => client.zrem(this.#keys.namedMembers(group), channel))
      ])
    })
  }

  close (): Promise<void> {
    return this.#readers.close()
  }
}
