/**
 * The protocol of a channel layer shared by many processes, whatever carries it (the Redis
 * backend is one transport; see cluster/transport.ts for what a transport provides).
 *
 * - A group costs one publish per groupSend, however many members and processes: each process
 *   subscribes to the route of every group with local members and fans its messages out locally.
 * - A process-specific channel (`prefix.<token>!x`, made by `newChannel()`) lives in its process;
 *   others reach it through that process' inbox: messages directly, and the changes only the
 *   owner can make (adding it to a group, discarding it) as requests with a reply.
 * - A named channel (no `!`) is a queue in the backend, shared by every process.
 * - Memberships are recorded in the backend on a lease (cluster/memberships.ts).
 * - When the backend is lost the layer emits 'disconnect'; once it is back with every subscription
 *   and membership restored, 'reconnect'. What was published meanwhile is lost to this process
 *   (delivery is at most once), but for what a group's history still holds: that is read back
 *   (cluster/stream-gaps.ts), as is what a subscription missed without an outage.
 */
import { ChannelFullError } from '../errors.js'
import { BASE_OPTIONS, BaseChannelLayer, type BaseChannelLayerOptions, type LayerStats } from './base.js'
import { MAX_TIMER_MS, positiveOption, type JoinRequest } from './arguments.js'
import type { LayerInspection } from './local-store.js'
import type { Policy } from './policies.js'
import type { HistoryPolicy } from './history.js'
import { isProcessSpecific, isProcessToken, processTokenOf } from './names.js'
import type {
  Delivery, GroupHistory, GroupJoin, LayerMessage, PresenceEntry, PresenceInfo, Received, StreamPosition
} from './types.js'
import { withTimeout } from './deadline.js'
import { Envelope, WireCodec, reviveMessage } from './codec.js'
import { PayloadCipher, type EncryptionKey } from './encryption.js'
import { OwnerRequests } from './cluster/requests.js'
import { Fences } from './cluster/fences.js'
import { SentPositions } from './cluster/sent-positions.js'
import { Memberships, NO_JOIN } from './cluster/memberships.js'
import { keepingOf, type ClusterContext, type GroupStamp, type Route, type Transport } from './cluster/transport.js'
import { UnreadablePayloads } from './cluster/unreadable-payloads.js'
import { MembershipTurns } from './cluster/membership-turns.js'

export interface ClusterChannelLayerOptions extends BaseChannelLayerOptions {
  /**
   * Seconds a membership record outlives its process at most (default 60, never more than
   * `groupExpiry`): the owning process renews it every third of that while the membership lasts.
   */
  membershipLease?: number | undefined
  /**
   * Encrypts every payload written to the backend (AES-256-GCM): 32-byte keys as Buffers or base64,
   * the current one first. The first key seals, any key opens, so keys rotate without downtime.
   */
  encryptionKeys?: readonly EncryptionKey[] | undefined
}

export const CLUSTER_OPTIONS: Readonly<Record<keyof ClusterChannelLayerOptions, true>> = { ...BASE_OPTIONS, membershipLease: true, encryptionKeys: true }

export interface ClusterLayerStats extends LayerStats {
  /** Messages sent from another process to a channel of this one that was full: dropped here. */
  directSendDropped: number
  /** Payloads no encryption key opened (written with a key this process does not have): dropped. */
  undecryptable: number
  /** Times the backend came back (each 'reconnect' event). */
  reconnects: number
}

export interface ClusterLayerInspection extends LayerInspection {
  /** Routes this process is subscribed to (groups with local members, its inbox, broadcast). */
  subscriptions: number
  /** Named channels this process is reading for waiting receivers. */
  readers: number
  /** Requests to other processes waiting for their reply. */
  requests: number
}

const LEASE_MS = 60_000
const BROADCAST: Route = { kind: 'broadcast' }

export abstract class ClusterChannelLayer<T extends Transport = Transport> extends BaseChannelLayer {
  declare readonly stats: ClusterLayerStats
  protected readonly transport: T
  readonly #codec: WireCodec
  readonly #memberships: Memberships
  readonly #fences: Fences
  readonly #sent = new SentPositions()
  readonly #requests: OwnerRequests
  readonly #inbox: Route
  #everUp = false
  #outage = false
  // What this process says of payloads it cannot read: counted, and logged once a second.
  readonly #unreadable = new UnreadablePayloads(() => this.log, () => { this.stats.undecryptable++ })
  // Joins and leaves this process asks of other processes' channels, in call order as its own are
  // (membership-turns.ts): a join goes through the owner, a leave straight to the backend, and
  // one not awaited before the other would otherwise land after it.
  readonly #remoteTurns = new MembershipTurns()

  constructor (options: ClusterChannelLayerOptions, connect: (context: ClusterContext) => T) {
    super(options)
    // The same object the base class counts in, with what only a shared layer counts.
    Object.assign(this.stats, { directSendDropped: 0, undecryptable: 0, reconnects: 0 })
    const leaseMs = positiveOption('membershipLease', options.membershipLease, LEASE_MS / 1000, false, MAX_TIMER_MS / 1000) * 1000
    this.#inbox = { kind: 'process', token: this.processToken }
    const cipher = options.encryptionKeys === undefined ? undefined : new PayloadCipher(options.encryptionKeys)
    this.#codec = new WireCodec(cipher, () => { this.#unreadable.undecryptable() })
    this.transport = connect({
      processToken: this.processToken,
      store: this.store,
      codec: this.#codec,
      capacity: this.capacity,
      expiryMs: this.expiryMs,
      groupExpiryMs: this.groupExpiryMs,
      log: () => this.log,
      skipped: (group, channel) => this.reportSkipped(group, channel),
      expired: count => { this.stats.expired += count },
      received: (route, payload) => this.#received(route, payload),
      stateChanged: () => this.#stateChanged(),
      // Tried at once, and again every few seconds while it fails: written back once the part returns.
      partLost: () => { if (!this.closed) void this.#memberships.renew(true) }
    })
    this.#fences = new Fences(this.processToken, this.#codec, this.transport)
    this.#memberships = new Memberships({
      store: this.store,
      codec: this.#codec,
      transport: this.transport,
      leaseMs: Math.min(this.groupExpiryMs, leaseMs),
      groupExpiryMs: this.groupExpiryMs,
      log: () => this.log,
      processRoutes: [this.#inbox, BROADCAST],
      history: group => this.policies.of(group)?.history,
      presenceEvents: group => this.policies.of(group)?.presenceEvents === true,
      fences: this.#fences,
      decodeStored: (payload, where) => this.#decodeStored(payload, where),
      announce: async (group, type, channel, info) => {
        const message = { type, channel, info: this.#codec.decodeObject(info) }
        await this.transport.publish({ kind: 'group', group }, this.#codec.encodeEnvelope([Envelope.group, message]), `announce ${type} in ${group}`)
      }
    })
    this.#requests = new OwnerRequests({
      processToken: this.processToken,
      codec: this.#codec,
      transport: this.transport,
      memberships: this.#memberships,
      policy: group => this.policies.of(group),
      closed: () => this.closed,
      log: () => this.log
    })
    this.#stateChanged() // a transport may be connected already
  }

  override inspect (): ClusterLayerInspection {
    return {
      ...super.inspect(),
      subscriptions: this.transport.subscriptions,
      readers: this.transport.queues.readers,
      requests: this.#requests.size
    }
  }

  // Routing: a named channel is a shared queue; a channel of another process is reached through
  // its inbox; a channel of this process is in the local store.

  /** The token of the live process that owns `channel`, when that is another one. */
  #ownerElsewhere (channel: string): string | undefined {
    const token = processTokenOf(channel)
    // Names with a `!` that newChannel() did not make belong to no process: kept where they are used.
    return token === undefined || token === this.processToken || !isProcessToken(token) ? undefined : token
  }

  // Once confirmed, the process' own routes come back by themselves after an outage ('reconnect'):
  // a new channel then needs no backend, so a connection that joins nothing opens while it is away.
  #ownRoutes = false

  protected override async doNewChannel (): Promise<void> {
    if (this.#ownRoutes) return
    await withTimeout(this.#memberships.subscribeProcess(), this.transport.timeout, 'newChannel')
    this.#ownRoutes = true
  }

  protected override async doSend (channel: string, message: LayerMessage): Promise<void> {
    if (!isProcessSpecific(channel)) {
      if (!await this.transport.queues.push(channel, message, `send ${channel}`)) throw new ChannelFullError(channel)
      return
    }
    const owner = this.#ownerElsewhere(channel)
    if (owner === undefined) {
      if (!this.store.deliver(channel, message)) throw new ChannelFullError(channel)
      return
    }
    // Capacity is the owner's to enforce: a full channel there drops it (and counts it).
    await this.transport.publish({ kind: 'process', token: owner }, this.#codec.encodeEnvelope([Envelope.direct, channel, message]), `send ${channel}`)
  }

  protected override doReceive (channel: string, signal: AbortSignal | undefined): Promise<Received> {
    if (isProcessSpecific(channel)) return this.store.receive(channel, signal)
    return this.transport.queues.receive(channel, signal)
  }

  protected override async doGroupAdd (group: string, channel: string, join: JoinRequest, policy: Policy | undefined): Promise<GroupJoin> {
    if (!isProcessSpecific(channel)) {
      // A queue is no process' member: it gets the group's messages from now on, without recovery or presence.
      await this.transport.queues.addMember(group, channel)
      return NO_JOIN
    }
    const owner = this.#ownerElsewhere(channel)
    if (owner !== undefined) return await this.#remoteTurns.take(group, channel, async () => await this.#requests.ask(owner, 'add', group, channel, join) as GroupJoin)
    return await this.#memberships.add(group, channel, join, policy)
  }

  protected override async doGroupDiscard (group: string, channel: string): Promise<void> {
    if (!isProcessSpecific(channel)) return this.transport.queues.removeMember(group, channel)
    if (this.#ownerElsewhere(channel) === undefined) return this.#memberships.remove(group, channel)
    await this.#remoteTurns.take(group, channel, async () => {
      // On the group's route, so the owner drops the member before any later groupSend arrives.
      const notice = this.#codec.encodeEnvelope([Envelope.discard, channel])
      await this.#memberships.announceGone(group, await this.transport.removeMembers(group, [channel], `groupDiscard ${group}`, notice))
    })
  }

  protected override async doGroupSend (group: string, message: LayerMessage, policy: Policy | undefined): Promise<StreamPosition | undefined> {
    const what = `groupSend ${group}`
    const history = policy?.history
    const { named, position } = await this.transport.publishToGroup(group, this.#codec.encodeEnvelope([Envelope.group, message]), what,
      history === undefined ? undefined : keepingOf(history, this.groupExpiryMs))
    if (position !== undefined && this.#sent.wentBack(group, position)) {
      this.log.warn({ group, offset: position.offset }, 'a group send got an offset this process was given before (Redis lost its last writes); the group gets a new epoch')
      await this.#memberships.renewEpoch(group, position.epoch)
    }
    // Named channels are queues in the backend, not members of any process: the sender fills them.
    if (named.length > 0) {
      const info: Delivery = position === undefined ? { group } : { group, offset: position.offset, epoch: position.epoch }
      await this.transport.queues.fill(group, named, message, what, info)
    }
    return position
  }

  protected override async doHistory (group: string, history: HistoryPolicy, since: StreamPosition | undefined, limit: number): Promise<GroupHistory> {
    const { position, stored } = await this.transport.readHistory(group, keepingOf(history, this.groupExpiryMs), since, limit, `history ${group}`)
    const messages: GroupHistory['messages'] = []
    for (const [offset, payload] of stored) {
      const message = this.#decodeStored(payload, { group, offset })
      if (message !== undefined) messages.push({ message, offset })
    }
    return { messages, position }
  }

  /** A message of a group's history, or undefined when it cannot be decoded here (reported as below). */
  #decodeStored (payload: Buffer, where: { group: string, offset: number }): LayerMessage | undefined {
    try {
      return this.#codec.decodeStored(payload)
    } catch (err) {
      this.#unreadable.notDecoded(err, where, 'skipped an undecodable message of the group\'s history')
      return undefined
    }
  }

  protected override async doPresence (group: string): Promise<PresenceEntry[]> {
    const entries: PresenceEntry[] = []
    for (const [channel, info] of await this.transport.presence(group, `presence ${group}`)) {
      try {
        entries.push({ channel, info: this.#codec.decodeObject(info) as PresenceInfo })
      } catch (err) {
        this.#unreadable.notDecoded(err, { group, channel }, 'skipped an undecodable presence entry')
      }
    }
    return entries
  }

  protected override async doDiscardChannel (channel: string): Promise<void> {
    if (!isProcessSpecific(channel)) return this.transport.queues.discard(channel)
    const owner = this.#ownerElsewhere(channel)
    if (owner !== undefined) {
      await this.#remoteTurns.end(channel, async () => { await this.#requests.ask(owner, 'discardChannel', '', channel) })
      return
    }
    return this.#memberships.discardChannel(channel)
  }

  protected override async doFlush (): Promise<void> {
    // The backend first: a flush that cannot reach it rejects and leaves this process as it was.
    await this.transport.deleteAll('flush')
    await this.transport.publish(BROADCAST, this.#codec.encodeEnvelope([Envelope.flush, this.processToken]), 'flush')
    this.#memberships.forgetAll()
  }

  protected override async doClose (): Promise<void> {
    this.#unreadable.close()
    this.#fences.close()
    this.#memberships.close()
    this.#requests.close()
    const records = this.#memberships.records()
    this.store.close()
    // Best effort, and only when the backend is there: the records would expire with their lease
    // anyway. The presence entries they take along are announced gone, as at any other leave.
    if (records.length > 0 && this.transport.up) {
      const removals = Promise.all(records.map(async ([group, channels]) => {
        await this.#memberships.announceGone(group, await this.transport.removeMembers(group, channels, 'close'))
      }))
      await withTimeout(removals, Math.min(this.transport.timeout, 1000), 'close').catch(() => {})
    }
    await this.transport.close()
  }

  // What arrives

  #received (route: Route, payload: Buffer): void {
    const envelope = this.#codec.decodeEnvelope(payload)
    if (envelope === null) return // no key opens it: counted and logged once, by the codec
    if (envelope === undefined) {
      this.#unreadable.foreign({ route })
      return
    }
    try {
      if (route.kind === 'group') this.#onGroup(route.group, envelope)
      else if (route.kind === 'process') this.#onInbox(envelope)
      else if (envelope[0] === Envelope.flush && envelope[1] !== this.processToken) this.#memberships.forgetAll()
    } catch (err) {
      this.log.warn({ err, route }, 'ignored a malformed envelope')
    }
  }

  #onGroup (group: string, envelope: unknown[]): void {
    if (envelope[0] === Envelope.group) {
      const [, message, offset, epoch, stamp, previous] = envelope
      const info: Delivery = typeof offset === 'number' && typeof epoch === 'string' ? { group, offset, epoch } : { group }
      this.#memberships.deliver(group, reviveMessage(message), info, stampOf(stamp), stampOf(previous))
    } else if (envelope[0] === Envelope.fence) {
      this.#fences.arrived(envelope[1], envelope[2])
    } else if (envelope[0] === Envelope.discard) {
      const channel = envelope[1]
      if (typeof channel !== 'string' || processTokenOf(channel) !== this.processToken) return
      this.#memberships.dropDiscarded(group, channel)
    }
  }

  #onInbox (envelope: unknown[]): void {
    switch (envelope[0]) {
      case Envelope.direct: {
        const channel = envelope[1]
        if (typeof channel !== 'string') return
        if (this.store.deliver(channel, reviveMessage(envelope[2]))) return
        this.stats.directSendDropped++
        this.log.warn({ channel }, 'a message from another process found its channel full; dropped')
        return
      }
      case Envelope.request:
        void this.#requests.answer(envelope)
        return
      case Envelope.reply:
        this.#requests.settle(envelope)
    }
  }

  // Outages

  #stateChanged (): void {
    if (this.closed) return
    if (this.transport.up) {
      this.#everUp = true
      if (!this.#outage) return
      this.#outage = false
      // Subscriptions are back (the transport waited for them); re-assert the memberships and read
      // back what groups with history published meanwhile, then tell.
      const readBack = this.#memberships.readBack()
        .catch((err: unknown) => this.log.error({ err }, 'could not hand on what the groups published during the outage'))
      void Promise.all([this.#memberships.reassert(), readBack]).then(() => {
        if (this.closed || this.#outage) return
        this.log.warn({}, 'channel layer backend restored; subscriptions and memberships re-asserted')
        this.stats.reconnects++
        this.#emitSafely('reconnect')
      })
    } else if (this.#everUp && !this.#outage) {
      this.#outage = true
      this.log.warn({}, 'channel layer backend lost; calls reject after the timeout until it is back')
      this.#emitSafely('disconnect')
    }
  }

  /** A listener that throws is the app's bug, not a reason to stop restoring the layer. */
  #emitSafely (event: 'disconnect' | 'reconnect'): void {
    try {
      this.emit(event)
    } catch (err) {
      this.log.error({ err, event }, 'a channel layer event listener threw')
    }
  }
}

/** A server clock in ms, packed by a script as a 64-bit integer (msgpack gives it as a bigint); undefined when absent. */
function stampOf (value: unknown): GroupStamp | undefined {
  return typeof value === 'bigint' || typeof value === 'number' ? Number(value) : undefined
}
