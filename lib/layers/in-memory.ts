/**
 * The layer for a single process, and the reference behaviour every other layer is tested against:
 * messages are copied, channels fill up and expire exactly as they would across processes. Every
 * hook works on the process-local store; durable groups keep their history here too.
 */
import { isDeepStrictEqual } from 'node:util'
import { ChannelFullError } from '../errors.js'
import { BASE_OPTIONS, BaseChannelLayer, type BaseChannelLayerOptions } from './base.js'
import { refuseUnknownOptions, type JoinRequest } from './arguments.js'
import { MemoryHistory, type HistoryPolicy } from './history.js'
import { clonePlainObject } from './message.js'
import { isProcessSpecific } from './names.js'
import type { Policy } from './policies.js'
import type { GroupHistory, GroupJoin, LayerMessage, PresenceEntry, PresenceInfo, Received, StreamPosition } from './types.js'

export type InMemoryChannelLayerOptions = BaseChannelLayerOptions

export class InMemoryChannelLayer extends BaseChannelLayer {
  // An idle group's position is remembered as long as a membership would be; made on first use.
  #history: MemoryHistory | undefined

  constructor (options: InMemoryChannelLayerOptions = {}) {
    if (typeof options === 'object' && options !== null) refuseUnknownOptions('InMemoryChannelLayer', options, BASE_OPTIONS)
    super(options)
  }

  protected override async doNewChannel (): Promise<void> {}

  // From inside a fan-out (a handler that sends to a group, then to a channel), after the group
  // sends made before it: one sender's messages keep their order (store.turn()).
  protected override async doSend (channel: string, message: LayerMessage): Promise<void> {
    if (this.store.busy) await this.store.turn(() => { this.#send(channel, message) })
    else this.#send(channel, message)
  }

  #send (channel: string, message: LayerMessage): void {
    if (!this.store.deliver(channel, message)) throw new ChannelFullError(channel)
  }

  protected override doReceive (channel: string, signal: AbortSignal | undefined): Promise<Received> {
    return this.store.receive(channel, signal)
  }

  // In one step of the store (store.turn()), so no message sent meanwhile can come between the
  // replay and the join, and a join asked for from inside a fan-out waits until it is over.
  protected override async doGroupAdd (group: string, channel: string, join: JoinRequest, policy: Policy | undefined): Promise<GroupJoin> {
    return await this.store.turn(() => this.#join(group, channel, join, policy))
  }

  #join (group: string, channel: string, join: JoinRequest, policy: Policy | undefined): GroupJoin {
    const store = this.store
    if (!isProcessSpecific(channel)) {
      store.addMember(group, channel)
      return { position: null, recovered: false }
    }
    let result: GroupJoin = { position: null, recovered: false }
    const history = policy?.history
    if (history !== undefined) {
      const memory = this.#memory()
      if (join.since === undefined) {
        result = { position: memory.position(group, history), recovered: false }
      } else {
        const { position, entries, complete } = memory.recover(group, history, join.since)
        // A member all along has had these already; a returning one gets them before anything newer.
        if (complete && !store.isMember(group, channel)) {
          for (const { message, offset } of entries) store.deliver(channel, message, { group, offset, epoch: position.epoch }, true)
        }
        result = { position, recovered: complete }
      }
    }
    // What a membership that expired recorded went with it.
    const before = store.isMember(group, channel) ? store.presenceOf(group, channel) : undefined
    const announce = join.presence !== undefined && policy?.presenceEvents === true && !samePresence(before, join.presence)
    store.addMember(group, channel, join.presence)
    if (announce) this.#announce(group, 'presence.join', channel, join.presence as PresenceInfo)
    return result
  }

  protected override async doGroupDiscard (group: string, channel: string): Promise<void> {
    await this.store.turn(() => { this.store.removeMember(group, channel) })
  }

  protected override async doGroupSend (group: string, message: LayerMessage, policy: Policy | undefined): Promise<StreamPosition | undefined> {
    const history = policy?.history
    if (history === undefined) {
      this.store.fanOut(group, message, { group })
      return undefined
    }
    // The offset is taken and the message fanned out in one step of the store: a join or a send
    // waiting for the fan-out under way (store.turn()) is then before or after both.
    return this.store.busy ? await this.store.turn(() => this.#append(group, history, message)) : this.#append(group, history, message)
  }

  #append (group: string, history: HistoryPolicy, message: LayerMessage): StreamPosition {
    const position = this.#memory().append(group, history, message)
    this.store.fanOut(group, message, { group, offset: position.offset, epoch: position.epoch })
    return position
  }

  protected override async doHistory (group: string, history: HistoryPolicy, since: StreamPosition | undefined, limit: number): Promise<GroupHistory> {
    return this.#memory().read(group, history, since, limit)
  }

  protected override async doPresence (group: string): Promise<PresenceEntry[]> {
    return this.store.presence(group)
  }

  protected override async doDiscardChannel (channel: string): Promise<void> {
    await this.store.turn(() => { this.store.discardChannel(channel) })
  }

  protected override async doFlush (): Promise<void> {
    this.store.flush()
    this.#history?.flush()
  }

  protected override async doClose (): Promise<void> {
    this.store.close()
  }

  // A removal in the middle of a fan-out (an expired member) announces once it is over (store.turn()).
  protected override presenceLeft (group: string, channel: string, info: PresenceInfo): void {
    if (!this.closed && this.policies.of(group)?.presenceEvents === true) this.#announce(group, 'presence.leave', channel, info)
  }

  protected override sweep (): void {
    super.sweep()
    this.#history?.sweep()
  }

  /** Tells the group's local members that a presence entry came or went; it takes no offset. */
  #announce (group: string, type: 'presence.join' | 'presence.leave', channel: string, info: PresenceInfo): void {
    this.store.fanOut(group, { type, channel, info: clonePlainObject(info) }, { group })
  }

  #memory (): MemoryHistory {
    this.#history ??= new MemoryHistory(this.groupExpiryMs)
    return this.#history
  }
}

/** The same info, whatever the order of its keys (as Redis compares it: cluster/memberships.ts). */
function samePresence (a: PresenceInfo | undefined, b: PresenceInfo): boolean {
  return a !== undefined && isDeepStrictEqual(a, b)
}
