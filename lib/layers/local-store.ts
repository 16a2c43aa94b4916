/**
 * What a channel layer keeps in this process: its channels (their queued messages, waiting
 * `receive()` calls and listeners, local-channels.ts), and the groups with their local members
 * (and the presence a membership records, local-presence.ts), whose fan-outs deliver to them.
 * Synchronous and unvalidated: the layer facade checks names and copies messages before anything
 * reaches the store, and a backend that spans processes calls it for whatever lives here.
 */
import { cloneMessage, share } from './message.js'
import { enterFanOut, leaveFanOut } from './copy-encoding.js'
import { structureOf } from './message-structure.js'
import { Listener, Membership, deadlineOf } from './local-entries.js'
import { Turns } from './turns.js'
import { PresenceTable } from './local-presence.js'
import { DIRECT, LocalChannels, canBeReadBack, type ChannelSettings } from './local-channels.js'
import type { ChannelListener, ChannelSink, Delivery, LayerMessage, PresenceInfo, Received } from './types.js'

/**
 * Fan-outs to this many members or more copy the message, and compare what members send with it,
 * by code compiled for its structure (message-structure.ts).
 */
const COMPILED_FROM = 8

export interface LocalStoreSettings extends ChannelSettings {
  /** Milliseconds a membership lasts unless renewed. */
  groupExpiryMs: number
  /** A group member was skipped because its channel was full. */
  skipped: (group: string, channel: string) => void
  /** A membership that recorded presence ended (left, discarded, expired); not called by flush or close. */
  presenceLeft?: (group: string, channel: string, info: PresenceInfo) => void
}

/** Counts of the process-local state, for diagnostics and leak tests; not a stable format. */
export interface LayerInspection {
  /** Channels holding messages, waiting receivers or a listener. */
  channels: number
  groups: number
  memberships: number
}

export class LocalStore {
  readonly #settings: LocalStoreSettings
  readonly #channels: LocalChannels
  // group → channel → its membership (deadline, listener), and the reverse index that makes
  // discarding a channel cost O(its memberships): channel → its one group, or a Set once it has
  // more (most connections join one group, and a Set of one costs about 150 bytes).
  readonly #groups = new Map<string, Map<string, Membership>>()
  readonly #channelGroups = new Map<string, string | Set<string>>()
  // What the memberships that record presence recorded.
  readonly #presence = new PresenceTable()
  // Fan-outs and turn()s, one at a time (turns.ts).
  readonly #turns = new Turns()

  constructor (settings: LocalStoreSettings) {
    this.#settings = settings
    this.#channels = new LocalChannels(settings)
  }

  /**
   * Hands `message` (owned by the layer, not copied again) to the channel's listener, its
   * longest-waiting receiver, or its queue. False, delivering nothing, when the channel is full;
   * `force` queues it anyway: a replay is not refused for capacity, nor counted against it.
   */
  deliver (channel: string, message: LayerMessage, info: Delivery = DIRECT, force = false): boolean {
    const channels = this.#channels
    return channels.deliver(channel, channels.sinkOf(channel), message, info, null, force)
  }

  /**
   * Fans `message` out to the group's live local members, each its own copy and the same read-only
   * `info`; full members are skipped and reported, expired memberships dropped on the way. Members
   * in `skip` have had it; with `force`, none is full (a catch-up). A group of one member gets `message` itself (serialize it before
   * calling); in a larger one even the last member gets a copy, so that `message` stays as it was
   * sent while the members' handlers run, and those whose copy is unchanged share one encoding
   * (copy-encoding.ts). Members whose sink shares messages all get `message` itself, deep-frozen.
   */
  fanOut (group: string, message: LayerMessage, info: Delivery, skip?: ReadonlySet<string>, force = false): void {
    const turns = this.#turns
    if (turns.busy) {
      turns.defer(() => { this.#fanOut(group, message, info, skip, force) })
      return
    }
    turns.begin()
    try {
      this.#fanOut(group, message, info, skip, force)
    } finally {
      turns.end()
    }
  }

  /**
   * Runs `step` (store changes that belong together: a join and its replay) alone among the
   * store's fan-outs and turns: at once, or after the one under way (turns.ts says why).
   */
  turn<T> (step: () => T): T | Promise<T> {
    return this.#turns.turn(step)
  }

  /** Whether a fan-out or a turn is under way: what is asked for now would wait for it (turn()). */
  get busy (): boolean {
    return this.#turns.busy
  }

  /** `turn()` for a step that returns nothing: no promise when it waits, so nothing to reject. */
  alone (step: () => void): void {
    this.#turns.alone(step)
  }

  #fanOut (group: string, message: LayerMessage, info: Delivery, skip: ReadonlySet<string> | undefined, force: boolean): void {
    const members = this.#groups.get(group)
    if (members === undefined) return
    const now = performance.now()
    // More than one member: each gets a copy, even the last, so `message` stays as it was sent.
    const pristine = members.size > 1
    let frozen = false
    const channels = this.#channels
    // Finding the message's structure costs about what a few generic copies do.
    const structure = pristine && members.size >= COMPILED_FROM ? structureOf(message) : undefined
    const previous = pristine ? enterFanOut(message, structure) : undefined
    const copy = pristine ? (structure?.clone ?? cloneMessage) : null
    try {
      // forEach, not for…of: an entries iterator makes a [channel, membership] array per member.
      members.forEach((membership, channel) => {
        if (deadlineOf(membership) <= now) {
          this.#unlink(group, members, channel)
          return
        }
        if (skip !== undefined && skip.has(channel)) return
        const sink = membership.sink
        const shares = sink !== undefined && sink.sharesMessages === true
        if (shares && !frozen) {
          share(message)
          frozen = true
        }
        if (channels.deliver(channel, sink, message, info, shares ? null : copy, force)) return
        this.#settings.skipped(group, channel)
        // A message with an offset can be read back from the history, and a presence list read
        // afresh: either way the consumer is told, in order.
        if (canBeReadBack(message, info)) channels.markSkipped(channel, info)
      })
    } finally {
      if (previous !== undefined) leaveFanOut(previous)
    }
  }

  /** The next message of a channel of this process, FIFO among receivers. */
  receive (channel: string, signal: AbortSignal | undefined): Promise<Received> {
    return this.#channels.receive(channel, signal)
  }

  /** Whether a `receive()` waits on the channel. */
  hasReceivers (channel: string): boolean {
    return this.#channels.hasReceivers(channel)
  }

  /**
   * Pushes the channel's messages to `sink` as they arrive, before any waiting `receive()`. While
   * the sink is not accepting they wait in the channel, under capacity and expiry, until `resume()`.
   * Returns undefined when the channel already has a listener.
   */
  listen (channel: string, sink: ChannelSink): ChannelListener | undefined {
    if (!this.#channels.listen(channel, sink)) return undefined
    this.#setMembershipSinks(channel, sink)
    const listener = new Listener(this, channel, sink)
    listener.resume()
    return listener
  }

  /** A listener's `resume()`: hands the sink what waited, while it is still the channel's. */
  resumeListener (channel: string, sink: ChannelSink): void {
    this.#channels.resume(channel, sink)
  }

  /** A listener's `close()`. */
  closeListener (channel: string, sink: ChannelSink): void {
    if (this.#channels.unlisten(channel, sink)) this.#setMembershipSinks(channel, undefined)
  }

  /**
   * What a fan-out hands a member's messages to, kept on each of the channel's memberships. A
   * listener renews them while it listens (local-entries.ts): once it goes, `groupExpiry` runs
   * from then.
   */
  #setMembershipSinks (channel: string, sink: ChannelSink | undefined): void {
    const renewed = Math.ceil(performance.now() + this.#settings.groupExpiryMs)
    for (const group of this.groupsOf(channel)) {
      const membership = this.#groups.get(group)?.get(channel)
      if (membership === undefined) continue
      if (sink === undefined && membership.sink !== undefined) membership.expiresAt = Math.max(membership.expiresAt, renewed)
      membership.sink = sink
    }
  }

  /** Whether `channel` is a live member of `group` here. */
  isMember (group: string, channel: string): boolean {
    const membership = this.#groups.get(group)?.get(channel)
    return membership !== undefined && deadlineOf(membership) > performance.now()
  }

  /** What the membership recorded as its presence, if anything. */
  presenceOf (group: string, channel: string): PresenceInfo | undefined {
    return this.#presence.of(group, channel)
  }

  /** Adds or renews a membership; `presence` replaces what it recorded (undefined keeps it). */
  addMember (group: string, channel: string, presence?: PresenceInfo): void {
    const now = performance.now()
    // One that expired and is not swept yet ends first, with what it recorded: this one is new.
    const current = this.#groups.get(group)
    const old = current?.get(channel)
    if (current !== undefined && old !== undefined && deadlineOf(old) <= now) this.#unlink(group, current, channel)
    if (presence !== undefined) this.#presence.record(group, channel, presence)
    let members = this.#groups.get(group)
    if (members === undefined) {
      members = new Map()
      this.#groups.set(group, members)
    }
    // Whole milliseconds: a small integer is stored in the membership itself, where a fraction
    // would be one more heap object, read for every member at every fan-out (until the process
    // has run for about 24 days: past 2^31 ms it is such an object again, as correct and slower).
    const expiresAt = Math.ceil(now + this.#settings.groupExpiryMs)
    const membership = members.get(channel)
    if (membership !== undefined) membership.expiresAt = expiresAt
    else members.set(channel, new Membership(expiresAt, this.#channels.sinkOf(channel)))
    const groups = this.#channelGroups.get(channel)
    if (groups === undefined) this.#channelGroups.set(channel, group)
    else if (typeof groups !== 'string') groups.add(group)
    else if (groups !== group) this.#channelGroups.set(channel, new Set([groups, group]))
  }

  removeMember (group: string, channel: string): void {
    const members = this.#groups.get(group)
    if (members !== undefined) this.#unlink(group, members, channel)
  }

  /**
   * The group's local members (`deadlineOf()` says until when each lasts; expired ones stay until
   * swept), or undefined when it has none. A read-only view.
   */
  members (group: string): ReadonlyMap<string, Readonly<Membership>> | undefined {
    return this.#groups.get(group)
  }

  /** The presence entries of the group's local members (copies), in join order. */
  presence (group: string): Array<{ channel: string, info: PresenceInfo }> {
    const members = this.#groups.get(group)
    const now = performance.now()
    return this.#presence.list(group, channel => {
      const membership = members?.get(channel)
      return membership !== undefined && deadlineOf(membership) > now
    })
  }

  /** The groups a channel of this process is a member of. */
  groupsOf (channel: string): string[] {
    const groups = this.#channelGroups.get(channel)
    if (groups === undefined) return []
    return typeof groups === 'string' ? [groups] : [...groups]
  }

  /** Drops the channel's queued messages and every membership it has. */
  discardChannel (channel: string): void {
    this.#channels.discard(channel)
    const groups = this.#channelGroups.get(channel)
    if (groups === undefined) return
    // Forgotten first, so #unlink does not edit the set this loop walks.
    this.#channelGroups.delete(channel)
    for (const group of typeof groups === 'string' ? [groups] : groups) {
      const members = this.#groups.get(group)
      if (members !== undefined) this.#unlink(group, members, channel)
    }
  }

  /** Empties every channel and group; waiting receivers and listeners stay. */
  flush (): void {
    this.#channels.flush()
    this.#groups.clear()
    this.#channelGroups.clear()
    this.#presence.clear()
  }

  /** Rejects waiting receivers with LayerClosedError, tells listeners, and forgets everything. */
  close (): void {
    this.#groups.clear()
    this.#channelGroups.clear()
    this.#presence.clear()
    this.#channels.close()
  }

  /** Drops expired messages and memberships, and whatever is left empty (one step: see turn()). */
  sweep (): void {
    this.alone(() => { this.#sweep() })
  }

  #sweep (): void {
    // Deleting from a Map while iterating it is well defined, so the loops need no snapshot.
    const now = performance.now()
    this.#channels.sweep(now)
    for (const [group, members] of this.#groups) {
      for (const [channel, membership] of members) {
        if (deadlineOf(membership) <= now) this.#unlink(group, members, channel)
      }
    }
  }

  /** Sizes of the local state (expired entries count until swept). */
  inspect (): LayerInspection {
    let memberships = 0
    for (const members of this.#groups.values()) memberships += members.size
    return { channels: this.#channels.size, groups: this.#groups.size, memberships }
  }

  #unlink (group: string, members: Map<string, Membership>, channel: string): void {
    if (!members.delete(channel)) return
    if (members.size === 0) this.#groups.delete(group)
    this.#leavePresence(group, channel)
    const groups = this.#channelGroups.get(channel)
    if (groups === undefined) return
    if (typeof groups === 'string') {
      if (groups === group) this.#channelGroups.delete(channel)
      return
    }
    groups.delete(group)
    // Back to the one group it has left, as it would be had it joined only that one.
    if (groups.size === 1) this.#channelGroups.set(channel, groups.values().next().value as string)
  }

  #leavePresence (group: string, channel: string): void {
    const info = this.#presence.take(group, channel)
    if (info !== undefined) this.#settings.presenceLeft?.(group, channel, info)
  }
}
