/**
 * Memberships of this process' channels in a layer shared by many processes. While a group has
 * local members, this process subscribes to the group's route and fans its messages out locally;
 * each membership is also recorded in the backend on a lease this process renews every third of
 * it (leases.ts), so a process that dies leaves nothing behind for longer than the lease.
 *
 * A join that records presence or joins a group with history is one backend call that also reads
 * what a returning member missed, and the group's position then. Until it answers, the group's
 * live messages for that channel are held back; then come the missed ones, followed by the held
 * ones the read did not include (offset above the position). Live copies of what the read
 * included may still be on their way (pub/sub and commands travel on different connections):
 * until the live stream reaches the position, the new member does not get them again. So
 * nothing is missed and nothing comes twice. (catch-ups.ts holds the messages back, hands the
 * catch-up over, and keeps the positions.)
 */
import type { LocalStore } from '../local-store.js'
import { deadlineOf } from '../local-entries.js'
import type { Policy } from '../policies.js'
import type { JoinRequest } from '../arguments.js'
import type { WireCodec } from '../codec.js'
import type { Delivery, GroupJoin, LayerLogger, LayerMessage, StreamPosition } from '../types.js'
import { ttl, withTimeout } from '../deadline.js'
import { keepingOf, type GroupStamp, type Route, type StoredPayload, type StoredPresence, type Transport } from './transport.js'
import type { HistoryPolicy } from '../history.js'
import { RecordedPresence } from './recorded-presence.js'
import { PresenceAnnouncements } from './presence-announcements.js'
import { CatchUps, holdsAllSince, type Held } from './catch-ups.js'
import { StreamGaps } from './stream-gaps.js'
import { Leases, type DueRecords } from './leases.js'
import type { Fences } from './fences.js'
import { MembershipTurns } from './membership-turns.js'

export const NO_JOIN: GroupJoin = Object.freeze({ position: null, recovered: false }) as GroupJoin

export interface MembershipSettings {
  store: LocalStore
  codec: WireCodec
  transport: Transport
  /** Milliseconds a record outlives its process at most. */
  leaseMs: number
  /** How long a group's position outlives its last use, at least (the layer's groupExpiry). */
  groupExpiryMs: number
  log: () => LayerLogger
  /** Routes every member's process must hear (its inbox, the broadcast route). */
  processRoutes: readonly Route[]
  /** The history policy this process has for the group, if any. */
  history: (group: string) => HistoryPolicy | undefined
  /** Whether the group announces presence entries that come and go. */
  presenceEvents: (group: string) => boolean
  /** A presence entry came or went: tell the group. */
  announce: (group: string, type: 'presence.join' | 'presence.leave', channel: string, info: Buffer) => Promise<void>
  /** What makes a join or leave wait for this process' own messages to the group (fences.ts). */
  fences: Fences
  /** A message of a group's history; undefined when it cannot be decoded here (reported). */
  decodeStored: (payload: Buffer, where: { group: string, offset: number }) => LayerMessage | undefined
}

export class Memberships {
  readonly #store: LocalStore
  readonly #transport: Transport
  readonly #settings: MembershipSettings
  readonly #leaseMs: number
  /** Groups whose route this process subscribes: those with local members (or joining ones). */
  readonly #groups = new Set<string>()
  /** Joins reading what their channel missed, and the live messages they wait for. */
  readonly #catchUps = new CatchUps()
  /** Where each group's live stream is, to read back what this process missed. */
  readonly #gaps: StreamGaps
  /** Joins and leaves of one membership, one at a time in call order (membership-turns.ts). */
  readonly #turns = new MembershipTurns()
  /** What joins here recorded as presence (written back if lost); in those groups, dead processes' entries are reaped too. */
  readonly #presence = new RecordedPresence()
  /** What the groups hear of presence entries that come and go (presence-announcements.ts). */
  readonly #announcements: PresenceAnnouncements
  /** The records' renewal (leases.ts). */
  readonly #leases: Leases
  #closed = false

  constructor (settings: MembershipSettings) {
    this.#store = settings.store
    this.#transport = settings.transport
    this.#settings = settings
    this.#leaseMs = settings.leaseMs
    const announcements = this.#announcements = new PresenceAnnouncements(settings)
    this.#gaps = new StreamGaps({
      historySize: group => settings.history(group)?.size,
      read: async (group, since, limit) => {
        const history = settings.history(group)
        if (history === undefined) throw new Error('the group has no history policy here')
        // A renewal keeps the offsets: a process that noticed the group's lost write may have
        // given it its new epoch while this one read what it missed in the old.
        return await this.#transport.readHistory(group, keepingOf(history, settings.groupExpiryMs), since, limit, `read back ${group}`, true)
      },
      decode: (payload, group, offset) => settings.decodeStored(payload, { group, offset }),
      renewEpoch: (group, epoch) => this.renewEpoch(group, epoch),
      deliver: (group, message, info, readBack) => { this.#fanOut(group, message, info, readBack) },
      up: () => this.#transport.up,
      log: settings.log
    })
    this.#leases = new Leases(this.#transport, {
      due: () => this.#due(),
      reapable: () => [...this.#groups].filter(group => settings.presenceEvents(group) || this.#presence.has(group)),
      announce: (group, type, entries) => announcements.all(group, type, entries),
      presenceLost: group => { announcements.lost(group) }
    }, this.#leaseMs, settings.log)
  }

  /** Joins `channel` to `group`; see the file comment for joins with presence or history. */
  async add (group: string, channel: string, join: JoinRequest, policy: Policy | undefined): Promise<GroupJoin> {
    const plain = policy?.history === undefined && join.presence === undefined
    // In turn: two joins under way at once would also each hold back and replay what the channel
    // missed (twice), or the later one's held messages would be lost.
    return await this.#turns.take(group, channel, async () => {
      // What this process sent the group before the join is not for the new member (fences.ts).
      if (!this.#store.isMember(group, channel)) await this.#afterOwnSends(group, undefined, `groupAdd ${group}`)
      if (!plain) return await this.#addRecorded(group, channel, join, policy)
      await this.#addPlain(group, channel)
      return NO_JOIN
    })
  }

  /** A group message from the group's route: to the local members, and held for joining ones. */
  deliver (group: string, message: LayerMessage, info: Delivery, stamp: GroupStamp | undefined, previous: GroupStamp | undefined): void {
    this.#gaps.arrive(group, message, info, stamp, previous)
  }

  /**
   * The group's offsets went back in `epoch` (the backend lost its last writes): it gets a new
   * epoch, unless another process gave it one already. Never rejects: a failure is logged.
   */
  async renewEpoch (group: string, epoch: string): Promise<void> {
    await this.#transport.renewEpoch(group, epoch, `new epoch for ${group}`).catch((err: unknown) => {
      this.#settings.log().warn({ err, group }, 'could not give the group a new epoch; positions in the old one may still be taken for recovered')
    })
  }

  /** After an outage: what the groups with history published meanwhile, to their local members. */
  readBack (): Promise<void> {
    return this.#gaps.recover()
  }

  #fanOut (group: string, message: LayerMessage, info: Delivery, readBack = false): void {
    this.#store.fanOut(group, message, info, this.#catchUps.live(group, message, info), readBack)
  }

  /** The leave takes effect here once what this process sent the group before it has come back (fences.ts). */
  async remove (group: string, channel: string): Promise<void> {
    await this.#turns.take(group, channel, async () => {
      const what = `groupDiscard ${group}`
      let removed: StoredPresence[] = []
      try {
        await this.#afterOwnSends(group, channel, what, async marker => {
          removed = await this.#transport.removeMembers(group, [channel], what, marker)
        })
      } finally {
        // Also when the backend failed: the member leaves here whatever the record says.
        this.dropLocal(group, channel)
      }
      await this.announceGone(group, removed)
    })
  }

  /**
   * Waits until this process' own messages to `group` published so far are back from its route,
   * when they come back here at all: the group has local members (`channel` among them, for a
   * leave) and the route is up. `publish` sends the marker (with the leave's own backend call);
   * without it the marker goes alone. Without a wait, `publish` runs with no marker.
   */
  async #afterOwnSends (group: string, channel: string | undefined, what: string, publish?: (marker?: Buffer) => Promise<void>): Promise<void> {
    const wait = this.#groups.has(group) && this.#transport.up && (channel === undefined || this.#store.isMember(group, channel))
    if (!wait) return await publish?.()
    try {
      await this.#settings.fences.pass(group, what, this.#subscribe(group, what).then(() => true, () => false), publish)
    } finally {
      // Kept heard for the marker (fences.ts): left without members meanwhile, it goes now.
      this.#store.alone(() => { this.#releaseIfEmpty(group) })
    }
  }

  discardChannel (channel: string): Promise<void> {
    return this.#turns.end(channel, async () => { await this.#discard(channel) })
  }

  async #discard (channel: string): Promise<void> {
    const groups = this.#store.groupsOf(channel)
    // One step, after a fan-out under way (as a join would be): then the groups left empty go.
    this.#store.alone(() => {
      this.#store.discardChannel(channel)
      for (const group of groups) {
        this.#presence.forget(group, channel)
        this.#releaseIfEmpty(group)
      }
    })
    if (groups.length === 0) return
    const what = `discardChannel ${channel}`
    await Promise.all(groups.map(async group => await this.announceGone(group, await this.#transport.removeMembers(group, [channel], what))))
  }

  /** Announces removed presence entries to a group that wants to hear of them; a failure is logged. */
  announceGone (group: string, removed: StoredPresence[]): Promise<void> {
    return this.#announcements.all(group, 'presence.leave', removed)
  }

  /** Subscribes this process' own routes (once; resolves when confirmed). */
  subscribeProcess (): Promise<unknown> {
    return Promise.all(this.#settings.processRoutes.map(route => this.#transport.subscribe(route)))
  }

  /** The channel is no longer a member here; the group's subscription goes with its last member. */
  dropLocal (group: string, channel: string): void {
    // One step, after a fan-out under way (as a join would be).
    this.#store.alone(() => {
      this.#store.removeMember(group, channel)
      this.#presence.forget(group, channel)
      this.#releaseIfEmpty(group)
    })
  }

  /**
   * Another process removed this member (its notice on the group's route). A renewal under way
   * may have written its presence entry back meanwhile: once that is done, it is removed again.
   */
  dropDiscarded (group: string, channel: string): void {
    const recorded = this.#presence.has(group, channel)
    this.dropLocal(group, channel)
    if (!recorded) return
    void this.#leases.settled.then(async () => {
      if (!this.#closed && !this.#store.isMember(group, channel)) await this.announceGone(group, await this.#transport.removeMembers(group, [channel], `groupDiscard ${group}`))
    }).catch((err: unknown) => this.#settings.log().warn({ err, group }, 'could not remove a discarded member\'s presence'))
  }

  /** Unsubscribes from a group once its last local member is gone. */
  #releaseIfEmpty (group: string): void {
    if (this.#store.members(group) !== undefined || this.#catchUps.joining(group) || this.#settings.fences.passing(group) || !this.#groups.delete(group)) return
    this.#catchUps.forgetGroup(group)
    this.#gaps.forget(group)
    this.#presence.forgetGroup(group)
    this.#transport.unsubscribe({ kind: 'group', group })
  }

  /** Forgets every local membership (a flush): nothing to renew, no group to hear. */
  forgetAll (): void {
    this.#store.flush()
    this.#catchUps.clear()
    this.#gaps.clear()
    this.#presence.clear()
    for (const group of this.#groups) this.#transport.unsubscribe({ kind: 'group', group })
    this.#groups.clear()
  }

  /** Live local memberships per group. */
  records (): Array<[string, string[]]> {
    const out: Array<[string, string[]]> = []
    for (const group of this.#groups) {
      const members = this.#store.members(group)
      if (members !== undefined && members.size > 0) out.push([group, [...members.keys()]])
    }
    return out
  }

  /** Re-writes every live record, at once when `urgent`, else when due (leases.ts). */
  renew (urgent: boolean): Promise<boolean> {
    return this.#leases.renew(urgent)
  }

  /**
   * After an outage: renews until what the backend lost is written back (leases.ts); then the
   * members read the presence lists afresh (presence-announcements.ts).
   */
  async reassert (): Promise<void> {
    this.#announcements.outageEnds()
    await this.#leases.reassert()
    this.#announcements.afterOutage(this.#groups)
  }

  close (): void {
    this.#closed = true
    this.#gaps.clear()
    this.#leases.close()
  }

  async #addPlain (group: string, channel: string): Promise<void> {
    const existed = this.#store.members(group)?.has(channel) === true
    // A membership that expired here (groupExpiry) took its presence along.
    if (!this.#store.isMember(group, channel)) this.#presence.forget(group, channel)
    // Asked for from inside a fan-out of the group, it takes effect once that is over.
    this.#store.alone(() => { this.#store.addMember(group, channel) })
    this.#groups.add(group)
    const what = `groupAdd ${group}`
    try {
      await Promise.all([
        this.#subscribe(group, what),
        this.#transport.recordMembers(group, [[channel, ttl(this.#leaseMs)]], what)
      ])
    } catch (err) {
      if (!existed && !this.#closed) this.dropLocal(group, channel)
      throw err
    }
  }

  async #addRecorded (group: string, channel: string, join: JoinRequest, policy: Policy | undefined): Promise<GroupJoin> {
    const store = this.#store
    const history = policy?.history
    const rejoin = store.isMember(group, channel)
    if (!rejoin) this.#presence.forget(group, channel)
    const held: Held[] | undefined = rejoin ? undefined : this.#catchUps.hold(group, channel)
    this.#groups.add(group)
    const what = `groupAdd ${group}`
    try {
      await this.#subscribe(group, what)
      const keeping = history === undefined ? undefined : keepingOf(history, this.#settings.groupExpiryMs)
      const presence = join.presence === undefined ? undefined : this.#settings.codec.encodeValue(join.presence)
      const result = await this.#transport.join(group, {
        channel,
        leaseMs: ttl(this.#leaseMs),
        presence,
        history: keeping === undefined ? undefined : { ...keeping, since: join.since }
      }, what)
      // Synchronous from here: nothing the group publishes can come between the catch-up and the join.
      const { position } = result
      const since = join.since
      // Whether the history holds everything after `since`, as the in-memory layer answers, and
      // this process can read all of it: a message no key of its opens is not recovered either.
      const replay = since !== undefined && position !== null && holdsAllSince(since, position, result.missed)
        ? this.#decodeMissed(group, result.missed)
        : undefined
      const recovered = replay !== undefined
      // Replays and held messages are one catch-up: neither is refused for capacity.
      if (held !== undefined) this.#catchUps.caughtUp(group, channel, held, position, replay, (message, info) => { store.deliver(channel, message, info, true) })
      if (position !== null) this.#gaps.joined(group, position)
      // A member all along has had everything since it joined: nothing is replayed.
      store.addMember(group, channel)
      if (presence !== undefined) {
        this.#presence.record(group, channel, presence)
        await this.#announcements.recorded(group, channel, presence, result.previousPresence, join.presence)
      }
      return { position, recovered }
    } catch (err) {
      if (held !== undefined) this.#catchUps.release(group, channel)
      if (!rejoin && !this.#closed) this.#releaseIfEmpty(group)
      throw err
    }
  }

  #subscribe (group: string, what: string): Promise<unknown> {
    return withTimeout(Promise.all([this.subscribeProcess(), this.#transport.subscribe({ kind: 'group', group })]), this.#transport.timeout, what)
  }

  /** What a recovering join replays, or undefined when one of the messages cannot be decoded (logged). */
  #decodeMissed (group: string, missed: StoredPayload[]): Array<[number, LayerMessage]> | undefined {
    const replay: Array<[number, LayerMessage]> = []
    for (const [offset, payload] of missed) {
      try {
        replay.push([offset, this.#settings.codec.decodeStored(payload)])
      } catch (err) {
        this.#settings.log().warn({ err, group, offset }, 'a message of the group\'s history cannot be decoded here: the join is not recovered')
        return undefined
      }
    }
    return replay
  }

  /** What a renewal writes: each group's live members and the presence they recorded; expired ones go. */
  #due (): DueRecords[] {
    const now = performance.now()
    const work: DueRecords[] = []
    for (const group of [...this.#groups]) {
      const members: Array<[string, number]> = []
      for (const [channel, membership] of [...(this.#store.members(group) ?? [])]) {
        const expiresAt = deadlineOf(membership)
        if (expiresAt <= now) this.#store.removeMember(group, channel)
        else members.push([channel, ttl(Math.min(this.#leaseMs, expiresAt - now))])
      }
      // Memberships that expired (groupExpiry), here or in the store's own sweeps, take their presence along.
      const presence = this.#presence.live(group, channel => this.#store.isMember(group, channel))
      if (members.length === 0) this.#releaseIfEmpty(group)
      else work.push([group, members, presence])
    }
    return work
  }
}
